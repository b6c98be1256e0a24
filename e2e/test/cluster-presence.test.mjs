// Presence and counts across nodes, with real processes on one private Redis:
// member_joined / member_left once per user fleet-wide, a dead node's users leaving within
// node_timeout_secs, /api/rooms counting every node (partial when a node cannot answer),
// and the /ws message ack carrying the cluster offset.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { KEY, getJson, publish, startNode, startRedis, until, waitFleet } from "../lib/cluster.mjs";

const T = { timeout: 60_000 };
const skip = () => process.env.E2E_SERVER === "reference" && "Switchboard cluster only";
const NODE_TIMEOUT_MS = 3000; // startNode's node_timeout_secs

let redis;
let nodes = [];

before(async () => {
  if (skip()) return;
  redis = await startRedis();
  nodes = await Promise.all(["pa", "pb", "pc"].map((id) => startNode(redis, id)));
  await waitFleet(nodes);
});
after(async () => {
  await Promise.all(nodes.map((n) => n.stop("SIGKILL")));
  if (redis) await redis.close();
});

/** A /ws client of `user`; records presence events; `join`/`leave`/`send` wait for the ack. */
async function ws(t, url, user) {
  const sock = new WebSocket(`${url.replace("http", "ws")}/ws?userId=${user}`);
  t.after(() => sock.terminate());
  const got = [];
  const acks = new Map();
  let next = 1;
  sock.on("message", (raw) => {
    const f = JSON.parse(raw.toString());
    if (f.ack !== undefined && acks.has(f.ack)) {
      acks.get(f.ack)(f);
      acks.delete(f.ack);
    } else if (f.event) got.push({ e: f.event, data: f.data, offset: f.offset });
  });
  await new Promise((r, j) => { sock.once("open", r); sock.once("error", j); });
  const call = (o) => new Promise((r) => {
    const ack = next++;
    acks.set(ack, r);
    sock.send(JSON.stringify({ ...o, ack }));
  });
  return {
    sock,
    got,
    join: (roomId) => call({ action: "join", roomId }),
    leave: (roomId) => call({ action: "leave", roomId }),
    send: (roomId, content) => call({ action: "message", roomId, content }),
    presence: (room) => got.filter((g) => (g.e === "member_joined" || g.e === "member_left") && g.data.roomId === room)
      .map((g) => `${g.e === "member_joined" ? "+" : "-"}${g.data.userId}`),
  };
}

async function metric(n, name) {
  const text = await (await fetch(`${n.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

/**
 * Waits until `marker`'s arrival is announced to every watcher: everything `from`'s node
 * decided before it has then been announced too (one worker per node, in order).
 */
async function barrier(t, node, room, watchers, marker) {
  const m = await ws(t, node.url, marker);
  await m.join(room);
  for (const w of watchers) await until(`${marker} announced`, () => w.presence(room).includes(`+${marker}`), 5000);
  return m;
}

describe("presence across nodes", { skip: skip() }, () => {
  it("member_joined and member_left once per user, whichever nodes the user is on", T, async (t) => {
    const [a, b, c] = nodes;
    const room = "lobby-1";
    const wb = await ws(t, b.url, "watch-b");
    await wb.join(room);
    const wc = await ws(t, c.url, "watch-c");
    await wc.join(room);
    await until("watch-c announced to watch-b", () => wb.presence(room).includes("+watch-c"));

    // Alice arrives on node A: both watchers hear it once.
    const alice1 = await ws(t, a.url, "alice");
    await alice1.join(room);
    for (const w of [wb, wc]) await until("alice announced", () => w.presence(room).includes("+alice"));

    // A second connection of hers, on node B (SSE this time): nobody hears of it.
    const es = new EventSource(`${b.url}/events?channels=${room}&userId=alice`);
    t.after(() => es.close());
    await new Promise((r) => es.addEventListener("connected", r));
    await barrier(t, b, room, [wb, wc], "marker-1");

    // She leaves node A: still present on B, so no member_left.
    await alice1.leave(room);
    await barrier(t, a, room, [wb, wc], "marker-2");
    // Her last connection closes: member_left, once.
    es.close();
    for (const w of [wb, wc]) await until("alice left", () => w.presence(room).includes("-alice"));
    await barrier(t, c, room, [wb, wc], "marker-3");

    for (const w of [wb, wc]) {
      const alice = w.presence(room).filter((p) => p.endsWith("alice"));
      assert.deepEqual(alice, ["+alice", "-alice"], `${JSON.stringify(w.presence(room))}`);
    }
  });

  it("counts every node in /api/rooms, and says partial when a node cannot answer", T, async (t) => {
    const [a, b, c] = nodes;
    const room = "count-1";
    const clients = [
      await ws(t, a.url, "u1"), await ws(t, a.url, "u2"),
      await ws(t, b.url, "u3"),
      await ws(t, c.url, "u1"), // u1 again, on another node: one user
    ];
    for (const cl of clients) await cl.join(room);
    const es = new EventSource(`${c.url}/events?channels=${room}&userId=u4`);
    t.after(() => es.close());
    await new Promise((r) => es.addEventListener("connected", r));

    const auth = { headers: { authorization: `Bearer ${KEY}` } };
    for (const n of [a, b, c]) {
      const list = await (await fetch(`${n.url}/api/rooms`, auth)).json();
      const entry = list.rooms.find((r) => r.room === room);
      assert.equal(entry?.members, 5, `${n.id}: ${JSON.stringify(list)}`);
      assert.equal(list.partial, false);
      assert.deepEqual(list.nodes.map((x) => x.id).sort(), ["pa", "pb", "pc"]);

      const detail = await (await fetch(`${n.url}/api/rooms/${room}`, auth)).json();
      assert.equal(detail.members, 5, JSON.stringify(detail));
      assert.deepEqual(detail.transports, { sse: 1, ws: 4 });
      assert.deepEqual(detail.users, ["u1", "u2", "u3", "u4"]);
      assert.deepEqual(
        Object.fromEntries(detail.nodes.map((x) => [x.id, x.members])),
        { pa: 2, pb: 1, pc: 2 },
      );
      assert.equal(detail.partial, false);
    }
    // A room no node has: 404 from the fleet.
    assert.equal((await fetch(`${a.url}/api/rooms/nowhere-1`, auth)).status, 404);

    // Node C frozen (alive in the heartbeats for a while, but silent): partial, named.
    c.signal("SIGSTOP");
    t.after(() => c.signal("SIGCONT"));
    const list = await (await fetch(`${a.url}/api/rooms`, auth)).json();
    assert.equal(list.partial, true, JSON.stringify(list));
    assert.deepEqual(list.missing, ["pc"]);
    assert.equal(list.rooms.find((r) => r.room === room)?.members, 3);
    c.signal("SIGCONT");
    await waitFleet(nodes);
  });

  it("the /ws message ack carries the cluster offset every node delivers it with", T, async (t) => {
    const [a, b] = nodes;
    const room = "offsets-1";
    const sender = await ws(t, a.url, "sender");
    await sender.join(room);
    const es = new EventSource(`${b.url}/events?channels=${room}&userId=reader`);
    t.after(() => es.close());
    const ids = [];
    es.addEventListener("message", (m) => ids.push(Number(m.lastEventId)));
    await new Promise((r) => es.addEventListener("connected", r));
    const acks = [];
    for (let i = 0; i < 5; i++) acks.push((await sender.send(room, `m${i}`)).data.offset);
    await until("5 messages on node B", () => ids.length === 5);
    assert.ok(acks.every((o) => o > 0), JSON.stringify(acks));
    assert.deepEqual(ids, acks);
    // An API publish after them gets a larger offset: one sequence for the fleet.
    const { offset } = await publish(b, { room, event: "message", data: { x: 1 } });
    assert.ok(offset > acks[4]);
  });

  it("garbage on the census channels is counted and dropped; counts keep working", T, async (t) => {
    const { Redis } = await import("ioredis");
    const r = new Redis(redis.port, "127.0.0.1");
    t.after(() => r.disconnect());
    const [a, b] = nodes;
    const name = 'switchboard_cluster_dropped_total{reason="request"}';
    const before = await metric(b, name);
    const bad = [
      Buffer.from("{not json"),
      Buffer.from(JSON.stringify({ id: "x", from: 3 })),
      Buffer.from([0xc1, 0xff]),
      Buffer.from("[" + "[".repeat(200)),
      Buffer.from("{" + "x".repeat(2 * 1024 * 1024)), // oversized
    ];
    for (const m of bad) await r.publish("socket.io-sb-census#", m);
    await r.publish("socket.io-sb-census#pb#", Buffer.from("{bad answer"));
    await until("bad census messages counted", async () => (await metric(b, name)) >= before + bad.length + 1);
    const room = "after-garbage-1";
    const x = await ws(t, b.url, "x");
    await x.join(room);
    const list = await (await fetch(`${a.url}/api/rooms`, { headers: { authorization: `Bearer ${KEY}` } })).json();
    assert.equal(list.partial, false);
    assert.equal(list.rooms.find((r) => r.room === room)?.members, 1);
  });

  it("after a Redis restart the book is rebuilt: changes made meanwhile are announced", T, async (t) => {
    const [a, b] = nodes;
    const room = "outage-1";
    const wa = await ws(t, a.url, "watch-a");
    await wa.join(room);
    const erin = await ws(t, b.url, "erin");
    await erin.join(room);
    await until("erin announced", () => wa.presence(room).includes("+erin"));
    await redis.stop("SIGKILL");
    // Erin leaves while Redis is down: node B tells its own clients only.
    await erin.leave(room);
    await redis.restart();
    await waitFleet(nodes);
    for (const n of nodes) await until(`${n.id} presence synced`, async () => (await getJson(`${n.url}/stats`)).body.cluster.presenceSynced === true);
    // Every node has beaten into the restarted Redis (the next test kills one).
    const { Redis } = await import("ioredis");
    const r = new Redis(redis.port, "127.0.0.1");
    t.after(() => r.disconnect());
    await until("every heartbeat back", async () => (await r.hlen("socket.io-sb:nodes")) === 3);
    // B reconciles its share with the (empty) restarted Redis; A's watcher rejoins its
    // own share; erin's departure reaches node A's watcher, and erin stays gone.
    await until("erin's departure announced after the restart", () => wa.presence(room).includes("-erin"), 10_000);
    const list = await (await fetch(`${a.url}/api/rooms/${room}`, { headers: { authorization: `Bearer ${KEY}` } })).json();
    assert.deepEqual(list.users, ["watch-a"]);
  });

  it("a node with presence but no heartbeat (died before it beat) is dropped too", T, async (t) => {
    const { Redis } = await import("ioredis");
    const r = new Redis(redis.port, "127.0.0.1");
    t.after(() => r.disconnect());
    const [a] = nodes;
    const room = "ghost-1";
    const wa = await ws(t, a.url, "watch-a");
    await wa.join(room);
    // What a node leaves behind when it dies between a Redis data loss and its next beat.
    await r.sadd("socket.io-sb:presence-node:ghost", `${room}\0gus`);
    await r.hincrby(`socket.io-sb:presence:${room}`, "gus", 1);
    await r.sadd("socket.io-sb:presence-nodes", "ghost");
    await until("gus dropped", () => wa.presence(room).includes("-gus"), 2 * NODE_TIMEOUT_MS + 2000);
    assert.equal(await r.exists("socket.io-sb:presence-node:ghost"), 0);
    assert.equal(await r.sismember("socket.io-sb:presence-nodes", "ghost"), 0);
    assert.equal(await r.hexists(`socket.io-sb:presence:${room}`, "gus"), 0);
  });

  it("a node that dies takes its users out of presence within node_timeout_secs", T, async (t) => {
    const [a, b, c] = nodes;
    const room = "deaths-1";
    const wa = await ws(t, a.url, "watch-a");
    await wa.join(room);
    const wb = await ws(t, b.url, "watch-b");
    await wb.join(room);
    const bob = await ws(t, c.url, "bob");
    await bob.join(room);
    // carol is on C and on A: C's death must not take her out.
    const carolC = await ws(t, c.url, "carol");
    await carolC.join(room);
    const carolA = await ws(t, a.url, "carol");
    await carolA.join(room);
    for (const w of [wa, wb]) await until("bob and carol announced", () => w.presence(room).includes("+bob") && w.presence(room).includes("+carol"));

    const killed = Date.now();
    await c.stop("SIGKILL");
    for (const w of [wa, wb]) await until("bob left", () => w.presence(room).includes("-bob"), NODE_TIMEOUT_MS + 3000);
    const tookMs = Date.now() - killed;
    assert.ok(tookMs <= NODE_TIMEOUT_MS + 1000, `member_left after ${tookMs} ms`);
    await barrier(t, a, room, [wa, wb], "marker-d");
    for (const w of [wa, wb]) {
      assert.deepEqual(w.presence(room).filter((p) => p.endsWith("bob")), ["+bob", "-bob"]);
      assert.deepEqual(w.presence(room).filter((p) => p.endsWith("carol")), ["+carol"]);
    }
    // The fleet's counts drop it too.
    await waitFleet([a, b], 2);
    const list = await (await fetch(`${a.url}/api/rooms`, { headers: { authorization: `Bearer ${KEY}` } })).json();
    assert.equal(list.partial, false);
    // watch-a, carol and marker-d on A, watch-b on B.
    assert.equal(list.rooms.find((r) => r.room === room)?.members, 4, JSON.stringify(list));
  });

  it("a node that stops gracefully takes its users out well before node_timeout_secs", T, async (t) => {
    const [a, b] = nodes;
    const room = "graceful-1";
    const wa = await ws(t, a.url, "watch-a");
    await wa.join(room);
    const dave = await ws(t, b.url, "dave");
    await dave.join(room);
    await until("dave announced", () => wa.presence(room).includes("+dave"));
    await b.stop("SIGTERM");
    // It said goodbye in the heartbeats (a beat of 0): the next beat of node A retires
    // it, without waiting for the timeout.
    const { Redis } = await import("ioredis");
    const r = new Redis(redis.port, "127.0.0.1");
    t.after(() => r.disconnect());
    const beat = await r.hget("socket.io-sb:nodes", "pb");
    assert.ok(beat === null || JSON.parse(beat).lastSeen === 0, beat);
    await until("dave left", () => wa.presence(room).includes("-dave"), NODE_TIMEOUT_MS + 2000);
    assert.deepEqual(wa.presence(room).filter((p) => p.endsWith("dave")), ["+dave", "-dave"]);
  });
});

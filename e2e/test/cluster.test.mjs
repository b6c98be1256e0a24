// Cluster mode with real processes on one (private) Redis: three Switchboard nodes and a
// Node socket.io 4.8 server with the official @socket.io/redis-adapter.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { KEY, getJson, publish, startHaproxy, startNode, startNodeServer, startRedis, until, waitFleet } from "../lib/cluster.mjs";

const T = { timeout: 60_000 };
const skip = () => process.env.E2E_SERVER === "reference" && "Switchboard cluster only";

let redis;
let nodes = [];

before(async () => {
  if (skip()) return;
  redis = await startRedis();
  nodes = await Promise.all(["a", "b", "c"].map((id) => startNode(redis, id)));
  await waitFleet(nodes);
});
after(async () => {
  await Promise.all(nodes.map((n) => n.stop("SIGKILL")));
  if (redis) await redis.close();
});

/** A /realtime socket.io client on `url`, joined to event `eventId`, recording `events`. */
async function sioClient(t, url, user, eventId, events) {
  const sio = io(`${url}/realtime`, { query: { userId: user }, transports: ["websocket"], forceNew: true, reconnection: false });
  t.after(() => sio.close());
  const got = [];
  for (const e of events) sio.on(e, (data) => got.push({ e, data }));
  await until(`${user} connected`, () => sio.connected, 5000);
  const joined = await sio.timeout(5000).emitWithAck("join-event-room", { eventId });
  assert.equal(joined.success, true, JSON.stringify(joined));
  return { sio, got };
}

/** A /ws client joined to `room`, recording every event frame. */
async function wsClient(t, url, user, room) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/ws?userId=${user}`);
  t.after(() => ws.terminate());
  const got = [];
  let joined;
  const ready = new Promise((r) => (joined = r));
  ws.on("message", (raw) => {
    const f = JSON.parse(raw.toString());
    if (f.ack === 1) joined(f);
    else if (f.event === "note" || f.event === "message" || f.event === "still") got.push({ e: f.event, data: f.data, offset: f.offset });
  });
  await new Promise((r, j) => { ws.once("open", r); ws.once("error", j); });
  ws.send(JSON.stringify({ action: "join", roomId: room, ack: 1 }));
  const ack = await ready;
  assert.equal(ack.data?.success ?? ack.success ?? true, true, JSON.stringify(ack));
  return { ws, got, send: (o) => ws.send(JSON.stringify(o)) };
}

function sseClient(t, url, user, room, events) {
  const es = new EventSource(`${url}/events?channels=${room}&userId=${user}`);
  t.after(() => es.close());
  const got = [];
  let open = false;
  es.addEventListener("connected", () => (open = true));
  for (const e of events) es.addEventListener(e, (m) => got.push({ e, data: JSON.parse(m.data), id: m.lastEventId }));
  return { es, got, ready: () => until(`${user} sse connected`, () => open, 5000) };
}

describe("three nodes, one fabric", { skip: skip() }, () => {
  it("publishes from any node reach every transport on every node once, in one order", T, async (t) => {
    const [a, b, c] = nodes;
    const room = "event_1";
    const sioA = await sioClient(t, a.url, "sio-a", 1, ["note", "message"]);
    const sioC = await sioClient(t, c.url, "sio-c", 1, ["note", "message"]);
    const wsA = await wsClient(t, a.url, "ws-a", room);
    const wsC = await wsClient(t, c.url, "ws-c", room);
    const sseB = sseClient(t, b.url, "sse-b", room, ["note", "message"]);
    await sseB.ready();

    // Publishes through node B's API interleaved with chat messages from node A's /ws.
    const N = 30;
    const published = [];
    for (let i = 0; i < N; i++) {
      published.push(publish(b, { room, event: "note", data: { n: i } }));
      if (i % 3 === 0) wsA.send({ action: "message", roomId: room, content: `m${i}` });
    }
    const answers = await Promise.all(published);
    for (const p of answers) assert.ok(p.offset > 0, `an offset from the cluster: ${JSON.stringify(p)}`);
    const notes = (got) => got.filter((x) => x.e === "note").map((x) => x.data.n);
    const order = (got) => got.map((x) => (x.e === "note" ? `n${x.data.n}` : x.data.content));
    const everyone = [sioA, sioC, wsC, sseB];
    for (const r of [...everyone, wsA]) {
      await until("all notes", () => notes(r.got).length >= N);
    }
    // Concurrent requests: the cluster's offsets decide the one order everyone sees.
    const expected = answers
      .map((p, i) => ({ i, offset: p.offset }))
      .sort((x, y) => x.offset - y.offset)
      .map((x) => x.i);
    for (const r of [...everyone, wsA]) assert.deepEqual(notes(r.got), expected);
    // Everyone but the sender sees the same interleaving of notes and messages.
    await until("all messages", () => everyone.every((r) => r.got.length >= N + N / 3));
    await new Promise((r) => setTimeout(r, 200));
    const first = order(everyone[0].got);
    assert.equal(first.length, N + N / 3, first.join(","));
    for (const r of everyone) assert.deepEqual(order(r.got), first);
    // The API's offsets are the ones clients see, on every node.
    const offsets = answers.map((p) => p.offset).sort((x, y) => x - y).map(String);
    assert.deepEqual(sseB.got.filter((x) => x.e === "note").map((x) => x.id), offsets);
    assert.deepEqual(wsC.got.filter((x) => x.e === "note").map((x) => String(x.offset)), offsets);

    // /stats on any node lists the whole fleet.
    const { body } = await getJson(`${c.url}/stats`);
    assert.deepEqual(body.cluster.nodes.map((n) => n.id), ["a", "b", "c"]);
    assert.equal(body.cluster.redis.state, "up");
  });

  it("a Node socket.io server with @socket.io/redis-adapter shares the rooms", T, async (t) => {
    const node = await startNodeServer(redis);
    t.after(() => node.close());
    const [a, b, c] = nodes;
    const onNode = await sioClient(t, node.url, "node-user", 2, ["from-node", "from-api"]);
    const clients = [
      await sioClient(t, a.url, "sb-a", 2, ["from-node", "from-api"]),
      await sioClient(t, b.url, "sb-b", 2, ["from-node", "from-api"]),
      await sioClient(t, c.url, "sb-c", 2, ["from-node", "from-api"]),
      onNode,
    ];
    // Switchboard -> Node: a publish through node B's API.
    await publish(b, { room: "event_2", event: "from-api", data: { via: "api" } });
    // Node -> Switchboard: io.to(room).emit on the Node server.
    node.realtime.to("event_2").emit("from-node", { via: "node", bin: Buffer.from([1, 2, 3]) });
    for (const cl of clients) {
      await until("both events", () => cl.got.length >= 2);
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const cl of clients) {
      assert.equal(cl.got.length, 2, JSON.stringify(cl.got));
      const api = cl.got.find((x) => x.e === "from-api");
      assert.deepEqual(api.data, { via: "api" });
      const fromNode = cl.got.find((x) => x.e === "from-node");
      assert.equal(fromNode.data.via, "node");
      assert.deepEqual([...new Uint8Array(fromNode.data.bin)], [1, 2, 3]);
    }
  });

  it("bad messages on the bus are counted and dropped; the nodes keep relaying", T, async (t) => {
    const { Redis } = await import("ioredis");
    const r = new Redis(redis.port, "127.0.0.1");
    t.after(() => r.disconnect());
    const [a, b] = nodes;
    const before = await metric(a, 'switchboard_cluster_dropped_total{reason="malformed"}');
    const shapeBefore = await metric(a, 'switchboard_cluster_dropped_total{reason="shape"}');
    await r.publish("socket.io#/realtime#", Buffer.from([0xc1, 0xff, 0x00]));
    await r.publish("socket.io#/realtime#event_1#", Buffer.from("not msgpack at all"));
    await r.publish("socket.io#/realtime#", Buffer.from([0x93, 0x01, 0x80, 0x80]));
    // 200 levels deep.
    await r.publish("socket.io#/realtime#", Buffer.concat([Buffer.alloc(200, 0x91), Buffer.from([0xc0])]));
    await until("drops counted", async () =>
      (await metric(a, 'switchboard_cluster_dropped_total{reason="malformed"}')) >= before + 3 &&
      (await metric(a, 'switchboard_cluster_dropped_total{reason="shape"}')) >= shapeBefore + 1);
    const w = await wsClient(t, a.url, "after-garbage", "event_3");
    await publish(b, { room: "event_3", event: "still", data: 1 });
    await until("delivery after garbage", () => w.got.some((x) => x.e === "still"));
  });
});

describe("Redis outages", { skip: skip() }, () => {
  it("a Redis restart under three serving nodes: /ready 503 and back, local rooms keep working, cross-node delivery resumes", T, async (t) => {
    const own = await startRedis();
    t.after(() => own.close());
    const fleet = await Promise.all(["r1", "r2", "r3"].map((id) => startNode(own, id)));
    t.after(() => Promise.all(fleet.map((n) => n.stop("SIGKILL"))));
    await waitFleet(fleet);
    const [a, b, c] = fleet;
    const wa = await wsClient(t, a.url, "wa", "outage");
    const wc = await wsClient(t, c.url, "wc", "outage");
    await publish(b, { room: "outage", event: "note", data: { n: 1 } });
    await until("before the outage", () => wa.got.length === 1 && wc.got.length === 1);

    await own.stop("SIGKILL");
    for (const n of fleet) {
      await until(`${n.id} not ready`, async () => {
        const r = await getJson(`${n.url}/ready`);
        return r.status === 503 && r.body.redis?.state === "down" && r.body.redis.downForMs >= 0;
      });
      assert.equal((await getJson(`${n.url}/health`)).status, 200, "health stays 200");
    }
    // A node keeps serving its own clients: a publish on A reaches A's member at once.
    const local = await publish(a, { room: "outage", event: "note", data: { n: 2 } });
    assert.ok(local.offset > 0);
    await until("local delivery during the outage", () => wa.got.length === 2);
    assert.ok((await metric(a, "switchboard_cluster_not_relayed_total")) >= 1);
    assert.equal(await metric(a, "switchboard_cluster_redis_up"), 0);

    await own.restart();
    for (const n of fleet) {
      await until(`${n.id} ready again`, async () => (await getJson(`${n.url}/ready`)).status === 200, 20_000);
    }
    await publish(b, { room: "outage", event: "note", data: { n: 3 } });
    await until("cross-node delivery resumes", () => wa.got.some((x) => x.data.n === 3) && wc.got.some((x) => x.data.n === 3));
    assert.deepEqual(wa.got.map((x) => x.data.n), [1, 2, 3]);
    assert.deepEqual(wc.got.map((x) => x.data.n), [1, 3], "C never saw A's local message, and nothing twice");
    // Offsets kept growing across the restart (Redis lost its counter; its clock did not).
    assert.ok(wc.got[1].offset > wc.got[0].offset, JSON.stringify(wc.got));
    for (const n of fleet) assert.equal((await getJson(`${n.url}/health`)).status, 200);
  });
});

describe("a node killed with kill -9", { skip: skip() }, () => {
  it("its clients come back through HAProxy on the others and recover exactly, or are told they did not", T, async (t) => {
    const own = await startRedis();
    t.after(() => own.close());
    const fleet = await Promise.all(["k1", "k2", "k3"].map((id) => startNode(own, id)));
    t.after(() => Promise.all(fleet.map((n) => n.stop("SIGKILL"))));
    await waitFleet(fleet);
    const lb = await startHaproxy(fleet);
    t.after(() => lb.close());

    // Nine clients through the load balancer (least connections spreads them).
    const clients = [];
    for (let i = 0; i < 9; i++) {
      const sio = io(`${lb.url}/realtime`, {
        query: { userId: `buyer-${i}` }, transports: ["websocket"], forceNew: true,
        reconnectionDelay: 100, reconnectionDelayMax: 500, randomizationFactor: 0,
      });
      t.after(() => sio.close());
      const c = { sio, notes: [], connects: [] };
      sio.on("note", (data) => c.notes.push(data.n));
      sio.on("connect", () => c.connects.push(sio.recovered));
      await until(`client ${i} connected`, () => sio.connected, 5000);
      const joined = await sio.timeout(5000).emitWithAck("join-event-room", { eventId: 1 });
      assert.equal(joined.success, true);
      clients.push(c);
    }
    // The victim: the node with the most of them; the publisher: another one.
    const counts = await Promise.all(fleet.map(async (n) => (await getJson(`${n.url}/stats`)).body.connections.socketio));
    const victim = fleet[counts.indexOf(Math.max(...counts))];
    const publisher = fleet.find((n) => n !== victim);
    assert.ok(Math.max(...counts) > 0, JSON.stringify(counts));

    const N = 120;
    for (let n = 0; n < N; n++) {
      await publish(publisher, { room: "event_1", event: "note", data: { n } });
      if (n === 40) await victim.stop("SIGKILL");
      await new Promise((r) => setTimeout(r, 10));
    }
    const all = Array.from({ length: N }, (_, i) => i);
    await until("every client back", () => clients.every((c) => c.sio.connected), 20_000);
    // Recovered clients have everything; the others were told, and have nothing twice.
    await until("recovered clients complete", () =>
      clients.filter((c) => c.connects.at(-1) === true).every((c) => c.notes.length >= N), 20_000);
    await new Promise((r) => setTimeout(r, 300));
    let recovered = 0;
    let reset = 0;
    let untouched = 0;
    let replayed = 0;
    for (const c of clients) {
      assert.equal(new Set(c.notes).size, c.notes.length, `no duplicates: ${c.notes}`);
      const sorted = [...c.notes].sort((x, y) => x - y);
      assert.deepEqual(c.notes, sorted, "in order");
      if (c.connects.length === 1) {
        untouched += 1;
        assert.deepEqual(c.notes, all);
      } else if (c.connects.at(-1) === true) {
        recovered += 1;
        assert.deepEqual(c.notes, all, "a recovered client misses nothing");
        replayed += 1;
      } else {
        reset += 1;
      }
    }
    assert.ok(recovered + reset > 0, "the victim had clients");
    assert.equal(recovered + reset + untouched, clients.length);
    t.diagnostic(`kill -9: ${recovered} recovered exactly, ${reset} told recovered=false, ${untouched} on other nodes`);
    // The survivors drop the dead node within node_timeout_secs (3 s here).
    for (const n of fleet.filter((x) => x !== victim)) {
      await until(`${n.id} drops ${victim.id}`, async () => {
        const { body } = await getJson(`${n.url}/stats`);
        return !body.cluster.nodes.some((x) => x.id === victim.id);
      }, 8000);
    }
  });
});

async function metric(node, name) {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

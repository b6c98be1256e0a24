// The Node adapter's request/response protocol across real processes: two Switchboard
// nodes and a Node socket.io 4.8 server with @socket.io/redis-adapter on a private
// Redis. The Node server's fetchSockets, socketsJoin/Leave, disconnectSockets,
// serverSideEmit and emitWithAck act on Switchboard's sockets as on its own.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { KEY, startNode, startNodeServer, startRedis, until, waitFleet } from "../lib/cluster.mjs";

const T = { timeout: 60_000 };
const skip = () => process.env.E2E_SERVER === "reference" && "Switchboard cluster only";

let redis;
let nodes = [];
let node;

before(async () => {
  if (skip()) return;
  redis = await startRedis();
  nodes = await Promise.all(["ra", "rb"].map((id) => startNode(redis, id)));
  await waitFleet(nodes);
  node = await startNodeServer(redis);
  node.realtime.on("connection", (s) => s.on("q", (x, cb) => cb?.(`node:${x}`)));
});
after(async () => {
  if (node) await node.close();
  await Promise.all(nodes.map((n) => n.stop("SIGKILL")));
  if (redis) await redis.close();
});

/** A /realtime client on `url`, joined to event `eventId`, answering `q` with an ack. */
async function client(t, url, user, eventId) {
  const sio = io(`${url}/realtime`, { query: { userId: user }, transports: ["websocket"], forceNew: true, reconnection: false });
  t.after(() => sio.close());
  sio.on("q", (x, cb) => cb(`${user}:${x}`));
  await until(`${user} connected`, () => sio.connected, 5000);
  if (eventId !== undefined) {
    const joined = await sio.timeout(5000).emitWithAck("join-event-room", { eventId });
    assert.equal(joined.success, true, JSON.stringify(joined));
  }
  return sio;
}

async function metric(n, name) {
  const text = await (await fetch(`${n.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

const byId = (list) => Object.fromEntries(list.map((s) => [s.id, s]));

describe("the Node adapter's requests, answered by Switchboard", { skip: skip() }, () => {
  it("fetchSockets lists Switchboard sockets with their rooms and handshake", T, async (t) => {
    const [a, b] = nodes;
    const ca = await client(t, a.url, "fetch-a", 1);
    const cb = await client(t, b.url, "fetch-b", 2);
    const nodeClient = await client(t, node.url, "fetch-n");
    const all = byId(await node.realtime.fetchSockets());
    for (const c of [ca, cb, nodeClient]) assert.ok(all[c.id], `${c.id} listed`);
    assert.deepEqual([...all[ca.id].rooms].sort(), [ca.id, "event_1", "user:fetch-a"].sort());
    assert.equal(all[ca.id].handshake.query.userId, "fetch-a");
    assert.equal(typeof all[ca.id].handshake.issued, "number");
    const mine = (list) => list.map((s) => s.id).filter((id) => id === ca.id || id === cb.id);
    assert.deepEqual(mine(await node.realtime.in("event_2").fetchSockets()), [cb.id]);
    const except = await node.realtime.in(["event_1", "event_2"]).except("event_1").fetchSockets();
    assert.deepEqual(mine(except), [cb.id]);
    // ALL_ROOMS too.
    const rooms = await node.realtime.adapter.allRooms();
    assert.ok(rooms.has("event_1") && rooms.has("event_2") && rooms.has(ca.id));
  });

  it("SOCKETS (the adapter's older request) is answered by every node", T, async (t) => {
    const { Redis } = await import("ioredis");
    const pub = new Redis(redis.port, "127.0.0.1");
    const sub = new Redis(redis.port, "127.0.0.1");
    t.after(() => (pub.disconnect(), sub.disconnect()));
    const [a] = nodes;
    const ca = await client(t, a.url, "sockets-a", 1);
    const answers = [];
    sub.on("message", (_ch, m) => {
      const r = JSON.parse(m);
      if (r.requestId === "raw-1") answers.push(r);
    });
    await sub.subscribe("socket.io-response#/realtime#");
    await pub.publish("socket.io-request#/realtime#", JSON.stringify({ uid: "raw", requestId: "raw-1", type: 0, rooms: ["event_1"] }));
    // Two Switchboard nodes and the Node server answer.
    await until("three answers", () => answers.length >= 3);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(answers.length, 3, JSON.stringify(answers));
    const ids = answers.flatMap((r) => r.sockets);
    assert.ok(ids.includes(ca.id), JSON.stringify(answers));
  });

  it("socketsJoin, socketsLeave and disconnectSockets act on Switchboard sockets", T, async (t) => {
    const [a, b] = nodes;
    const ca = await client(t, a.url, "join-a", 1);
    const cb = await client(t, b.url, "join-b");
    node.realtime.in(ca.id).socketsJoin("vip");
    const vip = async () => (await node.realtime.in("vip").fetchSockets()).map((s) => s.id);
    await until("ca joined vip", async () => (await vip()).includes(ca.id));
    assert.deepEqual(await vip(), [ca.id]);
    // A broadcast from the Node server to the new room reaches the Switchboard client.
    const got = [];
    ca.on("vip-news", (x) => got.push(x));
    cb.on("vip-news", (x) => got.push(x));
    node.realtime.to("vip").emit("vip-news", 1);
    await until("vip news", () => got.length === 1);
    // By socket id (the remote socket's join).
    const [remoteB] = await node.realtime.in(cb.id).fetchSockets();
    remoteB.join("vip");
    await until("cb joined vip", async () => (await vip()).length === 2);
    node.realtime.in("vip").socketsLeave("vip");
    await until("vip empty", async () => (await vip()).length === 0);

    const gone = new Promise((r) => cb.once("disconnect", r));
    node.realtime.in(cb.id).disconnectSockets();
    assert.equal(await gone, "io server disconnect");
    assert.ok(ca.connected, "the other node's socket stays");
    const [remoteA] = await node.realtime.in(ca.id).fetchSockets();
    const goneA = new Promise((r) => ca.once("disconnect", r));
    remoteA.disconnect(true);
    assert.equal(await goneA, "io server disconnect");
  });

  it("serverSideEmit with acks gets one answer per Switchboard node", T, async () => {
    const answers = await node.realtime.serverSideEmitWithAck("hello", { n: 1 });
    assert.deepEqual(answers.map((x) => x.node).sort(), ["ra", "rb"]);
    node.realtime.serverSideEmit("fire-and-forget", 2); // no ack: nothing to wait for.
  });

  it("emitWithAck from the Node server counts and collects every client on every node", T, async (t) => {
    const [a, b] = nodes;
    await client(t, a.url, "ack-a", 1);
    await client(t, b.url, "ack-b", 1);
    await client(t, b.url, "ack-b2", 2);
    const answers = await node.realtime.to("event_1").timeout(3000).emitWithAck("q", 7);
    assert.deepEqual(answers.sort(), ["ack-a:7", "ack-b:7"]);
    // A room with nobody in it: zero clients, answered at once by every node.
    assert.deepEqual(await node.realtime.to("nobody").timeout(3000).emitWithAck("q", 8), []);
  });

  it("bad requests are counted and dropped; the nodes keep answering", T, async (t) => {
    const { Redis } = await import("ioredis");
    const r = new Redis(redis.port, "127.0.0.1");
    t.after(() => r.disconnect());
    const [a] = nodes;
    const name = 'switchboard_cluster_dropped_total{reason="request"}';
    const before = await metric(a, name);
    const ch = "socket.io-request#/realtime#";
    const bad = [
      Buffer.from("{not json"),
      Buffer.from([0xc1, 0xff]),
      Buffer.from(JSON.stringify({ type: 99, requestId: "x" })),
      Buffer.from(JSON.stringify({ requestId: "x" })),
      Buffer.from(JSON.stringify({ type: 2, requestId: "x" })), // REMOTE_JOIN without sid
      Buffer.concat([Buffer.alloc(200, 0x91), Buffer.from([0xc0])]), // 200 levels deep
      Buffer.from("{" + "x".repeat(2 * 1024 * 1024)), // oversized
    ];
    for (const m of bad) await r.publish(ch, m);
    await until("bad requests counted", async () => (await metric(a, name)) >= before + bad.length);
    const c = await client(t, a.url, "after-bad", 2);
    const listed = await node.realtime.in(c.id).fetchSockets();
    assert.deepEqual(listed.map((s) => s.id), [c.id]);
  });
});

/** Calls Switchboard's sockets API on node `n`. */
async function api(n, method, path, body) {
  const res = await fetch(`${n.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** Puts sockets into `room` with the Node server's socketsJoin (tested above). */
async function into(room, ...sockets) {
  await node.realtime.in(sockets.map((s) => s.id)).socketsJoin(room);
  await until(`${room} joined`, async () => (await node.realtime.in(room).fetchSockets()).length === sockets.length);
}

describe("the same operations from Switchboard's side (the sockets API)", { skip: skip() }, () => {
  it("fetch, join, leave and disconnect reach every node, the Node server's sockets included", T, async (t) => {
    const [a, b] = nodes;
    const ca = await client(t, a.url, "ours-a");
    const cb = await client(t, b.url, "ours-b");
    const cn = await client(t, node.url, "ours-n");
    await into("event_7", ca, cb, cn);
    const other = await client(t, b.url, "ours-other");
    await into("event_8", other);

    const listed = await api(a, "GET", "/api/sockets?room=event_7");
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    assert.equal(listed.body.missing, 0);
    assert.deepEqual(listed.body.sockets.map((s) => s.id).sort(), [ca.id, cb.id, cn.id].sort());
    const fromB = listed.body.sockets.find((s) => s.id === cb.id);
    assert.ok(fromB.rooms.includes("event_7"));
    assert.equal(fromB.data.user, "ours-b");

    // Join: the sockets of event_7 (on A, on B, on the Node server) into "vip-7".
    const joined = await api(a, "POST", "/api/sockets/join", { rooms: ["event_7"], to: ["vip-7"] });
    assert.deepEqual(joined.body, { matchedHere: 1, relayed: true });
    await until("every event_7 socket in vip-7", async () => {
      const v = await api(b, "GET", "/api/sockets?room=vip-7");
      return v.body.sockets.length === 3;
    });
    const nodeSide = await node.realtime.in("vip-7").fetchSockets();
    assert.deepEqual(nodeSide.map((s) => s.id).sort(), [ca.id, cb.id, cn.id].sort());
    // Leave, with an except: the Node server's socket stays.
    const left = await api(b, "POST", "/api/sockets/leave", { rooms: ["vip-7"], except: [cn.id], to: ["vip-7"] });
    assert.equal(left.status, 200);
    await until("only the Node socket left in vip-7", async () => {
      const v = await api(a, "GET", "/api/sockets?room=vip-7");
      return v.body.sockets.length === 1 && v.body.sockets[0].id === cn.id;
    });

    // Disconnect everything in event_7 on every node; the socket in event_8 stays.
    const gone = [ca, cb, cn].map((c) => new Promise((r) => c.once("disconnect", r)));
    const d = await api(b, "POST", "/api/sockets/disconnect", { rooms: ["event_7"] });
    assert.equal(d.status, 200);
    await Promise.all(gone);
    assert.equal(other.connected, true);
  });

  it("server-side emit with acks answers once per other server, Node and Switchboard", T, async () => {
    const [a] = nodes;
    node.realtime.on("ask-servers", (x, cb) => cb({ from: "node", x }));
    const r = await api(a, "POST", "/api/server-side-emit", { event: "ask-servers", args: [5], ackTimeoutMs: 3000 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.missing, 0);
    const answers = r.body.responses.map((x) => JSON.stringify(x)).sort();
    assert.deepEqual(answers, [JSON.stringify({ from: "node", x: 5 }), JSON.stringify({ node: "rb" })].sort());
    // Without acks: nothing to wait for.
    const f = await api(a, "POST", "/api/server-side-emit", { event: "fire", args: [] });
    assert.deepEqual(f.body, { responses: [], missing: 0 });
  });

  it("emit with acks counts and collects every client on every node", T, async (t) => {
    const [a, b] = nodes;
    await into("event_9", await client(t, a.url, "acks-a"), await client(t, b.url, "acks-b"), await client(t, node.url, "acks-n"));
    const r = await api(b, "POST", "/api/emit-with-ack", { rooms: ["event_9"], event: "q", args: [1], timeoutMs: 3000 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.clients, 3);
    assert.equal(r.body.missingAcks, 0);
    assert.equal(r.body.missingNodes, 0);
    assert.deepEqual(r.body.acks.sort(), ["acks-a:1", "acks-b:1", "acks-n:1"]);
  });

  it("a node that cannot answer is reported missing, within the timeout", T, async (t) => {
    const [a, b] = nodes;
    b.signal("SIGSTOP");
    t.after(() => b.signal("SIGCONT"));
    const started = Date.now();
    const r = await api(a, "GET", "/api/sockets?timeoutMs=500");
    assert.equal(r.status, 200);
    assert.equal(r.body.missing, 1, JSON.stringify(r.body));
    assert.ok(Date.now() - started < 3000);
    b.signal("SIGCONT");
    await waitFleet(nodes);
  });

  it("bad input is a 400 that names the problem, and changes nothing", T, async (t) => {
    const [a] = nodes;
    const keep = await client(t, a.url, "bad-input");
    await into("event_10", keep);
    const cases = [
      ["GET", "/api/sockets?timeoutMs=0", undefined, /timeoutMs/],
      ["GET", "/api/sockets?timeoutMs=60001", undefined, /timeoutMs/],
      ["GET", "/api/sockets?timeoutMs=abc", undefined, /timeoutMs/],
      ["GET", "/api/sockets?colour=red", undefined, /unknown parameter/],
      ["GET", `/api/sockets?room=${"x".repeat(300)}`, undefined, /rooms/],
      ["POST", "/api/sockets/join", { to: [] }, /at least one room/],
      ["POST", "/api/sockets/join", { rooms: ["event_10"] }, /invalid body/],
      ["POST", "/api/sockets/join", { to: ["a\u0001b"] }, /to:/],
      ["POST", "/api/sockets/join", { to: ["x"], rooms: Array.from({ length: 101 }, (_, i) => `r${i}`) }, /at most 100/],
      ["POST", "/api/sockets/leave", "{not json", /invalid body/],
      ["POST", "/api/sockets/disconnect", { rooms: ["event_10"], close: "yes" }, /invalid body/],
      ["POST", "/api/sockets/disconnect", { rooms: ["event_10"], everyone: true }, /invalid body/],
      ["POST", "/api/server-side-emit", { event: "connect" }, /reserved/],
      ["POST", "/api/server-side-emit", { event: "" }, /event must be/],
      ["POST", "/api/server-side-emit", { event: "x", ackTimeoutMs: 0 }, /timeoutMs/],
      ["POST", "/api/emit-with-ack", { event: "q", timeoutMs: 999999 }, /timeoutMs/],
      ["POST", "/api/emit-with-ack", { rooms: "event_10", event: "q" }, /invalid body/],
    ];
    for (const [method, path, body, why] of cases) {
      const r = await api(a, method, path, body);
      assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)} -> ${r.status} ${JSON.stringify(r.body)}`);
      assert.match(r.body.error, why, `${path}: ${r.body.error}`);
    }
    const noKey = await fetch(`${a.url}/api/sockets`);
    assert.equal(noKey.status, 401);
    // Nothing moved: the client is still connected and in its room only.
    assert.equal(keep.connected, true);
    const listed = await api(a, "GET", "/api/sockets?room=event_10");
    assert.deepEqual(listed.body.sockets.map((s) => s.id), [keep.id]);
    assert.deepEqual(listed.body.sockets[0].rooms.sort(), [keep.id, "event_10", "user:bad-input"].sort());
  });
});

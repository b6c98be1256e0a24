// The Node adapter's request/response protocol across real processes: two Switchboard
// nodes and a Node socket.io 4.8 server with @socket.io/redis-adapter on a private
// Redis. The Node server's fetchSockets, socketsJoin/Leave, disconnectSockets,
// serverSideEmit and emitWithAck act on Switchboard's sockets as on its own.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startNode, startNodeServer, startRedis, until, waitFleet } from "../lib/cluster.mjs";

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

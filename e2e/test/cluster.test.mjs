// Cluster mode with real processes on one (private) Redis: three Switchboard nodes and a
// Node socket.io 4.8 server with the official @socket.io/redis-adapter.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { KEY, getJson, publish, startNode, startNodeServer, startRedis, until, waitFleet } from "../lib/cluster.mjs";

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

async function metric(node, name) {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

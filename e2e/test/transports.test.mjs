// One room fabric for every client, with real client libraries: the official
// socket.io-client, the `ws` package (plain WebSocket at /ws) and the browser-compatible
// `eventsource` package (SSE at /events), against `switchboard serve`.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { startServer } from "../lib/server.mjs";

const T = { timeout: 30000 };
const KEY = "e2e-key";
let server;

before(async () => {
  if (process.env.E2E_SERVER === "reference") return;
  server = await startServer({
    args: ["serve", "--data-dir", "memory", "--set", "coalesce_ms=0", "--set", `api_key=${KEY}`],
  });
});
after(async () => server && (await server.stop()));

const skip = () => process.env.E2E_SERVER === "reference" && "Switchboard-only transports";

async function publish(body, path = "/api/publish") {
  const res = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json;
}

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** A /ws client that collects frames; `next(pred)` waits for a matching one. */
async function wsClient(t, userId) {
  const ws = new WebSocket(`${server.url.replace("http", "ws")}/ws?userId=${userId}`);
  t.after(() => ws.terminate());
  const frames = [];
  const waiters = [];
  ws.on("message", (data) => {
    const f = JSON.parse(data.toString());
    frames.push(f);
    for (const w of [...waiters]) if (w.pred(f)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(f); }
  });
  const next = (pred, what = "frame") =>
    within(5000, what, new Promise((resolve) => {
      const seen = frames.find(pred);
      if (seen) return resolve(seen);
      waiters.push({ pred, resolve });
    }));
  await next((f) => f.event === "connected", "connected");
  const send = (obj) => ws.send(JSON.stringify(obj));
  return { ws, frames, next, send };
}

/** An EventSource whose underlying connection the test can drop (the library reconnects). */
function droppableEventSource(t, url) {
  const requests = [];
  let drop = () => {};
  const es = new EventSource(url, {
    fetch: async (input, init) => {
      requests.push({ lastEventId: new Headers(init.headers).get("last-event-id") });
      const res = await fetch(input, init);
      const reader = res.body.getReader();
      const body = new ReadableStream({
        start(controller) {
          drop = () => { reader.cancel().catch(() => {}); try { controller.error(new Error("dropped")); } catch {} };
        },
        async pull(controller) {
          try {
            const { done, value } = await reader.read();
            if (done) controller.close(); else controller.enqueue(value);
          } catch (e) { try { controller.error(e); } catch {} }
        },
      });
      return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    },
  });
  t.after(() => es.close());
  const events = [];
  const on = (type) => es.addEventListener(type, (e) => events.push({ type, id: e.lastEventId, data: JSON.parse(e.data) }));
  return { es, events, on, requests, drop: () => drop() };
}

async function until(what, f, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (f()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe("one fabric, three transports", { skip: skip() }, () => {
  it("one HTTP publish reaches socket.io-client, ws and EventSource clients", T, async (t) => {
    const sio = io(`${server.url}/realtime`, { query: { userId: "sio-user" }, transports: ["websocket"], forceNew: true, reconnection: false });
    t.after(() => sio.close());
    await within(5000, "sio connected", new Promise((r) => sio.once("connected", r)));
    const joined = await sio.timeout(5000).emitWithAck("join-event-room", { eventId: 2 });
    assert.equal(joined.success, true);

    const w = await wsClient(t, "ws-user");
    w.send({ action: "join", roomId: "event_2", ack: 1 });
    await w.next((f) => f.ack === 1, "join ack");

    const sse = droppableEventSource(t, `${server.url}/events?channels=event_2&userId=sse-user`);
    sse.on("connected");
    sse.on("ticket-purchased");
    await until("sse connected", () => sse.events.some((e) => e.type === "connected"));

    const gotSio = new Promise((r) => sio.once("ticket-purchased", r));
    const p = await publish({ room: "event_2", event: "ticket-purchased", data: { orderId: "o-1", seats: 3 } });
    assert.equal(p.delivered, 3);
    assert.deepEqual(await within(5000, "sio event", gotSio), { orderId: "o-1", seats: 3 });
    const wf = await w.next((f) => f.event === "ticket-purchased", "ws event");
    assert.deepEqual(wf, { event: "ticket-purchased", data: { orderId: "o-1", seats: 3 }, room: "event_2", offset: p.offset });
    await until("sse event", () => sse.events.some((e) => e.type === "ticket-purchased"));
    const se = sse.events.find((e) => e.type === "ticket-purchased");
    assert.deepEqual(se, { type: "ticket-purchased", id: String(p.offset), data: { orderId: "o-1", seats: 3 } });

    // A user-addressed notification reaches that user's Socket.IO connection too.
    const note = new Promise((r) => sio.once("notification", r));
    await publish({ user: "sio-user", event: "notification", data: { text: "hi" } });
    assert.deepEqual(await within(5000, "user notification", note), { text: "hi" });
  });

  it("an EventSource that drops resumes with Last-Event-ID and gets exactly the missed events", T, async (t) => {
    const sse = droppableEventSource(t, `${server.url}/events?channels=feed&userId=reader`);
    for (const type of ["connected", "tick", "reset"]) sse.on(type);
    await until("connected", () => sse.events.some((e) => e.type === "connected"));
    const sent = [];
    for (let i = 0; i < 3; i++) sent.push({ i, offset: (await publish({ room: "feed", event: "tick", data: { i } })).offset });
    await until("first three", () => sse.events.filter((e) => e.type === "tick").length === 3);

    sse.drop();
    // While it is away (the server asks clients to retry after 2 s): five more.
    for (let i = 3; i < 8; i++) sent.push({ i, offset: (await publish({ room: "feed", event: "tick", data: { i } })).offset });
    await until("reconnected", () => sse.requests.length === 2, 10000);
    assert.equal(sse.requests[1].lastEventId, String(sent[2].offset));
    for (let i = 8; i < 10; i++) sent.push({ i, offset: (await publish({ room: "feed", event: "tick", data: { i } })).offset });
    await until("all ten", () => sse.events.filter((e) => e.type === "tick").length >= 10, 10000);
    await new Promise((r) => setTimeout(r, 200));
    const ticks = sse.events.filter((e) => e.type === "tick");
    assert.deepEqual(ticks.map((e) => e.data.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "each once, in order");
    assert.deepEqual(ticks.map((e) => e.id), sent.map((s) => String(s.offset)));
    assert.equal(sse.events.filter((e) => e.type === "reset").length, 0);
  });

  it("ws clients chat in a room with server-stamped senders and presence", T, async (t) => {
    const a = await wsClient(t, "ann");
    const b = await wsClient(t, "ben");
    a.send({ action: "join", roomId: "chat-1", ack: 1 });
    await a.next((f) => f.ack === 1);
    b.send({ action: "join", roomId: "chat-1", ack: 1 });
    await b.next((f) => f.ack === 1);
    const hello = await a.next((f) => f.event === "member_joined");
    assert.deepEqual(hello.data, { roomId: "chat-1", userId: "ben" });
    b.send({ action: "message", roomId: "chat-1", content: "hello ann", ack: 2 });
    const m = await a.next((f) => f.event === "message");
    assert.equal(m.data.senderId, "ben");
    assert.equal(m.data.content, "hello ann");
    assert.equal(typeof m.data.timestamp, "number");
    const room = await (await fetch(`${server.url}/api/rooms/chat-1`, { headers: { authorization: `Bearer ${KEY}` } })).json();
    assert.deepEqual(room.users, ["ann", "ben"]);
    b.ws.close();
    const bye = await a.next((f) => f.event === "member_left");
    assert.equal(bye.data.userId, "ben");
  });
});

// Chat (issue 16) with real clients: the official socket.io-client on `/chat`, the `ws`
// package on `/ws` (chat actions), the `eventsource` package on `/events` (read-only),
// and the HTTP API; persistence across a crash of the server.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { execFileSync } from "node:child_process";
import { startServer } from "../lib/server.mjs";
import { startRedis, startNode, waitFleet } from "../lib/cluster.mjs";

const T = { timeout: 30000 };
const KEY = "chat-key";
const MAX = 64;
let server;
let dataDir;

const serveArgs = (dir) => [
  "serve", "--data-dir", dir, "--set", `api_key=${KEY}`,
  "--set", `max_message_bytes=${MAX}`, "--set", "presence_idle_secs=2",
  "--set", "private_room_prefixes=vip-",
];

before(async () => {
  if (process.env.E2E_SERVER === "reference") return;
  dataDir = mkdtempSync(path.join(os.tmpdir(), "sb-chat-"));
  server = await startServer({ args: serveArgs(dataDir) });
});
after(async () => {
  if (server) await server.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

const skip = () => process.env.E2E_SERVER === "reference" && "Switchboard-only namespace";
let seq = 0;
const uniq = (p) => `${p}-${process.pid}-${++seq}`;

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** A /chat client that records every event; `next(event, pred)` waits for one. */
async function chatClient(t, userId, url = server.url) {
  const socket = io(`${url}/chat`, { query: { userId }, transports: ["websocket"], forceNew: true, reconnection: false });
  t.after(() => socket.close());
  const seen = []; // every event, for counting
  const queue = []; // events no waiter took yet
  const waiters = [];
  socket.onAny((event, data) => {
    seen.push({ event, data });
    const w = waiters.find((w) => w.event === event && w.pred(data));
    if (w) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(data);
    } else {
      queue.push({ event, data });
    }
  });
  const next = (event, pred = () => true, ms = 5000) =>
    within(ms, `${userId}: ${event}`, new Promise((resolve) => {
      const i = queue.findIndex((s) => s.event === event && pred(s.data));
      if (i >= 0) return resolve(queue.splice(i, 1)[0].data);
      waiters.push({ event, pred, resolve });
    }));
  const ask = (event, data) => socket.timeout(5000).emitWithAck(event, data);
  await next("connected");
  return { socket, seen, next, ask, userId };
}

async function api(method, p, body) {
  const res = await fetch(`${server.url}${p}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** A room of `owner` with `members`, every client joined. */
async function room(clients, opts = {}) {
  const [owner, ...others] = clients;
  const roomId = uniq(opts.prefix ?? "g");
  const created = await owner.ask("room:create", { roomId, type: "group", members: others.map((c) => c.userId), ...opts.extra });
  assert.equal(created.success, true, JSON.stringify(created));
  for (const c of clients) {
    const j = await c.ask("join", roomId);
    assert.equal(j.success, true, JSON.stringify(j));
  }
  return roomId;
}

describe("chat on /chat", { skip: skip() }, () => {
  it("join, messages with the catalogue's schema, idempotent sends, user_joined once per user", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const bob = await chatClient(t, uniq("bob"));
    const roomId = uniq("g");
    const created = await ana.ask("room:create", { roomId, type: "group", name: "Team", members: [bob.userId] });
    assert.equal(created.room.roomId, roomId);
    assert.equal(created.room.type, "group");
    await bob.next("room:added", (r) => r.roomId === roomId);

    const jb = await bob.ask("join", { roomId });
    assert.deepEqual([jb.success, jb.roomId, jb.unread], [true, roomId, 0]);
    assert.deepEqual(jb.members.map((m) => [m.userId, m.role]).sort(), [[ana.userId, "owner"], [bob.userId, "member"]].sort());
    await ana.ask("join", roomId);
    const joined = await bob.next("user_joined");
    assert.deepEqual(joined, { userId: ana.userId, roomId });
    // A second tab of the same user is not news.
    const ana2 = await chatClient(t, ana.userId);
    await ana2.ask("join", roomId);

    const ack = await ana.ask("message", { roomId, content: "hello", clientMsgId: "c-1", metadata: { k: 1 } });
    assert.equal(ack.success, true);
    const m = ack.message;
    assert.deepEqual(
      Object.keys(m).sort(),
      ["clientMsgId", "content", "createdAt", "id", "metadata", "readBy", "roomId", "senderId", "status", "type"],
    );
    assert.deepEqual([m.roomId, m.senderId, m.content, m.type, m.status], [roomId, ana.userId, "hello", "text", "delivered"]);
    assert.deepEqual(m.readBy, []);
    assert.equal(typeof m.id, "string");
    assert.ok(Math.abs(m.createdAt - Date.now()) < 60_000);
    assert.deepEqual(await bob.next("message"), m);
    assert.deepEqual(await ana.next("message"), m, "the sender hears its own message");

    // The offline queue retries: the first message comes back, nothing new is stored or sent.
    const again = await ana.ask("message", { roomId, content: "hello", clientMsgId: "c-1" });
    assert.equal(again.duplicate, true);
    assert.equal(again.message.id, m.id);
    const after = await ana.ask("message", { roomId, content: "second" });
    const got = await bob.next("message");
    assert.equal(got.id, after.message.id, "no duplicate reached bob before the next message");
    const h = await bob.ask("history", { roomId });
    assert.deepEqual(h.messages.map((x) => x.content), ["hello", "second"]);
    assert.equal(bob.seen.filter((s) => s.event === "user_joined").length, 1, "ana joined once for bob (two tabs)");
  });

  it("typing is relayed to the others, throttled, and stops after 5 s quiet or on leave", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const bob = await chatClient(t, uniq("bob"));
    const roomId = await room([ana, bob]);
    const sent = Date.now();
    assert.equal((await bob.ask("typing", roomId)).success, true);
    assert.deepEqual(await ana.next("typing"), { userId: bob.userId, roomId });
    const flood = await bob.ask("typing", { roomId });
    assert.equal(flood.success, false);
    assert.match(flood.error, /throttled/i);
    const stop = await ana.next("typing:stop", () => true, 8000);
    assert.deepEqual(stop, { userId: bob.userId, roomId });
    const quiet = Date.now() - sent;
    assert.ok(quiet >= 4900 && quiet < 7500, `typing:stop after ${quiet} ms`);
    assert.equal(bob.seen.filter((s) => s.event.startsWith("typing")).length, 0, "never to the typist");

    await bob.ask("typing:start", { roomId });
    await ana.next("typing:start", (d) => d.userId === bob.userId);
    await bob.ask("leave", { roomId });
    assert.deepEqual(await ana.next("typing:stop", () => true, 1000), { userId: bob.userId, roomId });
    assert.deepEqual(await ana.next("user_left"), { userId: bob.userId, roomId });
    // Typing in a room one has left is refused.
    assert.equal((await bob.ask("typing", roomId)).success, false);
  });

  it("read receipts move readBy and status; history pages newest last", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const bob = await chatClient(t, uniq("bob"));
    const roomId = await room([ana, bob]);
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await ana.ask("message", { roomId, content: `m${i}` })).message.id);

    const r = await bob.ask("read", { roomId, messageId: ids[2] });
    assert.equal(r.success, true);
    const receipt = await ana.next("read");
    assert.deepEqual([receipt.roomId, receipt.userId, receipt.messageId], [roomId, bob.userId, ids[2]]);
    assert.equal(typeof receipt.readAt, "number");

    const page = await ana.ask("history", { roomId, limit: 2 });
    assert.deepEqual(page.messages.map((m) => m.content), ["m3", "m4"]);
    assert.equal(page.hasMore, true);
    const older = await ana.ask("history", { roomId, before: page.messages[0].id, limit: 2 });
    assert.deepEqual(older.messages.map((m) => m.content), ["m1", "m2"]);
    assert.deepEqual(older.messages.map((m) => m.status), ["read", "read"]);
    assert.deepEqual(older.messages[1].readBy, [bob.userId]);
    assert.deepEqual(page.messages.map((m) => m.status), ["delivered", "delivered"]);
    const oldest = await ana.ask("history", { roomId, before: older.messages[0].id, limit: 100 });
    assert.deepEqual([oldest.messages.map((m) => m.content), oldest.hasMore], [["m0"], false]);

    // The unread count on join and in the room list.
    const list = await bob.ask("rooms", {});
    assert.equal(list.rooms.find((x) => x.roomId === roomId).unread, 2);
  });

  it("edits and deletes by the sender (deletes by an admin too), announced to the room", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const bob = await chatClient(t, uniq("bob"));
    const roomId = await room([ana, bob]);
    const { message } = await bob.ask("message", { roomId, content: "tpyo" });
    const mine = (await ana.ask("message", { roomId, content: "ana's" })).message;

    const notYours = await ana.ask("message:edit", { id: message.id, content: "hacked" });
    assert.deepEqual([notYours.success, notYours.error], [false, "Only the sender can edit a message"]);
    const edited = await bob.ask("message:edit", { id: message.id, content: "typo" });
    assert.equal(edited.message.content, "typo");
    const ev = await ana.next("message:edited");
    assert.deepEqual([ev.id, ev.content, typeof ev.editedAt], [message.id, "typo", "number"]);

    const bobDeletes = await bob.ask("message:delete", { id: mine.id });
    assert.equal(bobDeletes.success, false, "a member cannot delete another's message");
    // ana owns the room: she may delete bob's message.
    const del = await ana.ask("message:delete", { id: message.id });
    assert.equal(del.success, true);
    const gone = await bob.next("message:deleted");
    assert.deepEqual([gone.id, gone.deleted, gone.content], [message.id, true, ""]);
    const h = await ana.ask("history", { roomId });
    assert.deepEqual(h.messages.map((m) => [m.content, !!m.deleted]), [["", true], ["ana's", false]]);
  });

  it("bad input is refused clearly and changes nothing", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const bob = await chatClient(t, uniq("bob"));
    const eve = await chatClient(t, uniq("eve"));
    const roomId = await room([ana, bob]);
    const other = await room([ana, bob]);
    const inOther = (await ana.ask("message", { roomId: other, content: "elsewhere" })).message;
    const first = (await ana.ask("message", { roomId, content: "keep" })).message;
    const secret = uniq("secret");
    await ana.ask("room:create", { roomId: secret, type: "group", private: true });

    const cases = [
      [ana, "message", { roomId, content: "" }, /empty/],
      [ana, "message", { roomId, content: "   " }, /empty/],
      [ana, "message", { roomId, content: "x".repeat(MAX + 1) }, /at most 64 bytes/],
      [ana, "message", { roomId, content: 42 }, /must be a string/],
      [ana, "message", { roomId, content: { html: "<b>" } }, /must be a string/],
      [ana, "message", { roomId: uniq("nowhere"), content: "hi" }, /Unknown room/],
      [eve, "message", { roomId, content: "hi" }, /Not a member/],
      [ana, "message", { roomId, content: "hi", senderId: bob.userId }, /senderId/],
      [ana, "message", { roomId, content: "hi", type: "system" }, /system/],
      [eve, "join", secret, /Not a member/],
      [eve, "join", uniq("nowhere"), /Unknown room/],
      [eve, "history", { roomId }, /Not a member/],
      [ana, "history", { roomId, limit: 0 }, /limit/],
      [ana, "history", { roomId, limit: -1 }, /limit/],
      [ana, "history", { roomId, limit: 10000 }, /limit/],
      [bob, "read", { roomId, messageId: inOther.id }, /is not in room/],
      [bob, "message:edit", { id: first.id, content: "mine now" }, /Only the sender/],
      [ana, "message:edit", { id: first.id, content: "" }, /empty/],
      [ana, "room:create", { roomId, type: "group" }, /already exists/],
      [ana, "room:create", { roomId: "dm:a:b" }, /not created this way/],
      [ana, "room:create", { roomId: "event_7" }, /not created this way/],
      // The room policy applies: a private prefix needs a token that grants it.
      [ana, "room:create", { roomId: "vip-lounge" }, /Not allowed/],
      [ana, "join", "vip-lounge", /Not allowed/],
    ];
    for (const [c, event, data, why] of cases) {
      const ack = await c.ask(event, data);
      assert.equal(ack.success, false, `${event} ${JSON.stringify(data)}`);
      assert.match(ack.error, why, `${event} ${JSON.stringify(data)}: ${ack.error}`);
    }
    // Without an ack the refusal comes as an `error` event.
    eve.socket.emit("message", { roomId, content: "no ack" });
    assert.match((await eve.next("error")).error, /Not a member/);

    const h = await ana.ask("history", { roomId });
    assert.deepEqual(h.messages.map((m) => [m.content, m.senderId, m.editedAt]), [["keep", ana.userId, undefined]]);
    assert.equal(bob.seen.filter((s) => s.event === "message" && s.data.roomId === roomId).length, 1);
    const r = await api("GET", `/api/rooms/${encodeURIComponent(secret)}/messages`);
    assert.deepEqual(r.body.messages, []);
  });

  it("direct rooms are one per pair and private", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const bob = await chatClient(t, uniq("bob"));
    const cy = await chatClient(t, uniq("cy"));
    const a = await ana.ask("room:direct", { userId: bob.userId });
    const b = await bob.ask("room:direct", { userId: ana.userId });
    assert.equal(a.room.roomId, b.room.roomId);
    assert.deepEqual([a.created, b.created, a.room.type, a.room.private], [true, false, "direct", true]);
    const refused = await cy.ask("join", a.room.roomId);
    assert.match(refused.error, /Not a member/);
    assert.equal((await bob.ask("join", a.room.roomId)).success, true);
  });

  it("owners and admins kick members; kicked users leave the room", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const bob = await chatClient(t, uniq("bob"));
    const cy = await chatClient(t, uniq("cy"));
    const roomId = await room([ana, bob, cy]);
    assert.match((await bob.ask("room:kick", { roomId, userId: cy.userId })).error, /owner or admin/);
    assert.equal((await ana.ask("room:role", { roomId, userId: bob.userId, role: "admin" })).success, true);
    assert.equal((await bob.ask("room:kick", { roomId, userId: cy.userId })).success, true);
    await cy.next("room:member_removed", (d) => d.userId === cy.userId);
    await ana.next("user_left", (d) => d.userId === cy.userId);
    assert.match((await cy.ask("message", { roomId, content: "still here?" })).error, /Not a member/);
    assert.match((await bob.ask("room:kick", { roomId, userId: ana.userId })).error, /owner or admin/);
  });

  it("presence: away on request and after presence_idle_secs, offline with lastSeen when the last connection goes", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const bob = await chatClient(t, uniq("bob"));
    await room([ana, bob]);
    const hb = await bob.ask("presence:heartbeat", {});
    assert.deepEqual([hb.success, hb.status], [true, "online"]);
    const chosen = await bob.ask("presence:update", { status: "away" });
    assert.equal(chosen.status, "away");
    const seen = await ana.next("presence:update", (d) => d.userId === bob.userId && d.status === "away");
    assert.equal(typeof seen.lastSeen, "number");
    await bob.ask("presence:update", { status: "online" });
    await ana.next("presence:update", (d) => d.userId === bob.userId && d.status === "online");
    // Idle for presence_idle_secs (2 s here): away by itself.
    await ana.next("presence:update", (d) => d.userId === bob.userId && d.status === "away", 5000);
    assert.match((await bob.ask("presence:update", { status: "busy" })).error, /online or away/);

    bob.socket.close();
    const off = await ana.next("presence:update", (d) => d.userId === bob.userId && d.status === "offline");
    const p = await api("GET", `/api/presence?users=${bob.userId},${ana.userId},${uniq("never")}`);
    assert.equal(p.status, 200);
    assert.deepEqual(p.body[0], { userId: bob.userId, status: "offline", lastSeen: off.lastSeen });
    assert.equal(p.body[1].userId, ana.userId);
    assert.notEqual(p.body[1].status, "offline");
    assert.equal(p.body[2].lastSeen, null);
  });
});

/** A /ws client that collects frames; `next(pred)` waits for one. */
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
  let ackId = 0;
  const ask = async (obj) => {
    const id = ++ackId;
    ws.send(JSON.stringify({ ...obj, ack: id }));
    return (await next((f) => f.ack === id, `${obj.action} ack`)).data;
  };
  return { ws, frames, next, ask };
}

describe("chat on /ws, SSE and HTTP", { skip: skip() }, () => {
  it("/ws actions have the same semantics", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const dave = uniq("dave");
    const roomId = uniq("g");
    await ana.ask("room:create", { roomId, type: "channel" });
    await ana.ask("join", roomId);
    const w = await wsClient(t, dave);
    const joined = await w.ask({ action: "join", roomId });
    assert.equal(joined.success, true);
    assert.ok(joined.members.some((m) => m.userId === dave && m.role === "member"), "a public room takes a new member");
    await ana.next("user_joined", (d) => d.userId === dave);

    const sent = await w.ask({ action: "message", roomId, content: "from ws", clientMsgId: "w1" });
    assert.equal(sent.message.senderId, dave);
    assert.deepEqual(await ana.next("message", (m) => m.senderId === dave), sent.message);
    const frame = await w.next((f) => f.event === "message" && f.data.id === sent.message.id);
    assert.equal(frame.room, roomId);
    assert.equal((await w.ask({ action: "message", roomId, content: "from ws", clientMsgId: "w1" })).duplicate, true);

    await w.ask({ action: "typing", roomId });
    assert.deepEqual(await ana.next("typing"), { userId: dave, roomId });
    // Typing reaches /ws in the catalogue's form too: {action: "typing", userId, roomId}.
    const w2 = await wsClient(t, uniq("erin"));
    await w2.ask({ action: "join", roomId });
    await ana.ask("typing:start", { roomId });
    const typed = await w2.next((f) => f.action === "typing:start");
    assert.deepEqual([typed.userId, typed.roomId, typed.event, typed.data], [ana.userId, roomId, "typing:start", { userId: ana.userId, roomId }]);
    await ana.ask("message", { roomId, content: "to ws" });
    const incoming = await w.next((f) => f.event === "message" && f.data.content === "to ws");
    const read = await w.ask({ action: "read", roomId, messageId: incoming.data.id });
    assert.equal(read.success, true);
    await ana.next("read", (d) => d.userId === dave);
    const h = await w.ask({ action: "history", roomId, limit: 1 });
    assert.deepEqual([h.messages.length, h.messages[0].readBy, h.hasMore], [1, [dave], true]);
    const pres = await w.ask({ action: "presence", status: "away" });
    assert.equal(pres.status, "away");
    await ana.next("presence:update", (d) => d.userId === dave && d.status === "away");

    const bad = await w.ask({ action: "history", roomId, limit: 0 });
    assert.deepEqual([bad.success, /limit/.test(bad.message)], [false, true]);
    // A room that is not a chat room keeps the plain relay.
    const plain = await w.ask({ action: "join", roomId: uniq("plain") });
    assert.deepEqual(Object.keys(plain).sort(), ["roomId", "success"]);
    w.ws.close();
    await ana.next("user_left", (d) => d.userId === dave);
  });

  it("SSE listens to a chat room; a private one only for members", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const roomId = uniq("secret");
    await ana.ask("room:create", { roomId, private: true, members: ["sse-reader"] });
    const refused = await fetch(`${server.url}/events?channels=${roomId}&userId=${uniq("eve")}`);
    assert.equal(refused.status, 403);
    assert.match((await refused.json()).error, /Not a member/);

    const es = new EventSource(`${server.url}/events?channels=${roomId}&userId=sse-reader`);
    t.after(() => es.close());
    const events = [];
    for (const type of ["connected", "message", "message:edited"]) {
      es.addEventListener(type, (e) => events.push({ type, data: JSON.parse(e.data) }));
    }
    await within(5000, "sse connected", (async () => { while (!events.length) await new Promise((r) => setTimeout(r, 20)); })());
    const { message } = await ana.ask("message", { roomId, content: "to sse" });
    await ana.ask("message:edit", { id: message.id, content: "edited for sse" });
    await within(5000, "sse events", (async () => { while (events.length < 3) await new Promise((r) => setTimeout(r, 20)); })());
    assert.deepEqual(events.slice(1).map((e) => [e.type, e.data.content]), [["message", "to sse"], ["message:edited", "edited for sse"]]);
  });

  it("HTTP: system messages, history, presence; bad requests change nothing", T, async (t) => {
    const ana = await chatClient(t, uniq("ana"));
    const roomId = await room([ana]);
    const r = await api("POST", `/api/rooms/${roomId}/messages`, { content: "Maintenance at 5", type: "system" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual([r.body.message.senderId, r.body.message.type], ["system", "system"]);
    assert.deepEqual(await ana.next("message", (m) => m.type === "system"), r.body.message);
    const dup = await api("POST", `/api/rooms/${roomId}/messages`, { senderId: "billing", content: "x", clientMsgId: "b1" });
    const dup2 = await api("POST", `/api/rooms/${roomId}/messages`, { senderId: "billing", content: "x", clientMsgId: "b1" });
    assert.deepEqual([dup2.body.duplicate, dup2.body.message.id], [true, dup.body.message.id]);

    for (const [body, status] of [
      [{ content: "" }, 400],
      [{ content: "x".repeat(MAX + 1) }, 413],
      [{ content: 5 }, 400],
      [{ content: "hi", type: "video" }, 400],
      [{ content: "hi", extra: 1 }, 400],
    ]) {
      const res = await api("POST", `/api/rooms/${roomId}/messages`, body);
      assert.equal(res.status, status, JSON.stringify([body, res.body]));
      assert.ok(res.body.error);
    }
    assert.equal((await api("POST", `/api/rooms/${uniq("none")}/messages`, { content: "hi" })).status, 404);
    for (const q of ["limit=0", "limit=-1", "limit=10000", "before=abc"]) {
      assert.equal((await api("GET", `/api/rooms/${roomId}/messages?${q}`)).status, 400, q);
    }
    const page = await api("GET", `/api/rooms/${roomId}/messages?limit=100`);
    assert.deepEqual(page.body.messages.map((m) => m.content), ["Maintenance at 5", "x"]);
    const unauth = await fetch(`${server.url}/api/rooms/${roomId}/messages`);
    assert.equal(unauth.status, 401);
  });
});

describe("chat persistence", { skip: skip() }, () => {
  it("acknowledged messages, rooms and read positions survive a crash (SIGKILL)", T, async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "sb-chat-crash-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    let s = await startServer({ args: serveArgs(dir) });
    t.after(() => s.stop());
    const ana = await chatClient(t, "ana-p", s.url);
    const bob = await chatClient(t, "bob-p", s.url);
    const roomId = "persisted";
    await ana.ask("room:create", { roomId, private: true, members: ["bob-p"] });
    await ana.ask("join", roomId);
    await bob.ask("join", roomId);
    const acked = [];
    for (let i = 0; i < 20; i++) acked.push((await ana.ask("message", { roomId, content: `n${i}`, clientMsgId: `p${i}` })).message);
    await bob.ask("read", { roomId, messageId: acked[9].id });
    // Then a burst that the store commits in groups, killed while part of it is still
    // on its way: every acknowledged message of it must survive too.
    const burst = [];
    for (let i = 0; i < 40; i++) {
      ana.ask("message", { roomId, content: `b${i}`, clientMsgId: `b${i}` })
        .then((a) => a.message && burst.push(a.message), () => {});
    }
    const deadline = Date.now() + 5000;
    while (burst.length < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
    assert.ok(burst.length >= 10, `only ${burst.length} acks of the burst in 5 s`);
    await s.stop("SIGKILL");
    const ackedBurst = new Set(burst.map((m) => m.id));

    s = await startServer({ args: serveArgs(dir), port: s.port });
    const ana2 = await chatClient(t, "ana-p", s.url);
    const all = await ana2.ask("history", { roomId, limit: 100 });
    const fromBurst = all.messages.slice(acked.length);
    for (const id of ackedBurst) assert.ok(fromBurst.some((m) => m.id === id), `acknowledged ${id} lost`);
    // What survived of the burst is a prefix of it, in the order sent, each message once.
    assert.deepEqual(fromBurst.map((m) => m.content), fromBurst.map((_, i) => `b${i}`));
    const h = { messages: all.messages.slice(0, acked.length) };
    assert.deepEqual(h.messages.map((m) => m.id), acked.map((m) => m.id));
    assert.equal(h.messages[9].status, "read");
    assert.equal(h.messages[10].status, "delivered");
    // The offline queue's retry after the restart is still recognized.
    const retry = await ana2.ask("message", { roomId, content: "n19", clientMsgId: "p19" });
    assert.deepEqual([retry.duplicate, retry.message.id], [true, acked[19].id]);
    const eve = await chatClient(t, "eve-p", s.url);
    assert.match((await eve.ask("join", roomId)).error, /Not a member/);
  });
});

/** A fresh schema in PostgreSQL (127.0.0.1:5432, database `test`), dropped after `t`. */
function pgSchema(t) {
  const name = `sb_chat_e2e_${process.pid}_${Date.now()}`;
  const psql = (sql) => execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", sql], { stdio: "pipe" });
  psql(`CREATE SCHEMA ${name}`);
  t.after(() => psql(`DROP SCHEMA ${name} CASCADE`));
  return `postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D${name}`;
}

describe("chat on PostgreSQL, two nodes", { skip: skip() }, () => {
  it("two server processes share rooms, history and idempotency; the cluster fans messages out", T, async (t) => {
    const dbUrl = pgSchema(t);
    const redis = await startRedis();
    t.after(() => redis.close());
    const extra = ["--set", `database_url=${dbUrl}`];
    const a = await startNode(redis, "chat-a", extra);
    t.after(() => a.stop());
    const b = await startNode(redis, "chat-b", extra);
    t.after(() => b.stop());
    await waitFleet([a, b]);

    const ana = await chatClient(t, "ana-pg", a.url);
    const bob = await chatClient(t, "bob-pg", b.url);
    const roomId = uniq("pg");
    await ana.ask("room:create", { roomId, private: true, members: ["bob-pg"] });
    assert.equal((await ana.ask("join", roomId)).success, true);
    const jb = await bob.ask("join", roomId);
    assert.equal(jb.success, true, "node b knows the room and bob's membership");
    const sent = await ana.ask("message", { roomId, content: "across", clientMsgId: "x1" });
    assert.deepEqual(await bob.next("message"), sent.message, "fanned out through the cluster");
    const h = await bob.ask("history", { roomId });
    assert.deepEqual(h.messages.map((m) => m.id), [sent.message.id]);

    // The same user's retry through the other node is the same message.
    const ana2 = await chatClient(t, "ana-pg", b.url);
    const retry = await ana2.ask("message", { roomId, content: "across", clientMsgId: "x1" });
    assert.deepEqual([retry.duplicate, retry.message.id], [true, sent.message.id]);
    await bob.ask("read", { roomId, messageId: sent.message.id });
    const again = await ana.ask("history", { roomId });
    assert.deepEqual(again.messages[0].readBy, ["bob-pg"]);
    const eve = await chatClient(t, "eve-pg", a.url);
    assert.match((await eve.ask("join", roomId)).error, /Not a member/);

    // A crash of node a loses nothing acknowledged.
    await a.stop("SIGKILL");
    const h2 = await bob.ask("history", { roomId });
    assert.deepEqual(h2.messages.map((m) => m.content), ["across"]);
  });
});

describe("chat across two nodes (PostgreSQL and Redis)", { skip: skip() }, () => {
  const count = (c, event, pred = () => true) => c.seen.filter((s) => s.event === event && pred(s.data)).length;
  const presence = async (node, users) => {
    const res = await fetch(`${node.url}/api/presence?users=${users.join(",")}`, { headers: { authorization: "Bearer cluster-e2e-key" } });
    assert.equal(res.status, 200);
    return Object.fromEntries((await res.json()).map((p) => [p.userId, p]));
  };
  /** Waits until both nodes' /api/presence tell `user` the same `status` (and lastSeen). */
  const agree = async (nodes, user, status) => {
    const deadline = Date.now() + 5000;
    for (;;) {
      const seen = await Promise.all(nodes.map((n) => presence(n, [user])));
      const ps = seen.map((s) => s[user]);
      if (ps.every((p) => p.status === status) && ps.every((p) => p.lastSeen === ps[0].lastSeen)) return ps[0];
      if (Date.now() > deadline) assert.fail(`${user} not ${status} on every node: ${JSON.stringify(ps)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  it("messages, typing, user_joined/left once per user, presence on both nodes, a killed node's users offline", { timeout: 60000 }, async (t) => {
    const dbUrl = pgSchema(t);
    const redis = await startRedis();
    t.after(() => redis.close());
    const extra = ["--set", `database_url=${dbUrl}`, "--set", "presence_idle_secs=600"];
    const a = await startNode(redis, "chat-x", extra);
    t.after(() => a.stop("SIGKILL"));
    const b = await startNode(redis, "chat-y", extra);
    t.after(() => b.stop());
    await waitFleet([a, b]);

    const id = uniq("x");
    const [ana, carl, dan] = ["ana", "carl", "dan"].map((u) => `${u}-${id}`);
    const anaA = await chatClient(t, ana, a.url);
    const bob = await chatClient(t, `bob-${id}`, b.url);
    const roomId = uniq("fleet");
    const created = await anaA.ask("room:create", { roomId, type: "group", members: [bob.userId, carl, dan] });
    assert.equal(created.success, true, JSON.stringify(created));
    assert.equal((await bob.ask("join", roomId)).success, true);

    // ana on node a, then on node b too: bob (on b) hears user_joined once.
    await anaA.ask("join", roomId);
    await bob.next("user_joined", (d) => d.userId === ana);
    const anaB = await chatClient(t, ana, b.url);
    const jb = await anaB.ask("join", roomId);
    assert.deepEqual(jb.members.filter((m) => m.online).map((m) => m.userId).sort(), [ana, bob.userId].sort(), "online counts both nodes");
    // carl's arrival (node a) is a barrier: whatever ana's second join would announce came before.
    const carlA = await chatClient(t, carl, a.url);
    await carlA.ask("join", roomId);
    await bob.next("user_joined", (d) => d.userId === carl);
    assert.equal(count(bob, "user_joined", (d) => d.userId === ana), 1, "ana joined once for bob");
    assert.equal(count(anaA, "user_joined", (d) => d.userId === bob.userId), 0, "bob joined before ana");

    // A message sent on a reaches b's members once; typing crosses too.
    const sent = await anaA.ask("message", { roomId, content: "over the fabric" });
    assert.equal(sent.message.status, "delivered", "bob (on the other node) was in the room");
    assert.deepEqual(await bob.next("message", (m) => m.id === sent.message.id), sent.message);
    await anaA.ask("typing:start", roomId);
    assert.deepEqual(await bob.next("typing:start"), { userId: ana, roomId });
    await bob.ask("typing", { roomId });
    assert.deepEqual(await carlA.next("typing"), { userId: bob.userId, roomId });
    await carlA.ask("message", { roomId, content: "barrier 1" });
    await bob.next("message", (m) => m.content === "barrier 1");
    assert.equal(count(bob, "message", (m) => m.id === sent.message.id), 1, "once");
    assert.equal(count(anaB, "message", (m) => m.id === sent.message.id), 1, "once to ana's other tab");

    // Presence agrees on both nodes; ana is online while any connection of hers is.
    const anaOnline = await agree([a, b], ana, "online");
    assert.ok(anaOnline.lastSeen > 0);
    await anaB.ask("presence:update", { status: "away" });
    await bob.next("presence:update", (p) => p.userId === ana && p.status === "away");
    await agree([a, b], ana, "away");
    anaA.socket.close();
    await carlA.ask("message", { roomId, content: "barrier 2" });
    await bob.next("message", (m) => m.content === "barrier 2");
    await agree([a, b], ana, "away");
    assert.equal(count(bob, "user_left", (d) => d.userId === ana), 0, "ana is still on node b");
    assert.equal(count(bob, "presence:update", (p) => p.userId === ana && p.status === "offline"), 0);
    anaB.socket.close();
    await bob.next("user_left", (d) => d.userId === ana);
    const off = await bob.next("presence:update", (p) => p.userId === ana && p.status === "offline");
    const offline = await agree([a, b], ana, "offline");
    assert.equal(offline.lastSeen, off.lastSeen, "the stored last seen is the one announced");
    await carlA.ask("message", { roomId, content: "barrier 3" });
    await bob.next("message", (m) => m.content === "barrier 3");
    assert.equal(count(bob, "user_left", (d) => d.userId === ana), 1, "ana left once");
    assert.equal(count(bob, "presence:update", (p) => p.userId === ana && p.status === "offline"), 1, "offline once");

    // dan is only on node a; node a is killed: on b he leaves and goes offline within
    // node_timeout_secs (3 s in startNode).
    const danA = await chatClient(t, dan, a.url);
    await danA.ask("join", roomId);
    await bob.next("user_joined", (d) => d.userId === dan);
    await agree([a, b], dan, "online");
    const killed = Date.now();
    await a.stop("SIGKILL");
    await bob.next("user_left", (d) => d.userId === dan, 10_000);
    await bob.next("presence:update", (p) => p.userId === dan && p.status === "offline", 10_000);
    assert.ok(Date.now() - killed < 3000 + 3000, `gone within the node timeout (and a sweep): ${Date.now() - killed} ms`);
    await agree([b], dan, "offline");
    await agree([b], carl, "offline"); // carl was only on the dead node too
    await bob.next("user_left", (d) => d.userId === carl);
  });

  it("typing throttle, the quiet typer's stop and away are fleet-wide", { timeout: 60000 }, async (t) => {
    const dbUrl = pgSchema(t);
    const redis = await startRedis();
    t.after(() => redis.close());
    const extra = ["--set", `database_url=${dbUrl}`, "--set", "presence_idle_secs=2"];
    const a = await startNode(redis, "chat-p", extra);
    t.after(() => a.stop());
    const b = await startNode(redis, "chat-q", extra);
    t.after(() => b.stop());
    await waitFleet([a, b]);
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

    const id = uniq("t");
    const ana = `ana-${id}`;
    const anaA = await chatClient(t, ana, a.url);
    const anaB = await chatClient(t, ana, b.url);
    const bob = await chatClient(t, `bob-${id}`, b.url);
    const carl = await chatClient(t, `carl-${id}`, a.url);
    const roomId = uniq("tf");
    const created = await anaA.ask("room:create", { roomId, members: [bob.userId, carl.userId, `eve-${id}`] });
    assert.equal(created.success, true, JSON.stringify(created));
    for (const c of [anaA, anaB, bob, carl]) assert.equal((await c.ask("join", roomId)).success, true);
    /** A message from carl that everyone has seen: whatever came before it has arrived. */
    let barriers = 0;
    const barrier = async () => {
      const content = `barrier ${++barriers}`;
      await carl.ask("message", { roomId, content });
      await Promise.all([bob, anaA].map((c) => c.next("message", (m) => m.content === content)));
    };
    const typed = (c, event) => count(c, event, (d) => d.userId === ana && d.roomId === roomId);

    // Typing on node a, then on node b within 2 s: relayed once, on both nodes; b's is refused.
    assert.equal((await anaA.ask("typing:start", { roomId })).success, true);
    const second = await anaB.ask("typing:start", { roomId });
    assert.deepEqual([second.success, /throttled/i.test(second.error)], [false, true], JSON.stringify(second));
    await bob.next("typing:start", (d) => d.userId === ana);
    await barrier();
    assert.deepEqual([typed(bob, "typing:start"), typed(carl, "typing:start")], [1, 1], "one relay fleet-wide");
    // Quiet for 5 s: one typing:stop (from the node that relayed), not one per node.
    await bob.next("typing:stop", (d) => d.userId === ana, 8000);
    await sleep(1000);
    await barrier();
    assert.deepEqual([typed(bob, "typing:stop"), typed(carl, "typing:stop")], [1, 1], "one stop fleet-wide");

    // Typing on a, then on b after the window: b relays; the stop still comes once
    // (from b, the last to relay; a stays quiet).
    await anaA.ask("typing", roomId);
    await sleep(2200);
    assert.equal((await anaB.ask("typing", roomId)).success, true, "the window is over");
    await bob.next("typing:stop", (d) => d.userId === ana, 8000);
    await sleep(1000);
    await barrier();
    assert.deepEqual([typed(bob, "typing"), typed(bob, "typing:stop")], [2, 2]);
    // A client's stop on another node than the one that relayed: one stop, and none later.
    await anaA.ask("typing:start", roomId);
    await bob.next("typing:start", (d) => d.userId === ana && typed(bob, "typing:start") === 2);
    const stop = await anaB.ask("typing:stop", roomId);
    assert.equal(stop.success, true);
    await bob.next("typing:stop", (d) => d.userId === ana && typed(bob, "typing:stop") === 3);
    await sleep(5500);
    await barrier();
    assert.equal(typed(bob, "typing:stop"), 3, "node a's quiet timer sent no second stop");

    // eve (connected to both nodes now) active on b only (heartbeats), idle on a, for
    // 2.5 idle periods: never away. (ana went away during the typing, unwatched.)
    const eve = `eve-${id}`;
    const eveA = await chatClient(t, eve, a.url);
    const eveB = await chatClient(t, eve, b.url);
    const awayOf = (c) => count(c, "presence:update", (p) => p.userId === eve && p.status === "away");
    const busy = setInterval(() => eveB.socket.emit("presence:heartbeat"), 300);
    t.after(() => clearInterval(busy));
    await sleep(5000);
    clearInterval(busy);
    await barrier();
    assert.deepEqual([awayOf(bob), awayOf(carl)], [0, 0], "active on b: node a did not announce away");
    // Idle on both: away, once.
    await bob.next("presence:update", (p) => p.userId === eve && p.status === "away", 8000);
    await sleep(2000);
    await barrier();
    assert.deepEqual([awayOf(bob), awayOf(carl)], [1, 1], "away once fleet-wide");
    // Back on a: online once (b, which had her away too, does not announce it again).
    await eveA.ask("presence:heartbeat");
    await bob.next("presence:update", (p) => p.userId === eve && p.status === "online" && awayOf(bob) === 1);
    await eveB.ask("presence:heartbeat");
    await sleep(500);
    await barrier();
    const onlineAfterAway = (c) => {
      const i = c.seen.findIndex((s) => s.event === "presence:update" && s.data.userId === eve && s.data.status === "away");
      return c.seen.slice(i).filter((s) => s.event === "presence:update" && s.data.userId === eve && s.data.status === "online").length;
    };
    assert.equal(onlineAfterAway(bob), 1, "back once");

    // An away chosen on a, then online chosen on b (where she was online all along): the
    // room hears both.
    await eveA.ask("presence:update", { status: "away" });
    await bob.next("presence:update", (p) => p.userId === eve && p.status === "away" && awayOf(bob) === 2);
    await eveB.ask("presence:update", { status: "online" });
    await bob.next("presence:update", (p) => p.userId === eve && p.status === "online" && onlineAfterAway(bob) === 2);
    await agree([a, b], eve, "online");

    // Redis gone: node a decides alone, at once (no client waits on Redis), and counts it.
    await redis.stop("SIGKILL");
    const started = Date.now();
    const alone = await anaA.ask("typing:start", { roomId });
    assert.equal(alone.success, true, JSON.stringify(alone));
    assert.ok(Date.now() - started < 1500, `answered in ${Date.now() - started} ms`);
    await carl.next("typing:start", (d) => d.userId === ana && typed(carl, "typing:start") === 3);
    const text = await (await fetch(`${a.url}/metrics`)).text();
    const fallbacks = Number(/^switchboard_chat_fleet_fallback_total (\d+)/m.exec(text)?.[1]);
    assert.ok(fallbacks >= 1, `fallbacks counted: ${fallbacks}`);
  });
});

// The Pusher Channels protocol with the real clients: `pusher-js` (its Node build) and the
// `pusher` server SDK, against `switchboard serve` with apps from a config file.
//
// - connect, public / private / presence / encrypted channels, client events, sign-in and
//   the user channel, the refusals (4001 unknown app, 4003 disabled app, bad signatures),
//   reconnection after a graceful restart (4200);
// - the SDK triggers (one, many channels, batch), queries channels and users, terminates
//   a user's connections: all seen from the clients;
// - one fabric: a socket.io-client and a pusher-js client in one room get each side's
//   publish;
// - webhooks received by a test HTTP server, checked with the SDK's `webhook().isValid()`;
// - bad input: malformed frames, a client event on a public channel, 1,000 channels,
//   stale timestamps, bodies over the limit.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import PusherClient from "pusher-js";
import PusherServer from "pusher";
import WebSocket from "ws";
import { io } from "socket.io-client";
import { chromium } from "playwright-core";
import { freePort, startServer } from "../lib/server.mjs";

const T = { timeout: 30_000 };
const API_KEY = "e2e-api-key";
const APP = { appId: "1001", key: "e2e-pusher-key", secret: "e2e-pusher-secret" };
const ENCRYPTION_KEY = Buffer.alloc(32, 7).toString("base64");
const skip = process.env.E2E_SERVER === "reference" && "Switchboard-only protocol";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const E2E_DIR = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

let server;
let sdk;
let dir;
const hooks = { bodies: [], invalid: 0, failNext: 0 };
let hookServer;

function config(hookPort) {
  return `
[pusher]
webhook_delay_ms = 300

[[pusher.apps]]
id = "${APP.appId}"
key = "${APP.key}"
secret = "${APP.secret}"
client_events = true
webhooks = ["http://127.0.0.1:${hookPort}/pusher/hooks"]

[[pusher.apps]]
id = "1002"
key = "e2e-disabled-key"
secret = "e2e-disabled-secret"
enabled = false

[[pusher.apps]]
id = "1003"
key = "e2e-quiet-key"
secret = "e2e-quiet-secret"
`;
}

async function serve(port) {
  return startServer({
    port,
    args: ["serve", "--data-dir", "memory", "--config", path.join(dir, "sb.toml"),
      "--set", `api_key=${API_KEY}`, "--set", "coalesce_ms=0",
      // 1,000 subscribe frames at once (the frame rate limit is tested elsewhere).
      "--set", "rate_limit_burst=1200"],
  });
}

const sdkFor = (port, over = {}) =>
  new PusherServer({
    ...APP, host: "127.0.0.1", port: String(port), useTLS: false,
    encryptionMasterKeyBase64: ENCRYPTION_KEY, ...over,
  });

before(async () => {
  if (skip) return;
  dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-pusher-"));
  hookServer = http.createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8").on("data", (d) => (raw += d)).on("end", () => {
      if (hooks.failNext > 0) {
        hooks.failNext--;
        return res.writeHead(500).end();
      }
      const hook = sdk.webhook({ headers: req.headers, rawBody: raw });
      if (!hook.isValid()) hooks.invalid++;
      hooks.bodies.push({ valid: hook.isValid(), events: hook.getEvents(), path: req.url });
      res.writeHead(200).end();
    });
  });
  await new Promise((r) => hookServer.listen(0, "127.0.0.1", r));
  writeFileSync(path.join(dir, "sb.toml"), config(hookServer.address().port));
  server = await serve();
  sdk = sdkFor(server.port);
});
after(async () => {
  await server?.stop();
  hookServer?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

async function until(what, f, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (f()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/**
 * A pusher-js client as an app would build one, with an authorizer that signs with the
 * SDK (what the app's auth endpoint does); `user` is the presence and sign-in identity.
 */
function client(t, { key = APP.key, port = server.port, user, info, opts = {} } = {}) {
  const c = new PusherClient(key, {
    cluster: "local",
    wsHost: "127.0.0.1",
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        const data = channelName.startsWith("presence-")
          ? { user_id: user, user_info: info ?? { name: user } }
          : undefined;
        cb(null, sdk.authorizeChannel(socketId, channelName, data));
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => cb(null, sdk.authenticateUser(socketId, { id: user })),
    },
    ...opts,
  });
  t.after(() => c.disconnect());
  return c;
}

const connected = (c) =>
  within(5000, "connected", new Promise((r) => {
    if (c.connection.state === "connected") return r();
    c.connection.bind("connected", r);
  }));

function subscribed(c, name) {
  const ch = c.subscribe(name);
  return within(5000, `subscribed to ${name}`, new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", () => resolve(ch));
    ch.bind("pusher:subscription_error", (e) => reject(new Error(`subscription_error ${JSON.stringify(e)}`)));
  }));
}

const next = (ch, event) =>
  within(5000, event, new Promise((r) => ch.bind(event, (data, meta) => r({ data, meta }))));

/** A raw WebSocket speaking the protocol by hand, for what pusher-js never sends. */
async function raw(t, key = APP.key, query = "?protocol=7&client=js&version=8.6.0") {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/${key}${query}`);
  t.after(() => ws.terminate());
  const frames = [];
  const waiters = [];
  let closed;
  const closedP = new Promise((r) => ws.on("close", (code) => r((closed = code))));
  ws.on("message", (d) => {
    const f = JSON.parse(d.toString());
    if (typeof f.data === "string") try { f.data = JSON.parse(f.data); } catch {}
    frames.push(f);
    for (const w of [...waiters]) if (w.pred(f)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(f); }
  });
  await within(5000, "open", new Promise((r) => ws.once("open", r)));
  const nextFrame = (pred, what = "frame") =>
    within(5000, what, new Promise((resolve) => {
      const seen = frames.find(pred);
      if (seen) {
        frames.splice(frames.indexOf(seen), 1);
        return resolve(seen);
      }
      waiters.push({ pred, resolve: (f) => { frames.splice(frames.indexOf(f), 1); resolve(f); } });
    }));
  const send = (o) => ws.send(typeof o === "string" ? o : JSON.stringify(o));
  return { ws, frames, nextFrame, send, closed: () => closedP, closedCode: () => closed };
}

async function publish(body) {
  const res = await fetch(`${server.url}/api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

describe("pusher-js and the pusher SDK against Switchboard", { skip }, () => {
  it("connects and gets public channel events from the SDK (one, many channels, batch)", T, async (t) => {
    const c = client(t);
    await connected(c);
    assert.match(c.connection.socket_id, /^\d+\.\d+$/);
    const a = await subscribed(c, "prices");
    const b = await subscribed(c, "news");
    const gotA = next(a, "tick");
    await sdk.trigger("prices", "tick", { p: 1 });
    assert.deepEqual((await gotA).data, { p: 1 });
    const both = Promise.all([next(a, "multi"), next(b, "multi")]);
    await sdk.trigger(["prices", "news"], "multi", "plain text");
    assert.deepEqual((await both).map((x) => x.data), ["plain text", "plain text"]);
    const batch = Promise.all([next(a, "b1"), next(b, "b2")]);
    await sdk.triggerBatch([
      { channel: "prices", name: "b1", data: { n: 1 } },
      { channel: "news", name: "b2", data: { n: 2 } },
    ]);
    assert.deepEqual((await batch).map((x) => x.data), [{ n: 1 }, { n: 2 }]);
    // Unsubscribed: no more events (a later event on another channel proves the order).
    c.unsubscribe("news");
    const stray = [];
    b.bind("late", (d) => stray.push(d));
    const later = next(a, "after");
    await sdk.trigger("news", "late", {});
    await sdk.trigger("prices", "after", {});
    await later;
    assert.deepEqual(stray, []);
  });

  it("the SDK's socket_id leaves out the sender's connection", T, async (t) => {
    const [a, b] = [client(t), client(t)];
    await Promise.all([connected(a), connected(b)]);
    const [ca, cb] = await Promise.all([subscribed(a, "room-x"), subscribed(b, "room-x")]);
    const seenA = [];
    ca.bind("e", (d) => seenA.push(d));
    const gotB = next(cb, "e");
    await sdk.trigger("room-x", "e", { n: 1 }, { socket_id: a.connection.socket_id });
    await gotB;
    const marker = next(ca, "marker");
    await sdk.trigger("room-x", "marker", {});
    await marker;
    assert.deepEqual(seenA, []);
  });

  it("private channels need the signature; client events go to the others only", T, async (t) => {
    const [a, b] = [client(t), client(t)];
    await Promise.all([connected(a), connected(b)]);
    const [pa, pb] = await Promise.all([subscribed(a, "private-chat"), subscribed(b, "private-chat")]);
    const own = [];
    pa.bind("client-typing", (d) => own.push(d));
    const got = next(pb, "client-typing");
    assert.equal(pa.trigger("client-typing", { who: "a" }), true);
    assert.deepEqual((await got).data, { who: "a" });
    // Not echoed to the sender: b answers, and a sees only b's event.
    const back = next(pa, "client-reply");
    pb.trigger("client-reply", { who: "b" });
    assert.deepEqual((await back).data, { who: "b" });
    assert.deepEqual(own, []);

    // A forged signature: subscription_error, and no subscription.
    const forger = client(t, {
      opts: {
        channelAuthorization: {
          customHandler: (_params, cb) => cb(null, { auth: `${APP.key}:${"0".repeat(64)}` }),
        },
      },
    });
    await connected(forger);
    const ch = forger.subscribe("private-chat");
    const err = await within(5000, "subscription_error", new Promise((r) => ch.bind("pusher:subscription_error", r)));
    assert.equal(err.status, 401);
    assert.match(err.error, /Invalid signature/);
    const info = await (await sdk.get({ path: "/channels/private-chat", params: { info: "subscription_count" } })).json();
    assert.deepEqual(info, { occupied: true, subscription_count: 2 });
  });

  it("presence: members with user info, joins and leaves seen by another client", T, async (t) => {
    const ann = client(t, { user: "ann", info: { name: "Ann" } });
    await connected(ann);
    const pa = await subscribed(ann, "presence-lobby");
    assert.equal(pa.members.count, 1);
    assert.deepEqual(pa.members.me, { id: "ann", info: { name: "Ann" } });

    const added = within(5000, "member_added", new Promise((r) => pa.bind("pusher:member_added", r)));
    const bob = client(t, { user: "bob", info: { name: "Bob" } });
    await connected(bob);
    const pb = await subscribed(bob, "presence-lobby");
    assert.deepEqual(await added, { id: "bob", info: { name: "Bob" } });
    assert.equal(pb.members.count, 2);
    assert.deepEqual(pb.members.get("ann"), { id: "ann", info: { name: "Ann" } });

    // Presence client events carry the sender's user_id.
    const typed = next(pa, "client-typing");
    pb.trigger("client-typing", { t: 1 });
    const { data, meta } = await typed;
    assert.deepEqual(data, { t: 1 });
    assert.equal(meta.user_id, "bob");

    // The HTTP API sees both users.
    const users = await (await sdk.get({ path: "/channels/presence-lobby/users" })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ["ann", "bob"]);
    const listed = await (await sdk.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })).json();
    assert.deepEqual(listed.channels["presence-lobby"], { user_count: 2 });

    const removed = within(5000, "member_removed", new Promise((r) => pa.bind("pusher:member_removed", r)));
    bob.disconnect();
    assert.deepEqual(await removed, { id: "bob", info: { name: "Bob" } });
    assert.equal(pa.members.count, 1);
  });

  it("presence is shared: a /ws member of the room is in pusher-js's members, and sees pusher-js users", T, async (t) => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws?userId=ws-walt`);
    t.after(() => ws.terminate());
    const wsFrames = [];
    ws.on("message", (d) => wsFrames.push(JSON.parse(d.toString())));
    await within(5000, "ws open", new Promise((r) => ws.once("open", r)));
    ws.send(JSON.stringify({ action: "join", roomId: "presence-mixed", ack: 1 }));
    await until("ws joined", () => wsFrames.some((f) => f.ack === 1));

    const p = client(t, { user: "pat", info: { name: "Pat" } });
    await connected(p);
    const ch = await subscribed(p, "presence-mixed");
    assert.equal(ch.members.count, 2);
    assert.deepEqual(ch.members.get("ws-walt"), { id: "ws-walt", info: null });
    await until("ws sees pat", () => wsFrames.some((f) => f.event === "member_joined" && f.data.userId === "pat"));
    const joined = wsFrames.find((f) => f.event === "member_joined" && f.data.userId === "pat");
    assert.deepEqual(joined.data.userInfo, { name: "Pat" });

    const removed = within(5000, "ws member removed", new Promise((r) => ch.bind("pusher:member_removed", r)));
    ws.send(JSON.stringify({ action: "leave", roomId: "presence-mixed" }));
    assert.equal((await removed).id, "ws-walt");
    assert.equal(ch.members.count, 1);
  });

  it("encrypted channels: the SDK encrypts, pusher-js decrypts, the server passes them through", T, async (t) => {
    const c = client(t);
    await connected(c);
    const ch = await subscribed(c, "private-encrypted-vault");
    const got = next(ch, "secret");
    await sdk.trigger("private-encrypted-vault", "secret", { pin: 1234 });
    assert.deepEqual((await got).data, { pin: 1234 });
    // Client events are refused on encrypted channels.
    const r = await raw(t);
    await r.nextFrame((f) => f.event === "pusher:connection_established");
    r.send({ event: "client-x", channel: "private-encrypted-vault", data: {} });
    const e = await r.nextFrame((f) => f.event === "pusher:error");
    assert.match(e.data.message, /Client event rejected/);
  });

  it("sign-in, the user channel, sendToUser and terminate_connections", T, async (t) => {
    const c = client(t, { user: "carol" });
    await connected(c);
    c.signin();
    await within(5000, "signed in", c.user.signinDonePromise);
    // The user channel's subscription follows sign-in; wait until the server has it.
    await until("user channel", () => c.user.serverToUserChannel?.subscribed);
    const got = within(5000, "user event", new Promise((r) => c.user.bind("note", r)));
    await sdk.sendToUser("carol", "note", { hi: 1 });
    assert.deepEqual(await got, { hi: 1 });
    // The publish API's user target reaches the same channel.
    const viaApi = within(5000, "api user event", new Promise((r) => c.user.bind("api-note", r)));
    await publish({ user: "carol", event: "api-note", data: { from: "api" } });
    assert.deepEqual(await viaApi, { from: "api" });

    const errors = [];
    c.connection.bind("error", (e) => errors.push(e));
    const gone = within(5000, "disconnected", new Promise((r) => c.connection.bind("disconnected", r)));
    await sdk.terminateUserConnections("carol");
    await gone;
    assert.ok(errors.some((e) => e.data?.code === 4009), JSON.stringify(errors));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(c.connection.state, "disconnected", "4009: pusher-js does not reconnect");
  });

  it("4000-range refusals: unknown app (4001), disabled app (4003), bad versions; no reconnection", T, async (t) => {
    for (const [key, code] of [["no-such-key", 4001], ["e2e-disabled-key", 4003]]) {
      const c = client(t, { key });
      const errors = [];
      c.connection.bind("error", (e) => errors.push(e));
      // pusher-js reports a refusal as a WebSocketError carrying the server's pusher:error.
      await until(`error ${code}`, () => errors.some((e) => e.error?.data?.code === code));
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok(!["connected", "connecting"].includes(c.connection.state), c.connection.state);
    }
    const r = await raw(t, APP.key, "?protocol=3");
    assert.equal(await within(5000, "closed", r.closed()), 4007);
    const r2 = await raw(t, APP.key, "");
    assert.equal(await within(5000, "closed", r2.closed()), 4008);
  });

  it("client events: off unless the app allows them, private/presence only, rate limited (4301)", T, async (t) => {
    const quiet = await raw(t, "e2e-quiet-key");
    await quiet.nextFrame((f) => f.event === "pusher:connection_established");
    quiet.send({ event: "client-x", channel: "private-a", data: {} });
    assert.match((await quiet.nextFrame((f) => f.event === "pusher:error")).data.message, /not enabled/);

    const r = await raw(t);
    await r.nextFrame((f) => f.event === "pusher:connection_established");
    r.send({ event: "pusher:subscribe", data: { channel: "public-room" } });
    await r.nextFrame((f) => f.event === "pusher_internal:subscription_succeeded");
    r.send({ event: "client-x", channel: "public-room", data: {} });
    assert.match((await r.nextFrame((f) => f.event === "pusher:error")).data.message, /only supported on private and presence/);
    r.send({ event: "client-x", channel: "private-not-mine", data: {} });
    assert.match((await r.nextFrame((f) => f.event === "pusher:error")).data.message, /subscribe to the channel first/);

    // Over 10 per second: 4301 errors, and the connection stays.
    const [a, b] = [client(t), client(t)];
    await Promise.all([connected(a), connected(b)]);
    const [pa, pb] = await Promise.all([subscribed(a, "private-burst"), subscribed(b, "private-burst")]);
    const errors = [];
    a.connection.bind("error", (e) => errors.push(e));
    let received = 0;
    pb.bind("client-burst", () => received++);
    for (let i = 0; i < 30; i++) pa.trigger("client-burst", { i });
    await until("rate errors", () => errors.some((e) => e.data?.code === 4301));
    await new Promise((r) => setTimeout(r, 1100));
    const done = next(pb, "client-last");
    pa.trigger("client-last", {});
    await done;
    assert.ok(received >= 10 && received < 30, `received ${received}`);
    assert.equal(a.connection.state, "connected");
  });

  it("malformed frames and 1,000 channels get errors and change nothing", T, async (t) => {
    const r = await raw(t);
    const est = await r.nextFrame((f) => f.event === "pusher:connection_established");
    assert.equal(est.data.activity_timeout, 120);
    const bads = ["{nope", "[]", "42", JSON.stringify({ data: {} }),
      JSON.stringify({ event: "pusher:subscribe", data: {} }), JSON.stringify({ event: "pusher:bogus" })];
    for (const bad of bads) {
      r.send(bad);
      const e = await r.nextFrame((f) => f.event === "pusher:error", bad);
      assert.equal(e.data.code, null, bad);
    }
    r.send({ event: "pusher:subscribe", data: { channel: "bad name!" } });
    assert.equal((await r.nextFrame((f) => f.event === "pusher:subscription_error")).data.status, 400);
    for (let i = 0; i < 1000; i++) r.send({ event: "pusher:subscribe", data: { channel: `many-${i}` } });
    await until("1000 answers", () => r.frames.filter((f) => f.channel?.startsWith("many-")).length === 1000, 15000);
    const ok = r.frames.filter((f) => f.event === "pusher_internal:subscription_succeeded").length;
    const refused = r.frames.filter((f) => f.event === "pusher:subscription_error");
    assert.equal(ok, 256, "max_rooms_per_client");
    assert.equal(refused.length, 744);
    assert.match(refused[0].data.error, /Too many channels/);
    r.send({ event: "pusher:ping", data: {} });
    await r.nextFrame((f) => f.event === "pusher:pong");
    assert.equal(r.closedCode(), undefined, "still open");
  });

  it("the HTTP API refuses a bad signature, a stale timestamp, bodies over the limit", T, async () => {
    const base = `${server.url}/apps/${APP.appId}`;
    const res = await fetch(`${base}/events?auth_key=${APP.key}&auth_timestamp=1&auth_version=1.0&auth_signature=00`, { method: "POST", body: "" });
    assert.equal(res.status, 401);
    const realNow = Date.now;
    Date.now = () => realNow() - 601_000;
    let stale;
    try {
      stale = sdk.trigger("x", "e", {});
    } finally {
      Date.now = realNow;
    }
    await assert.rejects(stale, (e) => e.status === 401 && /Timestamp expired/.test(e.body));
    await assert.rejects(sdkFor(server.port, { secret: "not-the-secret" }).trigger("x", "e", {}),
      (e) => e.status === 401 && /Invalid signature/.test(e.body));
    await assert.rejects(sdk.trigger("x", "e", "y".repeat(10_241)), (e) => e.status === 413);
    await assert.rejects(sdk.post({ path: "/events", body: { name: "e", channels: ["x"], data: "z".repeat(300_000) } }),
      (e) => e.status === 413);
    await assert.rejects(sdk.get({ path: "/channels/public-x/users" }), (e) => e.status === 400);
    await assert.rejects(sdk.get({ path: "/channels", params: { info: "user_count" } }), (e) => e.status === 400);
    await assert.rejects(sdkFor(server.port, { appId: "9999" }).trigger("x", "e", {}), (e) => e.status === 404);
    await assert.rejects(sdkFor(server.port, { appId: "1002", key: "e2e-disabled-key", secret: "e2e-disabled-secret" })
      .trigger("x", "e", {}), (e) => e.status === 403);
  });

  it("one fabric: a socket.io-client and a pusher-js client in one room get each side's publish", T, async (t) => {
    const sio = io(`${server.url}/realtime`, { query: { userId: "sio-user" }, transports: ["websocket"], forceNew: true, reconnection: false });
    t.after(() => sio.close());
    await within(5000, "sio connected", new Promise((r) => sio.once("connected", r)));
    assert.equal((await sio.timeout(5000).emitWithAck("join-event-room", { eventId: 2 })).success, true);
    const c = client(t);
    await connected(c);
    const ch = await subscribed(c, "event_2");

    const sioGot = new Promise((r) => sio.once("ticket-purchased", r));
    const pusherGot = next(ch, "ticket-purchased");
    const p = await publish({ room: "event_2", event: "ticket-purchased", data: { orderId: "o-1" } });
    assert.equal(p.delivered, 2);
    assert.deepEqual(await within(5000, "sio", sioGot), { orderId: "o-1" });
    assert.deepEqual((await pusherGot).data, { orderId: "o-1" });

    const sioGot2 = new Promise((r) => sio.once("price-change", r));
    const pusherGot2 = next(ch, "price-change");
    await sdk.trigger("event_2", "price-change", { price: 42 });
    assert.deepEqual(await within(5000, "sio from pusher", sioGot2), { price: 42 });
    assert.deepEqual((await pusherGot2).data, { price: 42 });
    const listed = await (await sdk.get({ path: "/channels", params: { filter_by_prefix: "event_" } })).json();
    assert.ok("event_2" in listed.channels, JSON.stringify(listed));
  });

  it("webhooks: occupied, member events, client events, vacated; signed; retried", T, async (t) => {
    const events = () => hooks.bodies.flatMap((b) => b.events);
    const seen = (pred, what) => until(what, () => events().some(pred), 10_000);
    hooks.failNext = 1; // the first delivery fails and is retried
    const dan = client(t, { user: "dan" });
    await connected(dan);
    const ch = await subscribed(dan, "presence-hooks");
    await seen((e) => e.name === "channel_occupied" && e.channel === "presence-hooks", "occupied");
    await seen((e) => e.name === "member_added" && e.channel === "presence-hooks" && e.user_id === "dan", "member_added");
    const eve = client(t, { user: "eve" });
    await connected(eve);
    await subscribed(eve, "presence-hooks");
    ch.trigger("client-wave", { hello: 1 });
    await seen((e) => e.name === "client_event" && e.event === "client-wave" && e.user_id === "dan"
      && JSON.parse(e.data).hello === 1, "client_event");
    dan.disconnect();
    eve.disconnect();
    await seen((e) => e.name === "member_removed" && e.user_id === "dan", "member_removed");
    await seen((e) => e.name === "channel_vacated" && e.channel === "presence-hooks", "vacated");
    assert.equal(hooks.invalid, 0, "every webhook signature verifies with the SDK");
    assert.ok(hooks.bodies.every((b) => b.path === "/pusher/hooks"));

    // A quick leave and return within the delay sends nothing for the pair.
    const f = client(t, { user: "fay" });
    await connected(f);
    await subscribed(f, "quick-room");
    await seen((e) => e.name === "channel_occupied" && e.channel === "quick-room", "quick occupied");
    const before = events().length;
    f.unsubscribe("quick-room");
    await subscribed(f, "quick-room");
    await new Promise((r) => setTimeout(r, 800));
    const later = events().slice(before).filter((e) => e.channel === "quick-room");
    assert.deepEqual(later, []);
  });

  it("reconnects by itself when a node closes it with 4200 (graceful restart behind a balancer)", T, async (t) => {
    // Two nodes behind a TCP balancer: the first shuts down gracefully (4200), pusher-js
    // reconnects at once and the balancer sends it to the second.
    const [first, second] = [await serve(await freePort()), await serve(await freePort())];
    t.after(() => first.stop());
    t.after(() => second.stop());
    let target = first.port;
    const balancer = net.createServer((down) => {
      const up = net.connect(target, "127.0.0.1");
      down.pipe(up).pipe(down);
      up.on("error", () => down.destroy());
      down.on("error", () => up.destroy());
    });
    await new Promise((r) => balancer.listen(0, "127.0.0.1", r));
    t.after(() => balancer.close());
    const c = client(t, { port: balancer.address().port });
    await connected(c);
    const firstId = c.connection.socket_id;
    const closes = [];
    c.connection.bind("state_change", (s) => closes.push(s.current));
    target = second.port;
    await first.stop();
    await until("reconnected", () => c.connection.state === "connected" && c.connection.socket_id !== firstId, 10_000);
    assert.ok(!closes.includes("disconnected"), JSON.stringify(closes));
    const ch = await subscribed(c, "after-restart");
    const got = next(ch, "hello");
    await sdkFor(second.port).trigger("after-restart", "hello", { ok: true });
    assert.deepEqual((await got).data, { ok: true });
  });
});

describe("pusher-js in headless Chromium", { skip: skip || (!existsSync(CHROMIUM) && !process.env.CI && `no Chromium at ${CHROMIUM}`) }, () => {
  it("the browser bundle: presence through the app's auth endpoint, SDK events, client events with Node", T, async (t) => {
    if (!existsSync(CHROMIUM)) {
      // Under CI a missing browser fails (scripts/test installs it); outside it is skipped above.
      assert.fail(`no Chromium at ${CHROMIUM}`);
    }
    // The app's site: the page, pusher-js's browser bundle from node_modules, and the auth
    // endpoint an app writes with the SDK (pusher-js POSTs socket_id and channel_name).
    const bundle = readFileSync(path.join(E2E_DIR, "node_modules/pusher-js/dist/web/pusher.min.js"));
    const site = http.createServer((req, res) => {
      if (req.url === "/pusher.min.js") return res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
      if (req.url === "/pusher/auth" && req.method === "POST") {
        let body = "";
        req.setEncoding("utf8").on("data", (d) => (body += d)).on("end", () => {
          const form = new URLSearchParams(body);
          const channel = form.get("channel_name");
          const presence = channel.startsWith("presence-") ? { user_id: "browser", user_info: { name: "Browser" } } : undefined;
          res.writeHead(200, { "content-type": "application/json" })
            .end(JSON.stringify(sdk.authorizeChannel(form.get("socket_id"), channel, presence)));
        });
        return;
      }
      res.writeHead(200, { "content-type": "text/html" }).end('<!doctype html><title>app</title><script src="/pusher.min.js"></script>');
    });
    await new Promise((r) => site.listen(0, "127.0.0.1", r));
    t.after(() => new Promise((r) => site.close(r)));
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
    t.after(() => browser.close());
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${site.address().port}/`);

    // A Node pusher-js client already in the channel.
    const node = client(t, { user: "node", info: { name: "Node" } });
    await connected(node);
    const nodeChannel = await subscribed(node, "presence-browser");
    const browserJoined = within(10_000, "browser joined", new Promise((r) => nodeChannel.bind("pusher:member_added", r)));
    const fromBrowser = next(nodeChannel, "client-hello");

    await page.evaluate(({ key, port }) => {
      window.log = [];
      const pusher = new window.Pusher(key, {
        cluster: "local", wsHost: "127.0.0.1", wsPort: port, forceTLS: false,
        enabledTransports: ["ws"], disableStats: true,
        channelAuthorization: { endpoint: "/pusher/auth", transport: "ajax" },
      });
      const ch = pusher.subscribe("presence-browser");
      ch.bind("pusher:subscription_succeeded", (members) => {
        const list = [];
        members.each((m) => list.push([m.id, m.info?.name]));
        window.log.push(["members", list.sort()]);
        ch.trigger("client-hello", { from: "browser" });
      });
      ch.bind("pusher:subscription_error", (e) => window.log.push(["error", e]));
      ch.bind("news", (d) => window.log.push(["news", d]));
      ch.bind("client-reply", (d, meta) => window.log.push(["reply", d, meta?.user_id]));
      window.pusher = pusher;
    }, { key: APP.key, port: server.port });

    assert.deepEqual(await browserJoined, { id: "browser", info: { name: "Browser" } });
    const { data, meta } = await fromBrowser;
    assert.deepEqual(data, { from: "browser" });
    assert.equal(meta.user_id, "browser");
    nodeChannel.trigger("client-reply", { to: "browser" });
    await sdk.trigger("presence-browser", "news", { headline: "hi" });
    await page.waitForFunction(() => window.log.length >= 3, null, { timeout: 10_000 });
    const log = await page.evaluate(() => window.log);
    assert.deepEqual(log[0], ["members", [["browser", "Browser"], ["node", "Node"]]]);
    // The client event and the SDK's event come over two connections: either order.
    assert.deepEqual(log.slice(1).sort((a, b) => a[0].localeCompare(b[0])), [
      ["news", { headline: "hi" }],
      ["reply", { to: "browser" }, "node"],
    ]);
    const left = within(5000, "browser left", new Promise((r) => nodeChannel.bind("pusher:member_removed", r)));
    await page.evaluate(() => window.pusher.disconnect());
    assert.equal((await left).id, "browser");
    assert.deepEqual(errors, []);
  });
});

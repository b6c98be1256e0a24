// permessage-deflate (RFC 7692) on Socket.IO's WebSocket and on /ws, with the clients
// users run: socket.io-client in Node (engine.io-client on the `ws` package, which offers
// and uses compression), a raw `ws` client, and Chromium's own WebSocket. Every
// connection goes through a small TCP proxy that parses the WebSocket frames in both
// directions, so the tests see what is on the wire: RSV1 (compressed) or not, and sizes.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import net from "node:net";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { startServer } from "../lib/server.mjs";

const T = { timeout: Number(process.env.E2E_T || 60_000) };
const KEY = "e2e-key";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const skip = () => process.env.E2E_SERVER === "reference" && "Switchboard's compression settings";

const servers = {};
before(async () => {
  if (skip()) return;
  const args = (...more) => ["serve", "--data-dir", "memory", "--set", "coalesce_ms=0", "--set", `api_key=${KEY}`, ...more];
  servers.on = await startServer({ args: args() });
  servers.off = await startServer({ args: args("--set", "ws_compression=false") });
});
after(async () => {
  for (const s of Object.values(servers)) await s.stop();
});

/**
 * A TCP proxy in front of `target` that records every WebSocket frame it forwards:
 * `{dir: "in"|"out", fin, rsv1, opcode, len, payload}` (client->server "in", unmasked).
 */
async function wireProxy(t, target) {
  const { port: targetPort } = new URL(target);
  const frames = [];
  const parser = (dir) => {
    let buf = Buffer.alloc(0);
    let upgraded = false;
    let plainHttp = false;
    return (chunk) => {
      if (plainHttp) return;
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        // Only WebSocket connections carry frames (a page load is plain HTTP).
        const head = buf.subarray(0, end).toString("latin1");
        if (!/^HTTP\/1\.1 101 |\r\nupgrade: *websocket/i.test(head)) {
          plainHttp = true;
          return;
        }
        upgraded = true;
        buf = buf.subarray(end + 4);
      }
      for (;;) {
        if (buf.length < 2) return;
        const masked = (buf[1] & 0x80) !== 0;
        let len = buf[1] & 0x7f;
        let at = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); at = 10; }
        const mask = masked ? buf.subarray(at, at + 4) : null;
        if (masked) at += 4;
        if (buf.length < at + len) return;
        const payload = Buffer.from(buf.subarray(at, at + len));
        if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
        frames.push({ dir, fin: (buf[0] & 0x80) !== 0, rsv1: (buf[0] & 0x40) !== 0, opcode: buf[0] & 0x0f, len, payload });
        buf = buf.subarray(at + len);
      }
    };
  };
  const sockets = new Set();
  const proxy = net.createServer((client) => {
    const upstream = net.connect(Number(targetPort), "127.0.0.1");
    sockets.add(client).add(upstream);
    const seeIn = parser("in");
    const seeOut = parser("out");
    client.on("data", (d) => { seeIn(d); upstream.write(d); });
    upstream.on("data", (d) => { seeOut(d); client.write(d); });
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => proxy.close(r));
  });
  return { url: `http://127.0.0.1:${proxy.address().port}`, frames };
}

async function publish(server, body) {
  const res = await fetch(`${server.url}/api/publish`, {
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

async function until(what, f, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (f()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** About `n` bytes of JSON that compresses the way real payloads do (repeated keys). */
function bigData(n, tag) {
  const seats = [];
  for (let i = 0; JSON.stringify(seats).length < n; i++) {
    seats.push({ seat: `${tag}-${i}`, row: String.fromCharCode(65 + (i % 26)), price: 40 + (i % 7), free: i % 3 !== 0 });
  }
  return { tag, seats };
}

/** A /ws client; `next(pred)` waits for a matching JSON frame. */
async function wsClient(t, base, userId, opts = {}) {
  const ws = new WebSocket(`${base.replace("http", "ws")}/ws?userId=${userId}`, opts);
  t.after(() => ws.terminate());
  const answer = new Promise((r) => ws.once("upgrade", (res) => r(res.headers["sec-websocket-extensions"] ?? "")));
  const frames = [];
  const waiters = [];
  ws.on("message", (data) => {
    const f = JSON.parse(data.toString());
    frames.push(f);
    for (const w of [...waiters]) if (w.pred(f)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(f); }
  });
  const closed = new Promise((r) => ws.on("close", (code) => r(code)));
  const next = (pred, what = "frame") =>
    within(5000, what, new Promise((resolve) => {
      const seen = frames.find(pred);
      if (seen) return resolve(seen);
      waiters.push({ pred, resolve });
    }));
  await next((f) => f.event === "connected", "connected");
  return { ws, frames, next, closed, answer: await answer, send: (obj) => ws.send(JSON.stringify(obj)) };
}

describe("permessage-deflate", { skip: skip() }, () => {
  it("socket.io-client negotiates it: a 4 KB broadcast arrives intact and compressed, once for every recipient; small packets go as they are; its own large emit is inflated", T, async (t) => {
    const proxy = await wireProxy(t, servers.on.url);
    const clients = [];
    for (const user of ["sio-a", "sio-b"]) {
      const sio = io(`${proxy.url}/realtime`, { query: { userId: user }, transports: ["websocket"], forceNew: true, reconnection: false });
      t.after(() => sio.close());
      await within(5000, "connected", new Promise((r) => sio.once("connected", r)));
      assert.equal(sio.io.engine.transport.ws.extensions, "permessage-deflate");
      // A 3 KB argument: the client compresses it (its threshold is 1 KB); the server
      // must inflate it to parse the join.
      const joined = await sio.timeout(5000).emitWithAck("join-event-room", { eventId: 2, note: "x".repeat(3000) });
      assert.equal(joined.success, true);
      clients.push(sio);
    }
    const sent = proxy.frames.filter((f) => f.dir === "in" && f.opcode === 1 && f.rsv1);
    assert.equal(sent.length, 2, "each client's join went compressed");
    assert.ok(sent.every((f) => f.len < 500), `compressed join sizes ${sent.map((f) => f.len)}`);

    const big = bigData(4096, "big");
    const small = { tag: "small" };
    const got = clients.map((sio) => new Promise((resolve) => {
      const seen = [];
      sio.on("seat-map", (d) => { seen.push(d); if (seen.length === 2) resolve(seen); });
    }));
    const before = proxy.frames.length;
    await publish(servers.on, { room: "event_2", event: "seat-map", data: big });
    await publish(servers.on, { room: "event_2", event: "seat-map", data: small });
    for (const seen of await within(5000, "both events", Promise.all(got))) {
      assert.deepEqual(seen, [big, small]);
    }
    await until("frames seen", () => proxy.frames.slice(before).filter((f) => f.dir === "out" && f.opcode === 1).length >= 4);
    const out = proxy.frames.slice(before).filter((f) => f.dir === "out" && f.opcode === 1);
    const bigFrames = out.filter((f) => f.rsv1);
    const plain = out.filter((f) => !f.rsv1);
    assert.equal(bigFrames.length, 2, "the 4 KB event compressed to each recipient");
    assert.ok(bigFrames[0].len < JSON.stringify(big).length / 3, `compressed to ${bigFrames[0].len} bytes`);
    assert.deepEqual(bigFrames[0].payload, bigFrames[1].payload, "the same compressed bytes for everyone");
    assert.ok(plain.some((f) => f.payload.toString().includes('"small"')), "the small event went uncompressed");
    assert.ok(plain.every((f) => f.len < 1024));
  });

  it("/ws: a raw ws client's compressed message is inflated and its broadcast arrives compressed", T, async (t) => {
    const proxy = await wireProxy(t, servers.on.url);
    const a = await wsClient(t, proxy.url, "ws-a");
    const b = await wsClient(t, proxy.url, "ws-b");
    const c3 = await wsClient(t, proxy.url, "ws-c");
    assert.equal(a.answer, ANSWER);
    for (const [c, ack] of [[a, 1], [b, 2], [c3, 3]]) {
      c.send({ action: "join", roomId: "deflate-room", ack });
      await c.next((f) => f.ack === ack, "join ack");
    }
    const content = JSON.stringify(bigData(3000, "chat"));
    a.send({ action: "message", roomId: "deflate-room", content });
    for (const c of [b, c3]) {
      const got = await c.next((f) => f.data?.content === content, "the message");
      assert.equal(got.data.content, content);
    }
    const inbound = proxy.frames.filter((f) => f.dir === "in" && f.rsv1);
    assert.equal(inbound.length, 1, "the client sent it compressed");
    assert.ok(inbound[0].len < content.length / 2);
    const outbound = proxy.frames.filter((f) => f.dir === "out" && f.rsv1);
    assert.equal(outbound.length, 2, "the broadcast went compressed to both other members");
    assert.deepEqual(outbound[0].payload, outbound[1].payload, "the same compressed bytes for both");
    assert.ok(proxy.frames.some((f) => f.dir === "out" && !f.rsv1 && f.payload.includes("connected")));
  });

  it("a decompression bomb closes its sender with 1009, on /ws and on Socket.IO; another client keeps receiving", T, async (t) => {
    const watcher = await wsClient(t, servers.on.url, "watcher");
    watcher.send({ action: "join", roomId: "bomb-room", ack: 1 });
    await watcher.next((f) => f.ack === 1, "join ack");
    const sio = io(`${servers.on.url}/realtime`, { query: { userId: "sio-watcher" }, transports: ["websocket"], forceNew: true, reconnection: false });
    t.after(() => sio.close());
    await within(5000, "connected", new Promise((r) => sio.once("connected", r)));
    assert.equal((await sio.timeout(5000).emitWithAck("join-event-room", { eventId: 2 })).success, true);

    // 4 MB of one letter deflates to a few KB; the server's max_payload is 1 MB.
    const bomb = "a".repeat(4_000_000);
    const wsBomber = await wsClient(t, servers.on.url, "bomber");
    wsBomber.ws.send(bomb);
    assert.equal(await within(5000, "/ws close", wsBomber.closed), 1009);

    const raw = new WebSocket(`${servers.on.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
    t.after(() => raw.terminate());
    const rawAnswer = new Promise((r) => raw.once("upgrade", (res) => r(res.headers["sec-websocket-extensions"])));
    const rawClosed = new Promise((r) => raw.on("close", (code) => r(code)));
    await within(5000, "engine.io open", new Promise((r) => raw.once("message", r)));
    assert.equal(await rawAnswer, ANSWER);
    raw.send(`4${bomb}`);
    assert.equal(await within(5000, "socket.io close", rawClosed), 1009);

    const fine = new Promise((r) => sio.once("after-bomb", r));
    await publish(servers.on, { room: "bomb-room", event: "after-bomb", data: { ok: 1 } });
    await publish(servers.on, { room: "event_2", event: "after-bomb", data: { ok: 2 } });
    assert.deepEqual((await watcher.next((f) => f.event === "after-bomb", "after the bomb")).data, { ok: 1 });
    assert.deepEqual(await within(5000, "sio after the bomb", fine), { ok: 2 });
    assert.equal(sio.connected, true);
  });

  it("ws_compression = false: not negotiated, large messages go as they are", T, async (t) => {
    const proxy = await wireProxy(t, servers.off.url);
    const c = await wsClient(t, proxy.url, "plain-user");
    assert.equal(c.answer, "");
    assert.equal(c.ws.extensions, "");
    const sio = io(`${proxy.url}/realtime`, { query: { userId: "plain-sio" }, transports: ["websocket"], forceNew: true, reconnection: false });
    t.after(() => sio.close());
    await within(5000, "connected", new Promise((r) => sio.once("connected", r)));
    assert.equal(sio.io.engine.transport.ws.extensions, "");
    const big = bigData(4096, "plain");
    const got = new Promise((r) => sio.once("notification", r));
    await publish(servers.off, { user: "plain-user", event: "notification", data: big });
    await publish(servers.off, { user: "plain-sio", event: "notification", data: big });
    assert.deepEqual((await c.next((f) => f.event === "notification")).data, big);
    assert.deepEqual(await within(5000, "sio notification", got), big);
    assert.equal(proxy.frames.filter((f) => f.rsv1).length, 0);
    assert.ok(proxy.frames.filter((f) => f.dir === "out" && f.len > 4096).length >= 2);
  });

  const noBrowser = !existsSync(CHROMIUM) && !process.env.CI && `no Chromium at ${CHROMIUM}`;
  it("Chromium's own WebSocket negotiates it and receives a compressed broadcast intact", { ...T, skip: noBrowser }, async (t) => {
    const proxy = await wireProxy(t, servers.on.url);
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
    t.after(() => browser.close());
    const page = await browser.newPage();
    await page.goto(`${proxy.url}/health`);
    const opened = await page.evaluate((url) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      window.got = [];
      ws.onmessage = (m) => {
        const f = JSON.parse(m.data);
        window.got.push(f);
        if (f.event === "connected") resolve(ws.extensions);
      };
      ws.onerror = () => reject(new Error("websocket error"));
    }), `${proxy.url.replace("http", "ws")}/ws?userId=browser-user`);
    assert.equal(opened, ANSWER);
    const big = bigData(4096, "browser");
    await publish(servers.on, { user: "browser-user", event: "seat-map", data: big });
    await page.waitForFunction(() => window.got.some((f) => f.event === "seat-map"), null, { timeout: 10_000 });
    const data = await page.evaluate(() => window.got.find((f) => f.event === "seat-map").data);
    assert.deepEqual(data, big);
    const compressed = proxy.frames.filter((f) => f.dir === "out" && f.rsv1);
    assert.equal(compressed.length, 1);
    assert.ok(compressed[0].len < JSON.stringify(big).length / 3);
  });
});

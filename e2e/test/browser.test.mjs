// The pages in a real browser: headless Chromium (Debian's `chromium`, driven by
// `playwright-core`) against `switchboard serve`.
//
// - the ticket page (`/`, the browser's own WebSocket on `/ws`): two visitors see each
//   other's holds and releases; a refused hold is explained; the countdown reaches
//   expiry and the seats come back; a graceful restart and a crash show the automatic
//   reconnect and what survives each;
// - the dashboard (`/dashboard`) moves under a small load of WebSocket, Socket.IO and
//   SSE clients;
// - outside development mode the ticket page takes a JWT and the dashboard the API key;
// - the official `socket.io-client` bundle, loaded by a page of another origin, runs the
//   platform's connect / join / lock flow against `/realtime`.
//
// Screenshots go to $E2E_SCREENSHOTS (the committed ones: `docs/screenshots/`), else to a
// temporary directory. CHROMIUM overrides the browser path (default /usr/bin/chromium).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createHmac } from "node:crypto";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { freePort, startServer } from "../lib/server.mjs";

const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const T = { timeout: 60_000 };
const WAIT = { timeout: 10_000 };
const SHOTS = process.env.E2E_SCREENSHOTS
  ? path.resolve(E2E_DIR, process.env.E2E_SCREENSHOTS)
  : mkdtempSync(path.join(os.tmpdir(), "switchboard-shots-"));
mkdirSync(SHOTS, { recursive: true });

const skip =
  (process.env.E2E_SERVER === "reference" && "Switchboard's pages") ||
  (!existsSync(CHROMIUM) && !process.env.CI && `no Chromium at ${CHROMIUM}`);
if (skip && process.env.E2E_SERVER !== "reference") {
  console.log(`SKIPPED: browser tests: ${skip} (set CHROMIUM; CI installs Debian's chromium)`);
}

/** Flags every test server gets: immediate availability broadcasts, holds in a temp dir. */
const serveArgs = (dataDir, ...more) => [
  "serve", "--data-dir", dataDir, "--set", "coalesce_ms=0", ...more,
];

let browser;
before(async () => {
  if (skip) return;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
});
after(async () => browser && (await browser.close()));

function tempDir(t) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-data-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function serve(t, opts) {
  const server = await startServer(opts);
  t.after(() => server.stop());
  return server;
}

/** A fresh browser profile (own localStorage) with one page; errors fail the test. */
async function newPage(t, viewport = { width: 1100, height: 900 }) {
  const context = await browser.newContext({ viewport, locale: "en-US" });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && !/WebSocket|EventSource|net::ERR|Failed to load resource/.test(m.text()) && errors.push(m.text()));
  t.after(() => assert.deepEqual(errors, [], "no script errors on the page"));
  return page;
}

/** Opens the ticket page as `name` (the demo sign-in's stored name): it goes live on load. */
async function ticketPage(t, base, name) {
  const page = await newPage(t);
  await page.addInitScript((n) => localStorage.setItem("switchboard.displayName", n), name);
  await page.goto(`${base}/`);
  await page.waitForSelector("#demo-signin:not([hidden])", WAIT);
  await online(page);
  assert.equal(await page.textContent("#user-id"), name);
  return page;
}

const online = (page) => page.waitForSelector('#status[data-state="online"]', WAIT);

/** Waits until the availability table shows `n` available seats in `category`. */
async function seeAvailable(page, category, n) {
  await page.waitForFunction(
    ([c, want]) =>
      document.querySelector(`#availability-rows tr[data-category="${c}"] .available`)
        ?.textContent === want,
    [String(category), n.toLocaleString("en-US")],
    WAIT,
  ).catch(async (err) => {
    const got = await page.textContent(`#availability-rows tr[data-category="${category}"]`);
    throw new Error(`category ${category}: wanted ${n} available, row shows "${got}" (${err.message})`);
  });
}

async function pick(page, { event = "1", category, quantity }) {
  await page.selectOption("#event", event);
  if (category !== undefined) await page.selectOption("#category", String(category));
  if (quantity !== undefined) await page.fill("#quantity", String(quantity));
}

const holdIds = (page) => page.$$eval("#holds li", (lis) => lis.map((li) => li.dataset.lock));
/** Waits until the page lists `n` holds, then returns their lock ids. */
async function waitHolds(page, n) {
  await page.waitForFunction((want) => document.querySelectorAll("#holds li").length === want, n, WAIT);
  return holdIds(page);
}
const noticeOf = (page, id) =>
  page.$eval(`#${id}`, (n) => ({ tone: n.className.replace("notice", "").trim(), text: n.textContent }));

async function waitNotice(page, id, re) {
  await page.waitForFunction(([i, src]) => new RegExp(src).test(document.getElementById(i).textContent),
    [id, re.source], WAIT);
  return noticeOf(page, id);
}

describe("ticket page (/)", { skip }, () => {
  it("two visitors hold and release seats and each sees the other's changes", T, async (t) => {
    const server = await serve(t, { args: serveArgs(tempDir(t)) });
    const alice = await ticketPage(t, server.url, "alice");
    const bob = await ticketPage(t, server.url, "bob");
    assert.equal(await alice.textContent("#user-id"), "alice");
    assert.match(await alice.textContent("#session-id"), /\S{6,}/, "a session id is shown");
    // Catalog pickers: the demo catalog's events and categories.
    assert.deepEqual(await alice.$$eval("#event option", (o) => o.map((x) => x.textContent)),
      ["Rust Conf Live", "Symphony at the Pier"]);
    await seeAvailable(bob, 2, 200);

    await pick(alice, { category: 2, quantity: 4 });
    await alice.click("#lock");
    assert.match((await waitNotice(alice, "hold-notice", /Held 4/)).tone, /ok/);
    await seeAvailable(bob, 2, 196);
    await seeAvailable(alice, 2, 196);
    assert.equal(await bob.textContent('tr[data-category="2"] .held'), "4");
    assert.equal((await waitHolds(alice, 1)).length, 1);
    assert.match(await alice.textContent("#holds .countdown"), /^[45]:\d\d$/);

    await pick(bob, { category: 2, quantity: 5 });
    await bob.click("#lock");
    await seeAvailable(alice, 2, 191);

    // Refused: more than the per-hold maximum (10), more than is left.
    await pick(bob, { category: 1, quantity: 11 });
    await bob.click("#lock");
    const tooMany = await waitNotice(bob, "hold-notice", /Hold refused/);
    assert.equal(tooMany.text, "Hold refused: Invalid quantity: must be between 1 and 10.");
    assert.equal(tooMany.tone, "bad");
    await bob.click("#my-holds"); // the error event that follows changes nothing on the page
    await waitNotice(bob, "hold-notice", /You hold seats in 1 category/);
    await pick(bob, { category: 1, quantity: 10 });
    await bob.click("#lock");
    await seeAvailable(alice, 1, 10);
    await pick(alice, { category: 1, quantity: 10 });
    await alice.click("#lock");
    await seeAvailable(bob, 1, 0);
    await pick(alice, { category: 1, quantity: 1 });
    await alice.click("#lock");
    const refused = await waitNotice(alice, "hold-notice", /Hold refused/);
    assert.equal(refused.tone, "bad");
    await pick(alice, { category: 2 });
    await alice.click("#unlock");
    await seeAvailable(bob, 2, 195);
    await alice.click("#my-holds");
    await waitNotice(alice, "hold-notice", /You hold seats in 1 category/);

    await pick(bob, { category: 1 });
    await seeAvailable(bob, 1, 0);
    await bob.screenshot({ path: path.join(SHOTS, "ticket-page.png"), fullPage: true });

    // Bob releases from his hold list; a disconnect releases Alice's remaining hold.
    await bob.click('#holds li:has-text("VIP") button');
    await seeAvailable(alice, 1, 10);
    await alice.click("#disconnect");
    await alice.waitForSelector('#status[data-state="offline"]', WAIT);
    await seeAvailable(bob, 1, 20);
  });

  it("the countdown reaches expiry and the seats come back", T, async (t) => {
    const server = await serve(t, { args: serveArgs(tempDir(t), "--set", "hold_ttl_secs=3") });
    const alice = await ticketPage(t, server.url, "alice");
    const bob = await ticketPage(t, server.url, "bob");
    await pick(alice, { event: "2", category: 4, quantity: 3 });
    await pick(bob, { event: "2", category: 4 });
    await alice.click("#lock");
    await seeAvailable(bob, 4, 27);
    const first = await alice.textContent("#holds .countdown");
    assert.match(first, /^0:0[123]$/, `a 3 s countdown, got ${first}`);
    await alice.waitForFunction(() => document.querySelector("#holds .countdown")?.textContent === "0:01", null, WAIT);
    const expired = await waitNotice(alice, "hold-notice", /expired; the seats are back on sale/);
    assert.equal(expired.tone, "warn");
    await seeAvailable(bob, 4, 30);
    await seeAvailable(alice, 4, 30);
    assert.deepEqual(await holdIds(alice), []);
    assert.equal(await alice.isVisible("#no-holds"), true);
    // The server agrees: nothing is held any more.
    await alice.click("#my-holds");
    await waitNotice(alice, "hold-notice", /You hold no seats/);
  });

  it("reconnects by itself after a restart and shows what survived it", T, async (t) => {
    const dataDir = tempDir(t);
    const key = "e2e-key";
    const args = serveArgs(dataDir, "--set", `api_key=${key}`);
    let server = await startServer({ args });
    const port = server.port;
    t.after(() => server.stop());
    const page = await ticketPage(t, server.url, "carol");
    const session1 = await page.textContent("#session-id");

    // A catalog change and a hold.
    const res = await fetch(`${server.url}/api/events/1/categories/3`, {
      method: "PUT",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ id: 3, name: "Balcony", price: 45, totalSeats: 80, availableSeats: 80 }),
    });
    assert.equal(res.status, 200);
    await seeAvailable(page, 3, 80);
    await pick(page, { category: 2, quantity: 3 });
    await page.click("#lock");
    await seeAvailable(page, 2, 197);
    const [kept] = await waitHolds(page, 1);

    // Graceful restart (SIGTERM): the server closes the connection (1001) but takes no
    // one's seats: the hold stays until its expiresAt, the catalog change is in the store,
    // and the new session lists the hold under the same lock id.
    await server.stop("SIGTERM");
    await page.waitForSelector('#status[data-state="reconnecting"]', WAIT);
    const lost = await noticeOf(page, "conn-notice");
    assert.match(lost.text, /Connection lost: Server shutting down\. Reconnecting automatically\./);
    assert.match(await page.textContent("#retry"), /Next attempt in \d+ s \(attempt \d\)/);
    server = await startServer({ args, port });
    await online(page);
    assert.notEqual(await page.textContent("#session-id"), session1, "a new session");
    await waitNotice(page, "conn-notice", /^Reconnected\.$/);
    await seeAvailable(page, 2, 197);
    await seeAvailable(page, 3, 80);
    assert.deepEqual(await waitHolds(page, 1), [kept]);
    await page.click('#holds li button');
    await seeAvailable(page, 2, 200);
    assert.deepEqual(await waitHolds(page, 0), []);

    // Crash (SIGKILL): nothing runs at the end, so the hold stays in the store and comes
    // back with the server; it belongs to the user, so the new session lists it, with the
    // same lock id and the countdown still running to the same expiresAt.
    await page.click("#lock");
    await seeAvailable(page, 2, 197);
    const [lockId] = await waitHolds(page, 1);
    await server.stop("SIGKILL");
    await page.waitForSelector('#status[data-state="reconnecting"]', WAIT);
    await page.screenshot({ path: path.join(SHOTS, "ticket-page-reconnecting.png"), fullPage: true });
    server = await startServer({ args, port });
    await online(page);
    await waitNotice(page, "conn-notice", /^Reconnected\.$/);
    await seeAvailable(page, 2, 197);
    assert.deepEqual(await waitHolds(page, 1), [lockId]);
    assert.match(await page.textContent("#holds .countdown"), /^[45]:\d\d$/);
    // ... and the user can release it from the new session.
    await page.click('#holds li button');
    await seeAvailable(page, 2, 200);
  });

  it("is usable at 375 px (phone): nothing scrolls sideways", T, async (t) => {
    const server = await serve(t, { args: serveArgs("memory") });
    for (const p of ["/", "/dashboard"]) {
      const page = await newPage(t, { width: 375, height: 800 });
      await page.goto(`${server.url}${p}`);
      await page.waitForLoadState("networkidle").catch(() => {});
      const wide = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(wide <= 375, `${p}: page is ${wide} px wide`);
      if (p === "/") {
        // A first visit goes live on load with a demo identity, Disconnect at hand.
        await online(page);
        assert.match(await page.textContent("#user-id"), /^guest-\d{4}$/);
        assert.equal(await page.isEnabled("#disconnect"), true);
        await seeAvailable(page, 1, 20);
        await page.screenshot({ path: path.join(SHOTS, "ticket-page-phone.png"), fullPage: true });
      }
    }
  });
});

/** An HS256 JWT (the server's `jwt_secret`), made with node:crypto. */
function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

describe("outside development mode", { skip }, () => {
  it("the ticket page asks for a token and the dashboard for the API key", T, async (t) => {
    const secret = "e2e-secret-e2e-secret-e2e-secret!";
    const server = await serve(t, {
      args: serveArgs("memory", "--set", `jwt_secret=${secret}`, "--set", "api_key=e2e-key"),
    });
    const info = await (await fetch(`${server.url}/api/session-info`)).json();
    assert.deepEqual(info, { devMode: false, devModeReason: null, auth: "jwt" });

    const page = await newPage(t);
    await page.goto(`${server.url}/`);
    await page.waitForSelector("#jwt-signin:not([hidden])", WAIT);
    assert.equal(await page.isVisible("#demo-signin"), false, "no demo sign-in");
    await page.fill("#token", "not-a-token");
    await page.click("#connect");
    await page.waitForSelector('#status[data-state="refused"]', WAIT);
    assert.match((await noticeOf(page, "conn-notice")).text, /refused the sign-in/);
    const exp = Math.floor(Date.now() / 1000) + 600;
    await page.fill("#token", jwt(secret, { sub: "dave", exp }));
    await page.click("#connect");
    await online(page);
    assert.equal(await page.textContent("#user-id"), "dave");
    // The token stays with the tab: a reload goes live by itself.
    await page.reload();
    await online(page);
    assert.equal(await page.textContent("#user-id"), "dave");
    await pick(page, { category: 1, quantity: 2 });
    await page.click("#lock");
    await seeAvailable(page, 1, 18);

    const dash = await newPage(t);
    await dash.goto(`${server.url}/dashboard`);
    await dash.waitForSelector("#key-form:not([hidden])", WAIT);
    await dash.waitForFunction(() => /needs the API key/.test(document.getElementById("status-text").textContent), null, WAIT);
    await dash.waitForFunction(() => document.getElementById("t-holds").dataset.value === "1", null, WAIT);
    await dash.fill("#api-key", "wrong");
    await dash.click("#key-form button");
    await dash.waitForFunction(() => /refused this key/.test(document.getElementById("status-text").textContent), null, WAIT);
    await dash.fill("#api-key", "e2e-key");
    await dash.click("#key-form button");
    await dash.waitForFunction(() => document.getElementById("status-text").textContent === "Live", null, WAIT);
    await dash.waitForFunction(() => document.getElementById("t-connections").dataset.value >= "1", null, WAIT);
  });
});

describe("dashboard (/dashboard)", { skip }, () => {
  it("numbers and charts move under a small load", T, async (t) => {
    const server = await serve(t, { args: serveArgs("memory") });
    const page = await newPage(t);
    await page.goto(`${server.url}/dashboard`);
    await online(page);
    const tile = (id) => page.$eval(`#${id}`, (n) => Number(n.dataset.value));
    await page.waitForFunction(() => document.getElementById("t-connections").dataset.value !== undefined, null, WAIT);
    const before = await tile("t-connections");

    const wsUrl = server.url.replace("http", "ws");
    const sockets = [];
    t.after(() => sockets.forEach((s) => s.close?.() ?? s.disconnect?.()));
    // 30 plain WebSocket clients in one room, 10 Socket.IO buyers holding a seat each,
    // 5 SSE listeners.
    const wsClients = await Promise.all(Array.from({ length: 30 }, (_, i) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`${wsUrl}/ws?userId=load-${i}`);
      sockets.push(ws);
      ws.once("error", reject);
      ws.once("open", () => {
        ws.send(JSON.stringify({ action: "join", roomId: "lobby" }));
        resolve(ws);
      });
    })));
    await Promise.all(Array.from({ length: 10 }, (_, i) => new Promise((resolve, reject) => {
      const s = io(`${server.url}/realtime`, { forceNew: true, reconnection: false, transports: ["websocket"], query: { userId: `buyer-${i}` } });
      sockets.push(s);
      s.once("connect_error", reject);
      s.once("connect", () => {
        s.emit("join-event-room", { eventId: 1 });
        s.emit("lock-tickets", { eventId: 1, categoryId: 2, quantity: 1 }, () => resolve());
      });
    })));
    for (let i = 0; i < 5; i += 1) {
      sockets.push(new EventSource(`${server.url}/events?channels=lobby&userId=sse-${i}`));
    }
    // Chat in the lobby for a few seconds: every message fans out to 30 members.
    const chat = setInterval(() => {
      for (const ws of wsClients.slice(0, 10)) {
        ws.send(JSON.stringify({ action: "message", roomId: "lobby", content: { text: "hi" } }));
      }
    }, 100);
    t.after(() => clearInterval(chat));

    await page.waitForFunction(
      (n) => Number(document.getElementById("t-connections").dataset.value) >= n,
      before + 45, WAIT,
    );
    await page.waitForFunction(() => Number(document.getElementById("t-holds").dataset.value) >= 10, null, WAIT);
    await page.waitForFunction(() => Number(document.getElementById("t-members").dataset.value) >= 35, null, WAIT);
    // At least: the harness's readiness probe leaves an Engine.IO polling session until
    // its ping timeout, and SSE may count the dashboard's own feed.
    const counts = (text) => (text.match(/\d+/g) ?? []).map(Number);
    const [sio, ws, sse] = counts(await page.textContent("#t-by-transport"));
    assert.ok(sio >= 10 && ws === 30 && sse >= 5, await page.textContent("#t-by-transport"));
    assert.equal(await page.textContent("#status-text"), "Live", "the SSE feed, not /stats");
    // Rates from the feed's monotonic counters: 10 senders × 10/s in, × 35 members out.
    await page.waitForFunction(() => Number(document.getElementById("t-in").dataset.value) >= 50, null, WAIT);
    await page.waitForFunction(() => Number(document.getElementById("t-out").dataset.value) >= 1000, null, WAIT);
    await page.waitForFunction(() => document.querySelector("#top-rooms td")?.textContent === "lobby", null, WAIT);
    await page.waitForTimeout(4_000); // a few more samples for the charts
    const summary = await page.textContent("#c-conn-sum");
    assert.match(summary, /^Socket\.IO: \d+, WebSocket: 30, SSE: \d+, Pusher: 0$/);
    assert.ok(counts(summary)[0] >= 10 && counts(summary)[2] >= 5, summary);
    await page.screenshot({ path: path.join(SHOTS, "dashboard.png"), fullPage: true });
    const numbers = await page.$$eval(".tile", (tiles) => tiles.map((x) => x.innerText.replace(/\s+/g, " ")));
    const rooms = await page.$$eval("#top-rooms tr", (rows) => rows.map((r) => r.innerText.replace(/\s+/g, " ")));
    t.diagnostic(`dashboard under load: ${numbers.join(" | ")} | top rooms: ${rooms.join(", ")}`);
    clearInterval(chat);
  });
});

describe("socket.io-client in the browser", { skip }, () => {
  it("runs the platform's connect / join / lock flow against /realtime from another origin", T, async (t) => {
    const server = await serve(t, { args: serveArgs("memory") });
    // A page of another origin that loads the official client bundle, as the platform's
    // front end does.
    const bundle = readFileSync(path.join(E2E_DIR, "node_modules/socket.io-client/dist/socket.io.min.js"));
    const site = http.createServer((req, res) => {
      if (req.url === "/socket.io.min.js") {
        res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
      } else {
        res.writeHead(200, { "content-type": "text/html" })
          .end('<!doctype html><title>platform</title><script src="/socket.io.min.js"></script>');
      }
    });
    const sitePort = await freePort();
    await new Promise((r) => site.listen(sitePort, "127.0.0.1", r));
    t.after(() => new Promise((r) => site.close(r)));

    // A second buyer, in Node, watches the event room.
    const watcher = io(`${server.url}/realtime`, { forceNew: true, reconnection: false, query: { userId: "watcher" } });
    t.after(() => watcher.disconnect());
    await new Promise((r) => watcher.once("connect", r));
    await watcher.emitWithAck("join-event-room", { eventId: 2 });
    const seen = new Promise((resolve) => watcher.on("availability-update", (u) => u.categoryId === 5 && u.availableTickets === 296 && resolve(u)));

    const page = await newPage(t);
    await page.goto(`http://127.0.0.1:${sitePort}/`);
    const result = await page.evaluate(async (url) => {
      const log = [];
      const socket = window.io(`${url}/realtime`, { query: { userId: "browser-buyer" }, reconnection: false });
      const once = (ev) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${ev}`)), 8000);
        socket.once(ev, (data) => { clearTimeout(timer); resolve(data); });
      });
      const connected = await once("connected");
      log.push(["connected", connected.success, connected.sessionId === socket.id]);
      const updates = [];
      socket.on("availability-update", (u) => updates.push(u));
      const joined = once("joined-event-room");
      socket.emit("join-event-room", { eventId: 2 });
      log.push(["joined", (await joined).success]);
      const locked = await socket.timeout(8000).emitWithAck("lock-tickets", { eventId: 2, categoryId: 5, quantity: 4 });
      log.push(["locked", locked.success, typeof locked.lockId, locked.expiresAt > Date.now()]);
      const mine = once("my-locks-response");
      socket.emit("get-my-locks");
      const { locks } = await mine;
      log.push(["my-locks", locks.length, locks[0]?.quantity, locks[0]?.lockId === locked.lockId]);
      await new Promise((r) => setTimeout(r, 200));
      const transport = socket.io.engine.transport.name;
      socket.disconnect();
      return { log, updates: updates.length, transport };
    }, server.url);
    assert.deepEqual(result.log, [
      ["connected", true, true],
      ["joined", true],
      ["locked", true, "string", true],
      ["my-locks", 1, 4, true],
    ]);
    assert.ok(result.updates >= 3, "an availability-update per category after the join");
    assert.equal(result.transport, "websocket", "upgraded from polling to WebSocket");
    const update = await seen;
    assert.equal(update.lockedTickets, 4);
  });
});

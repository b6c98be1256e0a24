// The chat page (`/chat`) in headless Chromium (Debian's `chromium`, driven by
// `playwright-core`) with two users: a message, its read ticks, the typing line and
// presence dots; then the server goes away, one user sends while offline (shown as
// sending, kept in the page's queue), the server comes back on the same data dir, and the
// message arrives once.
//
// Screenshots go to $E2E_SCREENSHOTS (the committed ones: `docs/screenshots/`), else to a
// temporary directory. CHROMIUM overrides the browser path (default /usr/bin/chromium).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "../lib/server.mjs";

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

let browser;
before(async () => {
  if (skip) return;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
});
after(async () => browser && (await browser.close()));

async function newPage(t) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 }, locale: "en-US" });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && !/WebSocket|net::ERR|Failed to load resource/.test(m.text()) && errors.push(m.text()));
  t.after(() => assert.deepEqual(errors, [], "no script errors on the page"));
  return page;
}

const online = (page) => page.waitForSelector('#status[data-state="online"]', WAIT);
const message = (page, text, status) =>
  page.waitForFunction(
    ([want, st]) => [...document.querySelectorAll("#messages li")].some(
      (li) => li.querySelector(".text")?.textContent === want && (!st || li.dataset.status === st)),
    [text, status],
    WAIT,
  );

describe("the chat page", { skip }, () => {
  it("two users: messages, read ticks, typing, presence; a message sent offline arrives once after a restart", T, async (t) => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "switchboard-chat-page-"));
    t.after(() => rmSync(dataDir, { recursive: true, force: true }));
    const args = ["serve", "--data-dir", dataDir, "--set", "api_key=page-key"];
    let server = await startServer({ args });
    t.after(() => server.stop());

    // Both pages go live on load with the name in the address.
    const ana = await newPage(t);
    await ana.goto(`${server.url}/chat?user=ana-page`);
    await online(ana);
    const bob = await newPage(t);
    await bob.goto(`${server.url}/chat?user=bob-page`);
    await online(bob);
    // A first visit with no name goes live too, as a demo identity (development mode).
    const guest = await newPage(t);
    await guest.goto(`${server.url}/chat`);
    await online(guest);
    assert.match(await guest.inputValue("#name"), /^guest-\d{4}$/);

    await ana.fill("#new-members", "bob-page");
    await ana.click("#create");
    await ana.waitForSelector("#text:not([disabled])", WAIT);
    await bob.waitForSelector("#rooms li button", WAIT);
    await bob.click("#rooms li button");
    await bob.waitForSelector("#text:not([disabled])", WAIT);
    await ana.waitForSelector('#members li[data-user="bob-page"][data-status="online"]', WAIT);

    await ana.fill("#text", "Hello Bob");
    await ana.press("#text", "Enter");
    await message(bob, "Hello Bob");
    // Bob's page reads what it shows: Ana's ticks turn to read.
    await message(ana, "Hello Bob", "read");

    await bob.type("#text", "Hi");
    await ana.waitForFunction(() => document.querySelector("#typing").textContent === "bob-page is typing...", null, WAIT);
    await bob.press("#text", "Enter");
    await message(ana, "Hi");
    await ana.screenshot({ path: path.join(SHOTS, "chat-ana.png") });

    // The server goes away; Bob writes anyway: shown at once as sending, kept queued.
    await server.stop("SIGKILL");
    await bob.waitForSelector('#status[data-state="offline"]', WAIT);
    await bob.fill("#text", "Sent while offline");
    await bob.press("#text", "Enter");
    await message(bob, "Sent while offline", "sending");
    assert.equal(JSON.parse(await bob.evaluate(() => localStorage.getItem("switchboard.chat.queue"))).length, 1);
    await bob.screenshot({ path: path.join(SHOTS, "chat-bob-offline.png") });

    server = await startServer({ args, port: server.port });
    await online(bob);
    await online(ana);
    await message(ana, "Sent while offline");
    await bob.waitForFunction(
      () => [...document.querySelectorAll("#messages li")].some((li) => li.querySelector(".text")?.textContent === "Sent while offline" && li.dataset.status !== "sending"),
      null,
      WAIT,
    );
    assert.equal(await bob.evaluate(() => localStorage.getItem("switchboard.chat.queue")), "[]");
    // Exactly once, in the page and in the store.
    const count = (page) => page.$$eval("#messages li .text", (xs) => xs.filter((x) => x.textContent === "Sent while offline").length);
    assert.equal(await count(ana), 1);
    assert.equal(await count(bob), 1);
    await ana.screenshot({ path: path.join(SHOTS, "chat-after-restart.png") });

    // History pages in as the list scrolls up: 40 more messages, the page shows the newest
    // 30 after a reload, and all 43 once scrolled to the top.
    const roomId = await ana.$eval("#rooms li", (li) => li.dataset.room);
    for (let i = 0; i < 40; i++) {
      const res = await fetch(`${server.url}/api/rooms/${encodeURIComponent(roomId)}/messages`, {
        method: "POST",
        headers: { authorization: "Bearer page-key", "content-type": "application/json" },
        body: JSON.stringify({ senderId: "bob-page", content: `Note ${i}` }),
      });
      assert.equal(res.status, 200);
    }
    await ana.reload();
    await online(ana);
    await ana.click("#rooms li button");
    await ana.waitForFunction(() => document.querySelectorAll("#messages li").length === 30, null, WAIT);
    await ana.$eval("#messages", (m) => { m.scrollTop = 0; });
    await ana.waitForFunction(() => document.querySelectorAll("#messages li").length === 43, null, WAIT);
    assert.equal(await ana.textContent("#messages li:first-child .text"), "Hello Bob");
  });
});

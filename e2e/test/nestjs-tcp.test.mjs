// The events-service side, for real: a NestJS TCP microservice (NestFactory, a
// controller with @MessagePattern('get-ticket-categories'), from npm) is Switchboard's
// catalog source. Holds are verified against it (category names are non-ASCII, so the
// frame length must count UTF-16 units); when it is killed or slow, holds are refused
// with "Failed to verify ticket availability" and nothing else changes.
import "reflect-metadata";
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { Controller, Module } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { MessagePattern, Transport } from "@nestjs/microservices";
import { io } from "socket.io-client";
import { freePort, startServer } from "../lib/server.mjs";

const T = { timeout: 30000 };
const CATEGORIES = [
  { id: 1, name: "Zoné VIP — 🎟️ 前列", price: 120.5, totalSeats: 10, availableSeats: 8 },
  { id: 2, name: "Balcón ñ 𝄞", price: 45, totalSeats: 50, availableSeats: 50 },
];

/** Starts a NestJS TCP events-service on `port`; `delayMs` makes it slow. */
async function eventsService(port, { delayMs = 0 } = {}) {
  const calls = [];
  class EventsController {
    async categories(eventId) {
      calls.push(eventId);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      return eventId === 42 ? CATEGORIES : [];
    }
  }
  // What `@MessagePattern(...)` and `@Controller()` do in TypeScript.
  Reflect.decorate(
    [MessagePattern("get-ticket-categories")],
    EventsController.prototype,
    "categories",
    Object.getOwnPropertyDescriptor(EventsController.prototype, "categories"),
  );
  const Ctl = Reflect.decorate([Controller()], EventsController);
  class EventsModule {}
  const Mod = Reflect.decorate([Module({ controllers: [Ctl] })], EventsModule);
  const app = await NestFactory.createMicroservice(Mod, {
    transport: Transport.TCP,
    options: { host: "127.0.0.1", port },
    logger: false,
  });
  await app.listen();
  return { app, calls };
}

let server;
let port;

before(async () => {
  if (process.env.E2E_SERVER === "reference") return;
  port = await freePort();
  server = await startServer({
    args: [
      "serve", "--data-dir", "memory",
      "--set", "catalog_source=events-service",
      "--set", `events_service=127.0.0.1:${port}`,
      "--set", "events_service_timeout_ms=800",
      "--set", "events_service_cache_ms=100",
      "--set", "coalesce_ms=0",
    ],
  });
});
after(async () => server && (await server.stop()));

function client(t, userId) {
  const socket = io(`${server.url}/realtime`, {
    query: { userId },
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
  });
  t.after(() => socket.close());
  return socket;
}

function next(socket, event, pred = () => true, ms = 8000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    function on(data) {
      if (pred(data)) {
        clearTimeout(timer);
        socket.off(event, on);
        resolve(data);
      }
    }
    socket.on(event, on);
  });
}

async function tryLock(socket, eventId, categoryId, quantity) {
  const answer = next(socket, "lock-tickets-response");
  socket.emit("lock-tickets", { eventId, categoryId, quantity });
  return answer;
}

async function myLocks(socket) {
  const r = next(socket, "my-locks-response");
  socket.emit("get-my-locks", {});
  return (await r).locks;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe("NestJS TCP events-service as the catalog source", { skip: process.env.E2E_SERVER === "reference" }, () => {
  it("verifies holds against it, and refuses them when it is killed or slow", T, async (t) => {
    const svc = await eventsService(port);
    let alive = true;
    t.after(async () => alive && (await svc.app.close()));
    const buyer = client(t, "tcp-1");
    await next(buyer, "connected");

    // Event 42 exists only in the events-service: joining fetches it.
    const first = next(buyer, "availability-update", (a) => a.eventId === 42 && a.categoryId === 1);
    buyer.emit("join-event-room", { eventId: 42 });
    assert.equal((await next(buyer, "joined-event-room")).success, true);
    assert.deepEqual(((a) => [a.availableTickets, a.totalTickets])(await first), [8, 10]);
    const names = await (await fetch(`${server.url}/api/events`)).json();
    const e42 = names.events.find((e) => e.id === 42);
    assert.deepEqual(e42.categories.map((c) => c.name), CATEGORIES.map((c) => c.name));

    await sleep(150); // past the cache: the hold asks the events-service again
    const asked = svc.calls.length;
    const ok = await tryLock(buyer, 42, 1, 2);
    assert.equal(ok.success, true, JSON.stringify(ok));
    assert.equal(ok.availableTickets, 6);
    assert.ok(svc.calls.length > asked, "the hold was checked with get-ticket-categories");
    const missing = await tryLock(buyer, 42, 9, 1);
    assert.equal(missing.success, false);
    assert.match(missing.message, /category 9 not found/);

    // Kill the events-service mid-test: the next hold is refused, nothing else changes.
    await svc.app.close();
    alive = false;
    await sleep(150);
    const refused = await tryLock(buyer, 42, 2, 1);
    assert.deepEqual([refused.success, refused.message], [false, "Failed to verify ticket availability"]);
    assert.deepEqual((await myLocks(buyer)).map((l) => [l.categoryId, l.quantity]), [[1, 2]]);

    // Slow: it answers after the timeout, so the hold is refused in about the timeout.
    const slow = await eventsService(port, { delayMs: 2000 });
    t.after(() => slow.app.close());
    const started = Date.now();
    const late = await tryLock(buyer, 42, 2, 1);
    const took = Date.now() - started;
    assert.deepEqual([late.success, late.message], [false, "Failed to verify ticket availability"]);
    assert.ok(took >= 700 && took < 1900, `refused after ${took} ms`);
    assert.equal((await myLocks(buyer)).length, 1);
    const stats = await (await fetch(`${server.url}/stats`)).json();
    assert.ok(stats.eventsService.failures >= 2, JSON.stringify(stats.eventsService));
    assert.equal(stats.ticketLocks.activeLocks, 1);
  });
});

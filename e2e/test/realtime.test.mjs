// The ticketing platform's front-end flow against `switchboard serve` (namespace
// /realtime), with the official socket.io-client, as the Next.js TicketManager does it:
// connect with auth.token and query.userId, join, lock, see another client's update,
// my-locks, unlock, and a disconnect releasing the holds.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startServer, once } from "../lib/server.mjs";

const T = { timeout: 20000 };
let server;

before(async () => {
  if (process.env.E2E_SERVER === "reference") return;
  server = await startServer({ args: ["serve", "--data-dir", "memory", "--set", "coalesce_ms=0"] });
});
after(async () => server && (await server.stop()));

function client(t, userId) {
  const socket = io(`${server.url}/realtime`, {
    auth: { token: "fake_jwt_token_for_testing" },
    query: { userId },
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
  });
  t.after(() => socket.close());
  return socket;
}

/** Waits for the next `event` whose payload satisfies `pred`. */
function next(socket, event, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.off(event, on); reject(new Error(`no ${event} matching ${pred} within ${ms} ms`)); }, ms);
    function on(data) {
      if (pred(data)) { clearTimeout(timer); socket.off(event, on); resolve(data); }
    }
    socket.on(event, on);
  });
}

describe("/realtime ticketing flow", { skip: process.env.E2E_SERVER === "reference" }, () => {
  it("connects, joins, holds, sees others' holds, lists and releases", T, async (t) => {
    const alice = client(t, "101");
    const bob = client(t, "202");
    const [hello] = await Promise.all([next(alice, "connected"), next(bob, "connected")]);
    assert.equal(hello.success, true);
    assert.equal(typeof hello.sessionId, "string");

    const availability = next(alice, "availability-update", (a) => a.eventId === 1 && a.categoryId === 2);
    alice.emit("join-event-room", { eventId: 1 });
    const joined = await next(alice, "joined-event-room");
    assert.deepEqual([joined.success, joined.eventId], [true, 1]);
    const before = await availability;
    assert.equal(before.availableTickets, 200);
    assert.equal(before.lockedTickets, 0);
    bob.emit("join-event-room", { eventId: "1" }); // ids may be numeric strings
    await next(bob, "joined-event-room");

    // Bob holds 3 Standard seats; Alice sees it live.
    const seen = next(alice, "availability-update", (a) => a.categoryId === 2 && a.lockedTickets === 3);
    // The answer comes through the ack and also as an event (which may arrive after the ack).
    const lockEvent = next(bob, "lock-tickets-response");
    const locked = await new Promise((resolve) => bob.emit("lock-tickets", { eventId: 1, categoryId: "2", quantity: 3, userId: "999" }, resolve));
    assert.equal((await lockEvent).lockId, locked.lockId);
    assert.equal(locked.success, true, locked.message);
    assert.match(locked.lockId, /^lock_/);
    assert.ok(locked.expiresAt > Date.now() + 4 * 60 * 1000, "about five minutes");
    assert.equal(locked.availableTickets, 197);
    assert.equal((await seen).availableTickets, 197);

    // A second hold in the same category is refused, nothing changes.
    bob.emit("lock-tickets", { eventId: 1, categoryId: 2, quantity: 1 });
    const again = await next(bob, "lock-tickets-response");
    assert.equal(again.success, false);
    assert.match(again.message, /already hold/);

    bob.emit("get-my-locks", {});
    const mine = await next(bob, "my-locks-response");
    assert.equal(mine.locks.length, 1);
    const hold = mine.locks[0];
    assert.deepEqual(
      [hold.userId, hold.eventId, hold.categoryId, hold.quantity, hold.status],
      ["202", 1, 2, 3, "active"],
      "the authenticated user, not the userId field in the payload",
    );
    for (const k of ["lockId", "sessionId", "createdAt", "expiresAt"]) assert.ok(k in hold, k);

    const released = next(alice, "availability-update", (a) => a.categoryId === 2 && a.lockedTickets === 0);
    bob.emit("unlock-tickets", { eventId: 1, categoryId: 2, quantity: 3 });
    assert.equal((await next(bob, "unlock-tickets-response")).success, true);
    assert.equal((await released).availableTickets, 200);

    // A disconnect releases the holds of that session.
    const held = next(alice, "availability-update", (a) => a.categoryId === 1 && a.lockedTickets === 2);
    bob.emit("lock-tickets", { eventId: 1, categoryId: 1, quantity: 2 });
    assert.equal((await next(bob, "lock-tickets-response")).success, true);
    await held;
    const freed = next(alice, "availability-update", (a) => a.categoryId === 1 && a.lockedTickets === 0);
    bob.disconnect();
    assert.equal((await freed).availableTickets, 20);
  });

  it("answers bad input with success:false or error, and keeps serving", T, async (t) => {
    const c = client(t, "303");
    await next(c, "connected");
    const cases = [
      [{ eventId: 1, categoryId: 1, quantity: 0 }, /quantity/],
      [{ eventId: 1, categoryId: 1, quantity: -2 }, /quantity/],
      [{ eventId: 1, categoryId: 1, quantity: 2.5 }, /quantity/],
      [{ eventId: 1, categoryId: 1, quantity: 1e30 }, /quantity/],
      [{ eventId: 1, categoryId: 1, quantity: 11 }, /quantity/],
      [{ eventId: 1, categoryId: 1 }, /quantity/],
      [{ eventId: 99, categoryId: 1, quantity: 1 }, /not found/],
      [{ eventId: 1, categoryId: 99, quantity: 1 }, /not found/],
      [{ eventId: "abc", categoryId: 1, quantity: 1 }, /eventId/],
      [{ eventId: "99999999999999999999999", categoryId: 1, quantity: 1 }, /eventId/],
    ];
    for (const [payload, pattern] of cases) {
      const answer = await new Promise((resolve) => c.emit("lock-tickets", payload, resolve));
      assert.equal(answer.success, false, JSON.stringify(payload));
      assert.match(answer.message, pattern, JSON.stringify(payload));
    }
    // Each refusal above also sent an `error` event after its ack, and the last of them may
    // still be on its way: wait for the one this emit causes.
    c.emit("no-such-event", {});
    await next(c, "error", (e) => /Unknown event/.test(e.message));
    c.emit("lock-tickets", "x".repeat(1024 * 100));
    await next(c, "error", (e) => /Invalid payload/.test(e.message));
    // Nothing was held by any of that.
    c.emit("get-my-locks", {});
    assert.deepEqual((await next(c, "my-locks-response")).locks, []);
  });
});

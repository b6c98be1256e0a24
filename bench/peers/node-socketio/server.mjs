// The /realtime ticketing contract on Node socket.io v4, as the platform's NestJS
// realtime-service implements it, minus NestJS: a benchmark peer of Switchboard.
//
// Usage: node server.mjs [PORT] [REDIS_URL]   (or PORT=..., REDIS_URL=...); listens on
// 127.0.0.1 only.
// Development auth only: the user is the `userId` query parameter (as Switchboard's
// development mode). The catalog is Switchboard's demo catalog. Holds live in a Map,
// 5-minute TTL, one hold per user per category; every change broadcasts an
// `availability-update` to the room `event_{id}`.
//
// With a Redis URL the server joins a cluster the way the platform's realtime-service
// would scale out: the official @socket.io/redis-adapter (classic pub/sub) on ioredis, so
// a broadcast from any process reaches the room's clients on every process. Holds stay
// in each process's memory (the benchmark's cluster fan-out buys through one process).
import http from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Redis } from "ioredis";

const port = Number(process.argv[2] ?? process.env.PORT ?? 8880);
const redisUrl = process.argv[3] ?? process.env.REDIS_URL ?? "";
const HOLD_TTL_MS = 5 * 60 * 1000;
const MAX_QUANTITY = 10;

// (eventId, categoryId) -> seats
const categories = new Map();
for (const [eventId, id, seats] of [
  [1, 1, 20], [1, 2, 200], [1, 3, 100],
  [2, 4, 30], [2, 5, 300], [2, 6, 500],
]) {
  categories.set(`${eventId}:${id}`, { eventId, id, total: seats, available: seats, locked: 0 });
}
// `${userId}:${eventId}:${categoryId}` -> hold
const holds = new Map();
let nextLock = 1;

const toId = (v) => {
  const n = typeof v === "string" ? Number(v.trim()) : v;
  return Number.isInteger(n) ? n : undefined;
};

const availability = (c) => ({
  eventId: c.eventId,
  categoryId: c.id,
  availableTickets: c.available,
  lockedTickets: c.locked,
  totalTickets: c.total,
  timestamp: Date.now(),
});

const httpServer = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200).end("ok");
  } else if (req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ service: "node-socketio-peer", activeLocks: holds.size }));
  }
  // Everything else is socket.io's (it answers /socket.io/ itself).
});
const options = { cors: { origin: "*" } };
if (redisUrl) {
  const pub = new Redis(redisUrl);
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on("error", (e) => console.error(`redis: ${e.message}`));
  options.adapter = createAdapter(pub, sub);
}
const io = new Server(httpServer, options);
const realtime = io.of("/realtime");

function broadcast(eventId, categoryId) {
  const c = categories.get(`${eventId}:${categoryId}`);
  if (c) realtime.to(`event_${eventId}`).emit("availability-update", availability(c));
}

function release(key, hold) {
  holds.delete(key);
  const c = categories.get(`${hold.eventId}:${hold.categoryId}`);
  c.available += hold.quantity;
  c.locked -= hold.quantity;
  broadcast(hold.eventId, hold.categoryId);
}

function expire(now) {
  for (const [key, hold] of holds) {
    if (hold.expiresAt <= now) release(key, hold);
  }
}
setInterval(() => expire(Date.now()), 1000);

realtime.on("connection", (socket) => {
  const userId = socket.handshake.query.userId ?? `anonymous-${socket.id}`;
  socket.join(`user:${userId}`);
  socket.emit("connected", {
    success: true,
    sessionId: socket.id,
    message: "Connected to realtime service",
  });

  // Answers through the ack when the client asked for one, and as an event.
  const respond = (event, body, cb) => {
    if (typeof cb === "function") cb(body);
    socket.emit(event, body);
  };

  socket.on("join-event-room", (data, cb) => {
    const eventId = toId(data?.eventId);
    const cats = [...categories.values()].filter((c) => c.eventId === eventId);
    if (cats.length === 0) {
      respond("joined-event-room", { success: false, eventId, message: `Event ${eventId} not found` }, cb);
      return;
    }
    socket.join(`event_${eventId}`);
    respond("joined-event-room", { success: true, eventId, message: `Joined event ${eventId}` }, cb);
    for (const c of cats) socket.emit("availability-update", availability(c));
  });

  socket.on("leave-event-room", (data, cb) => {
    const eventId = toId(data?.eventId);
    socket.leave(`event_${eventId}`);
    respond("left-event-room", { success: true, eventId, message: `Left event ${eventId}` }, cb);
  });

  socket.on("lock-tickets", (data, cb) => {
    const eventId = toId(data?.eventId);
    const categoryId = toId(data?.categoryId);
    const quantity = toId(data?.quantity);
    const now = Date.now();
    expire(now);
    const c = categories.get(`${eventId}:${categoryId}`);
    const key = `${userId}:${eventId}:${categoryId}`;
    if (quantity === undefined || quantity < 1 || quantity > MAX_QUANTITY) {
      respond("lock-tickets-response", { success: false, message: `Invalid quantity: must be between 1 and ${MAX_QUANTITY}` }, cb);
    } else if (!c) {
      respond("lock-tickets-response", { success: false, message: "Category not found" }, cb);
    } else if (holds.has(key)) {
      respond("lock-tickets-response", { success: false, message: "You already hold tickets in this category" }, cb);
    } else if (c.available < quantity) {
      respond("lock-tickets-response", { success: false, message: "Not enough tickets available", availableTickets: c.available }, cb);
    } else {
      c.available -= quantity;
      c.locked += quantity;
      const hold = { lockId: `lock_${nextLock++}`, userId, eventId, categoryId, quantity, expiresAt: now + HOLD_TTL_MS, sessionId: socket.id };
      holds.set(key, hold);
      broadcast(eventId, categoryId);
      respond("lock-tickets-response", {
        success: true,
        lockId: hold.lockId,
        expiresAt: hold.expiresAt,
        message: `Locked ${quantity} ticket(s)`,
        availableTickets: c.available,
      }, cb);
    }
  });

  socket.on("unlock-tickets", (data, cb) => {
    const key = `${userId}:${toId(data?.eventId)}:${toId(data?.categoryId)}`;
    expire(Date.now());
    const hold = holds.get(key);
    if (!hold) {
      respond("unlock-tickets-response", { success: false, message: "No hold to release" }, cb);
      return;
    }
    release(key, hold);
    respond("unlock-tickets-response", { success: true, message: `Released ${hold.quantity} ticket(s)` }, cb);
  });

  socket.on("get-my-locks", (...args) => {
    const cb = args.at(-1);
    const locks = [...holds.values()].filter((h) => h.userId === userId);
    respond("my-locks-response", { locks }, cb);
  });

  socket.on("heartbeat", (...args) => {
    const cb = args.at(-1);
    respond("heartbeat-response", { success: true, timestamp: Date.now() }, cb);
  });

  socket.on("disconnect", () => {
    for (const [key, hold] of holds) {
      if (hold.sessionId === socket.id) release(key, hold);
    }
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  const addr = httpServer.address();
  const cluster = redisUrl ? ` (redis adapter on ${redisUrl})` : "";
  console.log(`node socket.io peer listening on http://${addr.address}:${addr.port}${cluster}`);
});

process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

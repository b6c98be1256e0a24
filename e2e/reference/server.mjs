// Reference implementation of the Switchboard conformance server contract,
// built on the official Node `socket.io` v4 / `engine.io` v6 packages.
//
// It is only used to check that the e2e tests themselves are correct:
//   E2E_SERVER=reference npm test
//
// Usage: node reference/server.mjs PORT [HOST]
import http from "node:http";
import { Server as EngineServer } from "engine.io";
import { Server } from "socket.io";
import { Adapter } from "socket.io-adapter";

const port = Number(process.argv[2] ?? process.env.PORT ?? 3000);
const host = process.argv[3] ?? "127.0.0.1";

const timings = {
  pingInterval: 300,
  pingTimeout: 200,
  maxHttpBufferSize: 1e6,
};

const httpServer = http.createServer();

// ---------------------------------------------------------------------------
// Socket.IO at /socket.io/
// ---------------------------------------------------------------------------
const io = new Server(httpServer, {
  path: "/socket.io/",
  ...timings,
  connectTimeout: 1000,
  cors: { origin: "*" },
  // Both engines are attached to the same http server: don't let the one that
  // does not own a given upgrade request destroy it.
  destroyUpgrade: false,
  // In the Node implementation this option is server wide; the contract wants
  // it on `/e2e` only, so it is switched off again for `/` and `/custom` below.
  connectionStateRecovery: {
    maxDisconnectionDuration: 2 * 60 * 1000,
    skipMiddlewares: true,
  },
});

for (const name of ["/", "/custom"]) {
  const nsp = io.of(name);
  // No connection state recovery here: a plain (non session-aware) adapter
  // means no offsets appended to emitted events and no session to restore,
  // and clearing the pid keeps it out of the CONNECT packet.
  nsp.adapter = new Adapter(nsp);
  nsp.use((socket, next) => {
    socket.pid = undefined;
    next();
  });
  nsp.on("connection", (socket) => {
    socket.emit("auth", socket.handshake.auth);

    if (name !== "/") return;

    socket.on("message", (...args) => {
      socket.emit("message-back", ...args);
    });

    socket.on("message-with-ack", (...args) => {
      const cb = args.pop();
      if (typeof cb === "function") cb(...args);
    });
  });
}

const e2e = io.of("/e2e");
e2e.on("connection", (socket) => {
  socket.on("join", (room, cb) => {
    socket.join(room);
    if (typeof cb === "function") cb(room);
  });

  socket.on("leave", (room, cb) => {
    socket.leave(room);
    if (typeof cb === "function") cb(room);
  });

  socket.on("to-room", (room, event, ...args) => {
    e2e.to(room).emit(event, ...args);
  });

  socket.on("to-room-except-me", (room, event, ...args) => {
    socket.to(room).emit(event, ...args);
  });

  socket.on("to-all", (event, ...args) => {
    e2e.emit(event, ...args);
  });

  socket.on("ask", (event, args, cb) => {
    socket
      .timeout(2000)
      .emit(event, ...(Array.isArray(args) ? args : []), (err, ...resp) => {
        if (typeof cb === "function") cb(err ? { error: "timeout" } : resp);
      });
  });

  socket.on("rooms", (cb) => {
    if (typeof cb !== "function") return;
    cb([...socket.rooms].filter((r) => r !== socket.id).sort());
  });

  socket.on("disconnect-me", () => {
    socket.disconnect(true);
  });
});

// Every other namespace is refused by socket.io with "Invalid namespace".

// ---------------------------------------------------------------------------
// Plain Engine.IO echo server at /engine.io/
// ---------------------------------------------------------------------------
const engine = new EngineServer({
  ...timings,
  cors: { origin: "*" },
});
engine.attach(httpServer, { path: "/engine.io/", destroyUpgrade: false });
engine.on("connection", (socket) => {
  socket.on("message", (data) => socket.send(data));
});

// ---------------------------------------------------------------------------

httpServer.listen(port, host, () => {
  const addr = httpServer.address();
  console.log(`reference server listening on http://${addr.address}:${addr.port}`);
});

// Exit promptly when the harness stops us; there is no state worth flushing.
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

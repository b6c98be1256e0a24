// End-to-end tests: the official socket.io-client@4 (and engine.io-client@6)
// against the server under test (Switchboard, or the Node reference server
// with E2E_SERVER=reference). See ../README.md.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import { Socket as EngineSocket } from "engine.io-client";

import { once, startServer, withTimeout } from "../lib/server.mjs";
import {
  ack,
  ackAll,
  client,
  connect,
  normalizeBinary,
  recorder,
  uniq,
  waitConnected,
} from "../lib/clients.mjs";

const T = { timeout: 15_000 };

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** Shorthands bound to the running server. */
const sio = (t, nsp, opts) => client(t, server.url, nsp, opts);
const sioConnect = (t, nsp, opts) => connect(t, server.url, nsp, opts);

const WS = { transports: ["websocket"] };
const POLLING = { transports: ["polling"] };

/** `message` -> `message-back` round trip; resolves with the echoed args. */
async function echo(socket, ...args) {
  const back = once(socket, "message-back", 5000);
  socket.emit("message", ...args);
  return back;
}

/**
 * Proves that `socket` has received everything the server queued for it
 * before this call: the ack of a `rooms` request (handled in order on the
 * server) comes after any event already queued to that socket. Only valid on
 * `/e2e`.
 */
async function barrier(socket) {
  return ack(socket, "rooms");
}

/** Recorder for events on `/e2e`, where every broadcast carries an offset. */
const e2eRecorder = (socket, event) => recorder(socket, event, { offset: true });

const SAMPLE_ARGS = [1, "2", { 3: [4], nested: { ok: true, nil: null } }, [5.5, "six"], true];

// ---------------------------------------------------------------------------
describe("websocket transport", () => {
  it("connects over websocket only and echoes message -> message-back", T, async (t) => {
    const socket = await sioConnect(t, "/", WS);
    assert.equal(socket.io.engine.transport.name, "websocket");
    assert.ok(socket.id, "socket has an id");
    assert.deepEqual(await echo(socket, ...SAMPLE_ARGS), SAMPLE_ARGS);
    assert.deepEqual(await echo(socket), []);
    assert.deepEqual(await echo(socket, "é ☃ 😀 \u0000 \n \"quoted\""), [
      "é ☃ 😀 \u0000 \n \"quoted\"",
    ]);
  });

  it("emits the handshake auth to the client on connection", T, async (t) => {
    const socket = sio(t, "/", { ...WS, auth: { user: "u1", n: 2 } });
    const auth = once(socket, "auth", 5000);
    await waitConnected(socket);
    assert.deepEqual(await auth, [{ user: "u1", n: 2 }]);
  });

  it("gives an empty auth object when the client sends none", T, async (t) => {
    const socket = sio(t, "/", WS);
    const auth = once(socket, "auth", 5000);
    await waitConnected(socket);
    assert.deepEqual(await auth, [{}]);
  });
});

// ---------------------------------------------------------------------------
describe("polling transport", () => {
  it("connects over polling only and echoes message -> message-back", T, async (t) => {
    const socket = await sioConnect(t, "/", POLLING);
    assert.equal(socket.io.engine.transport.name, "polling");
    assert.deepEqual(await echo(socket, ...SAMPLE_ARGS), SAMPLE_ARGS);
    assert.equal(socket.io.engine.transport.name, "polling", "must not upgrade");
  });

  it("delivers a burst of 50 emits, all in order", T, async (t) => {
    const socket = await sioConnect(t, "/", POLLING);
    const backs = recorder(socket, "message-back");
    for (let i = 0; i < 50; i++) socket.emit("message", i, `m${i}`);
    await backs.waitFor(50);
    // Settle: an ack round trip after the burst proves there are no extras.
    await ackAll(socket, "message-with-ack", "done");
    assert.deepEqual(
      backs.items,
      Array.from({ length: 50 }, (_, i) => [i, `m${i}`]),
    );
  });

  it("survives several ping cycles while idle (heartbeat)", T, async (t) => {
    // pingInterval is 300 ms: wait for a few server pings, then check the
    // session is still alive and usable.
    const socket = await sioConnect(t, "/", POLLING);
    const engine = socket.io.engine;
    const pings = recorder(engine, "ping");
    await pings.waitFor(3, 5000);
    assert.ok(socket.connected);
    assert.deepEqual(await echo(socket, "still-here"), ["still-here"]);
  });
});

// ---------------------------------------------------------------------------
describe("polling then upgrade", () => {
  it("upgrades from polling to websocket and keeps echoing", T, async (t) => {
    const socket = sio(t, "/"); // default transports: polling first, then upgrade
    // The engine exists synchronously (autoConnect), so no upgrade can be missed.
    const upgraded = once(socket.io.engine, "upgrade", 5000);
    await waitConnected(socket);
    // Echo may happen before or during the upgrade; both must work.
    assert.deepEqual(await echo(socket, "before-or-during"), ["before-or-during"]);
    await upgraded;
    assert.equal(socket.io.engine.transport.name, "websocket");
    assert.deepEqual(await echo(socket, ...SAMPLE_ARGS), SAMPLE_ARGS);
    const backs = recorder(socket, "message-back");
    for (let i = 0; i < 20; i++) socket.emit("message", i);
    await backs.waitFor(20);
    assert.deepEqual(backs.items, Array.from({ length: 20 }, (_, i) => [i]));
  });
});

// ---------------------------------------------------------------------------
describe("binary payloads", () => {
  const bytes = (n, seed = 0) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

  for (const [name, opts] of [
    ["websocket", WS],
    ["polling", POLLING],
  ]) {
    it(`round-trips Buffer, Uint8Array and nested binary over ${name}`, T, async (t) => {
      const socket = await sioConnect(t, "/", opts);
      const buf = bytes(256);
      const u8 = new Uint8Array(bytes(10, 3));
      const big = bytes(100_000, 9);
      const sent = [
        buf,
        "text",
        { nested: { bin: u8, list: [bytes(3, 1), 42, { deeper: bytes(0) }] }, n: 1 },
        big,
      ];
      const back = await echo(socket, ...sent);
      assert.equal(back.length, 4);
      assert.ok(
        back[0] instanceof ArrayBuffer || ArrayBuffer.isView(back[0]),
        `first arg must arrive as binary, got ${Object.prototype.toString.call(back[0])}`,
      );
      assert.deepEqual(normalizeBinary(back), normalizeBinary(sent));
    });

    it(`acks with binary arguments over ${name}`, T, async (t) => {
      const socket = await sioConnect(t, "/", opts);
      const payload = ["a", bytes(64, 5), { b: bytes(5, 6) }];
      const resp = await ackAll(socket, "message-with-ack", ...payload);
      assert.deepEqual(normalizeBinary(resp), normalizeBinary(payload));
    });
  }
});

// ---------------------------------------------------------------------------
describe("acknowledgements", () => {
  it("client -> server: message-with-ack returns the same args", T, async (t) => {
    const socket = await sioConnect(t, "/", WS);
    const resp = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no ack within 5 s")), 5000);
      socket.emit("message-with-ack", 1, "2", { 3: [4] }, (...args) => {
        clearTimeout(timer);
        resolve(args);
      });
    });
    assert.deepEqual(resp, [1, "2", { 3: [4] }]);
  });

  it("client -> server: many concurrent acks are matched to their emits", T, async (t) => {
    const socket = await sioConnect(t, "/", WS);
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => ackAll(socket, "message-with-ack", i, `v${i}`)),
    );
    assert.deepEqual(results, Array.from({ length: 30 }, (_, i) => [i, `v${i}`]));
  });

  for (const [name, opts] of [
    ["websocket", WS],
    ["polling", POLLING],
  ]) {
    it(`server -> client (via ask) over ${name}: the client's ack answer is relayed`, T, async (t) => {
      const socket = await sioConnect(t, "/e2e", opts);
      const questions = [];
      socket.on("question", (...args) => {
        const cb = args.pop();
        assert.equal(typeof cb, "function", "server emit must carry an ack id");
        questions.push(args);
        cb("answer", ...args);
      });
      const resp = await ack(socket, "ask", "question", [1, "two", { three: [3] }]);
      assert.deepEqual(questions, [[1, "two", { three: [3] }]]);
      assert.deepEqual(resp, ["answer", 1, "two", { three: [3] }]);
    });
  }

  it("a handler that waits keeps its place: events after it are handled after it", T, async (t) => {
    // `ask` waits for this client's answer (given 150 ms late); the `rooms` requests sent
    // right behind it are handled at once by the server, but only after `ask` is done.
    // Switchboard's promise (one handler at a time per socket, in order); Node's server
    // runs handlers concurrently, so the reference server is not held to it.
    if (process.env.E2E_SERVER === "reference") return t.skip("per-socket order is Switchboard's");
    const socket = await sioConnect(t, "/e2e", WS);
    socket.on("slow-question", (cb) => setTimeout(() => cb("late"), 150));
    const done = [];
    const asked = ack(socket, "ask", "slow-question", []).then((r) => done.push(["ask", r]));
    const after = [1, 2, 3].map((i) => ack(socket, "rooms").then(() => done.push(["rooms", i])));
    await Promise.all([asked, ...after]);
    assert.deepEqual(done, [["ask", ["late"]], ["rooms", 1], ["rooms", 2], ["rooms", 3]]);
  });

  it("server -> client (via ask) with binary in both directions", T, async (t) => {
    const socket = await sioConnect(t, "/e2e", WS);
    socket.on("bin-question", (data, cb) => {
      const b = normalizeBinary(data);
      cb(Buffer.from(b).reverse());
    });
    const resp = await ack(socket, "ask", "bin-question", [Buffer.from([1, 2, 3, 4])]);
    assert.deepEqual(normalizeBinary(resp), [Buffer.from([4, 3, 2, 1])]);
  });

  it("server -> client ack times out when the client never answers", T, async (t) => {
    const socket = await sioConnect(t, "/e2e", WS);
    socket.on("ignored", () => {
      /* deliberately never calls the ack */
    });
    const resp = await ack(socket, "ask", "ignored", ["x"]);
    assert.deepEqual(resp, { error: "timeout" });
  });
});

// ---------------------------------------------------------------------------
describe("namespaces", () => {
  it("/custom receives the handshake auth object", T, async (t) => {
    const socket = sio(t, "/custom", { ...WS, auth: { token: "abc" } });
    const auth = once(socket, "auth", 5000);
    await waitConnected(socket);
    assert.deepEqual(await auth, [{ token: "abc" }]);
  });

  it("/custom receives the handshake auth object over polling", T, async (t) => {
    const socket = sio(t, "/custom", { ...POLLING, auth: { token: "abc" } });
    const auth = once(socket, "auth", 5000);
    await waitConnected(socket);
    assert.deepEqual(await auth, [{ token: "abc" }]);
  });

  for (const [name, opts] of [
    ["websocket", WS],
    ["polling", POLLING],
  ]) {
    it(`an unknown namespace gets connect_error "Invalid namespace" (${name})`, T, async (t) => {
      const socket = sio(t, "/random", opts);
      const connected = [];
      socket.on("connect", () => connected.push(true));
      const [err] = await once(socket, "connect_error", 5000);
      assert.equal(err.message, "Invalid namespace");
      assert.equal(socket.connected, false);
      assert.deepEqual(connected, []);
    });
  }

  it("two namespaces multiplexed on one manager both work", T, async (t) => {
    const manager = new Manager(server.url, { reconnection: false, timeout: 5000 });
    const root = manager.socket("/");
    const custom = manager.socket("/custom", { auth: { token: "mux" } });
    t.after(() => {
      root.disconnect();
      custom.disconnect();
    });
    const rootAuth = once(root, "auth", 5000);
    const customAuth = once(custom, "auth", 5000);
    await Promise.all([waitConnected(root), waitConnected(custom)]);
    assert.equal(root.io, custom.io, "same manager");
    assert.deepEqual(await rootAuth, [{}]);
    assert.deepEqual(await customAuth, [{ token: "mux" }]);
    assert.notEqual(root.id, custom.id, "each namespace socket has its own id");

    assert.deepEqual(await echo(root, "over-mux"), ["over-mux"]);

    // An unknown namespace on the same connection is refused without
    // disturbing the others.
    const bad = manager.socket("/random");
    t.after(() => bad.disconnect());
    const [err] = await once(bad, "connect_error", 5000);
    assert.equal(err.message, "Invalid namespace");

    // Leaving one namespace keeps the shared connection and the other namespace alive.
    const engineId = manager.engine.id;
    const customGone = once(custom, "disconnect", 5000);
    custom.disconnect();
    await customGone;
    assert.equal(manager.engine.id, engineId);
    assert.deepEqual(await echo(root, "still-muxed"), ["still-muxed"]);
    assert.deepEqual(await ackAll(root, "message-with-ack", 7), [7]);
  });
});

// ---------------------------------------------------------------------------
describe("rooms (/e2e)", () => {
  it("to-room, to-room-except-me, leave and rooms", T, async (t) => {
    const r1 = uniq("r1");
    const [A, B, C] = await Promise.all([
      sioConnect(t, "/e2e", WS),
      sioConnect(t, "/e2e", WS),
      sioConnect(t, "/e2e", POLLING), // mixed transports on purpose
    ]);
    const ev = uniq("ev");
    const got = { A: e2eRecorder(A, ev), B: e2eRecorder(B, ev), C: e2eRecorder(C, ev) };

    assert.equal(await ack(A, "join", r1), r1);
    assert.equal(await ack(B, "join", r1), r1);
    assert.deepEqual(await barrier(A), [r1]);
    assert.deepEqual(await barrier(C), []);

    // C (not a member) targets r1: A and B get it, C does not.
    C.emit("to-room", r1, ev, "one", { n: 1 });
    await Promise.all([got.A.waitFor(1), got.B.waitFor(1)]);
    await Promise.all([barrier(A), barrier(B), barrier(C)]);
    assert.deepEqual(got.A.items, [["one", { n: 1 }]]);
    assert.deepEqual(got.B.items, [["one", { n: 1 }]]);
    assert.deepEqual(got.C.items, []);

    // A excludes itself: only B.
    A.emit("to-room-except-me", r1, ev, "two");
    await got.B.waitFor(2);
    await Promise.all([barrier(A), barrier(B), barrier(C)]);
    assert.deepEqual(got.A.items, [["one", { n: 1 }]]);
    assert.deepEqual(got.B.items, [["one", { n: 1 }], ["two"]]);
    assert.deepEqual(got.C.items, []);

    // After A leaves, only B.
    assert.equal(await ack(A, "leave", r1), r1);
    assert.deepEqual(await barrier(A), []);
    C.emit("to-room", r1, ev, "three");
    await got.B.waitFor(3);
    await Promise.all([barrier(A), barrier(B), barrier(C)]);
    assert.deepEqual(got.A.items, [["one", { n: 1 }]]);
    assert.deepEqual(got.B.items, [["one", { n: 1 }], ["two"], ["three"]]);
    assert.deepEqual(got.C.items, []);
  });

  it("rooms ack lists every joined room, sorted, without the socket's own id", T, async (t) => {
    const A = await sioConnect(t, "/e2e", WS);
    const names = [uniq("zeta"), uniq("alpha"), uniq("mid")];
    for (const r of names) assert.equal(await ack(A, "join", r), r);
    assert.equal(await ack(A, "join", names[0]), names[0]); // joining twice is a no-op
    const rooms = await barrier(A);
    assert.deepEqual(rooms, [...names].sort());
    assert.ok(!rooms.includes(A.id));
    await ack(A, "leave", names[1]);
    assert.deepEqual(await barrier(A), [names[0], names[2]].sort());
  });

  it("to-all reaches every socket of the namespace (and only that namespace)", T, async (t) => {
    const [A, B] = await Promise.all([sioConnect(t, "/e2e", WS), sioConnect(t, "/e2e", POLLING)]);
    const root = await sioConnect(t, "/", WS);
    const ev = uniq("all");
    const got = { A: e2eRecorder(A, ev), B: e2eRecorder(B, ev), root: recorder(root, ev) };
    A.emit("to-all", ev, 1, "x");
    await Promise.all([got.A.waitFor(1), got.B.waitFor(1)]);
    await ackAll(root, "message-with-ack"); // root had its chance to (wrongly) receive it
    assert.deepEqual(got.A.items, [[1, "x"]]);
    assert.deepEqual(got.B.items, [[1, "x"]]);
    assert.deepEqual(got.root.items, []);
  });
});

// ---------------------------------------------------------------------------
describe("connection state recovery (/e2e)", () => {
  const RECONNECTING = {
    ...WS,
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
  };

  /**
   * A joins a room and receives one event (so it holds an offset); returns
   * recorders for the "first" and "missed" events.
   */
  async function setUp(t) {
    const room = uniq("r1");
    const A = await sioConnect(t, "/e2e", RECONNECTING);
    const B = await sioConnect(t, "/e2e", WS);
    assert.equal(A.recovered, false, "a fresh session is not recovered");
    assert.equal(await ack(A, "join", room), room);
    const first = e2eRecorder(A, "first");
    const missed = e2eRecorder(A, "missed");
    B.emit("to-room", room, "first", 0);
    await first.waitFor(1);
    return { room, A, B, first, missed };
  }

  async function emitWhileAway(B, room) {
    for (let i = 1; i <= 3; i++) B.emit("to-room", room, "missed", i, `payload-${i}`);
    // B's own ack round trip proves the server has handled all three emits.
    await barrier(B);
  }

  async function assertRecovered({ A, room, first, missed }) {
    assert.equal(A.recovered, true, "A.recovered after reconnect");
    await missed.waitFor(3);
    // Bounded settle: anything still queued for A arrives before this ack.
    assert.deepEqual(await barrier(A), [room], "rooms are restored");
    assert.deepEqual(missed.items, [
      [1, "payload-1"],
      [2, "payload-2"],
      [3, "payload-3"],
    ]);
    assert.deepEqual(first.items, [[0]], "already-received events are not replayed");
    const offsets = [...first.offsets, ...missed.offsets];
    assert.equal(new Set(offsets).size, offsets.length, `offsets are distinct: ${offsets}`);
  }

  it("automatic reconnect after a transport close recovers missed room events", T, async (t) => {
    const ctx = await setUp(t);
    const { A, B, room } = ctx;
    const oldId = A.id;
    const disconnected = once(A, "disconnect", 5000);
    const reconnected = once(A, "connect", 10_000);
    A.io.engine.close(); // transport close: recoverable
    await disconnected;
    assert.equal(A.connected, false);
    await emitWhileAway(B, room);
    await reconnected;
    assert.equal(A.id, oldId, "recovered socket keeps its id");
    await assertRecovered(ctx);
  });

  it("events emitted while the client is offline are replayed exactly once", T, async (t) => {
    // Same as above, but reconnection is held back until the server has
    // certainly handled B's emits, so the replay path is always exercised.
    const ctx = await setUp(t);
    const { A, B, room } = ctx;
    const disconnected = once(A, "disconnect", 5000);
    A.io.reconnection(false);
    A.io.engine.close();
    await disconnected;
    await emitWhileAway(B, room);
    assert.deepEqual(ctx.missed.items, [], "nothing delivered while offline");
    const reconnected = once(A, "connect", 10_000);
    A.io.reconnection(true);
    A.connect(); // same Manager and Socket: sends the CONNECT with pid + offset
    await reconnected;
    await assertRecovered(ctx);

    // The recovered session is fully live.
    const live = e2eRecorder(A, "live");
    B.emit("to-room", room, "live", "after");
    await live.waitFor(1);
    assert.deepEqual(live.items, [["after"]]);
  });

  it("a brand-new client is not recovered", T, async (t) => {
    const socket = await sioConnect(t, "/e2e", WS);
    assert.equal(socket.recovered, false);
    assert.deepEqual(await barrier(socket), []);
  });

  it("a client-initiated disconnect then connect starts a fresh session", T, async (t) => {
    const A = await sioConnect(t, "/e2e", RECONNECTING);
    const room = uniq("r1");
    await ack(A, "join", room);
    const ev = e2eRecorder(A, "ping-ev");
    A.emit("to-room", room, "ping-ev", 1); // gives A an offset
    await ev.waitFor(1);
    const oldId = A.id;
    const gone = once(A, "disconnect", 5000);
    A.disconnect();
    const [reason] = await gone;
    assert.equal(reason, "io client disconnect");
    const back = once(A, "connect", 5000);
    A.connect();
    await back;
    assert.equal(A.recovered, false, "explicit disconnect is not recoverable");
    assert.notEqual(A.id, oldId);
    assert.deepEqual(await barrier(A), []);
  });
});

// ---------------------------------------------------------------------------
describe("many clients", () => {
  it("200 websocket clients join one room and all receive one to-room emit", { timeout: 30_000 }, async (t) => {
    const N = 200;
    const room = uniq("crowd");
    const ev = uniq("crowd-ev");
    const sockets = await Promise.all(
      Array.from({ length: N }, () => sioConnect(t, "/e2e", WS)),
    );
    assert.equal(new Set(sockets.map((s) => s.id)).size, N, "ids are unique");
    const recs = sockets.map((s) => e2eRecorder(s, ev));
    await Promise.all(sockets.map(async (s) => assert.equal(await ack(s, "join", room), room)));
    sockets[0].emit("to-room", room, ev, "hello", 42);
    await Promise.all(recs.map((r) => r.waitFor(1, 10_000)));
    await Promise.all(sockets.map((s) => barrier(s)));
    for (const r of recs) assert.deepEqual(r.items, [["hello", 42]]);
  });
});

// ---------------------------------------------------------------------------
describe("server-side disconnect", () => {
  for (const [name, opts] of [
    ["websocket", WS],
    ["polling", POLLING],
  ]) {
    it(`disconnect-me -> client gets "io server disconnect" (${name})`, T, async (t) => {
      // Reconnection is enabled: after a server-side disconnect the client
      // must consider the socket inactive and not reconnect on its own.
      const socket = await sioConnect(t, "/e2e", { ...opts, reconnection: true, reconnectionDelay: 50 });
      const disconnected = once(socket, "disconnect", 5000);
      socket.emit("disconnect-me");
      const [reason] = await disconnected;
      assert.equal(reason, "io server disconnect");
      assert.equal(socket.connected, false);
      assert.equal(socket.active, false);
    });
  }

  it("disconnect-me closes the whole connection: every namespace on it is disconnected", T, async (t) => {
    // socket.disconnect(true) closes the underlying connection; the Node
    // server first sends a DISCONNECT to every namespace socket on it.
    const manager = new Manager(server.url, { ...WS, reconnection: false, timeout: 5000 });
    const root = manager.socket("/");
    const e2e = manager.socket("/e2e");
    t.after(() => {
      root.disconnect();
      e2e.disconnect();
    });
    await Promise.all([waitConnected(root), waitConnected(e2e)]);
    const e2eGone = once(e2e, "disconnect", 5000);
    const rootGone = once(root, "disconnect", 5000);
    e2e.emit("disconnect-me");
    assert.deepEqual((await e2eGone)[0], "io server disconnect");
    assert.deepEqual((await rootGone)[0], "io server disconnect");
    assert.equal(root.active, false);
  });
});

// ---------------------------------------------------------------------------
describe("plain Engine.IO echo (/engine.io/)", () => {
  function engineClient(t, transports) {
    const socket = new EngineSocket(server.url, { path: "/engine.io/", transports });
    t.after(() => socket.close());
    return socket;
  }

  for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
    it(`echoes text and binary messages (${transports.join(" -> ")})`, T, async (t) => {
      const socket = engineClient(t, transports);
      const messages = recorder(socket, "message");
      const [handshake] = await withTimeout(
        new Promise((resolve, reject) => {
          socket.once("handshake", (data) => resolve([data]));
          socket.once("error", reject);
        }),
        5000,
        "engine.io handshake",
      );
      assert.equal(handshake.pingInterval, 300);
      assert.equal(handshake.pingTimeout, 200);
      assert.equal(handshake.maxPayload, 1e6);
      if (transports.length > 1) {
        assert.deepEqual(handshake.upgrades, ["websocket"]);
        await once(socket, "upgrade", 5000);
      }
      const bin = Buffer.from([0, 1, 2, 253, 254, 255]);
      socket.send("hello");
      socket.send(bin);
      socket.send("");
      socket.send("日本語 ✓");
      await messages.waitFor(4);
      assert.equal(messages.items[0][0], "hello");
      assert.deepEqual(normalizeBinary(messages.items[1][0]), bin);
      // The client reports an empty message as undefined.
      assert.equal(messages.items[2][0] ?? "", "");
      assert.equal(messages.items[3][0], "日本語 ✓");
    });
  }
});

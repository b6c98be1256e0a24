// Client-side helpers shared by the e2e tests.
import { io } from "socket.io-client";

const CONNECT_TIMEOUT_MS = 5000;
let counter = 0;

/** A name that is unique within this test process (rooms, events...). */
export function uniq(prefix) {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`;
}

/**
 * Creates a socket.io-client socket on `nsp` that is closed when test `t`
 * ends. Every socket gets its own Manager (forceNew) so tests never share an
 * Engine.IO connection by accident. Reconnection is off unless asked for, so
 * unexpected drops surface as failures instead of being papered over.
 */
export function client(t, url, nsp = "/", opts = {}) {
  const socket = io(url + nsp, {
    forceNew: true,
    reconnection: false,
    timeout: CONNECT_TIMEOUT_MS,
    ...opts,
  });
  t.after(() => {
    socket.disconnect();
  });
  return socket;
}

/** Resolves once `socket` is connected; rejects on connect_error or timeout. */
export function waitConnected(socket, ms = CONNECT_TIMEOUT_MS) {
  if (socket.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      cleanup();
      reject(new Error(`connect_error on ${socket.nsp}: ${err?.message ?? err}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms connecting to ${socket.nsp}`));
    }, ms);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** client() + waitConnected(). */
export async function connect(t, url, nsp = "/", opts = {}) {
  return waitConnected(client(t, url, nsp, opts));
}

/**
 * Records every occurrence of `event` on `emitter` (as an array of its
 * arguments) from now on. Attach it BEFORE the events can arrive.
 *
 * With `{offset: true}` (namespaces with connection state recovery, i.e.
 * `/e2e`): the server appends the event's offset as a trailing string
 * argument, which the official client leaves visible to listeners. It is
 * checked, stripped from `items` and kept in `offsets`. A missing offset
 * shows up as a trailing "<missing offset>" argument, failing comparisons.
 */
export function recorder(emitter, event, { offset = false } = {}) {
  const items = [];
  const offsets = [];
  let waiters = [];
  emitter.on(event, (...args) => {
    if (offset) {
      const last = args.at(-1);
      if (typeof last === "string" && last.length > 0) {
        offsets.push(last);
        args = args.slice(0, -1);
      } else {
        args = [...args, "<missing offset>"];
      }
    }
    items.push(args);
    waiters = waiters.filter((w) => {
      if (items.length >= w.n) {
        clearTimeout(w.timer);
        w.resolve(items);
        return false;
      }
      return true;
    });
  });
  return {
    items,
    offsets,
    /** Resolves with all items once at least `n` were recorded. */
    waitFor(n, ms = 5000) {
      if (items.length >= n) return Promise.resolve(items);
      return new Promise((resolve, reject) => {
        const w = { n, resolve };
        w.timer = setTimeout(() => {
          waiters = waiters.filter((x) => x !== w);
          reject(
            new Error(
              `timed out after ${ms} ms waiting for ${n} "${event}" events ` +
                `(got ${items.length}: ${JSON.stringify(items).slice(0, 500)})`,
            ),
          );
        }, ms);
        waiters.push(w);
      });
    },
  };
}

/** Emits with an acknowledgement and a timeout; resolves with the ack's FIRST argument. */
export function ack(socket, ...args) {
  return socket.timeout(5000).emitWithAck(...args);
}

/** Emits with an acknowledgement; resolves with ALL ack arguments. */
export function ackAll(socket, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(...args, (err, ...resp) => (err ? reject(err) : resolve(resp)));
  });
}

/**
 * Deep-converts any binary value (Buffer, typed array, DataView, ArrayBuffer)
 * into a plain Buffer, so payloads decoded by different transports (Buffer
 * over websocket, ArrayBuffer over polling) compare equal.
 */
export function normalizeBinary(value) {
  if (value instanceof ArrayBuffer) return Buffer.from(new Uint8Array(value));
  if (ArrayBuffer.isView(value)) {
    return Buffer.from(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  }
  if (Array.isArray(value)) return value.map(normalizeBinary);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalizeBinary(v)]));
  }
  return value;
}

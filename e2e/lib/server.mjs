// Harness helpers: start the server under test on a free port and wait for it.
//
//   E2E_SERVER=reference  -> node e2e/reference/server.mjs PORT
//   otherwise             -> $SWITCHBOARD_BIN conformance --listen 127.0.0.1:PORT
//                            (SWITCHBOARD_BIN defaults to ../target/debug/switchboard,
//                             relative to e2e/)
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const HOST = "127.0.0.1";
const READY_POLL_MS = 50;
const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
const MAX_LOG_CHARS = 20_000;

/** Asks the OS for a free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Which server to start, as {name, command, args}. */
export function serverCommand(port, opts = {}) {
  if (process.env.E2E_SERVER === "reference" && !opts.args) {
    return {
      name: "reference (node socket.io)",
      command: process.execPath,
      args: [path.join(E2E_DIR, "reference", "server.mjs"), String(port)],
    };
  }
  const bin = path.resolve(
    E2E_DIR,
    process.env.SWITCHBOARD_BIN || path.join("..", "target", "debug", "switchboard"),
  );
  if (!existsSync(bin)) {
    throw new Error(
      `Switchboard binary not found at ${bin}. Build it (cargo build) or set ` +
        `SWITCHBOARD_BIN, or run against the reference server with E2E_SERVER=reference.`,
    );
  }
  return {
    name: `switchboard (${bin})`,
    command: bin,
    // `opts.args` selects another mode (e.g. `serve --data-dir memory`); default: conformance.
    args: [...(opts.args ?? ["conformance"]), "--listen", `${HOST}:${port}`],
  };
}

function appendCapped(buf, chunk) {
  const next = buf + chunk;
  return next.length > MAX_LOG_CHARS ? next.slice(next.length - MAX_LOG_CHARS) : next;
}

/**
 * Starts the server under test and resolves once
 * `GET /socket.io/?EIO=4&transport=polling` answers 200.
 *
 * Options: `args` (the mode and its flags; default `conformance`), `port` (a fixed port,
 * e.g. the one of a server being restarted; default a free one).
 * `stop(signal)` sends SIGTERM (a graceful shutdown) unless told otherwise: `"SIGKILL"`
 * simulates a crash.
 *
 * @returns {Promise<{url: string, port: number, name: string, stop: (signal?: string) => Promise<void>, logs: () => {stdout: string, stderr: string}}>}
 */
export async function startServer(opts = {}) {
  const port = opts.port ?? (await freePort());
  const { name, command, args } = serverCommand(port, opts);

  const child = spawn(command, args, {
    cwd: E2E_DIR,
    stdio: ["ignore", "pipe", "pipe"],
    env: { RUST_BACKTRACE: "1", ...process.env },
  });

  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d) => (stdout = appendCapped(stdout, d)));
  child.stderr.setEncoding("utf8").on("data", (d) => (stderr = appendCapped(stderr, d)));
  if (process.env.E2E_SERVER_LOGS) {
    child.stdout.on("data", (d) => process.stderr.write(`[server] ${d}`));
    child.stderr.on("data", (d) => process.stderr.write(`[server] ${d}`));
  }

  let exited = null; // {code, signal} once the process is gone
  let spawnError = null;
  const exitPromise = new Promise((resolve) => {
    child.once("close", (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.once("error", (err) => {
      spawnError = err;
      exited ??= { code: null, signal: null };
      resolve(exited);
    });
  });

  const url = `http://${HOST}:${port}`;

  async function stop(signal = "SIGTERM") {
    if (exited) return;
    child.kill(signal);
    const timer = setTimeout(() => {
      if (!exited) child.kill("SIGKILL");
    }, STOP_TIMEOUT_MS);
    await exitPromise;
    clearTimeout(timer);
  }

  const describeFailure = (why) =>
    new Error(
      `${name} did not become ready on ${url}: ${why}\n` +
        `command: ${command} ${args.join(" ")}\n` +
        `--- server stderr ---\n${stderr || "(empty)"}\n` +
        `--- server stdout ---\n${stdout || "(empty)"}`,
    );

  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastProblem = "no response yet";
  for (;;) {
    if (spawnError) throw describeFailure(`failed to spawn: ${spawnError.message}`);
    if (exited) {
      throw describeFailure(
        `process exited early (code ${exited.code}, signal ${exited.signal})`,
      );
    }
    try {
      const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling`, {
        signal: AbortSignal.timeout(1000),
      });
      await res.arrayBuffer().catch(() => {});
      if (res.status === 200) break;
      lastProblem = `HTTP ${res.status}`;
    } catch (err) {
      lastProblem = err?.cause?.code ?? err?.message ?? String(err);
    }
    if (Date.now() >= deadline) {
      await stop();
      throw describeFailure(`gave up after ${READY_TIMEOUT_MS} ms (last: ${lastProblem})`);
    }
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }

  // `signal` sends a signal without waiting (SIGSTOP / SIGCONT a node in cluster tests).
  return { url, port, name, stop, signal: (s) => child.kill(s), logs: () => ({ stdout, stderr }) };
}

/**
 * Resolves with the event's arguments (as an array) the next time `emitter`
 * emits `event`; rejects after `ms` milliseconds.
 * Works with Node EventEmitters and socket.io's component-emitter.
 */
export function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const onEvent = (...args) => {
      clearTimeout(timer);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, onEvent);
      reject(new Error(`timed out after ${ms} ms waiting for "${event}"`));
    }, ms);
    emitter.once(event, onEvent);
  });
}

/** Rejects `promise` if it does not settle within `ms`. */
export function withTimeout(promise, ms, what = "operation") {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Cluster harness: a private redis-server on a free port (never the shared one: these
// tests restart and kill it), Switchboard nodes on it, and a Node socket.io server with
// the official @socket.io/redis-adapter on the same Redis.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import os from "node:os";
import path from "node:path";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Redis } from "ioredis";
import { freePort, startServer } from "./server.mjs";

export const KEY = "cluster-e2e-key";

/** Polls `f` until it returns a truthy value. */
export async function until(what, f, ms = 10_000, every = 25) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

/**
 * A redis-server of our own. `restart()` stops it and starts it again on the same port
 * (with the same data dir, so AOF survives when enabled).
 */
export async function startRedis({ appendonly = false } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "sb-redis-"));
  let child;
  let logs = "";
  const launch = async () => {
    child = spawn("redis-server", [
      "--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "",
      "--appendonly", appendonly ? "yes" : "no", "--appendfsync", "always",
    ], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.setEncoding("utf8").on("data", (d) => (logs = (logs + d).slice(-5000)));
    child.stderr.setEncoding("utf8").on("data", (d) => (logs = (logs + d).slice(-5000)));
    const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on("error", () => {});
    await until("redis-server up", async () => {
      try {
        await probe.connect();
      } catch {
        return false;
      }
      return (await probe.ping()) === "PONG";
    }, 10_000, 50).catch((e) => {
      throw new Error(`${e.message}\n${logs}`);
    });
    probe.disconnect();
  };
  const stop = async (signal = "SIGTERM") => {
    if (!child || child.exitCode !== null || child.signalCode) return;
    const gone = new Promise((r) => child.once("close", r));
    child.kill(signal);
    await gone;
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    restart: async () => {
      await stop();
      await launch();
    },
    close: async () => {
      await stop("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
    logs: () => logs,
  };
}

/** A Switchboard node on `redis`. */
export async function startNode(redis, id, extra = []) {
  const node = await startServer({
    args: [
      "serve", "--data-dir", "memory", "--redis-url", redis.url,
      "--set", `node_id=${id}`, "--set", `api_key=${KEY}`, "--set", "coalesce_ms=0",
      "--set", "node_timeout_secs=3", "--set", "rate_limit_per_sec=0", "--set", "rate_limit_per_user_per_sec=0", ...extra,
    ],
  });
  node.id = id;
  return node;
}

export async function getJson(url) {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

/** Waits until every node lists `n` live nodes and is ready. */
export async function waitFleet(nodes, n = nodes.length) {
  for (const node of nodes) {
    await until(`${node.id} sees ${n} nodes`, async () => {
      const { body } = await getJson(`${node.url}/stats`);
      return body.cluster?.nodes?.length === n;
    });
    await until(`${node.id} ready`, async () => (await getJson(`${node.url}/ready`)).status === 200);
  }
}

export async function publish(node, body) {
  const res = await fetch(`${node.url}/api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`publish: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * A Node socket.io 4.8 server with @socket.io/redis-adapter on `redis` (the platform's
 * realtime-service as it runs today): `/realtime` with `join-event-room`.
 */
export async function startNodeServer(redis) {
  const pub = new Redis(redis.port, "127.0.0.1");
  const sub = pub.duplicate();
  pub.on("error", () => {});
  sub.on("error", () => {});
  const http = createServer();
  const io = new Server(http, { adapter: createAdapter(pub, sub, { requestsTimeout: 3000 }) });
  const realtime = io.of("/realtime");
  realtime.on("connection", (socket) => {
    socket.on("join-event-room", ({ eventId }, ack) => {
      socket.join(`event_${eventId}`);
      ack?.({ success: true, eventId });
    });
  });
  const port = await freePort();
  await new Promise((r) => http.listen(port, "127.0.0.1", r));
  return {
    io,
    realtime,
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      io.close();
      pub.disconnect();
      sub.disconnect();
    },
  };
}

/**
 * Debian's haproxy with the repository's deploy/haproxy.cfg in front of three nodes.
 * Fails loudly when haproxy is missing (scripts/test installs it).
 */
export async function startHaproxy(nodes) {
  const { spawnSync } = await import("node:child_process");
  if (spawnSync("haproxy", ["-v"]).status !== 0) {
    throw new Error("haproxy is not installed (Debian: apt-get install haproxy; scripts/test installs it)");
  }
  const port = await freePort();
  const cfg = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..", "deploy", "haproxy.cfg");
  const env = {
    ...process.env,
    SB_LB_BIND: `127.0.0.1:${port}`,
    SB_NODE_A: nodes[0].url.replace("http://", ""),
    SB_NODE_B: nodes[1].url.replace("http://", ""),
    SB_NODE_C: nodes[2].url.replace("http://", ""),
  };
  const child = spawn("haproxy", ["-db", "-f", cfg], { env, stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  child.stdout.setEncoding("utf8").on("data", (d) => (logs = (logs + d).slice(-5000)));
  child.stderr.setEncoding("utf8").on("data", (d) => (logs = (logs + d).slice(-5000)));
  const url = `http://127.0.0.1:${port}`;
  await until("haproxy answers", async () => (await fetch(`${url}/health`)).status === 200, 10_000, 50).catch((e) => {
    throw new Error(`${e.message}\n${logs}`);
  });
  return {
    url,
    logs: () => logs,
    close: async () => {
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once("close", r));
      child.kill("SIGKILL");
      await gone;
    },
  };
}

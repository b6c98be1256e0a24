// The Pusher protocol across nodes, with real processes on one private Redis and
// pusher-js clients on different nodes: the HTTP API's channel queries (the SDK's
// /channels, /channels/{name} with user_count and subscription_count, /users) count
// every node; an event triggered on one node reaches subscribers on every node, and its
// socket_id skips that socket on whichever node it is;
// terminate_connections asked of one node closes the user's connections on every node.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import PusherClient from "pusher-js";
import PusherServer from "pusher";
import { startNode, startRedis, until, waitFleet } from "../lib/cluster.mjs";

const T = { timeout: 60_000 };
const skip = () => process.env.E2E_SERVER === "reference" && "Switchboard cluster only";
const APP = { appId: "2001", key: "cluster-pusher-key", secret: "cluster-pusher-secret" };

let redis;
let dir;
let nodes = [];

before(async () => {
  if (skip()) return;
  dir = mkdtempSync(path.join(os.tmpdir(), "sb-cluster-pusher-"));
  const file = path.join(dir, "sb.toml");
  writeFileSync(file, `[[pusher.apps]]\nid = "${APP.appId}"\nkey = "${APP.key}"\nsecret = "${APP.secret}"\nclient_events = true\n`);
  redis = await startRedis();
  nodes = await Promise.all(["qa", "qb"].map((id) => startNode(redis, id, ["--config", file])));
  await waitFleet(nodes);
});
after(async () => {
  await Promise.all(nodes.map((n) => n.stop("SIGKILL")));
  if (redis) await redis.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const sdkFor = (node) => new PusherServer({ ...APP, host: "127.0.0.1", port: String(node.port), useTLS: false });

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** A pusher-js client on `node`, signing with the SDK as an app's auth endpoint does. */
function client(t, node, user) {
  const sdk = sdkFor(node);
  const c = new PusherClient(APP.key, {
    cluster: "local",
    wsHost: "127.0.0.1",
    wsPort: node.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        const data = channelName.startsWith("presence-") ? { user_id: user, user_info: { name: user } } : undefined;
        cb(null, sdk.authorizeChannel(socketId, channelName, data));
      },
    },
  });
  t.after(() => c.disconnect());
  return c;
}

function subscribed(c, name) {
  const ch = c.subscribe(name);
  return within(5000, `subscribed to ${name}`, new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", () => resolve(ch));
    ch.bind("pusher:subscription_error", (e) => reject(new Error(`subscription_error ${JSON.stringify(e)}`)));
  }));
}

const next = (ch, event) => within(5000, event, new Promise((r) => ch.bind(event, (data) => r(data))));

async function get(sdk, p, params = {}) {
  const res = await sdk.get({ path: p, params });
  return res.json();
}

describe("Pusher across nodes", { skip: skip() }, () => {
  it("the HTTP API counts every node; events reach subscribers on every node", T, async (t) => {
    const [a, b] = nodes;
    const ca = client(t, a, "ann");
    const cb = client(t, b, "bob");
    const cb2 = client(t, b, "bob");
    await subscribed(ca, "presence-room");
    await subscribed(cb, "presence-room");
    await subscribed(cb2, "presence-room");
    await subscribed(cb, "only-on-b");
    const chB = await subscribed(cb, "ticks");
    const chA2 = await subscribed(ca, "ticks");

    // Asked on node a: counts include node b's subscriptions; bob is one user.
    const sdkA = sdkFor(a);
    const room = await get(sdkA, "/channels/presence-room", { info: "user_count,subscription_count" });
    assert.deepEqual(room, { occupied: true, user_count: 2, subscription_count: 3 });
    const users = await get(sdkA, "/channels/presence-room/users");
    assert.deepEqual(users.users.map((u) => u.id).sort(), ["ann", "bob"]);
    const all = await get(sdkA, "/channels");
    assert.ok(all.channels["only-on-b"], JSON.stringify(all));
    assert.ok(all.channels.ticks, JSON.stringify(all));
    const presence = await get(sdkA, "/channels", { filter_by_prefix: "presence-", info: "user_count" });
    assert.deepEqual(presence.channels, { "presence-room": { user_count: 2 } });
    const onB = await get(sdkA, "/channels/only-on-b", { info: "subscription_count" });
    assert.deepEqual(onB, { occupied: true, subscription_count: 1 });
    const none = await get(sdkA, "/channels/nobody-here");
    assert.deepEqual(none, { occupied: false });

    // A trigger on node b reaches a's subscriber and b's.
    const gotA = next(chA2, "tick");
    const gotB = next(chB, "tick");
    await sdkFor(b).trigger("ticks", "tick", { n: 1 });
    assert.deepEqual(await gotA, { n: 1 });
    assert.deepEqual(await gotB, { n: 1 });

    // socket_id excludes a socket on another node: b's subscriber misses the first
    // event (the second, without exclusion, arrives after it on the same channel).
    const seenB = [];
    chB.bind("skip", (d) => seenB.push(d.n));
    const lastB = within(5000, "second event on b", new Promise((r) => chB.bind("skip", (d) => d.n === 2 && r())));
    const firstA = next(chA2, "skip");
    await sdkA.trigger("ticks", "skip", { n: 1 }, { socket_id: cb.connection.socket_id });
    assert.deepEqual(await firstA, { n: 1 });
    await sdkA.trigger("ticks", "skip", { n: 2 });
    await lastB;
    assert.deepEqual(seenB, [2]);

    // bob leaves on b: a's count follows.
    cb.disconnect();
    cb2.disconnect();
    await until("bob gone from the counts", async () => {
      const r = await get(sdkA, "/channels/presence-room", { info: "user_count" });
      return r.user_count === 1;
    }, 5000);
  });

  it("terminate_connections on one node closes the user's connections on every node (4009)", T, async (t) => {
    const [a, b] = nodes;
    const onA = client(t, a, "dora");
    const onB = client(t, b, "dora");
    const other = client(t, b, "eve");
    for (const c of [onA, onB, other]) await subscribed(c, "presence-term");
    const codes = [[], []];
    [onA, onB].forEach((c, i) => c.connection.bind("error", (e) => codes[i].push(e.data?.code)));
    const gone = (c) => within(5000, "disconnected", new Promise((r) => {
      if (c.connection.state === "disconnected") return r();
      c.connection.bind("disconnected", r);
    }));
    const both = Promise.all([gone(onA), gone(onB)]);
    await sdkFor(a).terminateUserConnections("dora");
    await both;
    assert.ok(codes.every((c) => c.includes(4009)), JSON.stringify(codes));
    assert.equal(other.connection.state, "connected");
    await until("dora gone", async () => {
      const r = await get(sdkFor(a), "/channels/presence-term/users");
      return r.users.length === 1 && r.users[0].id === "eve";
    }, 5000);
  });
});

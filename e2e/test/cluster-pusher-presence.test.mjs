// Pusher presence channels across nodes, with real processes (three nodes on one private
// redis-server) and pusher-js clients on different nodes:
// - `subscription_succeeded` lists every node's members with their user_info;
// - `member_added` / `member_removed` reach every subscriber once per user for the whole
//   fleet (a user on two nodes is added once, removed when gone from both);
// - the webhooks `member_added` / `member_removed`, `channel_occupied` /
//   `channel_vacated` are sent once for the fleet;
// - after a Redis restart the book (user_info included) is rebuilt and a departure made
//   during the outage is announced;
// - a node killed with kill -9 takes its members out within node_timeout_secs;
// - bad inputs change nothing: a user_info over 1 KB, a channel_data whose user_id is not
//   the connection's user, forged member events (a client's raw frame, the HTTP API,
//   the publish API).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { Redis } from "ioredis";
import PusherClient from "pusher-js";
import PusherServer from "pusher";
import { KEY, getJson, startNode, startRedis, until, waitFleet } from "../lib/cluster.mjs";

const T = { timeout: 60_000 };
const skip = () => process.env.E2E_SERVER === "reference" && "Switchboard cluster only";
const APP = { appId: "3001", key: "presence-cluster-key", secret: "presence-cluster-secret" };
const NODE_TIMEOUT_MS = 3000; // startNode's node_timeout_secs

let redis;
let dir;
let nodes = [];
let hookServer;
const hooks = { events: [], invalid: 0 };

before(async () => {
  if (skip()) return;
  dir = mkdtempSync(path.join(os.tmpdir(), "sb-cluster-pusher-presence-"));
  const verifier = new PusherServer({ ...APP, host: "127.0.0.1", useTLS: false });
  hookServer = http.createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8").on("data", (d) => (raw += d)).on("end", () => {
      const hook = verifier.webhook({ headers: req.headers, rawBody: raw });
      if (!hook.isValid()) hooks.invalid++;
      else hooks.events.push(...hook.getEvents());
      res.writeHead(200).end();
    });
  });
  await new Promise((r) => hookServer.listen(0, "127.0.0.1", r));
  const file = path.join(dir, "sb.toml");
  writeFileSync(file, `[pusher]\nwebhook_delay_ms = 200\n\n[[pusher.apps]]\nid = "${APP.appId}"\nkey = "${APP.key}"\nsecret = "${APP.secret}"\n`
    + `webhooks = ["http://127.0.0.1:${hookServer.address().port}/hooks"]\n`);
  redis = await startRedis();
  nodes = await Promise.all(["pa", "pb", "pc"].map((id) => startNode(redis, id, ["--config", file])));
  await waitFleet(nodes);
});
after(async () => {
  await Promise.all(nodes.map((n) => n.stop("SIGKILL")));
  if (redis) await redis.close();
  hookServer?.close();
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

/**
 * A pusher-js client on `node` as `user` (user_info `{name: user}`), signing as an app's
 * auth endpoint does; `as(channel)` may give another `{user_id, user_info}`.
 */
function client(t, node, user, as = () => ({ user_id: user, user_info: { name: user } })) {
  const sdk = sdkFor(node);
  const c = new PusherClient(APP.key, {
    cluster: "local",
    wsHost: "127.0.0.1",
    wsPort: node.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName, as(channelName))),
    },
  });
  t.after(() => c.disconnect());
  return c;
}

/** Subscribes; records the channel's member events as "+id" / "-id" in `ch.log`. */
function subscribed(c, name) {
  const ch = c.subscribe(name);
  ch.log = [];
  ch.bind("pusher:member_added", (m) => ch.log.push(`+${m.id}`));
  ch.bind("pusher:member_removed", (m) => ch.log.push(`-${m.id}`));
  return within(5000, `subscribed to ${name}`, new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", () => resolve(ch));
    ch.bind("pusher:subscription_error", (e) => reject(Object.assign(new Error(`subscription_error ${JSON.stringify(e)}`), { error: e })));
  }));
}

/** A channel's members as pusher-js holds them: `{id: info}`. */
function members(ch) {
  const out = {};
  ch.members.each((m) => (out[m.id] = m.info));
  return out;
}

const hooksFor = (channel, user) => hooks.events.filter((e) => e.channel === channel && e.user_id === user).map((e) => e.name);
const channelHooks = (channel) => hooks.events.filter((e) => e.channel === channel && e.name.startsWith("channel_")).map((e) => e.name);

/**
 * A marker user joins and leaves `channel` on each node: once every marker's removal
 * webhook is in, each node has sent every webhook it queued before (one FIFO queue per
 * node), so counts can be asserted.
 */
async function hookBarrier(t, channel, on, tag) {
  for (const node of on) {
    const m = client(t, node, `${tag}-${node.id}`);
    await subscribed(m, channel);
    m.unsubscribe(channel);
  }
  for (const node of on) {
    const who = `${tag}-${node.id}`;
    await until(`${who}'s webhooks`, () => hooksFor(channel, who).includes("member_removed"), 10_000);
  }
}

/** Runs `fn`; a failure carries the nodes' last log lines (what they warned about). */
async function withLogs(list, fn) {
  try {
    return await fn();
  } catch (e) {
    const warned = (n) => {
      const { stdout, stderr } = n.logs();
      return `${stderr}${stdout}`.split("\n").filter((l) => /WARN|ERROR/.test(l)).slice(-30).join("\n");
    };
    e.message += list.map((n) => `\n--- ${n.id} warned:\n${warned(n)}`).join("");
    throw e;
  }
}

/** A Redis client on the test's private Redis. */
function redisClient(t) {
  const r = new Redis(redis.port, "127.0.0.1");
  t.after(() => r.disconnect());
  return r;
}

/** Waits until every node's book is in sync (after start-up or an outage). */
async function synced(list) {
  for (const n of list) {
    await until(`${n.id} presence synced`, async () => (await getJson(`${n.url}/stats`)).body.cluster?.presenceSynced === true);
  }
}

describe("Pusher presence across nodes", { skip: skip() }, () => {
  it("members of every node with their user_info; joins and leaves once for the fleet; webhooks once", T, async (t) => {
    const [a, b, c] = nodes;
    const room = "presence-fleet";
    const watchA = client(t, a, "watch-a");
    const chA = await subscribed(watchA, room);
    const watchB = client(t, b, "watch-b");
    const chB = await subscribed(watchB, room);
    await until("watch-b seen on a", () => chA.log.includes("+watch-b"));
    // watch-a's list, made on node a, came before watch-b: it has itself only.
    assert.deepEqual(Object.keys(members(chA)).sort(), ["watch-a", "watch-b"]);
    // watch-b's list, made on node b, has node a's member with its user_info.
    assert.deepEqual(members(chB)["watch-a"], { name: "watch-a" });

    // bob on b, then bob again on c: one member_added on every node.
    const bobB = client(t, b, "bob", () => ({ user_id: "bob", user_info: { name: "Bob", n: 1 } }));
    await subscribed(bobB, room);
    const bobC = client(t, c, "bob", () => ({ user_id: "bob", user_info: { name: "Bob", n: 2 } }));
    await subscribed(bobC, room);
    // carol on c: her list has every node's members, bob once, with user_info.
    const carol = client(t, c, "carol");
    const chC = await subscribed(carol, room);
    assert.equal(chC.members.count, 4);
    assert.deepEqual(members(chC), {
      "watch-a": { name: "watch-a" },
      "watch-b": { name: "watch-b" },
      bob: { name: "Bob", n: 2 }, // node c's own member's info
      carol: { name: "carol" },
    });
    for (const ch of [chA, chB]) await until("bob and carol added", () => ch.log.includes("+bob") && ch.log.includes("+carol"));
    assert.deepEqual(members(chA).bob, { name: "Bob", n: 1 }, "bob's info as the node that announced him had it");

    // The HTTP API, asked of any node, counts users once across nodes.
    for (const n of nodes) {
      const info = await (await sdkFor(n).get({ path: `/channels/${room}`, params: { info: "user_count,subscription_count" } })).json();
      assert.deepEqual(info, { occupied: true, user_count: 4, subscription_count: 5 });
    }
    const users = await (await sdkFor(a).get({ path: `/channels/${room}/users` })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ["bob", "carol", "watch-a", "watch-b"]);

    // bob leaves node b but is still on c: nobody hears of it; then he leaves c too.
    bobB.unsubscribe(room);
    await until("bob's b share gone", async () => {
      const r = await (await sdkFor(a).get({ path: `/channels/${room}`, params: { info: "subscription_count" } })).json();
      return r.subscription_count === 4;
    });
    bobC.disconnect();
    for (const ch of [chA, chB, chC]) await until("bob removed", () => ch.log.includes("-bob"));
    await hookBarrier(t, room, nodes, "mark1");
    for (const ch of [chA, chB]) assert.deepEqual(ch.log.filter((e) => e.endsWith("bob")), ["+bob", "-bob"]);
    assert.deepEqual(chC.log.filter((e) => e.endsWith("bob")), ["-bob"]); // carol came after him
    assert.deepEqual(hooksFor(room, "bob"), ["member_added", "member_removed"]);
    assert.deepEqual(hooksFor(room, "carol"), ["member_added"]);
    assert.equal(hooks.invalid, 0);
  });

  it("bad inputs are refused and change nothing: user_info over 1 KB, a second user_id, forged member events", T, async (t) => {
    const [a, b] = nodes;
    const room = "presence-bad";
    const watch = client(t, b, "watch");
    const ch = await subscribed(watch, room);

    // user_info over 1 KB: subscription_error, no member anywhere.
    const big = client(t, a, "big", () => ({ user_id: "big", user_info: { pad: "x".repeat(1100) } }));
    const refused = await subscribed(big, room).then(() => null, (e) => e.error);
    assert.equal(refused?.status, 400, JSON.stringify(refused));
    assert.match(refused.error, /user_info is larger than 1024 bytes/);

    // A connection is one user: a channel_data with another user_id is refused.
    const two = client(t, a, "ann", (name) => (name === room ? { user_id: "mallory", user_info: {} } : { user_id: "ann", user_info: {} }));
    await subscribed(two, "presence-first");
    const second = await subscribed(two, room).then(() => null, (e) => e.error);
    assert.equal(second?.status, 400, JSON.stringify(second));
    assert.match(second.error, /This connection is user "ann"/);

    // A raw frame forging the server's member event: an error, nothing relayed.
    const ws = new WebSocket(`ws://127.0.0.1:${a.port}/app/${APP.key}?protocol=7&client=js&version=8.6.0`);
    t.after(() => ws.close());
    const frames = [];
    ws.on("message", (d) => frames.push(JSON.parse(d.toString())));
    await until("connected", () => frames.some((f) => f.event === "pusher:connection_established"));
    ws.send(JSON.stringify({ event: "pusher_internal:member_added", channel: room, data: JSON.stringify({ user_id: "ghost", user_info: {} }) }));
    await until("refused", () => frames.some((f) => f.event === "pusher:error"));

    // The HTTP API and the publish API refuse the events that would be read as members.
    for (const name of ["pusher_internal:member_added", "member_joined", "member_left"]) {
      await assert.rejects(sdkFor(a).trigger(room, name, { user_id: "ghost" }), (e) => e.status === 400, name);
    }
    const res = await fetch(`${a.url}/api/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ room, event: "member_joined", data: { roomId: room, userId: "ghost" } }),
    });
    assert.equal(res.status, 400);

    // A real member after them all: the watcher's only change.
    const real = client(t, a, "real");
    await subscribed(real, room);
    await until("real added", () => ch.log.includes("+real"));
    assert.deepEqual(ch.log, ["+real"]);
    assert.deepEqual(Object.keys(members(ch)).sort(), ["real", "watch"]);
    const users = await (await sdkFor(b).get({ path: `/channels/${room}/users` })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ["real", "watch"]);
    const r = redisClient(t);
    assert.deepEqual(Object.keys(await r.hgetall(`socket.io-sb:presence-info:${room}`)).sort(), ["real", "watch"]);
  });

  it("channel_occupied / channel_vacated once for the fleet: first subscriber anywhere, last one anywhere", T, async (t) => {
    const room = "fleet-occupancy";
    const subs = nodes.map((n) => client(t, n, `occ-${n.id}`));
    for (const c of subs) await subscribed(c, room);
    await until("occupied", () => channelHooks(room).includes("channel_occupied"), 10_000);
    subs[0].unsubscribe(room);
    subs[1].unsubscribe(room);
    await hookBarrier(t, "presence-occupancy-barrier", nodes, "mark-occ1");
    assert.deepEqual(channelHooks(room), ["channel_occupied"], "still occupied on one node");
    subs[2].unsubscribe(room);
    await until("vacated", () => channelHooks(room).includes("channel_vacated"), 10_000);
    await hookBarrier(t, "presence-occupancy-barrier", nodes, "mark-occ2");
    assert.deepEqual(channelHooks(room), ["channel_occupied", "channel_vacated"]);
  });

  it("after a Redis restart the book and its user_info are rebuilt; a departure meanwhile is announced", T, async (t) => {
    const [a, b] = nodes;
    const room = "presence-outage";
    const watch = client(t, b, "watch");
    const ch = await subscribed(watch, room);
    const ann = client(t, a, "ann", () => ({ user_id: "ann", user_info: { name: "Ann", lang: "fr" } }));
    await subscribed(ann, room);
    const erin = client(t, a, "erin");
    await subscribed(erin, room);
    await until("ann and erin added", () => ch.log.includes("+ann") && ch.log.includes("+erin"));

    await redis.stop("SIGKILL");
    erin.unsubscribe(room); // while Redis is down: node a can tell its own clients only
    await redis.restart();
    await waitFleet(nodes);
    await synced(nodes);
    await until("erin's departure announced after the restart", () => ch.log.includes("-erin"), 10_000);

    // A newcomer on c gets ann from node a with her user_info, written back after the
    // restart, and no erin.
    const late = client(t, nodes[2], "late");
    const chL = await subscribed(late, room);
    const want = { watch: { name: "watch" }, ann: { name: "Ann", lang: "fr" }, late: { name: "late" } };
    assert.deepEqual(members(chL), want);
    assert.equal(chL.members.count, 3);
    // The watcher agrees. Redis came back empty, so node a's reconciliation announces
    // ann again (the book cannot tell a lost Redis from a partition): pusher-js applies
    // a repeated member_added idempotently; ann is never removed.
    await until("late added", () => ch.log.includes("+late"));
    assert.deepEqual(members(ch), want);
    assert.equal(ch.members.count, 3);
    assert.ok(ch.log.filter((e) => e.endsWith("ann")).every((e) => e === "+ann"), ch.log.join());
  });

  it("a node killed with kill -9 takes its Pusher members out within node_timeout_secs (webhook once)", T, async (t) => {
    const [a, b, c] = nodes;
    // Every book of every node (members and channel occupancy) holds its node's share
    // again after the previous test's Redis restart: what c decides is in Redis.
    await synced(nodes);
    const room = "presence-deaths";
    const chs = [];
    for (const n of [a, b]) chs.push(await subscribed(client(t, n, `watch-${n.id}`), room));
    const dave = client(t, c, "dave");
    await subscribed(dave, room);
    await subscribed(dave, "only-on-c");
    await until("only-on-c occupied", () => channelHooks("only-on-c").includes("channel_occupied"), 10_000);
    // fay is on c and on a: c's death must not take her out.
    await subscribed(client(t, c, "fay"), room);
    await subscribed(client(t, a, "fay"), room);
    for (const ch of chs) await until("dave and fay added", () => ch.log.includes("+dave") && ch.log.includes("+fay"));

    const killed = Date.now();
    await c.stop("SIGKILL");
    for (const ch of chs) await until("dave removed", () => ch.log.includes("-dave"), NODE_TIMEOUT_MS + 5000);
    const tookMs = Date.now() - killed;
    // The occupancy book drops c's share on its own worker, apart from the members' book:
    // its webhook may come a moment after dave's removal, never later than this.
    await withLogs([a, b], () =>
      until("only-on-c vacated", () => channelHooks("only-on-c").includes("channel_vacated"), NODE_TIMEOUT_MS + 5000));
    const vacatedMs = Date.now() - killed;
    await waitFleet([a, b], 2);
    await hookBarrier(t, room, [a, b], "mark2");
    for (const ch of chs) {
      assert.deepEqual(ch.log.filter((e) => e.endsWith("dave")), ["+dave", "-dave"]);
      assert.deepEqual(ch.log.filter((e) => e.endsWith("fay")), ["+fay"]);
    }
    assert.deepEqual(hooksFor(room, "dave"), ["member_added", "member_removed"]);
    assert.deepEqual(channelHooks("only-on-c"), ["channel_occupied", "channel_vacated"]);
    assert.deepEqual(channelHooks(room), ["channel_occupied"]);
    assert.deepEqual(hooksFor(room, "fay"), ["member_added"]);
    const users = await (await sdkFor(a).get({ path: `/channels/${room}/users` })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ["fay", "watch-pa", "watch-pb"]);
    // The book in Redis: dave's count and user_info are gone, fay's stay; the markers
    // that left took theirs (nothing only grows).
    const r = redisClient(t);
    assert.deepEqual(await r.hkeys(`socket.io-sb:presence:${room}`).then((k) => k.sort()), ["fay", "watch-pa", "watch-pb"]);
    assert.deepEqual(await r.hgetall(`socket.io-sb:presence-info:${room}`), {
      fay: JSON.stringify({ name: "fay" }),
      "watch-pa": JSON.stringify({ name: "watch-pa" }),
      "watch-pb": JSON.stringify({ name: "watch-pb" }),
    });
    t.diagnostic(`member_removed ${tookMs} ms, channel_vacated ${vacatedMs} ms after kill -9 (node_timeout_secs = ${NODE_TIMEOUT_MS / 1000})`);
  });
});

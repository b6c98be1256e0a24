//! The relay: every hub publish of this node becomes one message on Redis, sequenced by
//! one Lua script (cluster offset + PUBLISH), and every node, this one included, delivers
//! it when it comes back on the subscription. Redis delivers a connection's messages in
//! publish order, so every node sees the cluster's messages in the same order, with the
//! same offsets.
//!
//! Owns: the bounded outbound queue and its writer task, the messages waiting for their
//! echo, the subscriber loop. Never blocks a caller: when Redis is down, the queue is
//! full or an echo does not come back in time, the message is delivered to this node's
//! members only (counted as not relayed) and the link's recovery marks a replay gap.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hub::{Done, Hub, LatestFn, Publish, Relay};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Namespaces, Outgoing};
use super::link::{BusMetrics, Conn, LinkState};

/// What the subscriber hands a message of a subscribed (not pattern) channel to: the
/// Node adapter's request and response channels.
pub(crate) type RequestHandler = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// Gives each message its cluster offset and publishes it, atomically: offsets grow by
/// one per message and never fall below Redis' clock in microseconds, so a Redis that
/// lost its data (or a node's own start-up offsets) can never hand out an offset again.
const PUBLISH_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local off = redis.call('INCR', KEYS[1])
if off < now then
  off = now
  redis.call('SET', KEYS[1], string.format('%.0f', now))
end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. struct.pack('>d', off))
return off
";

/// How long a message may wait for its echo before it is delivered here alone.
const ECHO_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages written to Redis in one pipeline, at most.
const BATCH: usize = 256;

/// One of this node's messages waiting for its echo.
struct Pending {
    seq: u64,
    msg: Publish,
    at: Instant,
    done: Option<Done>,
}

/// The hub's relay on this node.
pub(crate) struct BusRelay {
    pub(crate) node_id: String,
    prefix: String,
    nsps: Namespaces,
    hub: std::sync::Weak<Hub>,
    link: Arc<LinkState>,
    metrics: Arc<BusMetrics>,
    tx: mpsc::Sender<Outgoing>,
    /// Sequence numbers and the messages of this node waiting for their echo, in order.
    pending: Mutex<(u64, VecDeque<Pending>)>,
    /// Largest bus message accepted, in bytes.
    max_message: usize,
    pub(crate) offset_key: String,
    /// Newest sequence number seen per sending process (`uid`, `epoch`): a batch resent
    /// after a broken connection is delivered once.
    seen: Mutex<HashMap<(String, u64), u64>>,
    /// This process's epoch, so a restarted node with the same id starts afresh.
    pub(crate) epoch: u64,
    /// Names the latest-value messages: `(key, version)`.
    supersedes: Supersedes,
    /// The newest version delivered here per key, and its message (see
    /// [`BusRelay::deliver_newer`]). Held while such a message is delivered.
    latest: Mutex<HashMap<String, (u64, Publish)>>,
}

/// Tells which messages carry a latest value (`Some((key, version))`): of those, a node
/// delivers one only if its version is newer than the last it delivered for the key.
pub type Supersedes = fn(&Publish) -> Option<(String, u64)>;

/// Keys whose latest version is remembered, at most (then forgotten all at once).
const MAX_LATEST: usize = 65_536;

impl Relay for BusRelay {
    #[allow(clippy::result_large_err)]
    fn relay(&self, msg: Publish, done: Option<Done>) -> Result<(), (Publish, Option<Done>)> {
        if !self.link.is_up() {
            self.metrics.not_relayed.fetch_add(1, Ordering::Relaxed);
            return Err((msg, done));
        }
        let mut pending = self.pending.lock();
        let seq = pending.0 + 1;
        let out = codec::encode(
            &self.prefix,
            &self.node_id,
            self.epoch,
            seq,
            &msg,
            &self.nsps,
        );
        // Under the lock: the queue's order is the order of the sequence numbers.
        if self.tx.try_send(out).is_err() {
            self.metrics.not_relayed.fetch_add(1, Ordering::Relaxed);
            return Err((msg, done));
        }
        pending.0 = seq;
        pending.1.push_back(Pending {
            seq,
            msg,
            at: Instant::now(),
            done,
        });
        Ok(())
    }

    fn with_latest(&self, key: &str, f: LatestFn<'_>) {
        let latest = self.latest.lock();
        f(latest.get(key).map(|(v, p)| (*v, p)));
    }
}

impl BusRelay {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node_id: String,
        prefix: String,
        nsps: Namespaces,
        hub: &Arc<Hub>,
        link: Arc<LinkState>,
        metrics: Arc<BusMetrics>,
        queue: usize,
        max_message: usize,
        supersedes: Supersedes,
    ) -> (Arc<BusRelay>, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(queue);
        let offset_key = format!("{prefix}-sb:offset");
        let relay = Arc::new(BusRelay {
            node_id,
            prefix,
            nsps,
            hub: Arc::downgrade(hub),
            link,
            metrics,
            tx,
            pending: Mutex::new((0, VecDeque::new())),
            max_message,
            offset_key,
            seen: Mutex::new(HashMap::new()),
            epoch: rand::random::<u64>() >> 11,
            supersedes,
            latest: Mutex::new(HashMap::new()),
        });
        (relay, rx)
    }

    /// The pattern the subscriber listens on: every namespace's broadcasts.
    pub(crate) fn pattern(&self) -> String {
        format!("{}#*", self.prefix)
    }

    /// Delivers `msg` with `deliver` unless it is a latest-value message older than (or
    /// the same as) one already delivered here (`None`). Every node sees the bus in one
    /// order, so every node drops the same messages: two nodes' announcements that
    /// crossed on their way to Redis, or one announced twice, reach nobody out of order.
    /// A latest-value message is delivered under the lock [`Relay::with_latest`] takes,
    /// so a snapshot sent to a joining client is never overtaken by an older delivery.
    fn deliver_newer<R>(&self, msg: Publish, deliver: impl FnOnce(Publish) -> R) -> Option<R> {
        let Some((key, version)) = (self.supersedes)(&msg) else {
            return Some(deliver(msg));
        };
        let mut latest = self.latest.lock();
        if latest.len() >= MAX_LATEST && !latest.contains_key(&key) {
            latest.clear();
        }
        if latest.get(&key).is_some_and(|(last, _)| version <= *last) {
            self.metrics.superseded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        latest.insert(key, (version, msg.clone()));
        Some(deliver(msg))
    }

    /// Our own message `seq` came back with `offset`: deliver it (and, before it, any
    /// older one whose echo was lost, alone).
    fn on_echo(&self, hub: &Hub, seq: u64, offset: u64) {
        let mut ready = Vec::new();
        {
            let mut pending = self.pending.lock();
            while let Some(front) = pending.1.front() {
                if front.seq > seq {
                    break;
                }
                if let Some(p) = pending.1.pop_front() {
                    ready.push(p);
                }
            }
        }
        for p in ready {
            let (offset, delivered) = if p.seq == seq {
                self.metrics.relay_latency.observe(p.at.elapsed());
                let delivered = self.deliver_newer(p.msg, |m| hub.deliver_sequenced(offset, m));
                (offset, delivered.unwrap_or(0))
            } else {
                self.deliver_newer(p.msg, |m| {
                    self.metrics.not_relayed.fetch_add(1, Ordering::Relaxed);
                    hub.publish_local(m)
                })
                .unwrap_or((0, 0))
            };
            if let Some(done) = p.done {
                done(offset, delivered);
            }
        }
    }

    /// Delivers here, alone, every message whose echo is overdue (or all of them).
    fn flush_overdue(&self, hub: &Hub, all: bool) {
        let now = Instant::now();
        let mut overdue = Vec::new();
        {
            let mut pending = self.pending.lock();
            while let Some(front) = pending.1.front() {
                if !all && now.duration_since(front.at) < ECHO_TIMEOUT {
                    break;
                }
                if let Some(p) = pending.1.pop_front() {
                    overdue.push(p);
                }
            }
        }
        for p in overdue {
            self.metrics.not_relayed.fetch_add(1, Ordering::Relaxed);
            let (offset, delivered) = self
                .deliver_newer(p.msg, |m| hub.publish_local(m))
                .unwrap_or((0, 0));
            if let Some(done) = p.done {
                done(offset, delivered);
            }
        }
    }

    /// One message from the subscription.
    pub(crate) fn on_message(&self, bytes: &[u8]) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if bytes.len() > self.max_message {
            self.metrics
                .dropped_oversized
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let incoming = match codec::decode(bytes, &self.nsps) {
            Ok(m) => m,
            Err(e) => {
                let counter = match e {
                    codec::DecodeError::Malformed => &self.metrics.dropped_malformed,
                    codec::DecodeError::Shape => &self.metrics.dropped_shape,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(reason = e.reason(), "cluster: dropped a bus message");
                return;
            }
        };
        match (incoming.uid == self.node_id, incoming.ext) {
            (true, Some(ext)) => self.on_echo(&hub, ext.seq, ext.offset),
            // Another process using our node id (or an old one): never deliver twice.
            (true, None) => {}
            (false, Some(ext)) => {
                {
                    let mut seen = self.seen.lock();
                    if seen.len() > 4096 {
                        seen.clear();
                    }
                    let last = seen.entry((incoming.uid.clone(), ext.epoch)).or_insert(0);
                    if ext.seq <= *last {
                        return;
                    }
                    *last = ext.seq;
                }
                self.metrics.received.fetch_add(1, Ordering::Relaxed);
                self.deliver_newer(incoming.publish, |m| hub.deliver_sequenced(ext.offset, m));
            }
            (false, None) => {
                self.metrics.received.fetch_add(1, Ordering::Relaxed);
                self.deliver_newer(incoming.publish, |m| hub.publish_local(m));
            }
        }
    }

    /// The subscription was lost: nothing more will echo, and whatever other nodes
    /// publish until it is back never reaches this node's history.
    fn on_subscription_lost(&self) {
        if let Some(hub) = self.hub.upgrade() {
            self.flush_overdue(&hub, true);
        }
    }

    fn on_subscribed(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.mark_gap();
        }
        // Redis may have come back without its data (versions start again): whatever
        // arrives from now on is news.
        self.latest.lock().clear();
    }
}

/// Writes queued messages to Redis, a pipeline of script calls at a time.
pub(crate) async fn writer(
    relay: Arc<BusRelay>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut con: ConnectionManager,
    stop: CancellationToken,
) {
    let script = redis::Script::new(PUBLISH_LUA);
    let mut batch: Vec<Outgoing> = Vec::with_capacity(BATCH);
    // A new or restarted Redis does not know the script: load it before the first batch
    // and after any failure (a failed EVALSHA published nothing, so a resend is safe).
    let mut load = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
        }
        let mut pipe = redis::pipe();
        for m in &batch {
            pipe.cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(1)
                .arg(&relay.offset_key)
                .arg(&m.channel)
                .arg(&m.head);
        }
        let mut result: redis::RedisResult<Vec<u64>> =
            Err(redis::RedisError::from((redis::ErrorKind::Io, "not sent")));
        // A connection that broke since the last batch fails the first write; the
        // manager reconnects meanwhile. Resending is safe: receivers drop a sequence
        // number they already have (see `on_message`).
        for attempt in 0..4u32 {
            if load {
                let loaded: redis::RedisResult<String> =
                    script.prepare_invoke().load_async(&mut con).await;
                result = loaded.map(|_| Vec::new());
                if result.is_ok() {
                    load = false;
                }
            }
            if !load {
                result = pipe.query_async(&mut con).await;
            }
            match &result {
                Ok(_) => break,
                Err(e) if is_noscript(e) => load = true,
                Err(e)
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_timeout() =>
                {
                    load = true;
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1))) => {}
                    }
                }
                Err(_) => break,
            }
        }
        match result {
            Ok(_) => {
                relay.link.up(Conn::Commands);
                relay
                    .metrics
                    .sent
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                load = true;
                relay.link.down(Conn::Commands, &e.to_string());
                // Their echoes will not come: the sweeper delivers them here alone.
            }
        }
        batch.clear();
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || e.to_string().contains("NOSCRIPT")
}

/// Delivers overdue messages and watches the command connection while idle.
pub(crate) async fn sweeper(
    relay: Arc<BusRelay>,
    mut con: ConnectionManager,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(hub) = relay.hub.upgrade() {
            relay.flush_overdue(&hub, false);
        }
        if last_ping.elapsed() >= Duration::from_secs(1) {
            last_ping = Instant::now();
            let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
            match ping {
                Ok(_) => relay.link.up(Conn::Commands),
                Err(e) => relay.link.down(Conn::Commands, &e.to_string()),
            }
        }
    }
}

/// Keeps a subscription to every namespace's broadcasts (and the Node adapter's request
/// channels, through `extra`), reconnecting with backoff.
pub(crate) async fn subscriber(
    relay: Arc<BusRelay>,
    client: redis::Client,
    extra: Vec<String>,
    on_request: RequestHandler,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let pattern = relay.pattern();
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            for ch in &extra {
                pubsub.subscribe(ch).await?;
            }
            Ok::<_, redis::RedisError>(pubsub)
        };
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(2), attempt) => r,
        };
        let mut pubsub = match connected {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                relay.link.down(Conn::Subscriber, &e.to_string());
                wait(&stop, &mut backoff).await;
                continue;
            }
            Err(_) => {
                relay.link.down(Conn::Subscriber, "connect timed out");
                wait(&stop, &mut backoff).await;
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        relay.on_subscribed();
        relay.link.up(Conn::Subscriber);
        {
            let mut messages = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = messages.next() => m,
                };
                let Some(msg) = msg else { break };
                let channel = msg.get_channel_name();
                if msg.from_pattern() {
                    relay.on_message(msg.get_payload_bytes());
                } else {
                    on_request(channel, msg.get_payload_bytes());
                }
            }
        }
        relay
            .link
            .down(Conn::Subscriber, "subscription connection lost");
        relay.on_subscription_lost();
        wait(&stop, &mut backoff).await;
    }
}

async fn wait(stop: &CancellationToken, backoff: &mut Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}

/// Counts what the relay sent, for tests.
#[allow(dead_code)]
pub(crate) fn pending_len(relay: &BusRelay) -> usize {
    relay.pending.lock().1.len()
}

/// A process-unique default node id.
pub(crate) fn random_node_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let r: u64 = rand::random();
    format!("sb-{:08x}{}", r as u32, N.fetch_add(1, Ordering::Relaxed))
}

//! The node's two Redis connections and what `/ready`, `/stats` and `/metrics` say of
//! them: a multiplexed command connection (redis' `ConnectionManager`, which reconnects
//! by itself) and a dedicated pub/sub connection (reconnected by the subscriber loop).
//!
//! Owns the link state (up, last error, down since) and the bus counters. Never: the
//! message format or the hub.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Counters of the cluster bus, read at scrape time.
#[derive(Debug, Default)]
pub struct BusMetrics {
    /// Messages this node published on the bus.
    pub sent: AtomicU64,
    /// Messages received from other nodes (Switchboard or Node) and delivered here.
    pub received: AtomicU64,
    /// Publishes delivered to this node only because the bus could not take them
    /// (Redis down, queue full, lost echo).
    pub not_relayed: AtomicU64,
    /// Bus messages dropped: malformed msgpack.
    pub dropped_malformed: AtomicU64,
    /// Bus messages dropped: msgpack of the wrong shape (not a broadcast).
    pub dropped_shape: AtomicU64,
    /// Bus messages dropped: larger than the limit.
    pub dropped_oversized: AtomicU64,
    /// Requests of the Node adapter's protocol this node could not read or answer.
    pub dropped_request: AtomicU64,
    /// Latest-value messages (availability announcements) not delivered because a
    /// newer or equal version already was.
    pub superseded: AtomicU64,
    /// Relay latency: from a publish to its delivery on this node, through Redis.
    pub relay_latency: primitives::Histogram,
}

/// Whether Redis is reachable, as the two connections last found it.
#[derive(Debug)]
pub struct LinkState {
    commands_up: AtomicBool,
    subscriber_up: AtomicBool,
    since: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState {
            commands_up: AtomicBool::new(false),
            subscriber_up: AtomicBool::new(false),
            since: Mutex::new(Some(Instant::now())),
            last_error: Mutex::new(Some("not connected yet".to_owned())),
        }
    }
}

/// Which connection a state change is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Conn {
    Commands,
    Subscriber,
}

impl LinkState {
    /// Both connections work.
    pub fn is_up(&self) -> bool {
        self.commands_up.load(Ordering::Acquire) && self.subscriber_up.load(Ordering::Acquire)
    }

    pub(crate) fn up(&self, conn: Conn) {
        let flag = self.flag(conn);
        if !flag.swap(true, Ordering::AcqRel) && self.is_up() {
            *self.since.lock() = None;
            tracing::info!("cluster: Redis reachable");
        }
    }

    pub(crate) fn down(&self, conn: Conn, error: &str) {
        let was_up = self.is_up();
        self.flag(conn).store(false, Ordering::Release);
        *self.last_error.lock() = Some(error.to_owned());
        let mut since = self.since.lock();
        if since.is_none() {
            *since = Some(Instant::now());
        }
        if was_up {
            tracing::warn!(
                error,
                "cluster: Redis unreachable; serving this node's clients only"
            );
        }
    }

    fn flag(&self, conn: Conn) -> &AtomicBool {
        match conn {
            Conn::Commands => &self.commands_up,
            Conn::Subscriber => &self.subscriber_up,
        }
    }

    /// `{state, lastError, downForMs}` for `/ready` and `/stats`.
    pub fn report(&self) -> serde_json::Value {
        let down_for = self.since.lock().map(|s| s.elapsed());
        serde_json::json!({
            "state": if self.is_up() { "up" } else { "down" },
            "lastError": *self.last_error.lock(),
            "downForMs": down_for.map(|d: Duration| d.as_millis() as u64),
        })
    }
}

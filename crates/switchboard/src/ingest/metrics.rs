//! Counters and the broker's state, shared by the consumer and the HTTP endpoints.
//!
//! Plain atomics so that a Prometheus exporter can read them later without locking;
//! [`Ingest::stats`] is the JSON `/stats` shows.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::handle::Reason;

/// Where the broker connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Not connected yet, or connecting again after a loss.
    Connecting,
    /// Consuming.
    Connected,
    /// Lost; waiting for the next attempt.
    Down,
    /// Stopped at shutdown.
    Stopped,
}

impl BrokerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Down => "down",
            Self::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
struct Status {
    state: BrokerState,
    last_error: Option<String>,
    /// When the current outage began (`None` while connected).
    down_since: Option<Instant>,
    /// How long the last outage lasted, from loss to consuming again.
    last_outage_ms: Option<u64>,
    ever_connected: bool,
}

/// Counters of the consumer. Every field only grows.
#[derive(Debug, Default)]
pub struct Counters {
    /// Deliveries received.
    pub consumed: AtomicU64,
    /// Deliveries acked (effect durable, replied or dead-lettered).
    pub acked: AtomicU64,
    /// Deliveries the broker flagged as redelivered.
    pub redelivered: AtomicU64,
    /// Messages whose effect had already been applied (an order id seen before).
    pub duplicates: AtomicU64,
    /// Replies sent to requests, and how many of them carried `err`.
    pub replies: AtomicU64,
    pub error_replies: AtomicU64,
    /// Deliveries put back on the queue because the store failed.
    pub requeued: AtomicU64,
    /// Connections made after the first one.
    pub reconnects: AtomicU64,
    dead_lettered: [AtomicU64; Reason::ALL.len()],
}

impl Counters {
    pub fn dead_lettered(&self, reason: Reason) -> &AtomicU64 {
        &self.dead_lettered[reason as usize]
    }
}

/// The consumer's shared face: counters plus the broker state.
#[derive(Debug)]
pub struct Ingest {
    pub counters: Counters,
    pub queue: String,
    status: Mutex<Status>,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Ingest {
    pub fn new(queue: &str) -> Self {
        Self {
            counters: Counters::default(),
            queue: queue.to_owned(),
            status: Mutex::new(Status {
                state: BrokerState::Connecting,
                last_error: None,
                down_since: Some(Instant::now()),
                last_outage_ms: None,
                ever_connected: false,
            }),
        }
    }

    pub fn state(&self) -> BrokerState {
        self.status.lock().state
    }

    pub(crate) fn connecting(&self) {
        self.status.lock().state = BrokerState::Connecting;
    }

    pub(crate) fn connected(&self) {
        let mut s = self.status.lock();
        s.state = BrokerState::Connected;
        if s.ever_connected {
            bump(&self.counters.reconnects);
        }
        s.ever_connected = true;
        if let Some(since) = s.down_since.take() {
            s.last_outage_ms = Some(since.elapsed().as_millis() as u64);
        }
    }

    pub(crate) fn down(&self, error: String) {
        let mut s = self.status.lock();
        s.state = BrokerState::Down;
        s.last_error = Some(error);
        s.down_since.get_or_insert_with(Instant::now);
    }

    pub(crate) fn stopped(&self) {
        self.status.lock().state = BrokerState::Stopped;
    }

    /// `(ready, JSON)` for `/ready`: ready only while consuming.
    pub fn readiness(&self) -> (bool, Value) {
        let s = self.status.lock();
        let ready = s.state == BrokerState::Connected;
        let mut v = json!({"state": s.state.as_str(), "queue": self.queue});
        if !ready {
            v["lastError"] = json!(s.last_error);
            v["downForMs"] = json!(s.down_since.map(|d| d.elapsed().as_millis() as u64));
        }
        (ready, v)
    }

    /// The `amqp` object of `/stats`.
    pub fn stats(&self) -> Value {
        let c = &self.counters;
        let s = self.status.lock();
        let dead: serde_json::Map<String, Value> = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), json!(get(c.dead_lettered(*r)))))
            .collect();
        json!({
            "state": s.state.as_str(),
            "queue": self.queue,
            "lastError": s.last_error,
            "lastOutageMs": s.last_outage_ms,
            "consumed": get(&c.consumed),
            "acked": get(&c.acked),
            "redelivered": get(&c.redelivered),
            "duplicates": get(&c.duplicates),
            "replies": get(&c.replies),
            "errorReplies": get(&c.error_replies),
            "requeued": get(&c.requeued),
            "reconnects": get(&c.reconnects),
            "deadLettered": dead,
        })
    }
}

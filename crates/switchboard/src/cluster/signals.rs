//! Signals: small JSON messages one node sends every other node of the fleet, for what
//! the room fabric cannot carry (e.g. "close user U's Pusher connections").
//!
//! A signal is `{"from", "kind", "body"}` on `<prefix>-sb-signal#`; each node hands the
//! `body` to the handler registered for `kind` (none: dropped, counted). A node ignores
//! its own signals: the sender acts locally itself. Delivery is Redis pub/sub's: at most
//! once, to the nodes subscribed at that moment.
//!
//! Never: answers or acks (the census and the request protocol do that).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::link::BusMetrics;

/// How long sending a signal may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// What a node does with one kind of signal: called with the body, on the subscriber's
/// task (so it must not block).
pub type SignalHandler = Arc<dyn Fn(&Value) + Send + Sync>;

#[derive(Serialize, Deserialize)]
struct Signal {
    from: String,
    kind: String,
    body: Value,
}

/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Redis refused or failed the PUBLISH.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer in time")]
    Timeout,
}

/// This node's end of the signal channel.
pub struct Signals {
    me: String,
    channel: String,
    con: ConnectionManager,
    metrics: Arc<BusMetrics>,
    max_message: usize,
    handlers: Mutex<HashMap<String, SignalHandler>>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").field("node", &self.me).finish()
    }
}

impl Signals {
    pub(crate) fn new(
        prefix: &str,
        me: &str,
        con: ConnectionManager,
        metrics: Arc<BusMetrics>,
        max_message: usize,
    ) -> Signals {
        Signals {
            me: me.to_owned(),
            channel: format!("{prefix}-sb-signal#"),
            con,
            metrics,
            max_message,
            handlers: Mutex::new(HashMap::new()),
        }
    }

    /// The channel this node subscribes to.
    pub(crate) fn channel(&self) -> String {
        self.channel.clone()
    }

    /// Whether `channel` is the signal channel.
    pub(crate) fn owns(&self, channel: &str) -> bool {
        channel == self.channel
    }

    /// Handles `kind` signals from the other nodes with `handler` (replacing any).
    pub fn on(&self, kind: &str, handler: SignalHandler) {
        self.handlers.lock().insert(kind.to_owned(), handler);
    }

    /// Sends a signal to every other node; the number of subscribers Redis counted
    /// (this node included).
    pub async fn send(&self, kind: &str, body: Value) -> Result<i64, SignalError> {
        let signal = Signal {
            from: self.me.clone(),
            kind: kind.to_owned(),
            body,
        };
        let bytes = serde_json::to_vec(&signal).unwrap_or_default();
        let mut con = self.con.clone();
        let sent = tokio::time::timeout(
            SEND_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(bytes)
                .query_async(&mut con),
        )
        .await
        .map_err(|_| SignalError::Timeout)?;
        Ok(sent?)
    }

    /// A message on [`Signals::channel`].
    pub(crate) fn on_message(&self, bytes: &[u8]) {
        if bytes.len() > self.max_message {
            return self.drop("oversized signal");
        }
        let Ok(signal) = serde_json::from_slice::<Signal>(bytes) else {
            return self.drop("bad signal");
        };
        if signal.from == self.me {
            return;
        }
        let handler = self.handlers.lock().get(&signal.kind).cloned();
        match handler {
            Some(h) => h(&signal.body),
            None => self.drop("signal of an unknown kind"),
        }
    }

    fn drop(&self, why: &str) {
        self.metrics.dropped_request.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(reason = why, "cluster signals: dropped a message");
    }
}

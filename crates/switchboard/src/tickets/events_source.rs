//! Where the hold rules' catalog comes from: the embedded catalog, or the platform's
//! NestJS events-service over the NestJS TCP transport.
//!
//! With the events-service, a hold is granted only after `get-ticket-categories`
//! (answered within a timeout, or taken from a short cache) confirms the category; the
//! answer also refreshes the hold rules' copy of the event. When the events-service does
//! not answer properly, the hold is refused with [`VERIFY_FAILED`] and nothing changes.
//!
//! Owns: one multiplexed connection (requests matched to answers by `id`), the cache.
//! Never: hold rules; it only feeds the catalog copy through the hold service.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tickets::{Category, Event};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::{HoldService, ServiceError};
use crate::nest::{CodecError, FrameCodec, encode_frame};

/// What a client is told when the events-service cannot confirm a hold.
pub const VERIFY_FAILED: &str = "Failed to verify ticket availability";

/// Events whose answers are cached at most (the cache is cleared beyond this).
const MAX_CACHED_EVENTS: usize = 4096;

/// Settings of the events-service client (from `Config::events_service`).
#[derive(Debug, Clone)]
pub struct EventsServiceConfig {
    /// `host:port`.
    pub addr: String,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    /// Largest frame accepted, in UTF-16 code units.
    pub max_frame: u64,
}

/// Why the events-service gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("events-service unreachable: {0}")]
    Unreachable(String),
    #[error("events-service did not answer in time")]
    Timeout,
    #[error("events-service connection lost: {0}")]
    Lost(String),
    #[error("events-service answered with an error: {0}")]
    Remote(String),
    #[error("events-service answer is malformed: {0}")]
    Malformed(String),
}

/// The catalog source chosen at start-up.
#[derive(Debug, Clone)]
pub enum CatalogSource {
    Embedded,
    EventsService(Arc<EventsClient>),
}

impl CatalogSource {
    /// Checks a hold request against the source before the rules see it. `Err` is the
    /// refusal message for the client; nothing changed.
    pub async fn verify_hold(
        &self,
        holds: &Arc<HoldService>,
        event_id: i64,
        category_id: i64,
    ) -> Result<(), String> {
        let Self::EventsService(client) = self else {
            return Ok(());
        };
        let categories = match client.categories(event_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, event_id, "hold refused: events-service check failed");
                return Err(VERIFY_FAILED.to_owned());
            }
        };
        if !categories.iter().any(|c| c.id == category_id) {
            return Err(format!(
                "category {category_id} not found in event {event_id}"
            ));
        }
        sync_event(holds, event_id, categories)
            .await
            .map_err(|e| e.to_string())
    }

    /// Refreshes an event from the source (joins use it); failures leave the local copy.
    pub async fn refresh(&self, holds: &Arc<HoldService>, event_id: i64) {
        let Self::EventsService(client) = self else {
            return;
        };
        match client.categories(event_id).await {
            Ok(categories) => {
                if let Err(e) = sync_event(holds, event_id, categories).await {
                    tracing::debug!(error = %e, event_id, "event refresh not applied");
                }
            }
            Err(e) => tracing::debug!(error = %e, event_id, "event refresh failed"),
        }
    }

    pub fn stats(&self) -> Option<Value> {
        match self {
            Self::Embedded => None,
            Self::EventsService(c) => Some(c.stats()),
        }
    }
}

/// Makes the hold rules' copy of an event match the source (only if it differs).
async fn sync_event(
    holds: &Arc<HoldService>,
    event_id: i64,
    categories: Vec<Category>,
) -> Result<(), ServiceError> {
    let local = holds.event(event_id).await?;
    if local.as_ref().is_some_and(|e| e.categories == categories) {
        return Ok(());
    }
    let name = local.map_or_else(|| format!("Event {event_id}"), |e| e.name);
    let event = Event {
        id: event_id,
        name,
        categories,
    };
    holds.upsert_event(event).await
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    cache_hits: AtomicU64,
}

/// A NestJS TCP client for the events-service.
#[derive(Debug)]
pub struct EventsClient {
    config: EventsServiceConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    cache: Mutex<HashMap<i64, (Instant, Vec<Category>)>>,
    counters: Counters,
}

/// Answers awaited on one connection, by request id.
type Pending = Mutex<HashMap<String, Waiter>>;

#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Result<Value, SourceError>>,
    last: Option<Value>,
}

#[derive(Debug)]
struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Pending>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl EventsClient {
    pub fn new(config: EventsServiceConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            conn: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        })
    }

    /// `get-ticket-categories` for an event, from the cache when fresh.
    pub async fn categories(&self, event_id: i64) -> Result<Vec<Category>, SourceError> {
        if let Some((at, cats)) = self.cache.lock().get(&event_id)
            && at.elapsed() < self.config.cache_ttl
        {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(cats.clone());
        }
        let answer = self.request("get-ticket-categories", json!(event_id)).await;
        let categories = answer.and_then(|v| {
            serde_json::from_value::<Vec<Category>>(v)
                .map_err(|e| SourceError::Malformed(format!("get-ticket-categories: {e}")))
        });
        let categories = match categories {
            Ok(c) => c,
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if let Some(bad) = categories
            .iter()
            .find(|c| c.available_seats > c.total_seats)
        {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            return Err(SourceError::Malformed(format!(
                "category {}: availableSeats exceeds totalSeats",
                bad.id
            )));
        }
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED_EVENTS {
            cache.retain(|_, (at, _)| at.elapsed() < self.config.cache_ttl);
            if cache.len() >= MAX_CACHED_EVENTS {
                cache.clear();
            }
        }
        cache.insert(event_id, (Instant::now(), categories.clone()));
        Ok(categories)
    }

    /// One request/response exchange, bounded by the timeout (connecting included).
    pub async fn request(&self, pattern: &str, data: Value) -> Result<Value, SourceError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let id = request_id();
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            let conn = self.connection().await?;
            conn.pending
                .lock()
                .insert(id.clone(), Waiter { tx, last: None });
            let frame =
                encode_frame(&json!({"pattern": pattern, "data": data, "id": id}).to_string());
            let written = conn.writer.lock().await.write_all(&frame).await;
            if let Err(e) = written {
                conn.pending.lock().remove(&id);
                self.drop_connection(&conn).await;
                return Err(SourceError::Lost(e.to_string()));
            }
            let answer = rx
                .await
                .unwrap_or_else(|_| Err(SourceError::Lost("closed".into())));
            if matches!(
                answer,
                Err(SourceError::Lost(_) | SourceError::Malformed(_))
            ) {
                self.drop_connection(&conn).await;
            }
            answer
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => {
                if let Some(conn) = self.conn.lock().await.as_ref() {
                    conn.pending.lock().remove(&id);
                }
                Err(SourceError::Timeout)
            }
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>, SourceError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.reader.is_finished()
        {
            return Ok(c.clone());
        }
        let stream = TcpStream::connect(&self.config.addr)
            .await
            .map_err(|e| SourceError::Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let pending: Arc<Pending> = Arc::default();
        let reader = tokio::spawn(read_answers(read, pending.clone(), self.config.max_frame));
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(write),
            pending,
            reader,
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn drop_connection(&self, conn: &Arc<Conn>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    pub fn stats(&self) -> Value {
        let c = &self.counters;
        json!({
            "addr": self.config.addr,
            "requests": c.requests.load(Ordering::Relaxed),
            "failures": c.failures.load(Ordering::Relaxed),
            "cacheHits": c.cache_hits.load(Ordering::Relaxed),
        })
    }
}

/// Reads answers until the connection ends or misbehaves; then fails every waiter.
async fn read_answers(read: tokio::net::tcp::OwnedReadHalf, pending: Arc<Pending>, max_frame: u64) {
    let mut frames = FramedRead::new(read, FrameCodec::new(max_frame));
    let why = loop {
        let text = match frames.next().await {
            None => break SourceError::Lost("closed by the events-service".into()),
            Some(Ok(text)) => text,
            Some(Err(CodecError::Io(e))) => break SourceError::Lost(e.to_string()),
            Some(Err(CodecError::Frame(e))) => break SourceError::Malformed(e.to_string()),
        };
        if let Err(e) = deliver(&pending, &text) {
            break e;
        }
    };
    for (_, w) in pending.lock().drain() {
        let _ = w.tx.send(Err(why.clone()));
    }
}

/// Routes one answer frame to its waiter. Answers for unknown ids (timed out) are
/// dropped; a frame that is not a NestJS answer poisons the connection.
fn deliver(pending: &Pending, text: &str) -> Result<(), SourceError> {
    let v: Value = serde_json::from_str(text).map_err(|e| SourceError::Malformed(e.to_string()))?;
    let Some(id) = v.get("id").and_then(Value::as_str) else {
        return Err(SourceError::Malformed("answer without id".into()));
    };
    let mut pending = pending.lock();
    let Some(waiter) = pending.get_mut(id) else {
        return Ok(());
    };
    let err = v.get("err").filter(|e| !e.is_null());
    if let Some(err) = err {
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| err.to_string(), str::to_owned);
        if let Some(w) = pending.remove(id) {
            let _ = w.tx.send(Err(SourceError::Remote(message)));
        }
        return Ok(());
    }
    if let Some(r) = v.get("response") {
        waiter.last = Some(r.clone());
    }
    if v.get("isDisposed").and_then(Value::as_bool) == Some(true)
        && let Some(w) = pending.remove(id)
    {
        let _ = w.tx.send(
            w.last
                .ok_or_else(|| SourceError::Malformed("answer without response".into())),
        );
    }
    Ok(())
}

/// A random UUID v4, as NestJS uses for request ids.
fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut s = format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    );
    // Version 4 and the RFC 4122 variant.
    s.replace_range(14..15, "4");
    let variant = ["8", "9", "a", "b"][usize::from(b[8] & 3)];
    s.replace_range(19..20, variant);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(request_id(), id);
    }

    #[test]
    fn answers_reach_their_waiter() {
        let pending: Pending = Mutex::new(HashMap::new());
        let (tx, mut rx) = oneshot::channel();
        pending.lock().insert("a".into(), Waiter { tx, last: None });
        deliver(&pending, r#"{"id":"zz","response":[]}"#).expect("unknown ids are dropped");
        deliver(&pending, r#"{"id":"a","response":[1],"isDisposed":false}"#).expect("ok");
        assert!(rx.try_recv().is_err(), "not disposed yet");
        deliver(&pending, r#"{"id":"a","isDisposed":true}"#).expect("ok");
        assert_eq!(rx.try_recv().expect("answered"), Ok(json!([1])));

        let (tx, mut rx) = oneshot::channel();
        pending.lock().insert("b".into(), Waiter { tx, last: None });
        deliver(
            &pending,
            r#"{"id":"b","err":{"status":"error","message":"nope"},"isDisposed":true}"#,
        )
        .expect("ok");
        assert_eq!(
            rx.try_recv().expect("answered"),
            Err(SourceError::Remote("nope".into()))
        );
        assert!(deliver(&pending, "[]").is_err());
        assert!(deliver(&pending, "{not json").is_err());
    }
}

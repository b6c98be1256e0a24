//! The transports besides Socket.IO: plain WebSocket (`/ws`) and Server-Sent Events
//! (`/events`). Both are hub members on the same rooms as Socket.IO clients; they only
//! decode, encode (once per format, through the envelope cache) and queue.
//!
//! Owns: connection lifecycles, room-name rules, presence announcements, per-transport
//! counts. Never: room state (the hub) or the ticket rules (`realtime`).

pub mod access;
pub mod sse;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use engineio::outbox::{Flushers, OutboxCounters};
use hub::{Hub, MemberId, Payload, Publish};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::realtime::Realtime;

/// Limits of the plain transports (every one a setting, see `Config`).
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub heartbeat: Duration,
    pub heartbeat_timeout: Duration,
    /// Messages queued per client before the slow-client policy applies.
    pub queue: usize,
    pub presence_limit: usize,
    pub max_message: usize,
    pub ws_read_buffer: usize,
    /// permessage-deflate on `/ws`: the smallest message compressed; `None`: off.
    pub ws_compression: Option<usize>,
    pub max_rooms: usize,
    pub rate_limit: primitives::RateLimit,
}

/// What `/ws` and `/events` share: the hub, the ticket contract, limits and counts.
pub struct Transports {
    pub hub: Arc<Hub>,
    pub realtime: Arc<Realtime>,
    pub config: TransportConfig,
    /// Cancelled at shutdown: every connection closes (WebSocket code 1001).
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Browser origins allowed to open `/ws` and `/events`.
    pub origins: engineio::AllowedOrigins,
    /// The flushers of direct writes, shared with the Socket.IO engine.
    flushers: Arc<Flushers>,
    ws_counters: Arc<dyn OutboxCounters>,
    sse_counters: Arc<dyn OutboxCounters>,
    ws_open: Arc<AtomicUsize>,
    sse_open: Arc<AtomicUsize>,
    /// On a cluster node: the fleet's presence book, which decides what is announced.
    presence_book: std::sync::OnceLock<Arc<crate::cluster::PresenceBook>>,
    /// The chat: `/ws` chat actions, and private chat rooms on `/ws` and SSE.
    chat: std::sync::OnceLock<Arc<crate::chat::Chat>>,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("ws", &self.ws_open.load(Ordering::Relaxed))
            .field("sse", &self.sse_open.load(Ordering::Relaxed))
            .finish()
    }
}

impl Transports {
    #[allow(clippy::too_many_arguments)] // each is one of the server's shared parts
    pub fn new(
        hub: Arc<Hub>,
        realtime: Arc<Realtime>,
        config: TransportConfig,
        stop: CancellationToken,
        tasks: TaskTracker,
        metrics: Arc<crate::metrics::Metrics>,
        origins: engineio::AllowedOrigins,
        flushers: Arc<Flushers>,
    ) -> Arc<Transports> {
        Arc::new(Transports {
            flushers,
            ws_counters: Arc::new(PlainOut {
                metrics: metrics.clone(),
                sse: false,
            }),
            sse_counters: Arc::new(PlainOut {
                metrics: metrics.clone(),
                sse: true,
            }),
            metrics,
            origins,
            hub,
            realtime,
            config,
            stop,
            tasks,
            ws_open: Arc::default(),
            sse_open: Arc::default(),
            presence_book: std::sync::OnceLock::new(),
            chat: std::sync::OnceLock::new(),
        })
    }

    /// Open `/ws` connections.
    pub fn ws_connections(&self) -> usize {
        self.ws_open.load(Ordering::Relaxed)
    }

    /// Open `/events` streams.
    pub fn sse_connections(&self) -> usize {
        self.sse_open.load(Ordering::Relaxed)
    }

    /// The answer to a request from a browser origin that may not connect: 403 before
    /// any other work, counted in `/metrics`.
    pub fn refuse_origin(
        &self,
        via: access::Via,
        headers: &axum::http::HeaderMap,
    ) -> axum::response::Response {
        refuse_origin(&self.metrics, via, headers)
    }

    /// Makes presence fleet-wide: from now on the book decides what is announced.
    pub fn set_presence_book(&self, book: Arc<crate::cluster::PresenceBook>) {
        let _ = self.presence_book.set(book);
    }

    /// Serves the chat on `/ws` (set once at build).
    pub fn set_chat(&self, chat: Arc<crate::chat::Chat>) {
        let _ = self.chat.set(chat);
    }

    /// The chat, once set.
    pub fn chat(&self) -> Option<&Arc<crate::chat::Chat>> {
        self.chat.get()
    }

    /// The fleet's presence book, on a cluster node.
    pub fn presence_book(&self) -> Option<&Arc<crate::cluster::PresenceBook>> {
        self.presence_book.get()
    }

    /// A user became present in a room on this node (`except`: the joining member).
    /// Announced as `member_joined` at once on a single node; on a cluster node, once
    /// the book says the user is new to the whole fleet.
    pub fn arrived(&self, room: &str, user: &str, except: Option<MemberId>) {
        match self.presence_book.get() {
            Some(book) => book.joined(room, user, except, None),
            None => announce(&self.hub, room, "member_joined", user, except),
        }
    }

    /// A user is no longer present in a room on this node (`member_left`, fleet-wide
    /// on a cluster node).
    pub fn departed(&self, room: &str, user: &str) {
        match self.presence_book.get() {
            Some(book) => book.left(room, user),
            None => announce(&self.hub, room, "member_left", user, None),
        }
    }
}

/// Tells a room that a user arrived or left (`member_joined` / `member_left`).
pub fn announce(hub: &Hub, room: &str, event: &str, user: &str, except: Option<MemberId>) {
    hub.publish(Publish {
        rooms: std::iter::once(Arc::from(room)).collect(),
        event: event.into(),
        payload: Payload::json(&json!({"roomId": room, "userId": user})),
        except_member: except,
        ..Publish::default()
    });
}

/// Where a plain transport's outboxes count (`/metrics`).
struct PlainOut {
    metrics: Arc<crate::metrics::Metrics>,
    sse: bool,
}

impl PlainOut {
    fn counters(&self) -> &crate::metrics::PlainCounters {
        if self.sse {
            &self.metrics.sse
        } else {
            &self.metrics.ws
        }
    }
}

impl OutboxCounters for PlainOut {
    fn taken(&self, frames: usize, waited: Duration) {
        let c = self.counters();
        c.delivery.observe(waited);
        c.out.fetch_add(frames as u64, Ordering::Relaxed);
    }

    fn dropped(&self) {
        self.counters().dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The headers every event stream sends (`/events`, `/dashboard/stream`).
pub fn event_stream(body: axum::body::Body) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut res = axum::response::Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// 403 for a refused browser origin (naming it), counted per transport.
pub fn refuse_origin(
    metrics: &crate::metrics::Metrics,
    via: access::Via,
    headers: &axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    metrics.origin_refused.add(via);
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
        .unwrap_or_default();
    tracing::debug!(%origin, transport = via.as_str(), "origin refused");
    (
        axum::http::StatusCode::FORBIDDEN,
        axum::Json(json!({"error": format!("Origin {origin:?} is not allowed (allowed_origins)")})),
    )
        .into_response()
}

/// Who may open a transport's connections from a browser, and where refusals count.
pub struct OriginGuard {
    pub allowed: engineio::AllowedOrigins,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub via: access::Via,
}

/// Middleware for a route whose every request opens a connection (Pusher's
/// `/app/{key}`): a browser origin `allowed_origins` does not allow is answered 403 and
/// counted before the admission limits, the upgrade or the handler see the request.
pub async fn check_origin(
    axum::extract::State(guard): axum::extract::State<Arc<OriginGuard>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !guard.allowed.allows(req.headers()) {
        return refuse_origin(&guard.metrics, guard.via, req.headers());
    }
    next.run(req).await
}

/// Counts one open connection of a transport while alive.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counter.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a client may not use a room name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("Invalid room name: must be 1 to {MAX_ROOM_LEN} characters without control characters")]
    Invalid,
    #[error("Room {0:?} is reserved")]
    Reserved(String),
    /// The room is private (a configured prefix) or outside the token's `rooms` claim.
    #[error("Not allowed to join room {0:?}")]
    Forbidden(String),
}

pub const MAX_ROOM_LEN: usize = 200;

/// The rules for a room name a client asks for. `user:{id}` rooms are private to their
/// user; the hub's internal rooms (`sid:`, `nsp:`, `*`, Socket.IO namespace rooms starting
/// with `/`) are never joinable.
pub fn check_room(room: &str, user: Option<&str>) -> Result<(), RoomError> {
    check_name(room)?;
    let reserved = room == hub::EVERYONE
        || room.starts_with("sid:")
        || room.starts_with("nsp:")
        || room.starts_with('/')
        || room.strip_prefix("user:").is_some_and(|u| Some(u) != user);
    if reserved {
        return Err(RoomError::Reserved(room.to_owned()));
    }
    Ok(())
}

/// The shape rule alone (the publish API may address any room it can name).
pub fn check_name(room: &str) -> Result<(), RoomError> {
    if room.is_empty() || room.chars().count() > MAX_ROOM_LEN || room.chars().any(char::is_control)
    {
        return Err(RoomError::Invalid);
    }
    Ok(())
}

/// A random 20-character client id (the same alphabet as Engine.IO session ids).
pub fn client_id() -> String {
    engineio::Sid::random().as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_rules() {
        assert!(check_room("event_1", Some("u")).is_ok());
        assert!(check_room("user:u", Some("u")).is_ok());
        assert!(check_room("chat lobby ✓", None).is_ok());
        for bad in ["", "a\nb", "\u{0}"] {
            assert_eq!(
                check_room(bad, Some("u")),
                Err(RoomError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(check_room(&"x".repeat(201), None), Err(RoomError::Invalid));
        for reserved in ["user:v", "sid:abc", "nsp:/realtime", "*", "/#room"] {
            assert!(
                matches!(check_room(reserved, Some("u")), Err(RoomError::Reserved(_))),
                "{reserved}"
            );
        }
        assert!(matches!(
            check_room("user:u", None),
            Err(RoomError::Reserved(_))
        ));
    }
}

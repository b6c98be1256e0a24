//! Server-Sent Events at `GET /events?channels=a,b`: one-way, resumable.
//!
//! The stream starts with `connected {clientId, userId, channels}`; every message carries
//! `id:` (its hub offset), `event:` and `data:` (the payload as JSON). A reconnecting
//! client sends `Last-Event-ID` (or `?lastEventId=`) and gets every missed message of its
//! channels in order, or, when the history no longer reaches back that far, a `reset`
//! event first: it never silently skips. A comment heartbeat keeps proxies from timing
//! out; a client that reads too slowly is disconnected once its queue is full.
//!
//! Events leave through an `engineio::outbox::Outbox`, as WebSocket frames do. On a plain
//! TCP HTTP/1.1 connection with flushers on, the first events go out as hyper's first
//! chunk; once hyper has flushed them (and the response head) into the connection's wire,
//! the stream switches to direct writes: a delivery queues the event and a flusher writes
//! each client's queued events as one HTTP chunk, waking no task. hyper still ends the
//! body (the last chunk) after the stream has closed the outbox and let go of the wire.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use engineio::outbox::{ConnectionWire, Encoding, Flushable, Outbox, OutboxCounters, Wire};
use engineio::{CloseReason, Frame, Push};
use hub::{Delivery, Envelope, FormatId, Member, MemberId, RoomId};
use serde_json::json;

use super::access::Via;
use super::{OpenGuard, Transports, client_id};
use crate::auth::AuthError;
use crate::metrics::Close;
use crate::realtime::user_room;

fn format() -> FormatId {
    static FORMAT: OnceLock<FormatId> = OnceLock::new();
    *FORMAT.get_or_init(FormatId::register)
}

/// One SSE event. Data lines are split on newlines (raw JSON may contain some); the
/// event name loses control characters so it cannot break the framing.
fn sse_event(id: Option<u64>, event: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event.len() + 40);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(&id.to_string());
        out.push('\n');
    }
    out.push_str("event: ");
    out.extend(event.chars().filter(|c| !c.is_control()));
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

fn encode_envelope(env: &Envelope) -> Bytes {
    sse_event(Some(env.offset), &env.event, &env.payload.as_single_json())
}

struct SseClient {
    user: String,
    out: Outbox<dyn OutboxCounters>,
    /// Live messages at or below this offset were already sent as replay (set under the
    /// hub lock by the join, before any later delivery).
    replayed_upto: AtomicU64,
}

impl Member for SseClient {
    fn deliver(&self, envelope: &Arc<Envelope>) -> Delivery {
        if self.out.closed_reason().is_some() {
            return Delivery::Closed;
        }
        if envelope.offset <= self.replayed_upto.load(Ordering::Relaxed) {
            return Delivery::Delivered;
        }
        let chunk = envelope.encoded(format(), encode_envelope);
        match self.out.push(Frame::Binary(chunk), envelope.volatile) {
            Push::Queued => Delivery::Delivered,
            Push::Dropped => Delivery::Dropped,
            Push::Closed => Delivery::Closed,
        }
    }
    fn transport(&self) -> &'static str {
        "sse"
    }
    fn user(&self) -> Option<&str> {
        Some(&self.user)
    }
}

impl Flushable for SseClient {
    fn flush_queued(&self, buf: &mut Vec<u8>) {
        self.out.write_direct(buf, false);
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Where to resume from, as the client asked.
enum Resume {
    Fresh,
    After(u64),
    Invalid(String),
}

fn resume_of(headers: &HeaderMap, query: &str) -> Resume {
    let raw = headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| engineio::query_param(query, "lastEventId"));
    match raw.as_deref().map(str::trim) {
        None | Some("") => Resume::Fresh,
        Some(s) => s
            .parse::<u64>()
            .map_or_else(|_| Resume::Invalid(s.to_owned()), Resume::After),
    }
}

/// `GET /events`.
pub async fn events(State(t): State<Arc<Transports>>, req: Request) -> Response {
    let headers = req.headers();
    if !t.origins.allows(headers) {
        return t.refuse_origin(Via::Sse, headers);
    }
    // Direct writes frame events as HTTP/1.1 chunks on the connection's own stream.
    let wire = match req.extensions().get::<ConnectionWire>() {
        Some(w) if req.version() == Version::HTTP_11 && t.flushers.enabled() => Some(w.0.clone()),
        _ => None,
    };
    let query = req.uri().query().unwrap_or("");
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| engineio::query_param(query, "token"));
    let query_user = engineio::query_param(query, "userId");
    let identity = match t
        .realtime
        .auth
        .identify(token.as_deref(), query_user.as_deref())
        .await
    {
        Ok(id) => id,
        Err(e @ AuthError::Expired) => return refuse(StatusCode::UNAUTHORIZED, &e.to_string()),
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    let user = identity.user;
    let mut channels: Vec<String> = Vec::new();
    for c in engineio::query_param(query, "channels")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        if let Err(e) = t
            .realtime
            .rooms
            .check(Via::Sse, c, Some(&user), identity.rooms.as_deref())
        {
            let status = match e {
                super::RoomError::Invalid => StatusCode::BAD_REQUEST,
                _ => StatusCode::FORBIDDEN,
            };
            return refuse(status, &format!("channel {c:?}: {e}"));
        }
        if let Some(chat) = t.chat()
            && let Err(e) = chat.may_subscribe(c, &user).await
        {
            e.log();
            return refuse(e.status(), &format!("channel {c:?}: {e}"));
        }
        if !channels.iter().any(|x| x == c) {
            channels.push(c.to_owned());
        }
    }
    let own = user_room(&user);
    let mut rooms: Vec<RoomId> = channels.iter().map(|c| Arc::from(c.as_str())).collect();
    if !channels.contains(&own) {
        rooms.push(Arc::from(own.as_str()));
    }
    if rooms.len() > t.config.max_rooms {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "too many channels: at most {} (including your own user channel)",
                t.config.max_rooms.saturating_sub(1)
            ),
        );
    }
    // One user's connections are counted before anything joins, like the other limits.
    let user_permit = match t.realtime.limits.admit_user(&user) {
        Ok(p) => p,
        Err(refused) => return crate::limits::unavailable(refused),
    };

    t.metrics.sse.opened.fetch_add(1, Ordering::Relaxed);
    let client = Arc::new(SseClient {
        user,
        out: Outbox::new(t.config.queue, t.sse_counters.clone()),
        replayed_upto: AtomicU64::new(0),
    });
    let member = t.hub.add_member(client.clone());
    let id = client_id();
    let mut initial: Vec<Bytes> = Vec::new();
    initial.push(Bytes::from_static(b"retry: 2000\n\n"));
    initial.push(sse_event(
        None,
        "connected",
        &json!({"clientId": id, "userId": client.user, "channels": channels}).to_string(),
    ));
    let limit = t.config.presence_limit;
    let arrived = match resume_of(headers, query) {
        Resume::After(after) => {
            let mut replay: Vec<Arc<Envelope>> = Vec::new();
            match t.hub.join_with_replay(member, &rooms, after, limit, |r| {
                replay.extend_from_slice(r);
                if let Some(last) = r.last() {
                    client.replayed_upto.store(last.offset, Ordering::Relaxed);
                }
            }) {
                Ok(arrived) => {
                    initial.extend(replay.iter().map(|e| e.encoded(format(), encode_envelope)));
                    arrived
                }
                Err(hub::Gap) => {
                    let arrived = join_all(&t, member, &rooms);
                    initial.push(reset(
                        &t,
                        after.to_string(),
                        "history no longer reaches back to it",
                    ));
                    arrived
                }
            }
        }
        Resume::Invalid(raw) => {
            let arrived = join_all(&t, member, &rooms);
            initial.push(reset(&t, raw, "not an event id of this server"));
            arrived
        }
        Resume::Fresh => join_all(&t, member, &rooms),
    };
    for room in arrived {
        if &*room != own.as_str() {
            t.arrived(&room, &client.user, Some(member));
        }
    }

    let heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + t.config.heartbeat,
        t.config.heartbeat,
    );
    // The first events go out as hyper's first chunk, counted as the frames they are.
    t.metrics
        .sse
        .out
        .fetch_add(initial.len() as u64, Ordering::Relaxed);
    let state = StreamState {
        _open: OpenGuard::new(&t.sse_open),
        _user: user_permit,
        t,
        member,
        client,
        initial: Some(Bytes::from(initial.concat())),
        handover: wire,
        wire: None,
        heartbeat,
        done: false,
        how: Close::Client,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let chunk = st.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), st))
    });
    super::event_stream(Body::from_stream(stream))
}

/// Joins every room without replay; returns where the user just became present.
fn join_all(t: &Transports, member: MemberId, rooms: &[RoomId]) -> Vec<RoomId> {
    rooms
        .iter()
        .filter(|r| {
            t.hub.join_presence(member, r, t.config.presence_limit) == Ok(hub::Presence::Changed)
        })
        .cloned()
        .collect()
}

/// The `reset` event: the client must refetch; its id moves the client's position to now.
fn reset(t: &Transports, last_event_id: String, why: &str) -> Bytes {
    sse_event(
        Some(t.hub.last_offset()),
        "reset",
        &json!({
            "reason": format!("cannot resume from Last-Event-ID {last_event_id:?}: {why}; refetch current state"),
            "lastEventId": last_event_id,
        })
        .to_string(),
    )
}

struct StreamState {
    t: Arc<Transports>,
    _open: OpenGuard,
    _user: engineio::Permit,
    member: MemberId,
    client: Arc<SseClient>,
    /// `retry`, `connected`, any replay or `reset`: hyper's first chunk.
    initial: Option<Bytes>,
    /// The connection's wire, until the stream switches to direct writes.
    handover: Option<Arc<Wire>>,
    /// The wire while writing directly.
    wire: Option<Arc<Wire>>,
    heartbeat: tokio::time::Interval,
    done: bool,
    how: Close,
}

/// The heartbeat comment, as written directly: one HTTP chunk.
const PING_CHUNK: &[u8] = b"8\r\n: ping\n\n\r\n";
const PING: &[u8] = b": ping\n\n";

impl StreamState {
    /// The next chunk hyper writes. While writing directly this only returns to end the
    /// stream (or with the slow-client notice): everything else goes through the wire.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(b) = self.initial.take() {
            return Some(b);
        }
        if self.done {
            return None;
        }
        if let Some(wire) = self.handover.take() {
            // hyper holds the response head and the first chunk in its buffer; it flushes
            // them into the wire before it polls the body again, and only then may direct
            // writes start (they would come first otherwise).
            let seen = wire.flushes();
            tokio::select! {
                biased;
                _ = self.t.stop.cancelled() => {
                    self.how = Close::Shutdown;
                    return None;
                }
                _ = std::future::poll_fn(|cx| wire.poll_flushed_after(seen, cx)) => {}
            }
            let me: Weak<SseClient> = Arc::downgrade(&self.client);
            let me: Weak<dyn Flushable> = me;
            wire.set_max_unsent(self.t.config.max_message.saturating_mul(2));
            self.client.out.attach_direct(
                wire.clone(),
                self.t.flushers.queue(),
                me,
                Encoding::Chunked,
            );
            self.wire = Some(wire);
        }
        loop {
            // A direct stream whose socket is full waits for it here.
            let blocked = self.wire.as_ref().is_some_and(|w| w.is_blocked());
            tokio::select! {
                biased;
                _ = self.t.stop.cancelled() => {
                    self.how = Close::Shutdown;
                    self.end(CloseReason::ServerShutdown);
                    return None;
                }
                _ = self.client.out.wake.notified() => {
                    match self.client.out.closed_reason() {
                        Some(CloseReason::SlowClient) => {
                            self.done = true;
                            self.how = Close::SlowClient;
                            self.end(CloseReason::SlowClient);
                            return Some(sse_event(None, "error", r#"{"message":"Slow client: send queue full, disconnecting"}"#));
                        }
                        // A direct write failed: the connection is gone.
                        Some(_) => {
                            self.end(CloseReason::TransportError);
                            return None;
                        }
                        None => {}
                    }
                    match &self.wire {
                        // Never waits: a full socket is drained by the branch below.
                        Some(_) if blocked => {}
                        Some(_) => self.client.out.flush(),
                        // hyper writes: everything queued as one chunk.
                        None => {
                            let frames = self.client.out.take();
                            let mut chunk = Vec::new();
                            for f in &frames {
                                if let Frame::Binary(b) = f {
                                    chunk.extend_from_slice(b);
                                }
                            }
                            if !chunk.is_empty() {
                                return Some(Bytes::from(chunk));
                            }
                        }
                    }
                }
                drained = std::future::poll_fn(|cx| match &self.wire {
                    Some(w) => w.poll_drain(cx),
                    None => std::task::Poll::Pending,
                }), if blocked => match drained {
                    Ok(()) => self.client.out.flush(),
                    Err(_) => {
                        self.end(CloseReason::TransportError);
                        return None;
                    }
                },
                _ = self.heartbeat.tick() => match &self.wire {
                    // Whole, between the flushers' chunks; a full socket keeps it in its
                    // backlog (never waits).
                    Some(w) => {
                        if w.write_now(PING_CHUNK).is_err() {
                            self.end(CloseReason::TransportError);
                            return None;
                        }
                    }
                    None => return Some(Bytes::from_static(PING)),
                },
            }
        }
    }

    /// Stops the outbox and direct writes: hyper writes what follows (a notice, the last
    /// chunk), after anything the flushers wrote.
    fn end(&mut self, reason: CloseReason) {
        self.client.out.close(reason);
        self.client.out.detach_direct();
        self.wire = None;
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.t.metrics.sse.closed(self.how);
        self.client.out.close(CloseReason::TransportClose);
        self.client.out.detach_direct();
        for room in self
            .t
            .hub
            .remove_member_presence(self.member, self.t.config.presence_limit)
        {
            if &*room != user_room(&self.client.user).as_str() {
                self.t.departed(&room, &self.client.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_safely() {
        let b = sse_event(Some(7), "a\nb", "{\"x\":\n1}");
        assert_eq!(
            std::str::from_utf8(&b).ok(),
            Some("id: 7\nevent: ab\ndata: {\"x\":\ndata: 1}\n\n")
        );
    }

    #[test]
    fn resume_positions() {
        let mut h = HeaderMap::new();
        assert!(matches!(resume_of(&h, ""), Resume::Fresh));
        assert!(matches!(resume_of(&h, "lastEventId=12"), Resume::After(12)));
        h.insert("last-event-id", axum::http::HeaderValue::from_static("x1"));
        assert!(matches!(resume_of(&h, "lastEventId=12"), Resume::Invalid(s) if s == "x1"));
    }
}

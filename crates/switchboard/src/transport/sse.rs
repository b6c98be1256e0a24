//! Server-Sent Events at `GET /events?channels=a,b`: one-way, resumable.
//!
//! The stream starts with `connected {clientId, userId, channels}`; every message carries
//! `id:` (its hub offset), `event:` and `data:` (the payload as JSON). A reconnecting
//! client sends `Last-Event-ID` (or `?lastEventId=`) and gets every missed message of its
//! channels in order, or, when the history no longer reaches back that far, a `reset`
//! event first: it never silently skips. A comment heartbeat keeps proxies from timing
//! out; a client that reads too slowly is disconnected once its queue is full.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hub::{Delivery, Envelope, FormatId, Member, MemberId, RoomId};
use serde_json::json;
use tokio::sync::mpsc;

use super::access::Via;
use super::{OpenGuard, Outbound, Transports, client_id};
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
    out: Outbound<(u64, tokio::time::Instant, Bytes)>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Member for SseClient {
    fn deliver(&self, envelope: &Arc<Envelope>) -> Delivery {
        if self.out.is_closed() {
            return Delivery::Closed;
        }
        let chunk = envelope.encoded(format(), encode_envelope);
        let item = (envelope.offset, tokio::time::Instant::now(), chunk);
        self.out
            .offer(item, envelope.volatile, &self.metrics.sse.dropped)
    }
    fn transport(&self) -> &'static str {
        "sse"
    }
    fn user(&self) -> Option<&str> {
        Some(&self.user)
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
pub async fn events(State(t): State<Arc<Transports>>, headers: HeaderMap, uri: Uri) -> Response {
    if !t.origins.allows(&headers) {
        return t.refuse_origin(Via::Sse, &headers);
    }
    let query = uri.query().unwrap_or("");
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

    let (out, rx) = Outbound::new(t.config.queue);
    t.metrics.sse.opened.fetch_add(1, Ordering::Relaxed);
    let client = Arc::new(SseClient {
        user,
        metrics: t.metrics.clone(),
        out,
    });
    let member = t.hub.add_member(client.clone());
    let id = client_id();
    let mut initial: VecDeque<Bytes> = VecDeque::new();
    initial.push_back(Bytes::from_static(b"retry: 2000\n\n"));
    initial.push_back(sse_event(
        None,
        "connected",
        &json!({"clientId": id, "userId": client.user, "channels": channels}).to_string(),
    ));
    let limit = t.config.presence_limit;
    let mut replayed_upto = 0;
    let arrived = match resume_of(&headers, query) {
        Resume::After(after) => {
            let mut replay: Vec<Arc<Envelope>> = Vec::new();
            match t.hub.join_with_replay(member, &rooms, after, limit, |r| {
                replay.extend_from_slice(r)
            }) {
                Ok(arrived) => {
                    replayed_upto = replay.last().map_or(0, |e| e.offset);
                    initial.extend(replay.iter().map(|e| e.encoded(format(), encode_envelope)));
                    arrived
                }
                Err(hub::Gap) => {
                    let arrived = join_all(&t, member, &rooms);
                    initial.push_back(reset(
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
            initial.push_back(reset(&t, raw, "not an event id of this server"));
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
    let state = StreamState {
        _open: OpenGuard::new(&t.sse_open),
        _user: user_permit,
        t,
        member,
        client,
        rx,
        initial,
        replayed_upto,
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
    rx: mpsc::Receiver<(u64, tokio::time::Instant, Bytes)>,
    initial: VecDeque<Bytes>,
    /// Live messages at or below this offset were already sent as replay.
    replayed_upto: u64,
    heartbeat: tokio::time::Interval,
    done: bool,
    how: Close,
}

impl StreamState {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(b) = self.initial.pop_front() {
            self.t.metrics.sse.out.fetch_add(1, Ordering::Relaxed);
            return Some(b);
        }
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                _ = self.t.stop.cancelled() => {
                    self.how = Close::Shutdown;
                    return None;
                }
                _ = self.client.out.slow.notified() => {
                    self.done = true;
                    self.how = Close::SlowClient;
                    return Some(sse_event(None, "error", r#"{"message":"Slow client: send queue full, disconnecting"}"#));
                }
                item = self.rx.recv() => match item {
                    Some((offset, _, _)) if offset <= self.replayed_upto => continue,
                    Some((_, queued, chunk)) => {
                        self.t.metrics.sse.delivery.observe(queued.elapsed());
                        self.t.metrics.sse.out.fetch_add(1, Ordering::Relaxed);
                        return Some(chunk);
                    }
                    None => return None,
                },
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b": ping\n\n")),
            }
        }
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.t.metrics.sse.closed(self.how);
        self.client.out.close();
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

//! Plain WebSocket at `/ws`: JSON text frames, no library needed on the client.
//!
//! Client → server: `{"event", "data", "ack"?}` (the ticket contract's events), or room
//! actions `{"action": "join"|"leave", "roomId"}`, `{"action": "message", "roomId",
//! "content"}`, `{"action": "ping"}`. Server → client: `{"event", "data", "room"?,
//! "offset"?}`, acks `{"ack", "data"}`, errors `{"event": "error", "data": {"message"}}`.
//! Close codes: 4001 unauthorized, 4003 token expired, 4008 heartbeat timeout, 4009 slow
//! client, 1009 frame too big, 1001 server shutting down.
//!
//! Frames leave through an `engineio::outbox::Outbox`, as Engine.IO sessions' do: on a
//! plain TCP connection with flushers on (`ws_flushers`), a delivery queues the frame and
//! a flusher writes each connection's queued frames in one write, waking no task; the
//! connection's task writes only pings, the close frame, and what a full socket left.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engineio::deflate::{self, Inflating};
use engineio::outbox::{Encoding, Flushable, Outbox, OutboxCounters, Wire, direct_io};
use engineio::{CloseReason, Frame, Push};
use futures_util::{SinkExt, StreamExt};
use hub::{Delivery, Envelope, FormatId, Member, MemberId, Payload, Presence, Publish};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::access::Via;
use super::{OpenGuard, Transports, client_id};
use crate::auth::AuthError;
use crate::limits::{UserEvents, user_rate_message};
use crate::metrics::Close;
use crate::realtime::{Client, user_room};
use crate::tickets::now_ms;

/// The `/ws` wire format, for the envelope encode cache.
fn format() -> FormatId {
    static FORMAT: OnceLock<FormatId> = OnceLock::new();
    *FORMAT.get_or_init(FormatId::register)
}

/// A JSON string literal.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// `{"event", "data", "room"?, "offset"}`: the room when the message went to exactly one.
fn encode_envelope(env: &Envelope) -> Utf8Bytes {
    let data = env.payload.as_single_json();
    let mut out = String::with_capacity(data.len() * 2 + env.event.len() + 64);
    out.push('{');
    // The catalogue's plain WebSocket chat server sends typing as `{"action": "typing",
    // "userId", "roomId"}`: chat typing events carry that form too, beside the usual one.
    // Only the chat's own payload (exactly `userId` and `roomId`), so the added keys can
    // never clash with a published payload's; encoded once per envelope (the cache).
    if env.event.starts_with("typing")
        && serde_json::from_str::<serde_json::Map<String, Value>>(&data).is_ok_and(|m| {
            m.len() == 2
                && m.get("userId").is_some_and(Value::is_string)
                && m.get("roomId").is_some_and(Value::is_string)
        })
        && let Some(inner) = data.strip_prefix('{').and_then(|d| d.strip_suffix('}'))
    {
        out.push_str("\"action\":");
        out.push_str(&quoted(&env.event));
        out.push(',');
        out.push_str(inner);
        out.push(',');
    }
    out.push_str("\"event\":");
    out.push_str(&quoted(&env.event));
    out.push_str(",\"data\":");
    out.push_str(&data);
    if let [room] = env.rooms.as_slice() {
        out.push_str(",\"room\":");
        out.push_str(&quoted(room));
    }
    out.push_str(",\"offset\":");
    out.push_str(&env.offset.to_string());
    out.push('}');
    Utf8Bytes::from(out)
}

/// One `/ws` connection as a hub member and a ticket-contract client.
struct WsClient {
    id: String,
    /// The chat's name for this connection (`ws:{id}`).
    chat_id: String,
    /// Set at the first chat action: only then does the chat track this connection
    /// (presence, rooms), so plain `/ws` clients cost the chat nothing.
    chatting: std::sync::atomic::AtomicBool,
    user: String,
    /// The token's `rooms` claim, if it had one.
    grants: Option<Arc<[String]>>,
    hub: Arc<hub::Hub>,
    member: OnceLock<MemberId>,
    out: Outbox<dyn OutboxCounters>,
}

impl WsClient {
    fn member(&self) -> Option<MemberId> {
        self.member.get().copied()
    }

    fn queue(&self, frame: Utf8Bytes, volatile: bool) -> Delivery {
        self.push(Frame::Text(frame), volatile)
    }

    fn push(&self, frame: Frame, volatile: bool) -> Delivery {
        match self.out.push(frame, volatile) {
            Push::Queued => Delivery::Delivered,
            Push::Dropped => Delivery::Dropped,
            Push::Closed => Delivery::Closed,
        }
    }

    fn send_event(&self, event: &str, data: &str) {
        let frame = format!("{{\"event\":{},\"data\":{data}}}", quoted(event));
        self.queue(Utf8Bytes::from(frame), false);
    }

    /// An answer to an action: through the ack when the client asked for one, else as
    /// the named event.
    fn reply(&self, ack: Option<u64>, event: &str, body: Value) {
        match ack {
            Some(id) => Client::ack(self, id, &Payload::json(&body)),
            None => self.send_event(event, &body.to_string()),
        }
    }

    fn fail(&self, ack: Option<u64>, message: &str) {
        if let Some(id) = ack {
            Client::ack(
                self,
                id,
                &Payload::json(&json!({"success": false, "message": message})),
            );
        }
        self.send_event("error", &json!({ "message": message }).to_string());
    }
}

impl Member for WsClient {
    fn deliver(&self, envelope: &Arc<Envelope>) -> Delivery {
        if self.out.closed_reason().is_some() {
            return Delivery::Closed;
        }
        // Shared: compressed (permessage-deflate) at most once for every recipient.
        let frame = envelope.encoded(format(), |e| Frame::Text(encode_envelope(e)).shared());
        self.push(frame, envelope.volatile)
    }
    fn transport(&self) -> &'static str {
        "ws"
    }
    fn user(&self) -> Option<&str> {
        Some(&self.user)
    }
}

impl Flushable for WsClient {
    fn flush_queued(&self, buf: &mut Vec<u8>) {
        self.out.write_direct(buf, false);
    }
}

impl Client for WsClient {
    fn id(&self) -> &str {
        &self.id
    }
    fn user(&self) -> Option<&str> {
        Some(&self.user)
    }
    fn grants(&self) -> Option<&[String]> {
        self.grants.as_deref()
    }
    fn via(&self) -> Via {
        Via::Ws
    }
    fn join(&self, room: &str) -> Result<(), hub::JoinError> {
        let member = self.member().ok_or(hub::JoinError::UnknownMember)?;
        self.hub.join(member, room)
    }
    fn leave(&self, room: &str) {
        if let Some(member) = self.member() {
            self.hub.leave(member, room);
        }
    }
    fn emit(&self, event: &str, payload: Payload) {
        self.send_event(event, &payload.as_single_json());
    }
    fn ack(&self, id: u64, payload: &Payload) {
        let frame = format!("{{\"ack\":{id},\"data\":{}}}", payload.as_single_json());
        self.queue(Utf8Bytes::from(frame), false);
    }
}

impl crate::chat::ChatConn for WsClient {
    fn conn_id(&self) -> &str {
        &self.chat_id
    }
    fn user_id(&self) -> &str {
        &self.user
    }
    fn subscribe(&self, room: &str) -> Result<(), hub::JoinError> {
        Client::join(self, room)
    }
    fn unsubscribe(&self, room: &str) {
        Client::leave(self, room)
    }
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// The token a browser sent as a subprotocol (`new WebSocket(url, [token])`), and the
/// exact value to echo. A `bearer`/`access_token` marker may precede the token.
fn protocol_token(headers: &HeaderMap) -> (Option<String>, Option<HeaderValue>) {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let looks_like_jwt = |v: &&&str| v.matches('.').count() == 2;
    let token = offered.iter().find(looks_like_jwt).copied();
    // Echo the token itself, or else the first protocol offered (a browser fails the
    // handshake when none of its offers comes back).
    let echo = token.or(offered.first().copied());
    (
        token.map(str::to_owned),
        echo.and_then(|e| HeaderValue::from_str(e).ok()),
    )
}

/// `GET /ws`: the upgrade. Authentication is checked here but refused only after the
/// upgrade, with a close code a browser can read (4001, 4003).
pub async fn upgrade(State(t): State<Arc<Transports>>, mut req: Request) -> Response {
    let headers = req.headers();
    if !t.origins.allows(headers) {
        return t.refuse_origin(Via::Ws, headers);
    }
    let Some(accept) = engineio::websocket_accept(headers) else {
        return bad_request("expected a WebSocket upgrade (version 13)");
    };
    let (proto_token, echo) = protocol_token(headers);
    let query = req.uri().query().unwrap_or("");
    let token = proto_token.or_else(|| engineio::query_param(query, "token"));
    let query_user = engineio::query_param(query, "userId");
    let identity = t
        .realtime
        .auth
        .identify(token.as_deref(), query_user.as_deref())
        .await;
    // One user's connections are counted before the upgrade, like the other limits.
    let user_permit = match &identity {
        Ok(id) => match t.realtime.limits.admit_user(&id.user) {
            Ok(p) => Some(p),
            Err(refused) => return crate::limits::unavailable(refused),
        },
        Err(_) => None,
    };
    // The connection's admission (see `limits`) lives as long as its task.
    let permit = req.extensions().get::<engineio::Permit>().cloned();
    // permessage-deflate when the client offers it in a form we honour.
    let encoding = Encoding::negotiate(req.headers(), t.config.ws_compression);
    let compress = encoding.compresses();
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    let this = t.clone();
    t.tasks.spawn(async move {
        let _permit = (permit, user_permit);
        let io = match Box::pin(on_upgrade).await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(this.config.ws_read_buffer)
            .write_buffer_size(0)
            .max_write_buffer_size(this.config.max_message.saturating_mul(2))
            .max_message_size(Some(this.config.max_message))
            .max_frame_size(Some(this.config.max_message));
        this.metrics.ws.opened.fetch_add(1, Ordering::Relaxed);
        // Direct writes need the TCP stream itself (not a TLS one).
        let io = if this.flushers.enabled() {
            match direct_io(io, this.config.max_message.saturating_mul(2)) {
                Ok((wire, io)) => {
                    let io = Inflating::new(io, compress, this.config.max_message);
                    let ws = Box::pin(WebSocketStream::from_raw_socket(
                        io,
                        Role::Server,
                        Some(config),
                    ))
                    .await;
                    return Box::pin(serve(this, identity, ws, (Some(wire), encoding))).await;
                }
                Err(io) => io,
            }
        } else {
            io
        };
        let io = Inflating::new(TokioIo::new(io), compress, this.config.max_message);
        let ws = Box::pin(WebSocketStream::from_raw_socket(
            io,
            Role::Server,
            Some(config),
        ))
        .await;
        Box::pin(serve(this, identity, ws, (None, encoding))).await
    });
    let mut res = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = echo {
        res = res.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    if compress {
        res = res.header(header::SEC_WEBSOCKET_EXTENSIONS, deflate::RESPONSE);
    }
    res.body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// An upgraded connection: the session, or the close code of a refused token.
async fn serve<S>(
    t: Arc<Transports>,
    identity: Result<crate::auth::Identity, AuthError>,
    mut ws: WebSocketStream<S>,
    direct: (Option<Arc<Wire>>, Encoding),
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    match identity {
        Ok(id) => Box::pin(run(t, id, ws, direct)).await,
        Err(e) => {
            tracing::debug!(error = %e, cause = ?std::error::Error::source(&e), "/ws token refused");
            t.metrics.ws.closed(Close::Unauthorized);
            let (code, reason) = match e {
                AuthError::Expired => (4003, "Token expired"),
                _ => (4001, "Unauthorized"),
            };
            close(&mut ws, code, reason).await;
        }
    }
}

async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &'static str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(Some(frame))).await;
}

/// One authenticated connection, from its first frame to its cleanup. Not an `async fn`,
/// so the stream is stored once in the future (see `engineio::Engine::run_websocket`).
/// `wire`: the connection's TCP stream for direct writes (crate docs), if it has one, and
/// how frames are encoded on it.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
fn run<S>(
    t: Arc<Transports>,
    identity: crate::auth::Identity,
    mut ws: WebSocketStream<S>,
    (wire, encoding): (Option<Arc<Wire>>, Encoding),
) -> impl std::future::Future<Output = ()> + Send
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async move {
        let _open = OpenGuard::new(&t.ws_open);
        let id = client_id();
        let client = Arc::new(WsClient {
            chat_id: format!("ws:{id}"),
            chatting: std::sync::atomic::AtomicBool::new(false),
            id,
            user: identity.user,
            grants: identity.rooms,
            hub: t.hub.clone(),
            member: OnceLock::new(),
            out: Outbox::new(t.config.queue, t.ws_counters.clone()),
        });
        if let Some(wire) = &wire {
            let me: Weak<WsClient> = Arc::downgrade(&client);
            let me: Weak<dyn Flushable> = me;
            client
                .out
                .attach_direct(wire.clone(), t.flushers.queue(), me, encoding);
        }
        let member = t.hub.add_member(client.clone());
        let _ = client.member.set(member);
        let _ = t.hub.join(member, &user_room(&client.user));
        client.send_event(
            "connected",
            &json!({"clientId": client.id, "userId": client.user}).to_string(),
        );

        let mut bucket = primitives::Bucket::new(t.config.rate_limit);
        let interval = t.config.heartbeat;
        let mut ping_at = Instant::now() + interval;
        let mut pong_due: Option<Instant> = None;
        let ending: Option<(u16, &'static str)> = loop {
            let wake = pong_due.map_or(ping_at, |d| d.min(ping_at));
            // A direct connection whose socket is full waits for it here, while still
            // reading, pinging and noticing a close.
            let blocked = wire.as_ref().is_some_and(|w| w.is_blocked());
            tokio::select! {
                biased;
                _ = t.stop.cancelled() => break Some((1001, "Server shutting down")),
                _ = client.out.wake.notified() => {
                    match client.out.closed_reason() {
                        Some(CloseReason::SlowClient) => break Some((4009, "Slow client: send queue full")),
                        // A direct write failed: the connection is gone.
                        Some(_) => break None,
                        None => {}
                    }
                    match &wire {
                        // Never waits: a full socket is drained by the branch below.
                        Some(_) if blocked => {}
                        Some(_) => client.out.flush(),
                        // The task writes itself: a socket that takes nothing for a
                        // heartbeat timeout belongs to a client that stopped reading.
                        None => match tokio::time::timeout(
                            t.config.heartbeat_timeout,
                            write_queued(&client.out, &mut ws),
                        )
                        .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(())) => break None,
                            Err(_) => break Some((4009, "Slow client: send queue full")),
                        },
                    }
                }
                drained = std::future::poll_fn(|cx| match &wire {
                    Some(w) => w.poll_drain(cx),
                    None => std::task::Poll::Pending,
                }), if blocked => match drained {
                    Ok(()) => client.out.flush(),
                    Err(_) => break None,
                },
                msg = ws.next() => {
                    pong_due = None;
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                        if !bucket.take(t.config.rate_limit) {
                            t.metrics.ws.rate_limited.fetch_add(1, Ordering::Relaxed);
                            client.fail(None, &format!(
                                "Rate limit exceeded: at most {} messages per second",
                                t.config.rate_limit.per_sec
                            ));
                        } else if !t.realtime.limits.take_user_event(&client.user, UserEvents::Ws) {
                            client.fail(None, &user_rate_message(t.realtime.limits.user_rate()));
                        } else {
                            handle_text(&t, &client, member, &text).await
                        }
                    }
                        Some(Ok(Message::Binary(_))) => {
                            t.metrics.ws.in_invalid.fetch_add(1, Ordering::Relaxed);
                            client.fail(None, "Binary frames are not supported: send JSON text");
                        }
                        Some(Ok(Message::Close(_))) | None => break None,
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(_))) => break Some((1009, "Frame too big")),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket read failed");
                            break None;
                        }
                    }
                    // The answer to what the client sent goes out now, not behind the
                    // connections already on the flush queue.
                    client.out.flush();
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if pong_due.is_some_and(|d| now >= d) {
                        break Some((4008, "Heartbeat timeout"));
                    }
                    if now >= ping_at {
                        let sent = match &wire {
                            // An empty ping frame, written whole between the flushers'
                            // writes (never waits: a full socket keeps it in its backlog).
                            Some(w) => w.write_now(&[0x89, 0x00]).is_ok(),
                            None => ws.send(Message::Ping(Default::default())).await.is_ok(),
                        };
                        if !sent {
                            break None;
                        }
                        pong_due.get_or_insert(now + t.config.heartbeat_timeout);
                        ping_at = now + interval;
                    }
                }
            }
        };
        client.out.close(match ending {
            Some((1001, _)) => CloseReason::ServerShutdown,
            Some((4009, _)) => CloseReason::SlowClient,
            _ => CloseReason::TransportClose,
        });
        t.metrics.ws.closed(match ending {
            None => Close::Client,
            Some((1001, _)) => Close::Shutdown,
            Some((1009, _)) => Close::TooBig,
            Some((4008, _)) => Close::Heartbeat,
            Some((4009, _)) => Close::SlowClient,
            Some(_) => Close::Error,
        });
        if let Some(chat) = t.chat()
            && client.chatting.load(Ordering::Relaxed)
        {
            chat.disconnected(&client.chat_id).await;
        }
        for room in t
            .hub
            .remove_member_presence(member, t.config.presence_limit)
        {
            t.departed(&room, &client.user);
        }
        if let Some((code, reason)) = ending {
            // Whatever was queued before a shutdown still goes out first (bounded, like
            // the close frame).
            if code == 1001 {
                let goodbye = async {
                    match &wire {
                        Some(w) => client.out.flush_direct(w, true).await.map_err(drop),
                        None => write_queued(&client.out, &mut ws).await,
                    }
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
            }
            close(&mut ws, code, reason).await;
        }
        // Lets go of the socket even if a callback still holds the client.
        client.out.detach_direct();
        // A graceful restart takes no one's seats: the holds stay until their expiresAt
        // (README "Holds across a restart"); any other end releases them.
        if !matches!(ending, Some((1001, _))) {
            t.realtime.session_ended(&client.id).await;
        }
    }
}

/// How long a goodbye (queued frames, the close frame) may take.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Without direct writes: the connection's task writes what is queued.
async fn write_queued<S>(
    out: &Outbox<dyn OutboxCounters>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frames = out.take();
    if frames.is_empty() {
        return Ok(());
    }
    for msg in frames.iter().filter_map(Frame::to_ws_message) {
        ws.feed(msg).await.map_err(drop)?;
    }
    ws.flush().await.map_err(drop)
}

fn room_of(obj: &serde_json::Map<String, Value>) -> Result<&str, &'static str> {
    obj.get("roomId")
        .and_then(Value::as_str)
        .ok_or("roomId (a string) is required")
}

async fn handle_text(t: &Arc<Transports>, client: &Arc<WsClient>, member: MemberId, text: &str) {
    let invalid = || t.metrics.ws.in_invalid.fetch_add(1, Ordering::Relaxed);
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            invalid();
            return client.fail(None, &format!("Invalid JSON: {e}"));
        }
    };
    let Some(obj) = value.as_object() else {
        invalid();
        return client.fail(None, "Expected a JSON object");
    };
    let ack = match obj.get("ack") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => return client.fail(None, "ack must be a non-negative integer"),
        },
    };
    if let Some(action) = obj.get("action") {
        t.metrics.ws.in_actions.fetch_add(1, Ordering::Relaxed);
        let Some(action) = action.as_str() else {
            return client.fail(ack, "action must be a string");
        };
        if let Some(chat) = t.chat()
            && chat_action(chat, &t.realtime.rooms, client, action, obj, ack).await
        {
            return;
        }
        return handle_action(t, client, member, action, obj, ack);
    }
    match obj.get("event").and_then(Value::as_str) {
        Some(event) => {
            t.metrics.ws.in_events.fetch_add(1, Ordering::Relaxed);
            let data = obj.get("data").cloned().unwrap_or(Value::Null);
            t.realtime.dispatch(&**client, event, data, ack).await;
        }
        None => client.fail(
            ack,
            "Expected {\"event\": NAME, \"data\": ...} or {\"action\": ...}",
        ),
    }
}

/// A chat action (`join`, `leave` and `message` only for chat rooms: other rooms keep the
/// plain relay). Returns false when the action is not the chat's.
async fn chat_action(
    chat: &crate::chat::Chat,
    rooms: &super::access::RoomPolicy,
    client: &Arc<WsClient>,
    action: &str,
    obj: &serde_json::Map<String, Value>,
    ack: Option<u64>,
) -> bool {
    let (event, reply) = match action {
        "join" | "leave" | "message" => {
            let Ok(room) = room_of(obj) else {
                return false;
            };
            match chat.is_chat_room(room).await {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    client.fail(ack, &e.to_string());
                    return true;
                }
            }
            let reply = match action {
                "join" => "joined",
                "leave" => "left",
                _ => "sent",
            };
            (action, reply.to_owned())
        }
        // Not the room's event names (`typing`, `read`...): an answer is not an event.
        a if crate::chat::dispatch::EVENTS.contains(&a) => (a, format!("{a}:ack")),
        _ => return false,
    };
    if !client.chatting.swap(true, Ordering::Relaxed) {
        chat.connected(client.clone()).await;
    }
    let data = Value::Object(obj.clone());
    if let Some(room) = crate::chat::dispatch::room_to_authorize(event, &data)
        && let Err(e) = rooms.check(Via::Ws, &room, Some(&client.user), client.grants.as_deref())
    {
        client.fail(ack, &e.to_string());
        return true;
    }
    match crate::chat::dispatch(chat, &**client, event, &data).await {
        Some(Ok(body)) => client.reply(ack, &reply, body),
        Some(Err(e)) => {
            e.log();
            client.fail(ack, &e.to_string());
        }
        None => return false,
    }
    true
}

fn handle_action(
    t: &Arc<Transports>,
    client: &Arc<WsClient>,
    member: MemberId,
    action: &str,
    obj: &serde_json::Map<String, Value>,
    ack: Option<u64>,
) {
    let limit = t.config.presence_limit;
    match action {
        "ping" => client.reply(ack, "pong", json!({ "timestamp": now_ms() })),
        "join" => {
            let room = match room_of(obj) {
                Ok(r) => r,
                Err(m) => return client.fail(ack, m),
            };
            if let Err(e) =
                t.realtime
                    .rooms
                    .check(Via::Ws, room, Some(&client.user), client.grants.as_deref())
            {
                return client.fail(ack, &e.to_string());
            }
            match t.hub.join_presence(member, room, limit) {
                Ok(presence) => {
                    if presence == Presence::Changed {
                        t.arrived(room, &client.user, Some(member));
                    }
                    client.reply(ack, "joined", json!({"success": true, "roomId": room}));
                }
                Err(hub::JoinError::TooManyRooms) => client.fail(
                    ack,
                    &format!("Too many rooms: at most {} at once", t.config.max_rooms),
                ),
                Err(hub::JoinError::UnknownMember) => client.fail(ack, "Connection closing"),
            }
        }
        "leave" => {
            let room = match room_of(obj) {
                Ok(r) => r,
                Err(m) => return client.fail(ack, m),
            };
            if t.hub.leave_presence(member, room, limit) == Presence::Changed {
                t.departed(room, &client.user);
            }
            client.reply(ack, "left", json!({"success": true, "roomId": room}));
        }
        "message" => {
            let room = match room_of(obj) {
                Ok(r) => r,
                Err(m) => return client.fail(ack, m),
            };
            let content = match obj.get("content") {
                None | Some(Value::Null) => return client.fail(ack, "content is required"),
                Some(c) => c,
            };
            if !t.hub.is_member(member, room) {
                return client.fail(ack, &format!("Join room {room:?} before sending to it"));
            }
            let msg = Publish {
                rooms: std::iter::once(Arc::from(room)).collect(),
                event: "message".into(),
                payload: Payload::json(&json!({
                    "roomId": room,
                    "content": content,
                    "senderId": client.user,
                    "clientId": client.id,
                    "timestamp": now_ms(),
                })),
                persist: true,
                except_member: Some(member),
                ..Publish::default()
            };
            // The ack carries the message's offset: on a cluster node, once Redis has
            // sequenced it (the same offset every node delivers it with).
            let client = client.clone();
            let room = room.to_owned();
            t.hub.publish_then(
                msg,
                Box::new(move |offset, _| {
                    client.reply(
                        ack,
                        "sent",
                        json!({"success": true, "roomId": room, "offset": offset}),
                    );
                }),
            );
        }
        other => client.fail(ack, &format!("Unknown action: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_token_picks_the_jwt_and_echoes_it() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("bearer, aaa.bbb.ccc"),
        );
        let (token, echo) = protocol_token(&h);
        assert_eq!(token.as_deref(), Some("aaa.bbb.ccc"));
        assert_eq!(echo, Some(HeaderValue::from_static("aaa.bbb.ccc")));
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("json"),
        );
        let (token, echo) = protocol_token(&h);
        assert_eq!(token, None);
        assert_eq!(echo, Some(HeaderValue::from_static("json")));
        assert_eq!(protocol_token(&HeaderMap::new()), (None, None));
    }
}

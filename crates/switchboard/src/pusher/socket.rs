//! One Pusher WebSocket connection (protocol 7, as pusher-js speaks it) at `/app/{key}`:
//! a hub member that encodes envelopes once per format, with a bounded queue, the
//! activity ping, subscriptions, client events and sign-in.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hub::{Delivery, Envelope, FormatId, Member, MemberId, Payload, Presence, Publish};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use serde_json::value::RawValue;
use smallvec::SmallVec;
use tokio::time::{Duration, Instant};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::channel::{self, Kind, frame, quoted, room_of};
use super::service::{App, Counters, Pusher};
use super::sign;
use super::webhook::Hook;
use crate::limits::{UserEvents, user_rate_message};

/// Pusher's limit on a presence member's `user_info` (its JSON text), so the members
/// list a subscriber gets stays bounded.
const MAX_USER_INFO: usize = 1024;

/// How long a connection of an app with `user_authentication` has to sign in.
const SIGNIN_DEADLINE: Duration = Duration::from_secs(30);

/// The Pusher wire format, for the envelope encode cache.
fn format() -> FormatId {
    static FORMAT: OnceLock<FormatId> = OnceLock::new();
    *FORMAT.get_or_init(FormatId::register)
}

/// One connection as a hub member.
pub(crate) struct Conn {
    pub(crate) socket_id: Box<str>,
    pub(crate) app: Arc<App>,
    member: OnceLock<MemberId>,
    /// The connection's user: from sign-in or its first presence subscription. One per
    /// connection, so the hub counts presence the same way for every transport.
    user: OnceLock<Box<str>>,
    signed_in: AtomicBool,
    /// The user's place in the per-user count and its bucket key, once it has a user.
    admitted: OnceLock<(engineio::Permit, Box<str>)>,
    /// Subscribed channel names (Pusher names, not rooms).
    channels: parking_lot::Mutex<SmallVec<[Box<str>; 2]>>,
    out: Queue,
    /// Set with a close code by the server (terminate_connections, a bad sign-in).
    kick_code: AtomicU16,
    counters: Arc<Counters>,
}

impl Conn {
    pub(crate) fn member(&self) -> Option<MemberId> {
        self.member.get().copied()
    }

    pub(crate) fn user(&self) -> Option<&str> {
        self.user.get().map(|u| &**u)
    }

    fn queue(&self, text: String) {
        self.out
            .offer(Utf8Bytes::from(text), false, &self.counters.dropped);
    }

    /// `pusher:error`; `code` `None` for errors that close nothing.
    fn error(&self, code: Option<u16>, message: &str) {
        let data = serde_json::json!({"code": code, "message": message});
        self.queue(frame("pusher:error", None, &data.to_string()));
    }

    fn subscription_error(&self, channel: &str, kind: &str, status: u16, message: &str) {
        let data = serde_json::json!({"type": kind, "error": message, "status": status});
        self.queue(frame(
            "pusher:subscription_error",
            Some(channel),
            &data.to_string(),
        ));
    }

    /// `terminate_connections`: 4009, which pusher-js does not reconnect after.
    pub(crate) fn terminate(&self) {
        self.error(Some(4009), "Connection terminated by the app");
        self.kick(4009);
    }

    /// Closes the connection from the server with a code (the loop sends it after what
    /// is queued).
    fn kick(&self, code: u16) {
        self.kick_code.store(code, Ordering::Relaxed);
        self.out.close();
        self.out.slow.notify_one();
    }

    fn is_subscribed(&self, channel: &str) -> bool {
        self.channels.lock().iter().any(|c| &**c == channel)
    }

    /// Counts the connection against its user's limit once it has one; over the limit
    /// the connection is closed with 4100 (pusher-js reconnects after a backoff).
    fn admit_user(&self, limits: &Arc<crate::limits::Limits>) -> bool {
        let Some(user) = self.user() else {
            return true;
        };
        if self.admitted.get().is_some() {
            return true;
        }
        let key: Box<str> = format!("pusher:{}:{user}", self.app.config.id).into();
        match limits.admit_user(&key) {
            Ok(permit) => {
                let _ = self.admitted.set((permit, key));
                true
            }
            Err(refused) => {
                self.error(Some(4100), refused.reason.message());
                self.kick(4100);
                false
            }
        }
    }

    /// Sets the connection's user, or refuses a second, different one.
    fn claim_user(&self, user: &str) -> Result<(), String> {
        match self.user.get() {
            Some(u) if &**u == user => Ok(()),
            Some(u) => Err(format!(
                "This connection is user {u:?}: a connection is one user on this server"
            )),
            None => {
                let _ = self.user.set(user.into());
                match self.user.get() {
                    Some(u) if &**u == user => Ok(()),
                    _ => Err("This connection is another user".to_owned()),
                }
            }
        }
    }
}

impl Member for Conn {
    fn deliver(&self, env: &Arc<Envelope>) -> Delivery {
        if self.out.is_closed() {
            return Delivery::Closed;
        }
        let text: Option<Utf8Bytes> = match env.rooms.as_slice() {
            [room] => env.encoded(format(), |e| {
                channel::channel_of(room)
                    .and_then(|c| channel::encode(e, &c))
                    .map(Utf8Bytes::from)
            }),
            rooms => {
                // Several rooms (the publish API can name many): the first this
                // connection is subscribed to names the channel; encoded for it alone.
                let channels = self.channels.lock();
                rooms
                    .iter()
                    .filter_map(|r| channel::channel_of(r))
                    .find(|c| channels.iter().any(|s| **s == **c))
                    .and_then(|c| channel::encode(env, &c))
                    .map(Utf8Bytes::from)
            }
        };
        match text {
            Some(t) => self.out.offer(t, env.volatile, &self.counters.dropped),
            None => Delivery::Delivered,
        }
    }
    fn transport(&self) -> &'static str {
        "pusher"
    }
    fn user(&self) -> Option<&str> {
        Conn::user(self)
    }
}

/// A connection's bounded outbound queue and the slow-client policy (as
/// `engineio::outbox::Outbox`: a volatile message meets a full queue and is dropped; anything
/// else closes the client). A plain deque that holds no memory while empty, instead of a
/// channel whose first block (32 slots) lives as long as the connection.
struct Queue {
    items: parking_lot::Mutex<std::collections::VecDeque<Utf8Bytes>>,
    cap: usize,
    /// Wakes the connection's loop: something was queued.
    ready: tokio::sync::Notify,
    /// Wakes the connection's loop: close it (slow, or kicked).
    slow: tokio::sync::Notify,
    closed: AtomicBool,
}

impl Queue {
    fn new(cap: usize) -> Queue {
        Queue {
            items: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            cap,
            ready: tokio::sync::Notify::new(),
            slow: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    fn offer(&self, item: Utf8Bytes, volatile: bool, dropped: &AtomicU64) -> Delivery {
        if self.is_closed() {
            return Delivery::Closed;
        }
        let mut items = self.items.lock();
        if items.len() >= self.cap {
            drop(items);
            if volatile {
                dropped.fetch_add(1, Ordering::Relaxed);
                return Delivery::Dropped;
            }
            self.close();
            self.slow.notify_one();
            return Delivery::Closed;
        }
        items.push_back(item);
        drop(items);
        self.ready.notify_one();
        Delivery::Delivered
    }

    /// The next queued frame; an emptied queue gives its memory back.
    fn pop(&self) -> Option<Utf8Bytes> {
        let mut items = self.items.lock();
        let item = items.pop_front();
        if items.is_empty() && items.capacity() > 0 {
            *items = std::collections::VecDeque::new();
        }
        item
    }
}

/// `GET /app/{key}`: the upgrade. An unknown or disabled app and a bad protocol version
/// are refused after the upgrade with `pusher:error` and the close code pusher-js reads.
pub(crate) async fn upgrade(
    State(p): State<Arc<Pusher>>,
    Path(key): Path<String>,
    mut req: Request,
) -> Response {
    let Some(accept) = engineio::websocket_accept(req.headers()) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "expected a WebSocket upgrade (version 13)"})),
        )
            .into_response();
    };
    let query = req.uri().query().unwrap_or("");
    let protocol = engineio::query_param(query, "protocol");
    let refusal = match (p.app_by_key(&key), protocol.as_deref()) {
        (None, _) => Some((4001, format!("App key {key} does not exist"))),
        (Some(a), _) if !a.config.enabled => Some((4003, "App is disabled".to_owned())),
        (_, None) => Some((4008, "No protocol version supplied".to_owned())),
        (_, Some(v)) if !matches!(v.parse::<u8>(), Ok(5..=7)) => {
            Some((4007, format!("Unsupported protocol version {v}")))
        }
        _ => None,
    };
    let app = p.app_by_key(&key).cloned();
    // The connection's admission (see `limits`) lives as long as its task.
    let permit = req.extensions().get::<engineio::Permit>().cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    let this = p.clone();
    p.tasks.spawn(async move {
        let _permit = permit;
        let io = match Box::pin(on_upgrade).await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "pusher upgrade failed");
                return;
            }
        };
        // Our own server's connections are TCP streams: take the stream out of hyper's
        // `Upgraded`, whose read buffer (8 KB) would otherwise live as long as the
        // connection (bytes the client sent early are copied out first). `read_buf`
        // points into that buffer: it is dropped here, not at the end of this arm (a
        // partly moved `parts` would keep it, and the 8 KB, for the connection's life).
        match io.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => {
                let read_buf = parts.read_buf;
                let prefix = read_buf.to_vec();
                drop(read_buf);
                let io = Prefixed::new(prefix, parts.io.into_inner());
                serve(this, refusal, app, io).await;
            }
            Err(io) => serve(this, refusal, app, TokioIo::new(io)).await,
        }
    });
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The WebSocket over `io`: the connection, or the refusal decided at the upgrade. One
/// boxed future, of the size of the path taken (an `async fn` choosing between them
/// would be boxed at the size of both, for the connection's life).
fn serve<S>(
    this: Arc<Pusher>,
    refusal: Option<(u16, String)>,
    app: Option<Arc<App>>,
    io: S,
) -> futures_util::future::BoxFuture<'static, ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match (refusal, app) {
        (None, Some(app)) => Box::pin(run(this, app, io)),
        (refusal, _) => Box::pin(refuse(this, refusal, io)),
    }
}

/// Answers a connection refused at the upgrade: `pusher:error` and the close code.
async fn refuse<S>(this: Arc<Pusher>, refusal: Option<(u16, String)>, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    this.counters.refused.fetch_add(1, Ordering::Relaxed);
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(&this))).await;
    let (code, message) = refusal.unwrap_or((4001, "App does not exist".into()));
    this.counters.error(code);
    let data = serde_json::json!({"code": code, "message": message});
    let _ = ws
        .send(Message::text(frame(
            "pusher:error",
            None,
            &data.to_string(),
        )))
        .await;
    close(&mut ws, code, "").await;
}

/// Buffers and limits of a Pusher WebSocket (as `/ws`: small read buffer, no write
/// buffer, frames up to an event's data plus room for the envelope).
fn ws_config(p: &Pusher) -> WebSocketConfig {
    let max = p.config.max_event_bytes + 4096;
    WebSocketConfig::default()
        .read_buffer_size(p.limits.ws_read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(p.limits.max_message.saturating_mul(2))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// A stream with bytes already read in front of it.
struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    io: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, io: S) -> Prefixed<S> {
        Prefixed { prefix, at: 0, io }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

/// A socket id as Pusher writes them (`\d+\.\d+`).
fn socket_id() -> String {
    format!(
        "{}.{}",
        rand::random::<u32>() % 1_000_000_000,
        rand::random::<u32>() % 1_000_000_000
    )
}

/// Counts one open connection while alive.
struct OpenGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted connection, from `connection_established` to its cleanup. Not an `async
/// fn`, so the stream is stored once in the future (as `transport::ws::run`).
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
fn run<S>(p: Arc<Pusher>, app: Arc<App>, io: S) -> impl std::future::Future<Output = ()> + Send
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async move {
        let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(&p))).await;
        p.open.fetch_add(1, Ordering::Relaxed);
        let _open = OpenGuard(&p.open);
        p.counters.connections.fetch_add(1, Ordering::Relaxed);
        let out = Queue::new(p.limits.queue);
        let conn = Arc::new(Conn {
            socket_id: socket_id().into(),
            app: app.clone(),
            member: OnceLock::new(),
            user: OnceLock::new(),
            signed_in: AtomicBool::new(false),
            admitted: OnceLock::new(),
            channels: parking_lot::Mutex::new(SmallVec::new()),
            out,
            kick_code: AtomicU16::new(0),
            counters: p.counters.clone(),
        });
        let member = p.hub.add_member(conn.clone());
        let _ = conn.member.set(member);
        if p.cluster.get().is_some() {
            // The HTTP API's `socket_id` exclusion reaches this socket from any node.
            let _ = p.hub.join(member, &channel::socket_room(&conn.socket_id));
        }
        p.sockets
            .lock()
            .insert(conn.socket_id.clone(), Arc::downgrade(&conn));
        // A string at once: a `json!` value held in this future would stay allocated
        // (about 600 bytes) for the connection's life.
        let established = format!(
            "{{\"socket_id\":{},\"activity_timeout\":{}}}",
            quoted(&conn.socket_id),
            p.config.activity_timeout_secs
        );
        conn.queue(frame(
            "pusher:connection_established",
            None,
            &quoted(&established),
        ));
        drop(established);

        let mut events = primitives::Bucket::new(client_event_limit(&p));
        let mut frames = primitives::Bucket::new(p.limits.rate_limit);
        // The server pings a client silent for longer than its own ping interval (plus a
        // grace of up to 5 s, so a client's own ping usually comes first).
        let activity = p.config.activity_timeout();
        let idle = activity + activity.min(Duration::from_secs(5));
        let mut ping_at = Instant::now() + idle;
        let mut pong_due: Option<Instant> = None;
        let signin_due = app
            .config
            .user_authentication
            .then(|| Instant::now() + SIGNIN_DEADLINE);
        let ending: Option<(u16, &'static str)> = loop {
            let mut wake = pong_due.map_or(ping_at, |d| d.min(ping_at));
            if let Some(d) = signin_due {
                wake = wake.min(d);
            }
            tokio::select! {
                biased;
                _ = p.stop.cancelled() => break Some((4200, "Server shutting down")),
                _ = conn.out.slow.notified() => {
                    break match conn.kick_code.load(Ordering::Relaxed) {
                        0 => Some((4100, "Slow client: send queue full")),
                        4009 => Some((4009, "Connection closed by the server")),
                        4100 => Some((4100, "Too many connections for this user")),
                        _ => Some((4200, "Connection closed by the server")),
                    };
                }
                _ = conn.out.ready.notified() => {
                    // Everything queued goes out in one flush.
                    let mut failed = false;
                    while let Some(text) = conn.out.pop() {
                        if ws.feed(Message::Text(text)).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed || ws.flush().await.is_err() {
                        break None;
                    }
                }
                msg = ws.next() => {
                    pong_due = None;
                    ping_at = Instant::now() + idle;
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                            if !frames.take(p.limits.rate_limit) {
                                p.counters.invalid.fetch_add(1, Ordering::Relaxed);
                                conn.error(None, "Rate limit exceeded: message dropped");
                            } else if let Some((_, key)) = conn.admitted.get()
                                && !p.admission.take_user_event(key, UserEvents::Pusher)
                            {
                                conn.error(None, &user_rate_message(p.admission.user_rate()));
                            } else {
                                handle(&p, &conn, member, &text, &mut events);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            p.counters.invalid.fetch_add(1, Ordering::Relaxed);
                            conn.error(None, "Binary frames are not supported: send JSON text");
                        }
                        Some(Ok(Message::Close(_))) | None => break None,
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(_))) => break Some((1009, "Frame too big")),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "pusher read failed");
                            break None;
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if signin_due.is_some_and(|d| now >= d) && !conn.signed_in.load(Ordering::Relaxed) {
                        break Some((4009, "Unauthorized: connections of this app must sign in"));
                    }
                    if pong_due.is_some_and(|d| now >= d) {
                        break Some((4201, "Pong reply not received"));
                    }
                    if now >= ping_at {
                        conn.queue(frame("pusher:ping", None, "\"{}\""));
                        pong_due.get_or_insert(now + p.config.pong_timeout());
                        ping_at = now + idle;
                    }
                }
            }
        };
        conn.out.close();
        p.sockets.lock().remove(&conn.socket_id);
        cleanup(&p, &conn, member);
        if let Some((code, reason)) = ending {
            p.counters.error(code);
            // Whatever was queued still goes out first (answers, the error of a kick),
            // except to a client too slow to read it.
            if code != 4100 {
                while let Some(text) = conn.out.pop() {
                    if ws.feed(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
            }
            let kicked = conn.kick_code.load(Ordering::Relaxed) != 0;
            if !kicked && matches!(code, 4009 | 4100 | 4201) {
                let data = serde_json::json!({"code": code, "message": reason});
                let _ = ws
                    .feed(Message::text(frame(
                        "pusher:error",
                        None,
                        &data.to_string(),
                    )))
                    .await;
            }
            close(&mut ws, code, reason).await;
        }
    }
}

fn client_event_limit(p: &Pusher) -> primitives::RateLimit {
    let per_sec = p.config.client_events_per_sec as f32;
    primitives::RateLimit {
        per_sec,
        burst: per_sec.max(1.0),
    }
}

/// Leaves every channel: presence announcements and webhooks.
fn cleanup(p: &Pusher, conn: &Conn, member: MemberId) {
    let channels = std::mem::take(&mut *conn.channels.lock());
    p.counters
        .subscriptions
        .fetch_sub(channels.len(), Ordering::Relaxed);
    let user = conn.user();
    for c in &channels {
        if Kind::of(c) == Kind::Presence
            && let Some(u) = user
        {
            p.presence.remove(&room_of(c), u);
        }
    }
    let gone = p
        .hub
        .remove_member_presence(member, p.limits.presence_limit);
    for c in &channels {
        let room = room_of(c);
        if Kind::of(c) == Kind::Presence
            && let Some(u) = user
            && gone.iter().any(|g| **g == *room)
        {
            p.member_gone(&conn.app, c, &room, u);
        }
        p.maybe_vacated(&conn.app, c, &room);
    }
}

/// A frame from the client. Never closes the connection itself: errors are answered.
fn handle(
    p: &Arc<Pusher>,
    conn: &Arc<Conn>,
    member: MemberId,
    text: &str,
    bucket: &mut primitives::Bucket,
) {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        event: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        channel: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    let f: Frame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            p.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return conn.error(None, &format!("Invalid JSON: {e}"));
        }
    };
    let Some(event) = f.event else {
        p.counters.invalid.fetch_add(1, Ordering::Relaxed);
        return conn.error(None, "Expected {\"event\": NAME, \"data\": ...}");
    };
    // Pusher clients send `data` as an object; some send it as a JSON string of one.
    let data: Option<Value> = f.data.and_then(|d| {
        let v: Value = serde_json::from_str(d.get()).ok()?;
        match v {
            Value::String(s) if event.starts_with("pusher:") => serde_json::from_str(&s).ok(),
            v => Some(v),
        }
    });
    let field = |name: &str| {
        data.as_ref()
            .and_then(|d| d.get(name))
            .and_then(Value::as_str)
    };
    match &*event {
        "pusher:ping" => conn.queue(frame("pusher:pong", None, "\"{}\"")),
        "pusher:pong" => {}
        "pusher:subscribe" => match field("channel") {
            Some(c) => subscribe(p, conn, member, c, field("auth"), field("channel_data")),
            None => conn.error(None, "pusher:subscribe needs data.channel"),
        },
        "pusher:unsubscribe" => match field("channel") {
            Some(c) => unsubscribe(p, conn, member, c),
            None => conn.error(None, "pusher:unsubscribe needs data.channel"),
        },
        "pusher:signin" => signin(p, conn, field("auth"), field("user_data")),
        e if e.starts_with("client-") => {
            let raw = f.data.map_or("null", RawValue::get);
            client_event(p, conn, member, e, f.channel.as_deref(), raw, bucket);
        }
        other => {
            p.counters.invalid.fetch_add(1, Ordering::Relaxed);
            conn.error(None, &format!("Unsupported event {other:?}"));
        }
    }
}

/// `pusher:subscribe`: checks the channel's rules, joins the room, answers.
fn subscribe(
    p: &Arc<Pusher>,
    conn: &Arc<Conn>,
    member: MemberId,
    channel: &str,
    auth: Option<&str>,
    channel_data: Option<&str>,
) {
    let refuse = |kind: &str, status: u16, message: &str| {
        conn.subscription_error(channel, kind, status, message);
    };
    if !channel::valid_name(channel) {
        p.counters.invalid.fetch_add(1, Ordering::Relaxed);
        return refuse(
            "InvalidChannel",
            400,
            "Invalid channel name: 1 to 164 of A-Z a-z 0-9 _ - = @ , . ;",
        );
    }
    let app = &conn.app.config;
    let kind = Kind::of(channel);
    let mut presence_user: Option<(String, String)> = None;
    match kind {
        Kind::Public => {}
        Kind::Private | Kind::Encrypted => {
            let message = sign::channel_message(&conn.socket_id, channel, None);
            if let Err(e) = sign::check_auth(&app.key, &app.secret, auth, message) {
                p.counters.auth_failed.fetch_add(1, Ordering::Relaxed);
                return refuse("AuthError", 401, &e.to_string());
            }
        }
        Kind::Presence => {
            let Some(data) = channel_data else {
                return refuse("AuthError", 401, "Presence channels need channel_data");
            };
            let message = sign::channel_message(&conn.socket_id, channel, Some(data));
            if let Err(e) = sign::check_auth(&app.key, &app.secret, auth, message) {
                p.counters.auth_failed.fetch_add(1, Ordering::Relaxed);
                return refuse("AuthError", 401, &e.to_string());
            }
            match presence_member(data) {
                Ok(m) => presence_user = Some(m),
                Err(m) => return refuse("AuthError", 400, m),
            }
        }
        Kind::User => {
            let own = channel.strip_prefix(channel::USER_CHANNEL);
            if !conn.signed_in.load(Ordering::Relaxed) || own != conn.user() {
                p.counters.auth_failed.fetch_add(1, Ordering::Relaxed);
                return refuse("AuthError", 403, "Sign in as this user to subscribe");
            }
        }
    }
    if let Some((user, _)) = &presence_user
        && let Err(m) = conn.claim_user(user)
    {
        return refuse("AuthError", 400, &m);
    }
    if !conn.admit_user(&p.admission) {
        return;
    }
    let room = room_of(channel);
    if conn.is_subscribed(channel) {
        return succeeded(p, conn, channel, &room);
    }
    let limit = p.limits.presence_limit;
    if let Some((user, _)) = &presence_user
        && let Some(info) = p.hub.room_info(&room)
        && info.users.len() >= limit
        && !info.users.iter().any(|u| u == user)
    {
        return refuse(
            "LimitReached",
            403,
            &format!("Presence channel is full: at most {limit} members"),
        );
    }
    let joined = match &presence_user {
        Some(_) => p.hub.join_presence(member, &room, limit),
        None => p.hub.join(member, &room).map(|()| Presence::Untracked),
    };
    let presence = match joined {
        Ok(pr) => pr,
        Err(hub::JoinError::TooManyRooms) => {
            return refuse(
                "LimitReached",
                400,
                &format!(
                    "Too many channels: at most {} per connection",
                    p.limits.max_rooms
                ),
            );
        }
        Err(hub::JoinError::UnknownMember) => return,
    };
    conn.channels.lock().push(channel.into());
    p.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
    p.maybe_occupied(&conn.app, channel, &room);
    if let Some((user, info)) = presence_user {
        p.presence.add(&room, &user, &info);
        if presence == Presence::Changed {
            p.member_arrived(&conn.app, channel, &room, &user, member);
        }
    }
    succeeded(p, conn, channel, &room);
}

/// `pusher_internal:subscription_succeeded`, with the members of a presence channel. On a
/// cluster node the members are read from the fleet's book after the join, so the list
/// holds every change the connection will not hear of (announcements racing with the
/// read may come before it, which pusher-js applies idempotently).
fn succeeded(p: &Arc<Pusher>, conn: &Arc<Conn>, channel: &str, room: &str) {
    if Kind::of(channel) != Kind::Presence {
        return conn.queue(frame(
            "pusher_internal:subscription_succeeded",
            Some(channel),
            "\"{}\"",
        ));
    }
    let succeeded = |data: &str| {
        frame(
            "pusher_internal:subscription_succeeded",
            Some(channel),
            &quoted(data),
        )
    };
    if p.book.get().is_none() {
        let users = p.hub.room_info(room).map(|r| r.users).unwrap_or_default();
        return conn.queue(succeeded(&p.presence.members_json(room, &users, &[])));
    }
    let (p2, conn, channel, room) = (p.clone(), conn.clone(), channel.to_owned(), room.to_owned());
    p.tasks.spawn(async move {
        let data = p2.members_json(&room).await;
        // Unsubscribed meanwhile: no success for a channel the client left.
        if conn.is_subscribed(&channel) {
            conn.queue(frame(
                "pusher_internal:subscription_succeeded",
                Some(&channel),
                &quoted(&data),
            ));
        }
    });
}

/// A presence subscription's `user_id` (a string or a number, as a string) and
/// `user_info` (JSON, `null` when absent).
fn presence_member(channel_data: &str) -> Result<(String, String), &'static str> {
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        user_id: Option<Value>,
        #[serde(borrow)]
        user_info: Option<&'a RawValue>,
    }
    let d: Data =
        serde_json::from_str(channel_data).map_err(|_| "channel_data must be a JSON object")?;
    let id = match d.user_id {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("channel_data.user_id must be a non-empty string or a number"),
    };
    if id.len() > 128 {
        return Err("channel_data.user_id is longer than 128 bytes");
    }
    if d.user_info.is_some_and(|i| i.get().len() > MAX_USER_INFO) {
        return Err("channel_data.user_info is larger than 1024 bytes");
    }
    Ok((id, d.user_info.map_or("null", RawValue::get).to_owned()))
}

/// `pusher:unsubscribe`.
fn unsubscribe(p: &Pusher, conn: &Conn, member: MemberId, channel: &str) {
    {
        let mut channels = conn.channels.lock();
        let Some(i) = channels.iter().position(|c| &**c == channel) else {
            return;
        };
        channels.swap_remove(i);
    }
    p.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
    let room = room_of(channel);
    if Kind::of(channel) == Kind::Presence
        && let Some(user) = conn.user()
    {
        p.presence.remove(&room, user);
        if p.hub.leave_presence(member, &room, p.limits.presence_limit) == Presence::Changed {
            p.member_gone(&conn.app, channel, &room, user);
        }
    } else {
        p.hub.leave(member, &room);
    }
    p.maybe_vacated(&conn.app, channel, &room);
}

/// `pusher:signin`: a signed `user_data` with an `id` makes this connection that user.
fn signin(p: &Pusher, conn: &Conn, auth: Option<&str>, user_data: Option<&str>) {
    let app = &conn.app.config;
    let Some(user_data) = user_data else {
        return conn.error(None, "pusher:signin needs data.user_data");
    };
    let message = sign::user_message(&conn.socket_id, user_data);
    let id = match sign::check_auth(&app.key, &app.secret, auth, message) {
        Err(e) => Err(e.to_string()),
        Ok(()) => serde_json::from_str::<Value>(user_data)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .ok_or_else(|| "user_data must be a JSON object with a non-empty string id".into()),
    };
    let claimed = id.and_then(|id| conn.claim_user(&id).map(|()| id));
    match claimed {
        Ok(_) if !conn.admit_user(&p.admission) => {}
        Ok(_) => {
            conn.signed_in.store(true, Ordering::Relaxed);
            let data = serde_json::json!({ "user_data": user_data }).to_string();
            conn.queue(frame("pusher:signin_success", None, &quoted(&data)));
        }
        Err(m) => {
            p.counters.auth_failed.fetch_add(1, Ordering::Relaxed);
            conn.error(Some(4009), &format!("Sign-in refused: {m}"));
            conn.kick(4009);
        }
    }
}

/// A `client-*` event: to the channel's other members, if the app, the channel and the
/// rate allow it.
fn client_event(
    p: &Pusher,
    conn: &Conn,
    member: MemberId,
    event: &str,
    channel: Option<&str>,
    data: &str,
    bucket: &mut primitives::Bucket,
) {
    let refuse = |code: Option<u16>, message: &str| {
        p.counters.invalid.fetch_add(1, Ordering::Relaxed);
        conn.error(code, message);
    };
    if !conn.app.config.client_events {
        return refuse(None, "Client events are not enabled for this app");
    }
    let Some(channel) = channel else {
        return refuse(None, "Client event rejected: no channel");
    };
    let kind = Kind::of(channel);
    if !kind.takes_client_events() {
        return refuse(
            None,
            "Client event rejected: only supported on private and presence channels (not encrypted ones)",
        );
    }
    if !conn.is_subscribed(channel) {
        return refuse(
            None,
            "Client event rejected: subscribe to the channel first",
        );
    }
    if event.len() > 200 {
        return refuse(None, "Client event rejected: event name over 200 bytes");
    }
    if data.len() > p.config.max_event_bytes {
        return refuse(
            None,
            &format!(
                "Client event rejected: data over {} bytes",
                p.config.max_event_bytes
            ),
        );
    }
    if !bucket.take(client_event_limit(p)) {
        p.counters.error(4301);
        return refuse(Some(4301), "Client event rejected - rate limit exceeded");
    }
    p.counters.client_events.fetch_add(1, Ordering::Relaxed);
    let user = (kind == Kind::Presence).then(|| conn.user()).flatten();
    let payload = match user {
        Some(u) => Payload::raw_args([data, &format!("{{\"user_id\":{}}}", quoted(u))]),
        None => Payload::raw_args([data]),
    };
    let room = room_of(channel);
    p.hub.publish(Publish {
        rooms: std::iter::once(Arc::from(&*room)).collect(),
        event: event.into(),
        payload,
        except_member: Some(member),
        ..Publish::default()
    });
    p.hook(
        &conn.app,
        Hook::ClientEvent {
            channel: channel.into(),
            event: event.into(),
            data: channel::data_field(data),
            socket_id: conn.socket_id.to_string(),
            user: user.map(str::to_owned),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_channel_data() {
        assert_eq!(
            presence_member(r#"{"user_id":"u1","user_info":{"name":"A"}}"#),
            Ok(("u1".into(), r#"{"name":"A"}"#.into()))
        );
        assert_eq!(
            presence_member(r#"{"user_id":10}"#),
            Ok(("10".into(), "null".into()))
        );
        for bad in [
            "",
            "[]",
            r#"{"user_id":""}"#,
            r#"{"user_info":{}}"#,
            r#"{"user_id":true}"#,
        ] {
            assert!(presence_member(bad).is_err(), "{bad}");
        }
        // user_info at most 1,024 bytes of JSON (a 1,022-character string is 1,024).
        let info = |n: usize| format!(r#"{{"user_id":"u","user_info":"{}"}}"#, "x".repeat(n));
        assert!(presence_member(&info(1022)).is_ok());
        assert!(presence_member(&info(1023)).is_err());
    }

    #[test]
    fn socket_ids_look_like_pushers() {
        let id = socket_id();
        let (a, b) = id.split_once('.').expect("a dot");
        assert!(a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok(), "{id}");
    }
}

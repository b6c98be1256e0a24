//! The Engine.IO server: HTTP entry point, long-polling, WebSocket and the upgrade.
//!
//! Owns the session table and each session's lifecycle. Knows nothing of Socket.IO:
//! the layer above plugs in through [`Handler`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode,
};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

use crate::config::{Cors, EngineConfig};
use crate::packet::{Inbound, decode_payload};
use crate::session::{
    Beat, CloseReason, Direct, DirectWrite, Frame, Handshake, Heartbeat, Session, Sid,
    TransportKind, Upgrade,
};
use crate::wire::{FlushQueue, Flushable, Wire, WireIo, with_buf};

/// A message from the client, for the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(Bytes),
}

/// The layer above Engine.IO (Socket.IO, or the echo server of conformance mode).
pub trait Handler: Send + Sync + 'static {
    /// Per-session state the handler keeps inside the session.
    type Data: Send + Sync + 'static;

    fn new_data(&self, handshake: &Handshake) -> Self::Data;

    /// The session is open and its handshake packet is queued.
    fn on_open(&self, session: &Arc<Session<Self::Data>>);

    /// One message, in order. The transport reads nothing else from this client until
    /// the returned future completes.
    fn on_message<'a>(
        &'a self,
        session: &'a Arc<Session<Self::Data>>,
        msg: Message<'a>,
    ) -> BoxFuture<'a, ()>;

    /// The session is closed and gone from the table; called exactly once.
    fn on_close(&self, session: &Arc<Session<Self::Data>>, reason: CloseReason);
}

/// Response bodies of the Engine.IO endpoints.
pub type Body = Full<Bytes>;

/// An Engine.IO server bound to one path (the caller routes requests to it).
pub struct Engine<H: Handler> {
    config: EngineConfig,
    handler: H,
    sessions: Mutex<HashMap<Sid, Arc<Session<H::Data>>>>,
    closing: AtomicBool,
    tasks: tokio_util::task::TaskTracker,
    stats: Arc<crate::stats::EngineStats>,
    /// The flushers of direct WebSocket writes, started with the first WebSocket.
    flushers: std::sync::OnceLock<Box<[Arc<FlushQueue>]>>,
    next_flusher: std::sync::atomic::AtomicUsize,
}

impl<H: Handler> Drop for Engine<H> {
    fn drop(&mut self) {
        for q in self.flushers.get().into_iter().flatten() {
            q.stop();
        }
    }
}

/// Engine.IO's error answers (code and message as Node's engine.io sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedVersion,
    PayloadTooLarge,
}

impl HttpError {
    fn code_and_message(self) -> (u8, &'static str) {
        match self {
            HttpError::UnknownTransport => (0, "Transport unknown"),
            HttpError::UnknownSid => (1, "Session ID unknown"),
            HttpError::BadHandshakeMethod => (2, "Bad handshake method"),
            HttpError::BadRequest | HttpError::PayloadTooLarge => (3, "Bad request"),
            HttpError::UnsupportedVersion => (5, "Unsupported protocol version"),
        }
    }
}

struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

fn parse_query(q: &str) -> Query<'_> {
    let mut out = Query {
        eio: None,
        transport: None,
        sid: None,
    };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "EIO" if out.eio.is_none() => out.eio = Some(v),
            "transport" if out.transport.is_none() => out.transport = Some(v),
            "sid" if out.sid.is_none() => out.sid = Some(v),
            _ => {}
        }
    }
    out
}

impl<H: Handler> Engine<H> {
    pub fn new(
        config: EngineConfig,
        handler: H,
        tasks: tokio_util::task::TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Engine {
            config,
            handler,
            sessions: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            tasks,
            stats: Arc::default(),
            flushers: std::sync::OnceLock::new(),
            next_flusher: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A flush queue for a new direct session (round robin over the flushers).
    fn flush_queue(&self) -> Arc<FlushQueue> {
        let queues = self.flushers.get_or_init(|| {
            (0..self.config.ws_flushers.max(1))
                .map(|_| {
                    let q = Arc::new(FlushQueue::new());
                    tokio::spawn(q.clone().run());
                    q
                })
                .collect()
        });
        let i = self.next_flusher.fetch_add(1, Ordering::Relaxed) % queues.len();
        queues[i].clone()
    }

    /// Makes `session` write straight to `wire` from now on.
    fn attach(&self, session: &Arc<Session<H::Data>>, wire: Option<Arc<Wire>>) {
        if let Some(wire) = wire {
            let me: std::sync::Weak<dyn Flushable> = Arc::downgrade(session) as _;
            session.attach_direct(Direct {
                wire,
                queue: self.flush_queue(),
                me,
            });
        }
    }

    /// This engine's counters.
    pub fn stats(&self) -> &crate::stats::EngineStats {
        &self.stats
    }

    /// Open sessions by current transport: (polling, websocket).
    pub fn sessions_by_transport(&self) -> (usize, usize) {
        let sessions = self.sessions.lock();
        let ws = sessions
            .values()
            .filter(|s| s.transport() == TransportKind::WebSocket)
            .count();
        (sessions.len() - ws, ws)
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Closes every session (reason: server shutting down) and refuses new ones.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let all: Vec<_> = self.sessions.lock().values().cloned().collect();
        for s in all {
            s.close(CloseReason::ServerShutdown);
        }
    }

    /// Serves one HTTP request addressed to this engine's path.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut res = self.route(req).await;
        self.apply_cors(origin.as_ref(), res.headers_mut());
        res
    }

    async fn route<B>(self: &Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if req.method() == Method::OPTIONS {
            return empty(StatusCode::NO_CONTENT);
        }
        let raw_query = req.uri().query().unwrap_or("").to_owned();
        let q = parse_query(&raw_query);
        if q.eio != Some("4") {
            return error(HttpError::UnsupportedVersion);
        }
        let sid = match q.sid {
            Some(s) => match Sid::parse(s) {
                Some(sid) => Some(sid),
                None => return error(HttpError::UnknownSid),
            },
            None => None,
        };
        match q.transport {
            Some("polling") if self.config.allow_polling => match (req.method(), sid) {
                (&Method::GET, None) => self.open_polling(&raw_query, &req),
                (&Method::GET, Some(sid)) => self.poll(sid).await,
                (&Method::POST, Some(sid)) => self.post(sid, req.into_body()).await,
                (_, None) => error(HttpError::BadHandshakeMethod),
                _ => error(HttpError::BadRequest),
            },
            Some("websocket") if self.config.allow_websocket => {
                if req.method() != Method::GET {
                    return error(HttpError::BadRequest);
                }
                self.accept_websocket(req, &raw_query, sid)
            }
            _ => error(HttpError::UnknownTransport),
        }
    }

    fn apply_cors(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(origin) = origin else { return };
        let allowed = match &self.config.cors {
            Cors::Off => return,
            Cors::AnyOrigin => HeaderValue::from_static("*"),
            Cors::Origins {
                origins,
                credentials,
            } => {
                if !origins.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
                    return;
                }
                if *credentials {
                    headers.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
                origin.clone()
            }
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        );
    }

    fn handshake_packet(&self, sid: Sid, upgrades: bool) -> Frame {
        let text = format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":{},\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
            if upgrades && self.config.allow_websocket {
                "[\"websocket\"]"
            } else {
                "[]"
            },
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload,
        );
        Frame::Text(Utf8Bytes::from(text))
    }

    fn new_session(
        &self,
        handshake: Handshake,
        kind: TransportKind,
    ) -> Option<Arc<Session<H::Data>>> {
        if self.closing.load(Ordering::SeqCst) {
            return None;
        }
        let data = self.handler.new_data(&handshake);
        let session = Arc::new(Session::new(
            Sid::random(),
            handshake,
            kind,
            self.config.max_buffered_packets,
            data,
            self.stats.clone(),
        ));
        self.stats.opened(kind);
        self.sessions.lock().insert(session.sid(), session.clone());
        Some(session)
    }

    /// Ends a session: out of the table, then the handler hears of it. Called once, by the
    /// session's lifecycle owner.
    fn finish(&self, session: &Arc<Session<H::Data>>) {
        let reason = session
            .closed_reason()
            .unwrap_or(CloseReason::TransportClose);
        self.sessions.lock().remove(&session.sid());
        session.handshake().permit.release();
        self.stats.closed(reason);
        tracing::debug!(sid = %session.sid(), reason = reason.as_str(), "engine.io session closed");
        self.handler.on_close(session, reason);
    }

    fn lookup(&self, sid: Sid) -> Option<Arc<Session<H::Data>>> {
        self.sessions.lock().get(&sid).cloned()
    }

    // ---- long-polling -------------------------------------------------------------

    fn open_polling<B>(self: &Arc<Self>, raw_query: &str, req: &Request<B>) -> Response<Body> {
        let Some(session) = self.new_session(handshake_of(raw_query, req), TransportKind::Polling)
        else {
            return error(HttpError::BadRequest);
        };
        let mut body = String::new();
        self.handshake_packet(session.sid(), true)
            .encode_polling(&mut body);
        self.handler.on_open(&session);
        // The handshake answers the opening GET at once; anything the handler queued
        // waits for the next poll, as in Node.
        let this = self.clone();
        let s = session.clone();
        let opened = Instant::now();
        self.tasks
            .spawn(async move { this.polling_lifecycle(s, opened).await });
        text_response(StatusCode::OK, body)
    }

    /// Heartbeat and close of a polling-born session (also after it upgrades).
    async fn polling_lifecycle(self: Arc<Self>, session: Arc<Session<H::Data>>, opened: Instant) {
        let mut hb = Heartbeat::new(self.config.ping_interval, self.config.ping_timeout, opened);
        loop {
            if session.is_closed() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(hb.deadline().into()) => {
                    match hb.on_deadline(Instant::now()) {
                        Beat::SendPing => {
                            session.state.lock().pong_deadline = Some(hb.deadline());
                            session.push(Frame::ping(), false);
                        }
                        Beat::TimedOut => session.close(CloseReason::PingTimeout),
                    }
                }
                _ = session.control.notified() => {
                    let pong = session.pong_seen.swap(false, Ordering::SeqCst);
                    if pong {
                        session.state.lock().pong_deadline = None;
                        hb.on_pong(Instant::now());
                    }
                }
            }
        }
        // A polling client learns of a server-side close (and reads what was queued before
        // it, e.g. a DISCONNECT) from its next poll: keep the session until then, briefly.
        let linger = tokio::time::Instant::now()
            + self
                .config
                .ping_timeout
                .min(std::time::Duration::from_secs(2));
        loop {
            let drained = !session.state.lock().polling_owes_client();
            if drained
                || tokio::time::timeout_at(linger, session.control.notified())
                    .await
                    .is_err()
            {
                break;
            }
        }
        self.finish(&session);
    }

    async fn poll(self: &Arc<Self>, sid: Sid) -> Response<Body> {
        let Some(session) = self.lookup(sid) else {
            return error(HttpError::UnknownSid);
        };
        session.check_ping_timeout(Instant::now());
        // A new poll while a WebSocket is upgrading races the client's `2probe`/`5` on that
        // WebSocket: give the upgrade a moment (at most 100 ms) to settle so the poll gets
        // the answer the order of the client's sends implies (400 once upgraded, else a
        // noop). Real clients pause polling during an upgrade and rarely wait here.
        for _ in 0..20 {
            if session.state.lock().upgrade == Upgrade::None {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        {
            let mut st = session.state.lock();
            if st.closed.is_some() && !st.polling_owes_client() {
                return error(HttpError::UnknownSid);
            }
            if st.transport != TransportKind::Polling {
                return error(HttpError::BadRequest);
            }
            if st.polling_get {
                drop(st);
                session.close(CloseReason::InvalidPacket);
                return error(HttpError::BadRequest);
            }
            st.polling_get = true;
        }
        // Reset the flag however this request ends (answered or abandoned by the client).
        let _guard = PollGuard(&session);
        loop {
            let notified = session.wake.notified();
            {
                let mut st = session.state.lock();
                if !st.outbox.is_empty() {
                    let frames = Session::<H::Data>::taken(session.stats(), &mut st);
                    drop(st);
                    session.control.notify_one();
                    let mut body = String::new();
                    for (i, f) in frames.iter().enumerate() {
                        if i > 0 {
                            body.push(crate::packet::SEPARATOR);
                        }
                        f.encode_polling(&mut body);
                    }
                    return text_response(StatusCode::OK, body);
                }
                if let Some(reason) = st.closed {
                    // Queued packets went out in earlier polls; now the close itself: `1`
                    // for a server-side close, a noop for a client that closed.
                    let server_side = reason != CloseReason::TransportClose;
                    st.close_sent = true;
                    drop(st);
                    session.control.notify_one();
                    return text_response(
                        StatusCode::OK,
                        if server_side { "1" } else { "6" }.to_owned(),
                    );
                }
                if st.upgrade == Upgrade::Probed {
                    drop(st);
                    let mut body = String::new();
                    Frame::noop().encode_polling(&mut body);
                    return text_response(StatusCode::OK, body);
                }
            }
            notified.await;
        }
    }

    async fn post<B>(self: &Arc<Self>, sid: Sid, body: B) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(session) = self.lookup(sid) else {
            return error(HttpError::UnknownSid);
        };
        session.check_ping_timeout(Instant::now());
        {
            let mut st = session.state.lock();
            if st.closed.is_some() {
                return error(HttpError::UnknownSid);
            }
            if st.transport != TransportKind::Polling {
                return error(HttpError::BadRequest);
            }
            if st.polling_post {
                drop(st);
                session.close(CloseReason::InvalidPacket);
                return error(HttpError::BadRequest);
            }
            st.polling_post = true;
        }
        let result = self.post_inner(&session, body).await;
        session.state.lock().polling_post = false;
        match result {
            Ok(()) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/html")
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap_or_else(|_| empty(StatusCode::OK)),
            Err(e) => {
                session.close(CloseReason::InvalidPacket);
                error(e)
            }
        }
    }

    async fn post_inner<B>(&self, session: &Arc<Session<H::Data>>, body: B) -> Result<(), HttpError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let bytes = Limited::new(body, self.config.max_payload)
            .collect()
            .await
            .map_err(|_| HttpError::PayloadTooLarge)?
            .to_bytes();
        let text = std::str::from_utf8(&bytes).map_err(|_| HttpError::BadRequest)?;
        let packets = decode_payload(text).map_err(|_| HttpError::BadRequest)?;
        for p in packets {
            if session.is_closed() {
                break;
            }
            self.inbound(session, p).await;
        }
        Ok(())
    }

    /// Handles one packet from the client, whatever its transport.
    async fn inbound(&self, session: &Arc<Session<H::Data>>, packet: Inbound<'_>) {
        match packet {
            Inbound::Message(text) => {
                self.stats.messages_in[0].fetch_add(1, Ordering::Relaxed);
                self.handler.on_message(session, Message::Text(text)).await
            }
            Inbound::Binary(data) => {
                self.stats.messages_in[1].fetch_add(1, Ordering::Relaxed);
                self.handler
                    .on_message(session, Message::Binary(data))
                    .await
            }
            Inbound::Pong { probe: false } => {
                session.pong_seen.store(true, Ordering::SeqCst);
                session.control.notify_one();
            }
            Inbound::Close => session.close(CloseReason::TransportClose),
            // v4 clients never ping and probes belong to the WebSocket upgrade only.
            Inbound::Ping { .. }
            | Inbound::Pong { probe: true }
            | Inbound::Upgrade
            | Inbound::Noop => {}
        }
    }

    // ---- WebSocket -----------------------------------------------------------------

    fn accept_websocket<B>(
        self: &Arc<Self>,
        mut req: Request<B>,
        raw_query: &str,
        sid: Option<Sid>,
    ) -> Response<Body>
    where
        B: Send + 'static,
    {
        let Some(accept) = websocket_accept(req.headers()) else {
            return error(HttpError::BadRequest);
        };
        // An upgrade must name a live polling session that is not upgrading already.
        // A session that is already upgrading or upgraded gets its WebSocket accepted and
        // closed at once, as Node does (clients expect a close, not a failed handshake).
        let mut refuse = false;
        let upgrading = match sid {
            Some(sid) => {
                let Some(session) = self.lookup(sid) else {
                    return error(HttpError::UnknownSid);
                };
                let mut st = session.state.lock();
                if st.closed.is_some()
                    || st.transport != TransportKind::Polling
                    || st.upgrade != Upgrade::None
                {
                    refuse = true;
                    None
                } else {
                    st.upgrade = Upgrade::Pending;
                    drop(st);
                    Some(session)
                }
            }
            None => None,
        };
        let handshake = handshake_of(raw_query, &req);
        let on_upgrade = hyper::upgrade::on(&mut req);
        let this = self.clone();
        let fut = async move {
            // Boxed: one-shot futures must not size the long-lived connection task.
            let io = match Box::pin(on_upgrade).await {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    if let Some(s) = upgrading {
                        s.state.lock().upgrade = Upgrade::None;
                    }
                    return;
                }
            };
            // Direct writes need the TCP stream itself (our own server's connections).
            let io = if this.config.ws_flushers > 0 {
                match io.downcast::<TokioIo<tokio::net::TcpStream>>() {
                    Ok(parts) => {
                        let wire = Arc::new(Wire::new(
                            Arc::new(parts.io.into_inner()),
                            this.config.ws_max_write_buffer,
                        ));
                        let io = WireIo::new(wire.clone(), parts.read_buf);
                        let ws = Box::pin(this.serve_websocket(
                            io,
                            Some(wire),
                            refuse,
                            upgrading,
                            handshake,
                        ));
                        return ws.await;
                    }
                    Err(io) => io,
                }
            } else {
                io
            };
            let ws = Box::pin(this.serve_websocket(
                TokioIo::new(io),
                None,
                refuse,
                upgrading,
                handshake,
            ));
            ws.await
        };
        self.tasks.spawn(fut);
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// The upgraded connection: a new WebSocket session, or the upgrade of a polling one.
    async fn serve_websocket<S>(
        self: Arc<Self>,
        io: S,
        wire: Option<Arc<Wire>>,
        refuse: bool,
        upgrading: Option<Arc<Session<H::Data>>>,
        handshake: Handshake,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut ws = Box::pin(WebSocketStream::from_raw_socket(
            io,
            Role::Server,
            Some(self.ws_config()),
        ))
        .await;
        if refuse {
            let _ = Box::pin(ws.close(None)).await;
            return;
        }
        match upgrading {
            Some(session) => Box::pin(self.run_upgrade(session, ws, wire)).await,
            None => {
                let session = self.new_session(handshake, TransportKind::WebSocket);
                // Nothing of the request outlives the handshake (now in the session):
                // the connection's long life is a task of its own, sized for its loop
                // alone (this handshake task, and its allocation, end here).
                if let Some(session) = session {
                    let tasks = self.tasks.clone();
                    tasks.spawn(self.run_websocket(session, ws, wire));
                }
            }
        }
    }

    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.config.ws_read_buffer)
            .write_buffer_size(0)
            .max_write_buffer_size(self.config.ws_max_write_buffer)
            .max_message_size(Some(self.config.max_payload))
            .max_frame_size(Some(self.config.max_payload))
    }

    /// A WebSocket-born session: handshake, then the loop with an inline heartbeat.
    ///
    /// Not an `async fn`: its arguments would be stored twice in the future (once as
    /// arguments, once as the locals they are moved into; rust-lang/rust#62958). Captured
    /// by an `async move` block they are stored once, which keeps this long-lived task
    /// about 400 bytes smaller per connection.
    #[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
    fn run_websocket<S>(
        self: Arc<Self>,
        session: Arc<Session<H::Data>>,
        mut ws: WebSocketStream<S>,
        wire: Option<Arc<Wire>>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let open = self.handshake_packet(session.sid(), false);
            if let Frame::Text(t) = open
                && Box::pin(ws.send(WsMessage::Text(t))).await.is_err()
            {
                session.close(CloseReason::TransportError);
                self.finish(&session);
                return;
            }
            self.handler.on_open(&session);
            self.attach(&session, wire);
            let mut hb = Heartbeat::new(
                self.config.ping_interval,
                self.config.ping_timeout,
                Instant::now(),
            );
            self.ws_loop(&session, &mut ws, Some(&mut hb)).await;
            self.finish(&session);
        }
    }

    /// A WebSocket joining a polling session: probe, then take over the transport.
    async fn run_upgrade<S>(
        self: Arc<Self>,
        session: Arc<Session<H::Data>>,
        mut ws: WebSocketStream<S>,
        wire: Option<Arc<Wire>>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let deadline = tokio::time::Instant::now() + self.config.upgrade_timeout;
        let upgraded = tokio::time::timeout_at(deadline, async {
            // Expect `2probe`, answer `3probe`, then expect `5`.
            let mut probed = false;
            while let Some(Ok(msg)) = ws.next().await {
                let WsMessage::Text(text) = msg else { continue };
                match (probed, Inbound::decode(&text)) {
                    (false, Ok(Inbound::Ping { probe: true })) => {
                        if ws
                            .send(WsMessage::Text(Utf8Bytes::from_static("3probe")))
                            .await
                            .is_err()
                        {
                            return false;
                        }
                        probed = true;
                        session.state.lock().upgrade = Upgrade::Probed;
                        // Release a pending poll with a noop so the client can finish.
                        session.wake.notify_one();
                    }
                    (true, Ok(Inbound::Upgrade)) => return true,
                    _ => return false,
                }
            }
            false
        })
        .await
        .unwrap_or(false);

        if !upgraded || session.is_closed() {
            session.state.lock().upgrade = Upgrade::None;
            let _ = ws.close(None).await;
            return;
        }
        {
            let mut st = session.state.lock();
            st.transport = TransportKind::WebSocket;
            self.stats.upgrades.fetch_add(1, Ordering::Relaxed);
            st.upgrade = Upgrade::None;
        }
        // Whatever waited for the next poll now goes out on the WebSocket.
        session.wake.notify_one();
        self.attach(&session, wire);
        // The polling lifecycle task keeps the heartbeat and finishes the session.
        self.ws_loop(&session, &mut ws, None).await;
    }

    /// Reads client frames and writes the outbox until the session or socket closes.
    async fn ws_loop<S>(
        &self,
        session: &Arc<Session<H::Data>>,
        ws: &mut WebSocketStream<S>,
        mut heartbeat: Option<&mut Heartbeat>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        // Attached before the loop starts, detached when it ends (crate::wire).
        let wire = session.wire();
        loop {
            if let Some(reason) = session.closed_reason() {
                // Flush what is queued (an error event, a disconnect packet), then close;
                // bounded, so a client that stopped reading cannot keep its task. A slow
                // client's socket is full already: it gets what fits at once, no more.
                let goodbye = async {
                    let _ = match &wire {
                        Some(w) => Self::flush_direct(session, w, true).await.map_err(drop),
                        None => self.flush_outbox(session, ws).await,
                    };
                    let code = if reason == CloseReason::ServerShutdown {
                        CloseCode::Away
                    } else {
                        CloseCode::Normal
                    };
                    let _ = ws
                        .close(Some(CloseFrame {
                            code,
                            reason: Utf8Bytes::from_static(""),
                        }))
                        .await;
                };
                let grace = if reason == CloseReason::SlowClient {
                    std::time::Duration::ZERO
                } else {
                    self.config.ping_timeout
                };
                let _ = tokio::time::timeout(grace, Box::pin(goodbye)).await;
                break;
            }
            let deadline = heartbeat.as_ref().map_or(far, |h| h.deadline());
            // A direct session whose socket is full waits for it here, while still
            // reading, pinging and noticing a close.
            let blocked = wire.as_ref().is_some_and(|w| w.lock().is_blocked());
            tokio::select! {
                biased;
                _ = session.wake.notified() => {
                    // Boxed (like every one-off future here) so an idle connection's task
                    // is only as large as its waiting state.
                    match &wire {
                        // Never waits: a full socket is drained by the branch below.
                        Some(_) if blocked => {}
                        Some(_) => {
                            with_buf(|buf| session.write_direct(buf, false));
                        }
                        // The task writes itself: a socket that takes nothing for a
                        // ping timeout belongs to a client that stopped reading.
                        None => match tokio::time::timeout(
                            self.config.ping_timeout,
                            Box::pin(self.flush_outbox(session, ws)),
                        )
                        .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(())) => session.close(CloseReason::TransportError),
                            Err(_) => session.close(CloseReason::SlowClient),
                        },
                    }
                }
                drained = std::future::poll_fn(|cx| match &wire {
                    Some(w) => w.poll_drain(cx),
                    None => std::task::Poll::Pending,
                }), if blocked => match drained {
                    Ok(()) => {
                        with_buf(|buf| session.write_direct(buf, false));
                    }
                    Err(_) => session.close(CloseReason::TransportError),
                },
                frame = ws.next() => {
                    match frame {
                        Some(Ok(WsMessage::Text(text))) => match Inbound::decode(&text) {
                            Ok(Inbound::Pong { probe: false }) => match heartbeat.as_deref_mut() {
                                Some(hb) => hb.on_pong(Instant::now()),
                                None => {
                                    session.pong_seen.store(true, Ordering::SeqCst);
                                    session.control.notify_one();
                                }
                            },
                            Ok(p) => Box::pin(self.inbound(session, p)).await,
                            Err(_) => session.close(CloseReason::InvalidPacket),
                        },
                        Some(Ok(WsMessage::Binary(data))) => {
                            self.stats.messages_in[1].fetch_add(1, Ordering::Relaxed);
                            Box::pin(self.handler.on_message(session, Message::Binary(data))).await
                        }
                        Some(Ok(WsMessage::Close(_))) | None => session.close(CloseReason::TransportClose),
                        Some(Ok(_)) => {}
                        Some(Err(_)) => session.close(CloseReason::TransportError),
                    }
                    // The answer to what the client sent goes out now, not behind the
                    // sessions already on the flush queue.
                    if wire.is_some() {
                        with_buf(|buf| session.write_direct(buf, false));
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()), if heartbeat.is_some() => {
                    if let Some(hb) = heartbeat.as_deref_mut() {
                        match hb.on_deadline(Instant::now()) {
                            Beat::SendPing => { session.push(Frame::ping(), false); }
                            Beat::TimedOut => session.close(CloseReason::PingTimeout),
                        }
                    }
                }
            }
        }
        session.detach_direct();
    }

    /// The session task's share of direct writes: what the socket did not take, then
    /// whatever is queued, until both are out (or the socket fails).
    async fn flush_direct(
        session: &Session<H::Data>,
        wire: &Wire,
        closing: bool,
    ) -> std::io::Result<()> {
        loop {
            wire.drain().await?;
            match with_buf(|buf| session.write_direct(buf, closing)) {
                DirectWrite::Blocked => continue,
                DirectWrite::Done | DirectWrite::Off => return Ok(()),
            }
        }
    }

    async fn flush_outbox<S>(
        &self,
        session: &Session<H::Data>,
        ws: &mut WebSocketStream<S>,
    ) -> Result<(), ()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let frames = session.take_outbox();
        if frames.is_empty() {
            return Ok(());
        }
        for f in frames {
            let msg = match f {
                Frame::Text(t) => WsMessage::Text(t),
                Frame::Binary(b) => WsMessage::Binary(b),
                Frame::Close => continue,
            };
            ws.feed(msg).await.map_err(|_| ())?;
        }
        ws.flush().await.map_err(|_| ())
    }
}

/// The `Sec-WebSocket-Accept` value for a valid WebSocket upgrade request (`Upgrade:
/// websocket`, version 13, a key), or `None` if the request is not one.
pub fn websocket_accept(headers: &HeaderMap) -> Option<String> {
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    (is_upgrade && version_ok).then(|| derive_accept_key(key.as_bytes()))
}

/// What a new session keeps of its opening request: the query, the peer address and the
/// server's admission ([`crate::Permit`], if the server put one into the extensions).
fn handshake_of<B>(raw_query: &str, req: &Request<B>) -> Handshake {
    Handshake {
        query: raw_query.into(),
        remote: req.extensions().get::<RemoteAddr>().map(|r| r.0),
        permit: req
            .extensions()
            .get::<crate::Permit>()
            .cloned()
            .unwrap_or_default(),
    }
}

/// The peer address of a connection, put into request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub std::net::SocketAddr);

struct PollGuard<'a, D>(&'a Session<D>);

impl<D> Drop for PollGuard<'_, D> {
    fn drop(&mut self) {
        self.0.state.lock().polling_get = false;
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    res
}

fn text_response(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    res
}

fn error(e: HttpError) -> Response<Body> {
    let (code, message) = e.code_and_message();
    let status = if e == HttpError::PayloadTooLarge {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut res = Response::new(Full::new(Bytes::from(format!(
        "{{\"code\":{code},\"message\":\"{message}\"}}"
    ))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

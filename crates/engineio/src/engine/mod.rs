//! The Engine.IO server: the session table and each session's lifecycle.
//!
//! Layout: `routing` routes a request (and answers CORS and errors), `polling` and `ws` are
//! the two transports; this file holds what they share (the table, opening and
//! finishing a session, the handling of one inbound packet). Knows nothing of
//! Socket.IO: the layer above plugs in through [`Handler`].

mod polling;
mod routing;
mod ws;

pub use ws::websocket_accept;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::Full;
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::task::TaskTracker;

use crate::config::EngineConfig;
use crate::frame::Frame;
use crate::kind::{CloseReason, TransportKind};
use crate::outbox::{Encoding, Flushable, Flushers, Wire};
use crate::packet::Inbound;
use crate::session::{Handshake, Session, Sid};
use crate::stats::EngineStats;

/// A message from the client, for the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (the Engine.IO type character removed).
    Text(&'a str),
    /// A binary message.
    Binary(Bytes),
}

/// The layer above Engine.IO (Socket.IO, or the echo server of conformance mode).
pub trait Handler: Send + Sync + 'static {
    /// Per-session state the handler keeps inside the session.
    type Data: Send + Sync + 'static;

    /// The per-session state of a new session, made before the handshake is answered.
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
    tasks: TaskTracker,
    stats: Arc<EngineStats>,
    /// The flushers of direct WebSocket writes (maybe shared with other transports).
    flushers: Arc<Flushers>,
}

impl<H: Handler> Engine<H> {
    /// An engine whose session tasks run on `tasks` (drained at shutdown), with
    /// `config.ws_flushers` flushers of its own.
    pub fn new(config: EngineConfig, handler: H, tasks: TaskTracker) -> Arc<Self> {
        let flushers = Arc::new(Flushers::new(config.ws_flushers));
        Self::with_flushers(config, handler, tasks, flushers)
    }

    /// An engine whose direct writes are served by `flushers` (shared with the server's
    /// other transports; `config.ws_flushers` is then not read).
    pub fn with_flushers(
        config: EngineConfig,
        handler: H,
        tasks: TaskTracker,
        flushers: Arc<Flushers>,
    ) -> Arc<Self> {
        Arc::new(Engine {
            config,
            handler,
            sessions: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            tasks,
            stats: Arc::default(),
            flushers,
        })
    }

    /// Makes `session` write straight to `wire` from now on.
    fn attach(&self, session: &Arc<Session<H::Data>>, wire: Option<Arc<Wire>>, encoding: Encoding) {
        if let Some(wire) = wire {
            let me: Weak<dyn Flushable> = Arc::downgrade(session) as _;
            session
                .out
                .attach_direct(wire, self.flushers.queue(), me, encoding);
        }
    }

    /// This engine's counters.
    pub fn stats(&self) -> &EngineStats {
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

    /// The layer above this engine.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The settings this engine runs with.
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
            Inbound::Pong { probe: false } => session.pong(),
            Inbound::Close => session.close(CloseReason::TransportClose),
            // v4 clients never ping and probes belong to the WebSocket upgrade only.
            Inbound::Ping { .. }
            | Inbound::Pong { probe: true }
            | Inbound::Upgrade
            | Inbound::Noop => {}
        }
    }
}

/// What a new session keeps of its opening request: the query, the peer address and the
/// server's admission ([`crate::Permit`], if the server put one into the extensions).
fn handshake_of<B>(raw_query: &str, req: &http::Request<B>) -> Handshake {
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

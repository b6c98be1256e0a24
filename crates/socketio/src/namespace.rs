//! A namespace: its settings, its application handler and its recoverable sessions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engineio::Handshake;
use futures_util::future::BoxFuture;
use hub::{FormatId, Hub, Payload, Publish, RoomId};
use parking_lot::Mutex;
use serde_json::value::RawValue;

use crate::socket::Socket;

/// Settings of one namespace.
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
    /// The namespace's name, with its leading `/`.
    pub name: String,
    /// Connection state recovery window; `None` turns recovery off.
    pub recovery: Option<Duration>,
    /// Rooms of this namespace are the hub's rooms by the same name, shared with the
    /// plain WebSocket and SSE transports. Otherwise they are private to the namespace.
    pub fabric: bool,
}

/// What the middleware learned about the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user id, when the connection authenticated as one (shared: the server's
    /// per-user table may hold the same name).
    pub user: Option<Arc<str>>,
    /// What the middleware says the client may join (room patterns of its token); kept
    /// on the socket for the application ([`Socket::grants`]).
    pub grants: Option<Arc<[String]>>,
    /// What the middleware admitted (e.g. a place in a per-user connection count): held
    /// by the socket and released when it ends (a recovery keeps it).
    pub admission: engineio::Permit,
}

/// A refused connection, as the client will see it in `connect_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// What the client reads in its `connect_error`.
    pub message: String,
    /// Raw JSON attached as `data`.
    pub data: Option<String>,
}

impl ConnectError {
    /// A refusal with this message.
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }
}

/// A CONNECT as the middleware sees it.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// The namespace asked for.
    pub nsp: &'a str,
    /// The handshake `auth` object, raw JSON (`{}` when the client sent none).
    pub auth: &'a str,
    /// The Engine.IO handshake of the connection (query, peer address).
    pub handshake: &'a Handshake,
}

/// One event from a client.
#[derive(Debug)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// The arguments, as JSON, in order.
    pub args: Vec<Box<RawValue>>,
    /// Binary attachments, in order.
    pub attachments: Vec<Bytes>,
    /// Present when the client waits for an answer: pass it to [`Socket::ack`].
    pub ack: Option<u64>,
}

impl Event {
    /// The event's arguments as a payload (binary placeholders and attachments kept).
    pub fn payload(&self) -> Payload {
        let mut p = Payload::raw_args(self.args.iter().map(|a| a.get()));
        p.attachments = self.attachments.clone();
        p
    }
}

/// Why a socket left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client disconnected from the namespace (`socket.disconnect()`).
    ClientNamespaceDisconnect,
    /// The server disconnected the socket.
    ServerNamespaceDisconnect,
    /// The transport ended; with recovery on this fires when the window closes unused.
    Transport(engineio::CloseReason),
}

impl DisconnectReason {
    /// The reason as socket.io-client names it.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::Transport(r) => r.as_str(),
        }
    }
}

/// The application side of a namespace.
pub trait NamespaceHandler: Send + Sync + 'static {
    /// Middleware: accepts or refuses a CONNECT before it is answered. Skipped when a
    /// session is recovered.
    fn authorize(&self, req: &ConnectRequest<'_>) -> Result<Identity, ConnectError> {
        let _ = req;
        Ok(Identity::default())
    }

    /// [`NamespaceHandler::authorize`] for middleware that must wait (a key fetch). The
    /// default calls `authorize`.
    fn authorize_async<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Identity, ConnectError>> {
        let result = self.authorize(req);
        Box::pin(async move { result })
    }

    /// The socket is connected and its CONNECT answered (also after a recovery).
    fn on_connect<'a>(&'a self, socket: Arc<Socket>) -> BoxFuture<'a, ()> {
        let _ = socket;
        Box::pin(async {})
    }

    /// One event; events of one socket are handled one at a time, in order.
    fn on_event<'a>(&'a self, socket: Arc<Socket>, event: Event) -> BoxFuture<'a, ()>;

    /// The socket is gone for good (for a lost transport with recovery on: once the
    /// recovery window has closed without the client coming back).
    fn on_disconnect<'a>(
        &'a self,
        socket: Arc<Socket>,
        reason: DisconnectReason,
    ) -> BoxFuture<'a, ()> {
        let _ = (socket, reason);
        Box::pin(async {})
    }
}

/// A recoverable session as the servers of a cluster share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The private session id the client resumes with.
    pub pid: String,
    /// The socket id, kept across a recovery.
    pub sid: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// Hub room keys the socket is in (its namespace room included).
    pub rooms: Vec<String>,
    /// The rooms its token allows (room authorization), if it named any.
    pub grants: Option<Vec<String>>,
    /// The server that last owned it, when the directory knows.
    pub node: Option<String>,
}

/// Recoverable sessions shared with the other servers of a cluster, so a client whose
/// server died can resume on another one. Writes must not block (they are called from
/// socket handlers); lookups are bounded by the implementation.
pub trait SessionDirectory: Send + Sync {
    /// Records a live session (on connect, recovery and every join or leave).
    fn record(&self, nsp: &str, session: &SessionRecord);
    /// The session lost its transport: it stays recoverable until the window closes.
    fn detach(&self, nsp: &str, pid: &str);
    /// The session ended for good.
    fn forget(&self, nsp: &str, pid: &str);
    /// A session some server recorded.
    fn lookup<'a>(&'a self, nsp: &'a str, pid: &'a str) -> BoxFuture<'a, Option<SessionRecord>>;
    /// The server that owns a session now, if any is recorded.
    fn owner<'a>(&'a self, nsp: &'a str, pid: &'a str) -> BoxFuture<'a, Option<String>>;
    /// This server's name in the directory.
    fn node(&self) -> &str;
}

/// A socket whose transport is gone, waiting out the recovery window.
pub(crate) struct Detached {
    pub(crate) socket: Arc<Socket>,
    pub(crate) rooms: Vec<RoomId>,
    pub(crate) reason: DisconnectReason,
}

/// A namespace: settings, handler, hub room mapping and recoverable sessions.
pub struct Namespace {
    pub(crate) config: NamespaceConfig,
    pub(crate) handler: Arc<dyn NamespaceHandler>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) format: FormatId,
    /// The hub room every socket of this namespace is in.
    pub(crate) all_room: RoomId,
    pub(crate) detached: Mutex<HashMap<Box<str>, Detached>>,
    /// Sessions shared with a cluster's other servers (set once, cluster mode only).
    pub(crate) directory: std::sync::OnceLock<Arc<dyn SessionDirectory>>,
    pub(crate) connected: std::sync::atomic::AtomicUsize,
    /// Connected sockets by id (see [`crate::select`]), keyed by the inline id (no
    /// allocation per socket for its key).
    pub(crate) sockets: Mutex<HashMap<engineio::Sid, Arc<Socket>>>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.config.name)
            .finish()
    }
}

impl Namespace {
    pub(crate) fn new(
        config: NamespaceConfig,
        handler: Arc<dyn NamespaceHandler>,
        hub: Arc<Hub>,
    ) -> Arc<Namespace> {
        let all_room: RoomId = format!("nsp:{}", config.name).into();
        Arc::new(Namespace {
            config,
            handler,
            hub,
            format: FormatId::register(),
            all_room,
            detached: Mutex::new(HashMap::new()),
            directory: std::sync::OnceLock::new(),
            connected: std::sync::atomic::AtomicUsize::new(0),
            sockets: Mutex::new(HashMap::new()),
        })
    }

    /// The namespace's name (`/realtime`).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The hub its rooms live in.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Shares this namespace's recoverable sessions with a cluster (set once; a second
    /// call is ignored and returns false).
    pub fn set_directory(&self, directory: Arc<dyn SessionDirectory>) -> bool {
        self.directory.set(directory).is_ok()
    }

    /// Records `socket`'s session in the directory, if there is one.
    pub(crate) fn record_session(&self, socket: &Socket) {
        let (Some(dir), Some(pid), Some(member)) =
            (self.directory.get(), socket.pid(), socket.member_id())
        else {
            return;
        };
        let rooms = self
            .hub
            .rooms_of(member)
            .iter()
            .map(|r| r.to_string())
            .collect();
        dir.record(
            self.name(),
            &SessionRecord {
                pid: pid.to_owned(),
                sid: socket.id().to_owned(),
                user: socket.user().map(str::to_owned),
                rooms,
                grants: socket.grants().map(|g| g.to_vec()),
                node: None,
            },
        );
    }

    /// Sockets connected now.
    pub fn connected(&self) -> usize {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sockets waiting out their recovery window.
    pub fn recoverable(&self) -> usize {
        self.detached.lock().len()
    }

    /// The hub room for an application room name.
    pub fn room_key(&self, room: &str) -> RoomId {
        if self.config.fabric {
            room.into()
        } else {
            format!("{}#{}", self.config.name, room).into()
        }
    }

    /// The application room name of a hub room, if it is one of this namespace's rooms.
    pub(crate) fn room_name<'a>(&self, key: &'a str) -> Option<&'a str> {
        if key.starts_with("sid:") || key.starts_with("nsp:") {
            return None;
        }
        if self.config.fabric {
            Some(key)
        } else {
            key.strip_prefix(self.config.name.as_str())?
                .strip_prefix('#')
        }
    }

    /// Emits to every socket in `rooms` (all sockets of the namespace when empty),
    /// skipping the sockets in `except`. Returns the number of recipients.
    pub fn emit_to(
        &self,
        rooms: &[&str],
        except: &[RoomId],
        event: &str,
        payload: Payload,
        volatile: bool,
    ) -> usize {
        self.publish(rooms, except, None, event, payload, volatile)
    }

    pub(crate) fn publish(
        &self,
        rooms: &[&str],
        except: &[RoomId],
        except_member: Option<hub::MemberId>,
        event: &str,
        payload: Payload,
        volatile: bool,
    ) -> usize {
        let rooms = if rooms.is_empty() {
            std::iter::once(self.all_room.clone()).collect()
        } else {
            rooms.iter().map(|r| self.room_key(r)).collect()
        };
        self.hub
            .publish(Publish {
                rooms,
                except: except.iter().cloned().collect(),
                except_member,
                event: event.into(),
                payload,
                volatile,
                persist: self.config.recovery.is_some(),
                ..Publish::default()
            })
            .1
    }
}

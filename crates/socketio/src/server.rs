//! The Engine.IO handler that speaks Socket.IO: namespaces, CONNECT, binary reassembly,
//! acks and recovery. The per-socket ordered inbox lives with the socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use engineio::{CloseReason, Handler, Handshake, Message, Session};
use futures_util::future::BoxFuture;
use hub::{Hub, Payload};
use serde_json::value::RawValue;

use crate::namespace::{
    ConnectRequest, Detached, DisconnectReason, Event, Namespace, NamespaceConfig, NamespaceHandler,
};
use crate::packet::{Packet, PacketType, encode_connect, encode_connect_error, encode_event};
use crate::socket::{ConnState, Partial, Socket, Work, enqueue, enqueue_event, remove_socket};

/// Settings of the Socket.IO layer.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// Time a client has to connect to a namespace after the Engine.IO handshake.
    pub connect_timeout: Duration,
    /// Binary attachments accepted in one packet.
    pub max_attachments: usize,
    /// Events queued per socket before the server stops reading from that client.
    pub max_inbox: usize,
    /// Events per second one socket may send (with a burst); over it, an event is
    /// refused with an `error` event (and its ack, if any). Off when `per_sec` is 0.
    pub rate_limit: primitives::RateLimit,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            max_inbox: 64,
            rate_limit: primitives::RateLimit {
                per_sec: 0.0,
                burst: 0.0,
            },
        }
    }
}

/// The `auth` of a CONNECT that asks to resume a session (connection state recovery).
#[derive(serde::Deserialize)]
struct Resume {
    pid: String,
    offset: String,
}

/// The Socket.IO server: plug it into an [`engineio::Engine`].
pub struct SocketIo {
    config: SocketIoConfig,
    hub: Arc<Hub>,
    namespaces: HashMap<String, Arc<Namespace>>,
    rate_limited: Arc<std::sync::atomic::AtomicU64>,
    user_limit: Option<Arc<dyn UserEventLimit>>,
}

/// A limit on the events of one user across all of its connections (the server's
/// per-user rate limit), consulted after the socket's own bucket for sockets that
/// authenticated as a user. The limiter counts its own refusals.
pub trait UserEventLimit: Send + Sync {
    /// Takes one event of `user`; `false` refuses it.
    fn take(&self, user: &str) -> bool;
    /// What a refused client reads.
    fn message(&self) -> String;
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("namespaces", &self.namespaces.keys())
            .finish()
    }
}

type Conn = Arc<Session<ConnState>>;

impl SocketIo {
    /// Events refused by the rate limit, since start.
    pub fn rate_limited(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.rate_limited.clone()
    }

    /// A server with no namespace yet; rooms live in `hub`.
    pub fn new(config: SocketIoConfig, hub: Arc<Hub>) -> SocketIo {
        SocketIo {
            rate_limited: Arc::default(),
            user_limit: None,
            config,
            hub,
            namespaces: HashMap::new(),
        }
    }

    /// Limits every user's events across its connections (see [`UserEventLimit`]).
    pub fn set_user_limit(&mut self, limit: Arc<dyn UserEventLimit>) {
        self.user_limit = Some(limit);
    }

    /// Adds a namespace. Namespaces not added are refused with `Invalid namespace`.
    pub fn add_namespace(
        &mut self,
        config: NamespaceConfig,
        handler: Arc<dyn NamespaceHandler>,
    ) -> Arc<Namespace> {
        let nsp = Namespace::new(config, handler, self.hub.clone());
        self.namespaces.insert(nsp.name().to_owned(), nsp.clone());
        nsp
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    /// The hub every namespace's rooms live in.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    async fn on_text(&self, conn: &Conn, text: &str) {
        if conn.data.partial.lock().is_some() {
            // Text while attachments are outstanding: the stream is corrupt.
            conn.close(CloseReason::InvalidPacket);
            return;
        }
        let packet = match Packet::decode(text, self.config.max_attachments) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(sid = %conn.sid(), error = %e, "invalid socket.io packet");
                conn.close(CloseReason::InvalidPacket);
                return;
            }
        };
        if packet.attachments > 0 {
            *conn.data.partial.lock() = Some(Box::new(Partial {
                text: text.to_owned(),
                expected: packet.attachments,
                attachments: Vec::with_capacity(packet.attachments),
            }));
            return;
        }
        self.dispatch(conn, packet, Vec::new()).await;
    }

    async fn on_binary(&self, conn: &Conn, data: Bytes) {
        let complete = {
            let mut guard = conn.data.partial.lock();
            let Some(partial) = guard.as_mut() else {
                drop(guard);
                conn.close(CloseReason::InvalidPacket);
                return;
            };
            partial.attachments.push(data);
            if partial.attachments.len() == partial.expected {
                guard.take()
            } else {
                None
            }
        };
        if let Some(p) = complete {
            match Packet::decode(&p.text, self.config.max_attachments) {
                Ok(packet) => self.dispatch(conn, packet, p.attachments).await,
                Err(_) => conn.close(CloseReason::InvalidPacket),
            }
        }
    }

    fn socket_of(conn: &Conn, nsp: &str) -> Option<Arc<Socket>> {
        conn.data
            .sockets
            .lock()
            .iter()
            .find(|s| s.namespace().name() == nsp)
            .cloned()
    }

    async fn dispatch(&self, conn: &Conn, packet: Packet<'_>, attachments: Vec<Bytes>) {
        if packet.kind == PacketType::Connect {
            self.connect(conn, packet.nsp, packet.data.unwrap_or("{}"))
                .await;
            return;
        }
        let Some(socket) = Self::socket_of(conn, packet.nsp) else {
            // A packet for a namespace this client never joined.
            conn.close(CloseReason::InvalidPacket);
            return;
        };
        match packet.kind {
            PacketType::Disconnect => {
                remove_socket(&socket, DisconnectReason::ClientNamespaceDisconnect)
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let Ok(ev) = packet.event() else {
                    conn.close(CloseReason::InvalidPacket);
                    return;
                };
                let limit = self.config.rate_limit;
                let refused = if limit.is_on() && !socket.inbox.lock().bucket(limit).take(limit) {
                    self.rate_limited
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Some(format!(
                        "Rate limit exceeded: at most {} events per second",
                        limit.per_sec
                    ))
                } else {
                    match (&self.user_limit, socket.user()) {
                        (Some(l), Some(user)) if !l.take(user) => Some(l.message()),
                        _ => None,
                    }
                };
                if let Some(message) = refused {
                    if let Some(id) = packet.id {
                        socket.ack(
                            id,
                            &Payload::json(
                                &serde_json::json!({"success": false, "message": message}),
                            ),
                        );
                    }
                    socket.emit(
                        "error",
                        Payload::json(&serde_json::json!({ "message": message })),
                    );
                    return;
                }
                let event = Event {
                    name: ev.name,
                    args: ev.args.into_iter().map(RawValue::to_owned).collect(),
                    attachments,
                    ack: packet.id,
                };
                enqueue_event(&socket, event, self.config.max_inbox).await;
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let (Ok(args), Some(id)) = (packet.ack_args(), packet.id) else {
                    conn.close(CloseReason::InvalidPacket);
                    return;
                };
                let mut payload = Payload::raw_args(args.iter().map(|a| a.get()));
                payload.attachments = attachments;
                socket.on_ack(id, payload);
            }
            PacketType::Connect | PacketType::ConnectError => {
                conn.close(CloseReason::InvalidPacket)
            }
        }
    }

    async fn connect(&self, conn: &Conn, nsp_name: &str, auth: &str) {
        let Some(nsp) = self.namespaces.get(nsp_name).cloned() else {
            conn.push(
                encode_connect_error(nsp_name, "Invalid namespace", None),
                false,
            );
            return;
        };
        if Self::socket_of(conn, nsp_name).is_some() {
            conn.push(
                encode_connect_error(nsp_name, "Already connected to this namespace", None),
                false,
            );
            return;
        }
        if nsp.config.recovery.is_some()
            && (self.try_recover(conn, &nsp, auth)
                || self.try_recover_remote(conn, &nsp, auth).await)
        {
            return;
        }
        let req = ConnectRequest {
            nsp: nsp_name,
            auth,
            handshake: conn.handshake(),
        };
        let identity = match nsp.handler.authorize_async(&req).await {
            Ok(id) => id,
            Err(e) => {
                conn.push(
                    encode_connect_error(nsp_name, &e.message, e.data.as_deref()),
                    false,
                );
                return;
            }
        };
        let id = engineio::Sid::random();
        let pid = nsp.config.recovery.map(|_| engineio::Sid::random());
        let socket = Arc::new(Socket::new(
            id,
            pid,
            nsp.clone(),
            conn.clone(),
            identity.user,
            identity.grants,
            auth.into(),
            false,
            identity.admission,
        ));
        let body = match socket.pid() {
            Some(pid) => format!("{{\"sid\":\"{}\",\"pid\":\"{pid}\"}}", socket.id()),
            None => format!("{{\"sid\":\"{}\"}}", socket.id()),
        };
        // CONNECT goes out before the socket can receive any broadcast.
        conn.push(encode_connect(nsp_name, &body), false);
        let member = nsp.hub.add_member(socket.clone());
        let _ = socket.member.set(member);
        let _ = nsp.hub.join(member, &nsp.all_room);
        nsp.record_session(&socket);
        self.register(conn, &nsp, socket);
    }

    /// Resumes a session another server of the cluster recorded (its server died, or the
    /// client came back through another one), replaying from this server's history, which
    /// holds every server's messages. Never partial: a gap starts a fresh session.
    async fn try_recover_remote(&self, conn: &Conn, nsp: &Arc<Namespace>, auth: &str) -> bool {
        let Some(dir) = nsp.directory.get() else {
            return false;
        };
        let Ok(resume) = serde_json::from_str::<Resume>(auth) else {
            return false;
        };
        let (Some(pid), Ok(offset)) = (
            engineio::Sid::parse(&resume.pid),
            resume.offset.parse::<u64>(),
        ) else {
            return false;
        };
        let Some(record) = dir.lookup(nsp.name(), &resume.pid).await else {
            return false;
        };
        // Ours but no longer detached here: it ended (or was recovered already).
        if record.node.as_deref() == Some(dir.node()) {
            return false;
        }
        let Some(sid) = engineio::Sid::parse(&record.sid) else {
            return false;
        };
        let socket = Arc::new(Socket::new(
            sid,
            Some(pid),
            nsp.clone(),
            conn.clone(),
            record.user.map(Into::into),
            record.grants.map(Into::into),
            auth.into(),
            true,
            // Admitted by the node it came from; not counted against this node's
            // per-user limit until it reconnects here.
            engineio::Permit::default(),
        ));
        let rooms: Vec<hub::RoomId> = record.rooms.iter().map(|r| r.as_str().into()).collect();
        self.resume(conn, nsp, socket, &rooms, offset, &resume.pid)
    }

    /// Resumes a detached session if the client names one and the history is complete.
    fn try_recover(&self, conn: &Conn, nsp: &Arc<Namespace>, auth: &str) -> bool {
        let Ok(resume) = serde_json::from_str::<Resume>(auth) else {
            return false;
        };
        let Some(old) = nsp.detached.lock().remove(resume.pid.as_str()) else {
            return false;
        };
        let offset = resume.offset.parse::<u64>().ok();
        let socket = Arc::new(Socket::new(
            old.socket.sid(),
            old.socket.pid_sid(),
            nsp.clone(),
            conn.clone(),
            old.socket.user().map(Into::into),
            old.socket.grants().map(Into::into),
            auth.into(),
            true,
            // The session keeps its place in the per-user count across the recovery.
            old.socket.admission().clone(),
        ));
        let resumed = match offset {
            Some(offset) => self.resume(conn, nsp, socket, &old.rooms, offset, &resume.pid),
            None => false,
        };
        if !resumed {
            // Never a partial replay: the old session ends and a fresh one starts.
            enqueue(&old.socket, Work::Disconnect(old.reason));
        }
        resumed
    }

    /// Joins a resumed `socket` to `rooms` and, under the hub lock, answers its CONNECT
    /// and queues every message after `offset`, then registers it. Nothing is joined or
    /// sent when history has a gap (false: the caller starts a fresh session).
    fn resume(
        &self,
        conn: &Conn,
        nsp: &Arc<Namespace>,
        socket: Arc<Socket>,
        rooms: &[hub::RoomId],
        offset: u64,
        pid: &str,
    ) -> bool {
        let member = nsp.hub.add_member(socket.clone());
        let _ = socket.member.set(member);
        let result = nsp
            .hub
            .join_with_replay(member, rooms, offset, 0, |replay| {
                let body = format!("{{\"sid\":\"{}\",\"pid\":\"{pid}\"}}", socket.id());
                conn.push(encode_connect(nsp.name(), &body), false);
                for env in replay {
                    let frames =
                        encode_event(nsp.name(), &env.event, &env.payload, None, Some(env.offset));
                    conn.push_all(frames, false);
                }
            });
        match result {
            Ok(_) => {
                nsp.record_session(&socket);
                self.register(conn, nsp, socket);
                true
            }
            Err(hub::Gap) => {
                nsp.hub.remove_member(member);
                false
            }
        }
    }

    fn register(&self, conn: &Conn, nsp: &Arc<Namespace>, socket: Arc<Socket>) {
        if let Some(timer) = conn.data.connect_timer.lock().take() {
            timer.abort();
        }
        conn.data.sockets.lock().push(socket.clone());
        nsp.connected.fetch_add(1, Ordering::Relaxed);
        nsp.track(&socket);
        enqueue(&socket, Work::Connect);
    }
}

impl Handler for SocketIo {
    type Data = ConnState;

    fn new_data(&self, _handshake: &Handshake) -> ConnState {
        ConnState::default()
    }

    fn on_open(&self, session: &Conn) {
        let weak = Arc::downgrade(session);
        let timeout = self.config.connect_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(s) = weak.upgrade()
                && s.data.sockets.lock().is_empty()
            {
                s.close(CloseReason::ServerClose);
            }
        });
        *session.data.connect_timer.lock() = Some(timer.abort_handle());
    }

    fn on_message<'a>(&'a self, session: &'a Conn, msg: Message<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match msg {
                Message::Text(t) => self.on_text(session, t).await,
                Message::Binary(b) => self.on_binary(session, b).await,
            }
        })
    }

    fn on_close(&self, session: &Conn, reason: CloseReason) {
        if let Some(timer) = session.data.connect_timer.lock().take() {
            timer.abort();
        }
        session.data.partial.lock().take();
        let sockets = std::mem::take(&mut *session.data.sockets.lock());
        for socket in sockets {
            let nsp = socket.namespace().clone();
            if !socket.mark_disconnected() {
                continue;
            }
            nsp.connected.fetch_sub(1, Ordering::Relaxed);
            nsp.untrack(&socket);
            let member = socket.member_id();
            let window = nsp.config.recovery.filter(|_| reason.is_recoverable());
            match (window, socket.pid(), member) {
                (Some(window), Some(pid), Some(member)) => {
                    let rooms = nsp.hub.remove_member(member);
                    let pid: Box<str> = pid.into();
                    let reason = DisconnectReason::Transport(reason);
                    nsp.detached.lock().insert(
                        pid.clone(),
                        Detached {
                            socket: socket.clone(),
                            rooms,
                            reason,
                        },
                    );
                    if let Some(dir) = nsp.directory.get() {
                        dir.detach(nsp.name(), &pid);
                    }
                    let nsp2 = nsp.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(window).await;
                        let expired = {
                            let mut d = nsp2.detached.lock();
                            match d.get(&pid) {
                                Some(x) if Arc::ptr_eq(&x.socket, &socket) => d.remove(&pid),
                                _ => None,
                            }
                        };
                        let Some(x) = expired else { return };
                        // Recovered on another server of the cluster: it lives on there, so
                        // this server ends its copy without telling the application.
                        if let Some(dir) = nsp2.directory.get()
                            && let Some(owner) = dir.owner(nsp2.name(), &pid).await
                            && owner != dir.node()
                        {
                            return;
                        }
                        enqueue(&x.socket, Work::Disconnect(x.reason));
                    });
                }
                _ => {
                    if let Some(member) = member {
                        nsp.hub.remove_member(member);
                    }
                    enqueue(
                        &socket,
                        Work::Disconnect(DisconnectReason::Transport(reason)),
                    );
                }
            }
        }
    }
}

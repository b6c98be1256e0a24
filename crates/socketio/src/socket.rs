//! One client in one namespace. A socket is a hub member: room broadcasts reach it
//! through [`hub::Member::deliver`], which queues the shared, pre-encoded frames.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use engineio::{Frame, Push, Session};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use hub::{Delivery, Envelope, Member, MemberId, Payload};
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::sync::oneshot;

use crate::namespace::{DisconnectReason, Event, Namespace};
use crate::packet::{encode_ack, encode_disconnect, encode_event};

/// Why an emit with acknowledgement got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the client did not answer in time")]
    /// The client did not answer in time.
    Timeout,
    #[error("the socket disconnected")]
    /// The socket disconnected before answering.
    Disconnected,
}

pub(crate) enum Work {
    Connect,
    Event(Event),
    Disconnect(DisconnectReason),
}

#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) queue: VecDeque<Work>,
    pub(crate) running: bool,
    /// The rate-limit bucket, made at the socket's first event.
    bucket: Option<primitives::Bucket>,
}

impl Inbox {
    pub(crate) fn bucket(&mut self, limit: primitives::RateLimit) -> &mut primitives::Bucket {
        self.bucket
            .get_or_insert_with(|| primitives::Bucket::new(limit))
    }
}

#[derive(Default)]
struct Acks {
    next: u64,
    /// The server's emits awaiting the client's ack, few at a time: a list (24 bytes in
    /// every socket) rather than a hash map (48).
    pending: Vec<(u64, oneshot::Sender<Payload>)>,
}

impl Acks {
    fn take(&mut self, id: u64) -> Option<oneshot::Sender<Payload>> {
        let i = self.pending.iter().position(|(p, _)| *p == id)?;
        Some(self.pending.swap_remove(i).1)
    }
}

/// One client in one namespace.
pub struct Socket {
    /// Inline ids (no heap): the socket id, and the private id of a recoverable session.
    id: engineio::Sid,
    pid: Option<engineio::Sid>,
    nsp: Arc<Namespace>,
    conn: Arc<Session<ConnState>>,
    user: Option<Arc<str>>,
    grants: Option<Arc<[String]>>,
    auth: Box<str>,
    recovered: bool,
    pub(crate) member: std::sync::OnceLock<MemberId>,
    acks: Mutex<Acks>,
    pub(crate) inbox: Mutex<Inbox>,
    pub(crate) inbox_space: tokio::sync::Notify,
    connected: AtomicBool,
    /// When the socket connected (wall clock, for Node's `handshake.issued`).
    issued: std::time::SystemTime,
    /// The server's admission of this session (per-user count), released with the
    /// socket, carried over by a recovery.
    admission: engineio::Permit,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.nsp.name())
            .finish()
    }
}

impl Socket {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: engineio::Sid,
        pid: Option<engineio::Sid>,
        nsp: Arc<Namespace>,
        conn: Arc<Session<ConnState>>,
        user: Option<Arc<str>>,
        grants: Option<Arc<[String]>>,
        auth: Box<str>,
        recovered: bool,
        admission: engineio::Permit,
    ) -> Socket {
        Socket {
            id,
            pid,
            nsp,
            conn,
            user,
            grants,
            auth,
            recovered,
            member: std::sync::OnceLock::new(),
            acks: Mutex::new(Acks::default()),
            inbox: Mutex::new(Inbox::default()),
            inbox_space: tokio::sync::Notify::new(),
            connected: AtomicBool::new(true),
            issued: std::time::SystemTime::now(),
            admission,
        }
    }

    pub(crate) fn admission(&self) -> &engineio::Permit {
        &self.admission
    }

    /// When this socket connected (wall clock).
    pub fn issued(&self) -> std::time::SystemTime {
        self.issued
    }

    /// The socket id (stable across a recovery).
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    pub(crate) fn pid(&self) -> Option<&str> {
        self.pid.as_ref().map(engineio::Sid::as_str)
    }

    pub(crate) fn pid_sid(&self) -> Option<engineio::Sid> {
        self.pid
    }

    pub(crate) fn sid(&self) -> engineio::Sid {
        self.id
    }

    /// The namespace this socket joined.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.nsp
    }

    /// The Engine.IO session underneath (handshake query, remote address, transport).
    pub fn conn(&self) -> &Arc<Session<ConnState>> {
        &self.conn
    }

    /// The user the middleware authenticated, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The grants the middleware found ([`crate::Identity::grants`]).
    pub fn grants(&self) -> Option<&[String]> {
        self.grants.as_deref()
    }

    /// The handshake `auth` object as raw JSON.
    pub fn auth(&self) -> &str {
        &self.auth
    }

    /// Whether this socket resumed an earlier session with every missed event replayed.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// Whether the socket is still in its namespace.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub(crate) fn member_id(&self) -> Option<MemberId> {
        self.member.get().copied()
    }

    /// Emits an event to this client alone. As in Node's socket.io, a direct emit is not
    /// part of the recovery stream (no offset, no history): only room and namespace
    /// broadcasts are, which keeps an idle socket free of per-socket history.
    pub fn emit(&self, event: &str, payload: Payload) -> bool {
        let frames = encode_event(self.nsp.name(), event, &payload, None, None);
        self.conn.push_all(frames, false) == Push::Queued
    }

    /// Emits an event and waits for the client's acknowledgement.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        payload: Payload,
        timeout: Duration,
    ) -> Result<Payload, AckError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut acks = self.acks.lock();
            let id = acks.next;
            acks.next += 1;
            acks.pending.push((id, tx));
            id
        };
        let frames = encode_event(self.nsp.name(), event, &payload, Some(id), None);
        if self.conn.push_all(frames, false) != Push::Queued {
            self.acks.lock().take(id);
            return Err(AckError::Disconnected);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                self.acks.lock().take(id);
                Err(AckError::Timeout)
            }
        }
    }

    pub(crate) fn on_ack(&self, id: u64, payload: Payload) {
        if let Some(tx) = self.acks.lock().take(id) {
            let _ = tx.send(payload);
        }
    }

    /// Answers an event the client sent with an ack id.
    pub fn ack(&self, id: u64, payload: &Payload) {
        let frames = encode_ack(self.nsp.name(), id, payload);
        self.conn.push_all(frames, false);
    }

    /// Joins a room (the namespace's name for it). Fails past the per-client room limit.
    pub fn join(&self, room: &str) -> Result<(), hub::JoinError> {
        let id = self.member_id().ok_or(hub::JoinError::UnknownMember)?;
        self.nsp.hub.join(id, &self.nsp.room_key(room))?;
        self.nsp.record_session(self);
        Ok(())
    }

    /// Leaves `room` (nothing happens if it was not in it).
    pub fn leave(&self, room: &str) {
        if let Some(id) = self.member_id() {
            self.nsp.hub.leave(id, &self.nsp.room_key(room));
            self.nsp.record_session(self);
        }
    }

    /// The rooms this socket joined (its own and the namespace's are not listed).
    pub fn rooms(&self) -> Vec<String> {
        let Some(id) = self.member_id() else {
            return Vec::new();
        };
        let mut v: Vec<String> = self
            .nsp
            .hub
            .rooms_of(id)
            .iter()
            .filter_map(|k| self.nsp.room_name(k).map(str::to_owned))
            .collect();
        v.sort();
        v
    }

    /// Emits to `rooms` except this socket (Node's `socket.to(room).emit`).
    pub fn broadcast_to(&self, rooms: &[&str], event: &str, payload: Payload) -> usize {
        self.nsp
            .publish(rooms, &[], self.member_id(), event, payload, false)
    }

    /// Disconnects this socket from its namespace; with `close_conn` the whole connection.
    pub fn disconnect(self: &Arc<Self>, close_conn: bool) {
        if close_conn {
            disconnect_all(&self.conn, DisconnectReason::ServerNamespaceDisconnect);
            self.conn.close(engineio::CloseReason::ServerClose);
        } else {
            self.conn.push(encode_disconnect(self.nsp.name()), false);
            remove_socket(self, DisconnectReason::ServerNamespaceDisconnect);
        }
    }

    pub(crate) fn mark_disconnected(&self) -> bool {
        let was = self.connected.swap(false, Ordering::SeqCst);
        if was {
            // Waiters for acks learn the socket is gone.
            self.acks.lock().pending.clear();
        }
        was
    }
}

impl Member for Socket {
    fn deliver(&self, envelope: &Arc<Envelope>) -> Delivery {
        let nsp = &self.nsp;
        // Shared frames: compressed (permessage-deflate) at most once for every recipient.
        let frames: Arc<[Frame]> = envelope.encoded(nsp.format, |e| {
            let offset = nsp.config.recovery.is_some().then_some(e.offset);
            encode_event(nsp.name(), &e.event, &e.payload, None, offset)
                .into_iter()
                .map(Frame::shared)
                .collect()
        });
        match self
            .conn
            .push_all(frames.iter().cloned(), envelope.volatile)
        {
            Push::Queued => Delivery::Delivered,
            Push::Dropped => Delivery::Dropped,
            Push::Closed => Delivery::Closed,
        }
    }

    fn transport(&self) -> &'static str {
        "socketio"
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// Per-connection state kept inside the Engine.IO session.
#[derive(Default)]
pub struct ConnState {
    pub(crate) sockets: Mutex<SmallVec<[Arc<Socket>; 1]>>,
    /// Boxed: a binary packet is rare, and this is in every connection's session.
    pub(crate) partial: Mutex<Option<Box<Partial>>>,
    pub(crate) connect_timer: Mutex<Option<tokio::task::AbortHandle>>,
}

impl ConnState {
    /// The sockets (one per namespace) of this connection.
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.sockets.lock().to_vec()
    }
}

/// A binary packet waiting for its attachments.
pub(crate) struct Partial {
    pub(crate) text: String,
    pub(crate) expected: usize,
    pub(crate) attachments: Vec<Bytes>,
}

/// A connection as the sockets see it.
type Conn = Arc<Session<ConnState>>;

/// Removes a socket for good (not recoverable) and tells the application.
pub(crate) fn remove_socket(socket: &Arc<Socket>, reason: DisconnectReason) {
    if !socket.mark_disconnected() {
        return;
    }
    socket
        .conn()
        .data
        .sockets
        .lock()
        .retain(|s| !Arc::ptr_eq(s, socket));
    let nsp = socket.namespace();
    nsp.connected.fetch_sub(1, Ordering::Relaxed);
    nsp.untrack(socket);
    if let Some(member) = socket.member_id() {
        nsp.hub.remove_member(member);
    }
    enqueue(socket, Work::Disconnect(reason));
}

/// Sends DISCONNECT for every namespace of a connection and removes its sockets.
pub(crate) fn disconnect_all(conn: &Conn, reason: DisconnectReason) {
    for socket in conn.data.sockets() {
        conn.push(
            crate::packet::encode_disconnect(socket.namespace().name()),
            false,
        );
        remove_socket(&socket, reason);
    }
}

pub(crate) async fn enqueue_event(socket: &Arc<Socket>, event: Event, max: usize) {
    let mut event = Some(event);
    loop {
        let space = socket.inbox_space.notified();
        let idle = {
            let mut inbox = socket.inbox.lock();
            if inbox.queue.len() < max {
                // Not running means idle: the inbox runs until its queue is empty.
                let idle = !inbox.running;
                inbox.running = true;
                if !idle && let Some(e) = event.take() {
                    inbox.queue.push_back(Work::Event(e));
                }
                Some(idle)
            } else {
                None
            }
        };
        match idle {
            Some(true) => {
                if let Some(e) = event.take() {
                    run_in_place(socket, e).await;
                }
                return;
            }
            Some(false) => return,
            None => {}
        }
        // Back-pressure: stop reading this client until its handler catches up.
        space.await;
    }
}

pub(crate) fn enqueue(socket: &Arc<Socket>, work: Work) {
    let mut inbox = socket.inbox.lock();
    inbox.queue.push_back(work);
    let start = !inbox.running;
    inbox.running = true;
    drop(inbox);
    if start {
        tokio::spawn(run_inbox(socket.clone(), None));
    }
}

/// A handler's future that owns what it borrows, so it can move to a task of its own.
type Handling = BoxFuture<'static, ()>;

/// Runs an idle socket's event on the reader's task, its inbox marked running (ARCHITECTURE.md
/// invariant 6). Most handlers finish at their first poll (nothing they await is slow), and
/// then no task is spawned, scheduled and freed for the event, as socketioxide calls its
/// handlers in place. A handler that has to wait moves, with the inbox still running, to a
/// task of its own, which then runs whatever was queued behind it: events stay one at a time
/// and in order, and the reader reads on (a handler may wait for this client's own ack).
async fn run_in_place(socket: &Arc<Socket>, event: Event) {
    let handler = socket.namespace().handler.clone();
    let me = socket.clone();
    let mut handling: Handling = Box::pin(async move { handler.on_event(me, event).await });
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
            handling.as_mut().poll(cx)
        })))
    })
    .await;
    match first {
        Ok(Poll::Ready(())) => {}
        Ok(Poll::Pending) => {
            tokio::spawn(run_inbox(socket.clone(), Some(handling)));
            return;
        }
        Err(_) => handler_panicked(socket),
    }
    socket.conn().flush();
    // Work queued meanwhile by another task (a disconnect) runs in the inbox's own task.
    let mut inbox = socket.inbox.lock();
    if inbox.queue.is_empty() {
        inbox.running = false;
    } else {
        drop(inbox);
        tokio::spawn(run_inbox(socket.clone(), None));
    }
}

fn handler_panicked(socket: &Socket) {
    tracing::error!(
        socket = socket.id(),
        "application handler panicked; socket keeps serving"
    );
}

/// Runs a socket's queued work in order (after `first`, a handler already started), then
/// exits; at most one runs per socket.
async fn run_inbox(socket: Arc<Socket>, first: Option<Handling>) {
    if let Some(handling) = first {
        if AssertUnwindSafe(handling).catch_unwind().await.is_err() {
            handler_panicked(&socket);
        }
        socket.conn().flush();
    }
    let handler = socket.namespace().handler.clone();
    loop {
        let work = {
            let mut inbox = socket.inbox.lock();
            match inbox.queue.pop_front() {
                Some(w) => w,
                None => {
                    inbox.running = false;
                    inbox.queue = Default::default();
                    return;
                }
            }
        };
        socket.inbox_space.notify_one();
        let fut = match work {
            Work::Connect => handler.on_connect(socket.clone()),
            Work::Event(e) => handler.on_event(socket.clone(), e),
            Work::Disconnect(r) => {
                if let (Some(dir), Some(pid)) = (socket.nsp.directory.get(), socket.pid()) {
                    dir.forget(socket.nsp.name(), pid);
                }
                handler.on_disconnect(socket.clone(), r)
            }
        };
        if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
            handler_panicked(&socket);
        }
        // The handler's answers go out now, ahead of broadcasts waiting to be flushed.
        socket.conn().flush();
    }
}

#[cfg(test)]
mod tests {
    /// A socket and its connection's state are allocated once per client: their sizes are
    /// held to a budget (64-bit targets), so a field added to every socket is a choice.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn per_client_structs_stay_small() {
        use std::mem::size_of;
        assert!(
            size_of::<super::Socket>() <= 304,
            "{}",
            size_of::<super::Socket>()
        );
        assert!(
            size_of::<super::ConnState>() <= 64,
            "{}",
            size_of::<super::ConnState>()
        );
    }
}

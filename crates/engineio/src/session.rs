//! One Engine.IO session: its identity, its bounded outbox and its transport state.
//!
//! Owns: the outbox and every change of transport state, through methods (a poll or a
//! POST starting and ending, the upgrade's steps, a pong, a close), so the transports
//! never set a field by hand.
//!
//! I/O: a session never waits on a socket. Transports drain its outbox (the WebSocket
//! task, or a pending long-polling GET) when `wake` fires. The one write it makes itself
//! is [`Session::write_direct`]: a non-blocking write to the TCP stream of an attached
//! WebSocket (see `crate::wire`), which hands whatever the socket does not take to the
//! session's task. The session's lifecycle owner (the heartbeat task of a polling-born
//! session, the WebSocket task of a WebSocket-born one) is the only place that finishes a
//! close.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::frame::Frame;
use crate::kind::{CloseReason, TransportKind};
/// Kept here too for callers that name it by its older path.
pub use crate::query::query_param;
use crate::stats::EngineStats;
use crate::wire::{FlushQueue, Flushable, Wire, Wrote, encode_frame};

/// A session id: 20 URL-safe characters, stored inline (no heap).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; 20]);

impl Sid {
    /// A new random id (15 random bytes, base64url).
    pub fn random() -> Sid {
        let raw: [u8; 15] = rand::random();
        let mut out = [0u8; 20];
        // 15 bytes encode to exactly 20 base64 characters without padding.
        let n = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .expect("15 bytes always fit 20 base64 characters");
        debug_assert_eq!(n, 20);
        Sid(out)
    }

    /// Parses a sid from a query parameter; `None` if it cannot be one of ours.
    pub fn parse(s: &str) -> Option<Sid> {
        let bytes: [u8; 20] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Sid(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from base64url characters, which are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The frame is queued.
    Queued,
    /// A volatile frame met a full outbox and was dropped.
    Dropped,
    /// The session is closed (or was just closed as a slow client).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// A WebSocket with this sid is open and has not finished the upgrade.
    Pending,
    /// The WebSocket answered the probe: pending polls are released with a noop.
    Probed,
}

struct State {
    outbox: VecDeque<Frame>,
    transport: TransportKind,
    upgrade: Upgrade,
    /// Woken (all waiters) when a pending upgrade ends either way; present only while
    /// one is pending, so an idle session pays one pointer for it.
    upgrade_settled: Option<Arc<Notify>>,
    polling_get: bool,
    polling_post: bool,
    closed: Option<CloseReason>,
    /// A poll has carried the final answer (`1`, or the noop after a client close).
    close_sent: bool,
    /// When an unanswered ping times out (polling sessions): checked by every request,
    /// so a late timer cannot let a dead session answer.
    pong_deadline: Option<Instant>,
    /// When the oldest frame now in the outbox was queued (for the delivery histogram).
    queued_since: Option<Instant>,
    /// Set while the session writes straight to its WebSocket's TCP stream (crate::wire).
    direct: Option<Direct>,
    /// The session is on its flush queue: further pushes add frames without queueing it
    /// again. Cleared when a writer takes the outbox.
    scheduled: bool,
}

/// How a WebSocket session's frames reach its socket without waking its task.
pub(crate) struct Direct {
    pub(crate) wire: Arc<Wire>,
    pub(crate) queue: Arc<FlushQueue>,
    pub(crate) me: Weak<dyn Flushable>,
}

/// What [`Session::write_direct`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectWrite {
    /// Everything queued is on the socket (or nothing was queued).
    Done,
    /// The socket is backed up: the session's task must drain it (it has been woken).
    Blocked,
    /// Not writing directly (no wire, or closed and not the final flush).
    Off,
}

/// Why a session refused a transport request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The session is closed and owes the client nothing more.
    Gone,
    /// The request's transport is not the session's now (e.g. a poll after an upgrade).
    WrongTransport,
    /// A second request of the same kind while one is open: the session is closed.
    Concurrent,
}

/// What a pending long-polling GET answers.
#[derive(Debug)]
pub(crate) enum PollAnswer {
    /// Everything queued, in order.
    Frames(VecDeque<Frame>),
    /// The session is closed: `1` for a server-side close, a noop for a client's own.
    Closed { server_side: bool },
    /// The upgrade's probe succeeded: the poll is released so the client can finish it.
    Noop,
}

/// Clears the open-poll flag however the poll ends (answered, or dropped by the client).
pub(crate) struct PollGuard<'a, D>(&'a Session<D>);

impl<D> Drop for PollGuard<'_, D> {
    fn drop(&mut self) {
        self.0.state.lock().polling_get = false;
    }
}

impl State {
    /// Whether a closed polling session still has to answer its client: queued packets
    /// then `1` after a graceful server close, or the noop of a client's own close.
    fn polling_owes_client(&self) -> bool {
        match self.closed {
            _ if self.transport != TransportKind::Polling => false,
            Some(r) if r.is_graceful() => !self.outbox.is_empty() || !self.close_sent,
            // The client closed (POST `1`): a poll racing that POST still gets its noop.
            Some(CloseReason::TransportClose) => !self.close_sent,
            _ => false,
        }
    }
}

/// What the connection looked like when the session opened.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The raw query string of the opening request (without `?`).
    pub query: Box<str>,
    /// The peer address, when the server put it into the request.
    pub remote: Option<SocketAddr>,
    /// The server's admission of this connection, released when the session ends.
    pub permit: crate::Permit,
}

impl Handshake {
    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        crate::query::query_param(&self.query, name)
    }
}

/// One Engine.IO session. `D` is the layer above's per-session state.
pub struct Session<D> {
    sid: Sid,
    handshake: Handshake,
    /// The layer above's per-session state.
    pub data: D,
    max_buffered: usize,
    state: Mutex<State>,
    /// Wakes whoever writes to the client (WebSocket task or pending poll).
    pub(crate) wake: Notify,
    /// Wakes the lifecycle owner of a polling-born session (pong or close).
    pub(crate) control: Notify,
    /// Set by a pong on any transport; read by the lifecycle owner.
    pong_seen: AtomicBool,
    stats: Arc<EngineStats>,
}

impl<D> fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("sid", &self.sid).finish()
    }
}

impl<D> Session<D> {
    pub(crate) fn new(
        sid: Sid,
        handshake: Handshake,
        transport: TransportKind,
        max_buffered: usize,
        data: D,
        stats: Arc<EngineStats>,
    ) -> Session<D> {
        Session {
            stats,
            sid,
            handshake,
            data,
            max_buffered,
            state: Mutex::new(State {
                outbox: VecDeque::new(),
                transport,
                upgrade: Upgrade::None,
                upgrade_settled: None,
                polling_get: false,
                polling_post: false,
                closed: None,
                close_sent: false,
                queued_since: None,
                pong_deadline: None,
                direct: None,
                scheduled: false,
            }),
            wake: Notify::new(),
            control: Notify::new(),
            pong_seen: AtomicBool::new(false),
        }
    }

    /// This session's id.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The opening request's query and peer address.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The transport the session is on now.
    pub fn transport(&self) -> TransportKind {
        self.state.lock().transport
    }

    /// Whether the session is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    /// Queues a frame. A full outbox drops a volatile frame, and closes the session as a
    /// slow client for anything else.
    pub fn push(&self, frame: Frame, volatile: bool) -> Push {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Push::Closed;
        }
        if st.outbox.len() >= self.max_buffered {
            if volatile {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Push::Dropped;
            }
            drop(st);
            self.close(CloseReason::SlowClient);
            return Push::Closed;
        }
        st.queued_since.get_or_insert_with(Instant::now);
        st.outbox.push_back(frame);
        self.wake_writer(st);
        Push::Queued
    }

    /// Queues several frames that must stay together (a packet and its binary attachments).
    pub fn push_all(&self, frames: impl IntoIterator<Item = Frame>, volatile: bool) -> Push {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Push::Closed;
        }
        let before = st.outbox.len();
        st.outbox.extend(frames);
        if st.outbox.len() > self.max_buffered && before > 0 {
            st.outbox.truncate(before);
            if volatile {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Push::Dropped;
            }
            drop(st);
            self.close(CloseReason::SlowClient);
            return Push::Closed;
        }
        st.queued_since.get_or_insert_with(Instant::now);
        self.wake_writer(st);
        Push::Queued
    }

    /// After a push: a direct session goes on its flush queue (once until served), any
    /// other has its transport woken.
    fn wake_writer(&self, mut st: parking_lot::MutexGuard<'_, State>) {
        if st.direct.is_some() {
            if st.outbox.len() >= self.max_buffered / 2 {
                // The flushers are behind (a busy runtime): the pusher writes this one
                // itself rather than let a client that reads fine hit the slow-client bound.
                drop(st);
                crate::wire::with_buf(|buf| self.write_direct(buf, false));
                return;
            }
            if !st.scheduled {
                st.scheduled = true;
                if let Some(d) = &st.direct
                    && let Some(me) = d.me.upgrade()
                {
                    d.queue.push(me);
                }
            }
            return;
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Writes what is queued now, on the caller's thread, when the session writes
    /// directly to a WebSocket (e.g. an answer, so it does not wait behind broadcasts on
    /// the flush queue). Otherwise its transport was already woken: nothing to do.
    pub fn flush(&self) {
        let queued = {
            let st = self.state.lock();
            st.direct.is_some() && !st.outbox.is_empty()
        };
        if queued {
            crate::wire::with_buf(|buf| self.write_direct(buf, false));
        }
    }

    /// Starts writing this session's frames straight to its WebSocket (see crate::wire).
    pub(crate) fn attach_direct(&self, direct: Direct) {
        let mut st = self.state.lock();
        st.direct = Some(direct);
        st.scheduled = false;
        drop(st);
        // Whatever was queued before goes out through the new path.
        self.wake.notify_one();
    }

    /// Stops direct writes and lets go of the socket (the session is finishing).
    pub(crate) fn detach_direct(&self) {
        let direct = self.state.lock().direct.take();
        drop(direct);
    }

    /// The wire of a direct session.
    pub(crate) fn wire(&self) -> Option<Arc<Wire>> {
        self.state.lock().direct.as_ref().map(|d| d.wire.clone())
    }

    /// Writes everything queued to the socket with one write. `closing`: the final flush
    /// before the close frame, which still sends what a closed session has queued.
    pub(crate) fn write_direct(&self, buf: &mut Vec<u8>, closing: bool) -> DirectWrite {
        let Some(wire) = self.wire() else {
            self.state.lock().scheduled = false;
            return DirectWrite::Off;
        };
        // Held across taking the outbox and writing it: no other writer can come between.
        let mut w = wire.lock();
        let mut st = self.state.lock();
        st.scheduled = false;
        if st.closed.is_some() && !closing {
            drop(st);
            drop(w);
            self.wake.notify_one();
            return DirectWrite::Off;
        }
        if w.is_blocked() {
            // The session's task drains the socket and then writes the outbox. Meanwhile
            // every push comes back here through the flush queue (`scheduled` is false),
            // and queued frames join the unsent bytes up to the write-buffer bound; past
            // it they stay queued (and count against the slow-client bound).
            if !st.outbox.is_empty() && w.unsent_mut().len() < wire.max_unsent() {
                let frames = Self::taken(&self.stats, &mut st);
                for f in &frames {
                    encode_frame(w.unsent_mut(), f);
                }
            }
            drop(st);
            drop(w);
            self.wake.notify_one();
            return DirectWrite::Blocked;
        }
        if st.outbox.is_empty() {
            return DirectWrite::Done;
        }
        let frames = Self::taken(&self.stats, &mut st);
        drop(st);
        buf.clear();
        for f in &frames {
            encode_frame(buf, f);
        }
        drop(frames);
        match wire.write_locked(&mut w, buf) {
            Ok(Wrote::All) => DirectWrite::Done,
            Ok(Wrote::Blocked) => {
                drop(w);
                self.wake.notify_one();
                DirectWrite::Blocked
            }
            Err(_) => {
                drop(w);
                self.close(CloseReason::TransportError);
                DirectWrite::Off
            }
        }
    }

    /// Starts closing the session. Idempotent: the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return;
        }
        st.closed = Some(reason);
        drop(st);
        self.wake.notify_one();
        self.control.notify_one();
    }

    /// Closes the session if its ping went unanswered past the deadline; true if closed.
    pub(crate) fn check_ping_timeout(&self, now: Instant) -> bool {
        let expired = {
            let st = self.state.lock();
            if st.closed.is_some() {
                return true;
            }
            st.pong_deadline.is_some_and(|d| now >= d)
        };
        if expired {
            self.close(CloseReason::PingTimeout);
        }
        expired
    }

    pub(crate) fn closed_reason(&self) -> Option<CloseReason> {
        self.state.lock().closed
    }

    /// Takes everything queued, leaving an empty outbox that owns no memory.
    pub(crate) fn take_outbox(&self) -> VecDeque<Frame> {
        let mut st = self.state.lock();
        Self::taken(&self.stats, &mut st)
    }

    /// Empties the outbox of a locked state, counting the frames and their wait.
    fn taken(stats: &EngineStats, st: &mut State) -> VecDeque<Frame> {
        let frames = std::mem::take(&mut st.outbox);
        if let Some(since) = st.queued_since.take() {
            stats.delivery.observe(since.elapsed());
        }
        stats
            .frames_out
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        frames
    }
}

impl<D> Session<D> {
    // ---- long-polling: one GET and one POST at a time --------------------------------

    /// Starts a long-polling GET. A second concurrent GET closes the session.
    pub(crate) fn begin_poll(&self) -> Result<PollGuard<'_, D>, Refused> {
        let mut st = self.state.lock();
        if st.closed.is_some() && !st.polling_owes_client() {
            return Err(Refused::Gone);
        }
        if st.transport != TransportKind::Polling {
            return Err(Refused::WrongTransport);
        }
        if st.polling_get {
            drop(st);
            self.close(CloseReason::InvalidPacket);
            return Err(Refused::Concurrent);
        }
        st.polling_get = true;
        Ok(PollGuard(self))
    }

    /// Waits for what the open poll answers: queued frames, the close, or the noop that
    /// releases it during an upgrade.
    pub(crate) async fn poll_answer(&self) -> PollAnswer {
        loop {
            let notified = self.wake.notified();
            {
                let mut st = self.state.lock();
                if !st.outbox.is_empty() {
                    let frames = Self::taken(&self.stats, &mut st);
                    drop(st);
                    self.control.notify_one();
                    return PollAnswer::Frames(frames);
                }
                if let Some(reason) = st.closed {
                    // Queued packets went out in earlier polls; now the close itself.
                    st.close_sent = true;
                    drop(st);
                    self.control.notify_one();
                    return PollAnswer::Closed {
                        server_side: reason != CloseReason::TransportClose,
                    };
                }
                if st.upgrade == Upgrade::Probed {
                    return PollAnswer::Noop;
                }
            }
            notified.await;
        }
    }

    /// Starts a long-polling POST. A second concurrent POST closes the session.
    pub(crate) fn begin_post(&self) -> Result<(), Refused> {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Err(Refused::Gone);
        }
        if st.transport != TransportKind::Polling {
            return Err(Refused::WrongTransport);
        }
        if st.polling_post {
            drop(st);
            self.close(CloseReason::InvalidPacket);
            return Err(Refused::Concurrent);
        }
        st.polling_post = true;
        Ok(())
    }

    /// The POST started by [`Session::begin_post`] is done.
    pub(crate) fn end_post(&self) {
        self.state.lock().polling_post = false;
    }

    /// Whether a closed polling session still has to answer a poll (its lifecycle owner
    /// keeps it in the table until then, briefly).
    pub(crate) fn owes_client(&self) -> bool {
        self.state.lock().polling_owes_client()
    }

    // ---- heartbeat of a polling-born session -----------------------------------------

    /// A ping went out; the session times out at `pong_deadline` unless a pong comes.
    pub(crate) fn ping_sent(&self, pong_deadline: Instant) {
        self.state.lock().pong_deadline = Some(pong_deadline);
        self.push(Frame::ping(), false);
    }

    /// A pong arrived on some transport: tells the lifecycle owner.
    pub(crate) fn pong(&self) {
        self.pong_seen.store(true, Ordering::SeqCst);
        self.control.notify_one();
    }

    /// Whether a pong arrived since the last call (the lifecycle owner's side of
    /// [`Session::pong`]); clears the pong deadline if so.
    pub(crate) fn take_pong(&self) -> bool {
        let pong = self.pong_seen.swap(false, Ordering::SeqCst);
        if pong {
            self.state.lock().pong_deadline = None;
        }
        pong
    }

    // ---- the upgrade from polling to WebSocket ----------------------------------------

    /// A WebSocket names this session to upgrade it: true if it may (a live polling
    /// session not upgrading already), and the upgrade is pending from now on.
    pub(crate) fn begin_upgrade(&self) -> bool {
        let mut st = self.state.lock();
        if st.closed.is_some()
            || st.transport != TransportKind::Polling
            || st.upgrade != Upgrade::None
        {
            return false;
        }
        st.upgrade = Upgrade::Pending;
        st.upgrade_settled = Some(Arc::new(Notify::new()));
        true
    }

    /// The WebSocket answered the probe: a pending poll is released with a noop.
    pub(crate) fn upgrade_probed(&self) {
        self.state.lock().upgrade = Upgrade::Probed;
        self.wake.notify_one();
    }

    /// The upgrade failed (or the WebSocket never came): the session stays on polling.
    pub(crate) fn abandon_upgrade(&self) {
        let mut st = self.state.lock();
        Self::settle_upgrade(&mut st);
    }

    /// The client sent `5`: the session is a WebSocket session from now on, and whatever
    /// waited for the next poll goes out on it. False if the session closed meanwhile
    /// (the upgrade is abandoned then).
    pub(crate) fn complete_upgrade(&self) -> bool {
        let mut st = self.state.lock();
        let open = st.closed.is_none();
        if open {
            st.transport = TransportKind::WebSocket;
            self.stats.upgrades.fetch_add(1, Ordering::Relaxed);
        }
        Self::settle_upgrade(&mut st);
        drop(st);
        if open {
            self.wake.notify_one();
        }
        open
    }

    fn settle_upgrade(st: &mut State) {
        st.upgrade = Upgrade::None;
        if let Some(settled) = st.upgrade_settled.take() {
            settled.notify_waiters();
        }
    }

    /// Waits (at most `max`) until no upgrade is pending. A poll racing the client's
    /// `2probe`/`5` on the WebSocket then gets the answer the order of the client's sends
    /// implies (400 once upgraded, else a noop).
    pub(crate) async fn upgrade_settled(&self, max: Duration) {
        let Some(settled) = self.state.lock().upgrade_settled.clone() else {
            return;
        };
        let notified = settled.notified();
        // Registered before this check, so a settle right after it still wakes us.
        if self.state.lock().upgrade == Upgrade::None {
            return;
        }
        let _ = tokio::time::timeout(max, notified).await;
    }
}

impl<D: Send + Sync> Flushable for Session<D> {
    fn flush_queued(&self, buf: &mut Vec<u8>) {
        self.write_direct(buf, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_is_20_url_safe_chars_and_parses_back() {
        let sid = Sid::random();
        assert_eq!(sid.as_str().len(), 20);
        assert_eq!(Sid::parse(sid.as_str()), Some(sid));
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaa/"), None);
    }

    #[test]
    fn full_outbox_drops_volatile_then_closes() {
        let s = Session::new(
            Sid::random(),
            Handshake::default(),
            TransportKind::WebSocket,
            2,
            (),
            Default::default(),
        );
        assert_eq!(s.push(Frame::message("a"), false), Push::Queued);
        assert_eq!(s.push(Frame::message("b"), false), Push::Queued);
        assert_eq!(s.push(Frame::message("c"), true), Push::Dropped);
        assert!(!s.is_closed());
        assert_eq!(s.push(Frame::message("d"), false), Push::Closed);
        assert_eq!(s.closed_reason(), Some(CloseReason::SlowClient));
        assert_eq!(s.push(Frame::message("e"), false), Push::Closed);
    }
}

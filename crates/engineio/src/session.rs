//! One Engine.IO session: its identity, its bounded outbox and its transport state.
//!
//! Owns: every change of transport state, through methods (a poll or a POST starting and
//! ending, the upgrade's steps, a pong, a close), so the transports never set a field by
//! hand. The outbox, its slow-client policy and its direct writes are the shared
//! [`crate::outbox::Outbox`] (the server's `/ws` and SSE connections use the same).
//!
//! I/O: a session never waits on a socket. Transports drain its outbox (the WebSocket
//! task, or a pending long-polling GET) when the outbox's `wake` fires. The one write it
//! makes itself is the outbox's direct write: a non-blocking write to the TCP stream of an
//! attached WebSocket (see `crate::wire`), which hands whatever the socket does not take
//! to the session's task. The session's lifecycle owner (the heartbeat task of a
//! polling-born session, the WebSocket task of a WebSocket-born one) is the only place
//! that finishes a close.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::frame::Frame;
use crate::kind::{CloseReason, TransportKind};
pub use crate::outbox::Push;
use crate::outbox::{Flushable, Outbox};
/// Kept here too for callers that name it by its older path.
pub use crate::query::query_param;
use crate::stats::EngineStats;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// A WebSocket with this sid is open and has not finished the upgrade.
    Pending,
    /// The WebSocket answered the probe: pending polls are released with a noop.
    Probed,
}

/// Transport state; the outbox (with the close reason) has its own lock, taken after
/// this one.
struct State {
    transport: TransportKind,
    upgrade: Upgrade,
    /// Woken (all waiters) when a pending upgrade ends either way; present only while
    /// one is pending, so an idle session pays one pointer for it.
    upgrade_settled: Option<Arc<Notify>>,
    polling_get: bool,
    polling_post: bool,
    /// A poll has carried the final answer (`1`, or the noop after a client close).
    close_sent: bool,
    /// When an unanswered ping times out (polling sessions): checked by every request,
    /// so a late timer cannot let a dead session answer.
    pong_deadline: Option<Instant>,
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
    fn polling_owes_client(&self, out: &Outbox<EngineStats>) -> bool {
        if self.transport != TransportKind::Polling {
            return false;
        }
        match out.closed_reason() {
            Some(r) if r.is_graceful() => !out.is_empty() || !self.close_sent,
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
    state: Mutex<State>,
    /// The frames for the client; its `wake` wakes whoever writes to the client
    /// (WebSocket task or pending poll).
    pub(crate) out: Outbox<EngineStats>,
    /// Wakes the lifecycle owner of a polling-born session (pong or close).
    pub(crate) control: Notify,
    /// Set by a pong on any transport; read by the lifecycle owner.
    pong_seen: AtomicBool,
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
            sid,
            handshake,
            data,
            out: Outbox::new(max_buffered, stats),
            state: Mutex::new(State {
                transport,
                upgrade: Upgrade::None,
                upgrade_settled: None,
                polling_get: false,
                polling_post: false,
                close_sent: false,
                pong_deadline: None,
            }),
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
        self.out.closed_reason().is_some()
    }

    /// Queues a frame. A full outbox drops a volatile frame, and closes the session as a
    /// slow client for anything else.
    pub fn push(&self, frame: Frame, volatile: bool) -> Push {
        let pushed = self.out.push(frame, volatile);
        if pushed == Push::Closed {
            // Maybe closed just now, as a slow client: the lifecycle owner finishes it.
            self.control.notify_one();
        }
        pushed
    }

    /// Queues several frames that must stay together (a packet and its binary attachments).
    pub fn push_all(&self, frames: impl IntoIterator<Item = Frame>, volatile: bool) -> Push {
        let pushed = self.out.push_all(frames, volatile);
        if pushed == Push::Closed {
            self.control.notify_one();
        }
        pushed
    }

    /// Writes what is queued now, on the caller's thread, when the session writes
    /// directly to a WebSocket (e.g. an answer, so it does not wait behind broadcasts on
    /// the flush queue). Otherwise its transport was already woken: nothing to do.
    pub fn flush(&self) {
        self.out.flush();
    }

    /// Starts closing the session. Idempotent: the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        if self.out.close(reason) {
            self.control.notify_one();
        }
    }

    /// Closes the session if its ping went unanswered past the deadline; true if closed.
    pub(crate) fn check_ping_timeout(&self, now: Instant) -> bool {
        let expired = {
            let st = self.state.lock();
            if self.out.closed_reason().is_some() {
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
        self.out.closed_reason()
    }
}

impl<D> Session<D> {
    // ---- long-polling: one GET and one POST at a time --------------------------------

    /// Starts a long-polling GET. A second concurrent GET closes the session.
    pub(crate) fn begin_poll(&self) -> Result<PollGuard<'_, D>, Refused> {
        let mut st = self.state.lock();
        if self.is_closed() && !st.polling_owes_client(&self.out) {
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
            let notified = self.out.wake.notified();
            {
                let mut st = self.state.lock();
                let frames = self.out.take();
                if !frames.is_empty() {
                    drop(st);
                    self.control.notify_one();
                    return PollAnswer::Frames(frames);
                }
                if let Some(reason) = self.out.closed_reason() {
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
        if self.is_closed() {
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
        self.state.lock().polling_owes_client(&self.out)
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
        if self.is_closed() || st.transport != TransportKind::Polling || st.upgrade != Upgrade::None
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
        self.out.wake.notify_one();
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
        let open = !self.is_closed();
        if open {
            st.transport = TransportKind::WebSocket;
            self.out.counters().upgrades.fetch_add(1, Ordering::Relaxed);
        }
        Self::settle_upgrade(&mut st);
        drop(st);
        if open {
            self.out.wake.notify_one();
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
        self.out.write_direct(buf, false);
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

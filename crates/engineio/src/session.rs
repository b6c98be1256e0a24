//! One Engine.IO session: its identity, its bounded outbox and its transport state.
//!
//! A session never does I/O itself. Transports drain its outbox (the WebSocket task, or
//! a pending long-polling GET) when `wake` fires; the session's lifecycle owner (the
//! heartbeat task of a polling-born session, the WebSocket task of a WebSocket-born one)
//! is the only place that finishes a close.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::wire::{FlushQueue, Flushable, Wire, Wrote, encode_frame};

/// A session id: 20 URL-safe characters, stored inline (no heap).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; 20]);

impl Sid {
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

/// One outbound unit. Text frames hold a complete Engine.IO packet (type character
/// included), so a broadcast builds the buffer once and every recipient shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// The session is being closed by the server: `1` on polling, a close frame on WebSocket.
    Close,
}

impl Frame {
    /// An Engine.IO message packet (`4` + text).
    pub fn message(text: &str) -> Frame {
        let mut s = String::with_capacity(text.len() + 1);
        s.push('4');
        s.push_str(text);
        Frame::Text(Utf8Bytes::from(s))
    }

    pub(crate) fn ping() -> Frame {
        Frame::Text(Utf8Bytes::from_static("2"))
    }

    pub(crate) fn noop() -> Frame {
        Frame::Text(Utf8Bytes::from_static("6"))
    }

    /// Appends the polling form of this frame to `out`.
    pub(crate) fn encode_polling(&self, out: &mut String) {
        match self {
            Frame::Text(t) => out.push_str(t),
            Frame::Binary(b) => {
                out.push('b');
                BASE64.encode_string(b, out);
            }
            Frame::Close => out.push('1'),
        }
    }
}

/// Why a session ended. The Socket.IO layer maps these to its disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the transport or sent a close packet.
    TransportClose,
    /// The transport failed (I/O error, protocol violation on the WebSocket).
    TransportError,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The client sent something that is not Engine.IO.
    InvalidPacket,
    /// The client's outbox overflowed with non-volatile messages.
    SlowClient,
    /// The application closed the session.
    ServerClose,
    /// The server is shutting down.
    ServerShutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::TransportClose,
        CloseReason::TransportError,
        CloseReason::PingTimeout,
        CloseReason::InvalidPacket,
        CloseReason::SlowClient,
        CloseReason::ServerClose,
        CloseReason::ServerShutdown,
    ];

    /// Whether the client may come back and recover its state (Socket.IO recovery).
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            CloseReason::TransportClose
                | CloseReason::TransportError
                | CloseReason::PingTimeout
                | CloseReason::ServerShutdown
        )
    }

    /// A deliberate server-side close: a polling client still gets what was queued, then
    /// a close packet. Errors and timeouts end the session at once.
    pub fn is_graceful(self) -> bool {
        matches!(
            self,
            CloseReason::ServerClose | CloseReason::SlowClient | CloseReason::ServerShutdown
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::InvalidPacket => "parse error",
            CloseReason::SlowClient => "slow client",
            CloseReason::ServerClose => "forced close",
            CloseReason::ServerShutdown => "server shutting down",
        }
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// A volatile frame met a full outbox and was dropped.
    Dropped,
    /// The session is closed (or was just closed as a slow client).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Polling,
    WebSocket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgrade {
    None,
    /// A WebSocket with this sid is open and has not finished the upgrade.
    Pending,
    /// The WebSocket answered the probe: pending polls are released with a noop.
    Probed,
}

pub(crate) struct State {
    pub(crate) outbox: VecDeque<Frame>,
    pub(crate) transport: TransportKind,
    pub(crate) upgrade: Upgrade,
    pub(crate) polling_get: bool,
    pub(crate) polling_post: bool,
    pub(crate) closed: Option<CloseReason>,
    /// A poll has carried the final answer (`1`, or the noop after a client close).
    pub(crate) close_sent: bool,
    /// When an unanswered ping times out (polling sessions): checked by every request,
    /// so a late timer cannot let a dead session answer.
    pub(crate) pong_deadline: Option<Instant>,
    /// When the oldest frame now in the outbox was queued (for the delivery histogram).
    pub(crate) queued_since: Option<Instant>,
    /// Set while the session writes straight to its WebSocket's TCP stream (crate::wire).
    pub(crate) direct: Option<Direct>,
    /// The session is on its flush queue: further pushes add frames without queueing it
    /// again. Cleared when a writer takes the outbox.
    pub(crate) scheduled: bool,
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

impl State {
    /// Whether a closed polling session still has to answer its client: queued packets
    /// then `1` after a graceful server close, or the noop of a client's own close.
    pub(crate) fn polling_owes_client(&self) -> bool {
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
    pub remote: Option<SocketAddr>,
    /// The server's admission of this connection, released when the session ends.
    pub permit: crate::Permit,
}

impl Handshake {
    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(&self.query, name)
    }
}

/// One Engine.IO session. `D` is the layer above's per-session state.
pub struct Session<D> {
    sid: Sid,
    handshake: Handshake,
    pub data: D,
    max_buffered: usize,
    pub(crate) state: Mutex<State>,
    /// Wakes whoever writes to the client (WebSocket task or pending poll).
    pub(crate) wake: Notify,
    /// Wakes the lifecycle owner of a polling-born session (pong or close).
    pub(crate) control: Notify,
    /// Set by a pong on any transport; read by the lifecycle owner.
    pub(crate) pong_seen: AtomicBool,
    stats: std::sync::Arc<crate::stats::EngineStats>,
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
        stats: std::sync::Arc<crate::stats::EngineStats>,
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

    pub fn sid(&self) -> Sid {
        self.sid
    }

    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    pub fn transport(&self) -> TransportKind {
        self.state.lock().transport
    }

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
    pub(crate) fn taken(stats: &crate::stats::EngineStats, st: &mut State) -> VecDeque<Frame> {
        let frames = std::mem::take(&mut st.outbox);
        if let Some(since) = st.queued_since.take() {
            stats.delivery.observe(since.elapsed());
        }
        stats
            .frames_out
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        frames
    }

    pub(crate) fn stats(&self) -> &crate::stats::EngineStats {
        &self.stats
    }
}

impl<D: Send + Sync> Flushable for Session<D> {
    fn flush_queued(&self, buf: &mut Vec<u8>) {
        self.write_direct(buf, false);
    }
}

/// The heartbeat of one session: ping every interval, and expect a pong within the timeout.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    /// When the next ping is due, or when the awaited pong is overdue.
    deadline: Instant,
    awaiting_pong: bool,
}

pub(crate) enum Beat {
    SendPing,
    TimedOut,
}

impl Heartbeat {
    pub(crate) fn new(interval: Duration, timeout: Duration, now: Instant) -> Heartbeat {
        Heartbeat {
            interval,
            timeout,
            deadline: now + interval,
            awaiting_pong: false,
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Called when the deadline has passed.
    pub(crate) fn on_deadline(&mut self, now: Instant) -> Beat {
        if self.awaiting_pong {
            Beat::TimedOut
        } else {
            self.awaiting_pong = true;
            // From the scheduled time, not the (possibly late) wake-up: no drift.
            let _ = now;
            self.deadline += self.timeout;
            Beat::SendPing
        }
    }

    pub(crate) fn on_pong(&mut self, now: Instant) {
        if self.awaiting_pong {
            self.awaiting_pong = false;
            self.deadline = now + self.interval;
        }
    }
}

/// The first value of `name` in a raw query string, percent-decoded (`+` as space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn query_params_are_decoded() {
        let q = "EIO=4&transport=polling&token=a%20b+c&userId=7&bad=%zz&tail=%4";
        assert_eq!(query_param(q, "token").as_deref(), Some("a b c"));
        assert_eq!(query_param(q, "userId").as_deref(), Some("7"));
        assert_eq!(query_param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(q, "tail").as_deref(), Some("%4"));
        assert_eq!(query_param(q, "missing"), None);
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

    #[test]
    fn heartbeat_pings_then_times_out() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_millis(300), Duration::from_millis(200), t0);
        assert_eq!(hb.deadline(), t0 + Duration::from_millis(300));
        assert!(matches!(hb.on_deadline(hb.deadline()), Beat::SendPing));
        assert_eq!(hb.deadline(), t0 + Duration::from_millis(500));
        hb.on_pong(t0 + Duration::from_millis(350));
        assert_eq!(hb.deadline(), t0 + Duration::from_millis(650));
        assert!(matches!(hb.on_deadline(hb.deadline()), Beat::SendPing));
        assert!(matches!(hb.on_deadline(hb.deadline()), Beat::TimedOut));
    }
}

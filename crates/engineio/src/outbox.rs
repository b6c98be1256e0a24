//! A connection's bounded outbox and its direct writes, shared by every transport that
//! writes a stream of frames to one client: Engine.IO sessions, and the server's `/ws`
//! and SSE connections.
//!
//! Owns: the queued frames, the slow-client policy (a volatile frame meets a full outbox
//! and is dropped; anything else closes the outbox as a slow client), the close reason,
//! and the direct-write state (the connection's [`Wire`], its flush queue, whether it is
//! on that queue). Never: what the frames mean, or the connection's lifecycle (its task
//! reads, pings, and finishes the close).
//!
//! Two ways out:
//! - **direct** (after [`Outbox::attach_direct`]): a push puts the outbox on a flush queue
//!   once; a flusher (or the pusher itself when the flushers are behind, or the
//!   connection's task after reading a client frame) writes everything queued with one
//!   non-blocking write, encoded as the [`Encoding`] says. No connection task is woken
//!   unless its socket is full (see `crate::wire`).
//! - **by the task**: otherwise every push wakes [`Outbox::wake`] and the connection's
//!   task takes the frames ([`Outbox::take`]).
//!
//! Lock order: wire, then outbox, then flush queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::frame::Frame;
use crate::kind::CloseReason;
pub use crate::wire::{FlushQueue, Flushable, Wire, WireIo, direct_io};
use crate::wire::{Wrote, encode_chunk, encode_frame, with_buf};

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

/// Where an outbox counts what leaves it (the engine's stats, a transport's metrics).
pub trait OutboxCounters: Send + Sync {
    /// `frames` left the outbox; the oldest had waited `waited`.
    fn taken(&self, frames: usize, waited: Duration);
    /// A volatile frame met a full outbox and was dropped.
    fn dropped(&self);
}

/// The [`Wire`] of the connection a request came on, put into its extensions by a server
/// that serves connections through [`WireIo`]: a response can then write to it directly.
#[derive(Clone)]
pub struct ConnectionWire(pub Arc<Wire>);

/// How queued frames are framed on the socket by a direct write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One unmasked server WebSocket frame per queued frame (RFC 6455 §5.2).
    WebSocket,
    /// The same with permessage-deflate negotiated (RFC 7692): frames of at least
    /// `threshold` bytes go compressed, a broadcast's compressed once for everyone.
    WebSocketDeflate {
        /// The smallest payload compressed, in bytes.
        threshold: usize,
    },
    /// The bytes of every queued frame, in one HTTP/1.1 chunk (RFC 9112 §7.1): the body of
    /// a streaming response whose head the HTTP server has already written.
    Chunked,
}

impl Encoding {
    /// A WebSocket's encoding after its handshake: permessage-deflate from `threshold`
    /// bytes when compression is on (`Some`) and the request offers it in a form we
    /// honour (`crate::deflate`); then [`crate::deflate::RESPONSE`] is the answer.
    pub fn negotiate(headers: &http::HeaderMap, threshold: Option<usize>) -> Encoding {
        match threshold.filter(|_| crate::deflate::accepts(headers)) {
            Some(threshold) => Encoding::WebSocketDeflate { threshold },
            None => Encoding::WebSocket,
        }
    }

    /// Whether messages may go compressed (permessage-deflate was negotiated).
    pub fn compresses(self) -> bool {
        matches!(self, Encoding::WebSocketDeflate { .. })
    }
}

/// What [`Outbox::write_direct`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectWrite {
    /// Everything queued is on the socket (or nothing was queued).
    Done,
    /// The socket is backed up: the connection's task must drain it (it has been woken).
    Blocked,
    /// Not writing directly (no wire, or closed and not the final flush).
    Off,
}

struct Direct {
    wire: Arc<Wire>,
    queue: Arc<FlushQueue>,
    me: Weak<dyn Flushable>,
    encoding: Encoding,
}

struct State {
    frames: VecDeque<Frame>,
    /// When the oldest frame now queued was queued (for the delivery histogram).
    queued_since: Option<Instant>,
    closed: Option<CloseReason>,
    /// Set while frames go straight to the connection's socket.
    direct: Option<Direct>,
    /// On the flush queue: further pushes add frames without queueing it again. Cleared
    /// when a writer takes the frames.
    scheduled: bool,
}

/// A bounded outbox (see the module docs).
pub struct Outbox<C: ?Sized + OutboxCounters> {
    max: usize,
    st: Mutex<State>,
    /// Wakes the connection's task: frames to take (not direct), a full socket to drain
    /// (direct), or the close.
    pub wake: Notify,
    counters: Arc<C>,
}

impl<C: ?Sized + OutboxCounters> Outbox<C> {
    /// An empty outbox holding at most `max` frames.
    pub fn new(max: usize, counters: Arc<C>) -> Self {
        Outbox {
            max,
            st: Mutex::new(State {
                frames: VecDeque::new(),
                queued_since: None,
                closed: None,
                direct: None,
                scheduled: false,
            }),
            wake: Notify::new(),
            counters,
        }
    }

    /// Where this outbox counts.
    pub fn counters(&self) -> &Arc<C> {
        &self.counters
    }

    /// Queues a frame. A full outbox drops a volatile frame, and closes as a slow client
    /// for anything else.
    pub fn push(&self, frame: Frame, volatile: bool) -> Push {
        self.push_all(std::iter::once(frame), volatile)
    }

    /// Queues frames that must stay together (a packet and its binary attachments).
    pub fn push_all(&self, frames: impl IntoIterator<Item = Frame>, volatile: bool) -> Push {
        let mut st = self.st.lock();
        if st.closed.is_some() {
            return Push::Closed;
        }
        let before = st.frames.len();
        st.frames.extend(frames);
        let len = st.frames.len();
        // A group larger than the bound is still accepted by an empty outbox.
        if len > self.max && (before > 0 || len - before == 1) {
            st.frames.truncate(before);
            if volatile {
                drop(st);
                self.counters.dropped();
                return Push::Dropped;
            }
            drop(st);
            self.close(CloseReason::SlowClient);
            return Push::Closed;
        }
        st.queued_since.get_or_insert_with(Instant::now);
        if st.direct.is_none() {
            drop(st);
            self.wake.notify_one();
            return Push::Queued;
        }
        if len >= self.max / 2 {
            // The flushers are behind (a busy runtime): the pusher writes this one itself
            // rather than let a client that reads fine hit the slow-client bound.
            drop(st);
            with_buf(|buf| self.write_direct(buf, false));
            return Push::Queued;
        }
        if !st.scheduled {
            st.scheduled = true;
            if let Some(d) = &st.direct
                && let Some(me) = d.me.upgrade()
            {
                d.queue.push(me);
            }
        }
        Push::Queued
    }

    /// Writes what is queued now, on the caller's thread, when writing directly (e.g. an
    /// answer, so it does not wait behind broadcasts on the flush queue). Otherwise the
    /// connection's task was already woken: nothing to do.
    pub fn flush(&self) {
        let queued = {
            let st = self.st.lock();
            st.direct.is_some() && !st.frames.is_empty()
        };
        if queued {
            with_buf(|buf| self.write_direct(buf, false));
        }
    }

    /// Closes the outbox: pushes are refused from now on. True if this call closed it
    /// (the first reason wins); the connection's task is woken.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut st = self.st.lock();
        if st.closed.is_some() {
            return false;
        }
        st.closed = Some(reason);
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Why the outbox closed, if it did.
    pub fn closed_reason(&self) -> Option<CloseReason> {
        self.st.lock().closed
    }

    /// Whether frames are queued.
    pub fn is_empty(&self) -> bool {
        self.st.lock().frames.is_empty()
    }

    /// Takes everything queued, leaving an empty outbox that owns no memory.
    pub fn take(&self) -> VecDeque<Frame> {
        let mut st = self.st.lock();
        self.taken(&mut st)
    }

    fn taken(&self, st: &mut State) -> VecDeque<Frame> {
        let frames = std::mem::take(&mut st.frames);
        if let Some(since) = st.queued_since.take() {
            self.counters.taken(frames.len(), since.elapsed());
        }
        frames
    }

    /// Starts writing this outbox's frames straight to `wire` (crate `wire`): `me` is the
    /// connection a flusher serves, `queue` the flusher's queue.
    pub fn attach_direct(
        &self,
        wire: Arc<Wire>,
        queue: Arc<FlushQueue>,
        me: Weak<dyn Flushable>,
        encoding: Encoding,
    ) {
        let mut st = self.st.lock();
        st.direct = Some(Direct {
            wire,
            queue,
            me,
            encoding,
        });
        st.scheduled = false;
        drop(st);
        // Whatever was queued before goes out through the new path.
        self.wake.notify_one();
    }

    /// Stops direct writes and lets go of the socket (the connection is finishing).
    pub fn detach_direct(&self) {
        let direct = self.st.lock().direct.take();
        drop(direct);
    }

    /// The wire of a direct outbox.
    pub fn wire(&self) -> Option<Arc<Wire>> {
        self.st.lock().direct.as_ref().map(|d| d.wire.clone())
    }

    /// Writes everything queued to the socket with one write. `closing`: the final flush
    /// before the goodbye, which still sends what a closed outbox has queued.
    pub fn write_direct(&self, buf: &mut Vec<u8>, closing: bool) -> DirectWrite {
        let Some((wire, encoding)) = self
            .st
            .lock()
            .direct
            .as_ref()
            .map(|d| (d.wire.clone(), d.encoding))
        else {
            self.st.lock().scheduled = false;
            return DirectWrite::Off;
        };
        // Held across taking the frames and writing them: no writer can come between.
        let mut w = wire.lock();
        let mut st = self.st.lock();
        st.scheduled = false;
        if st.closed.is_some() && !closing {
            drop(st);
            drop(w);
            self.wake.notify_one();
            return DirectWrite::Off;
        }
        if w.is_blocked() {
            // The connection's task drains the socket and then writes the outbox.
            // Meanwhile every push comes back here through the flush queue (`scheduled`
            // is false), and queued frames join the unsent bytes up to the write-buffer
            // bound; past it they stay queued (and count against the slow-client bound).
            if !st.frames.is_empty() && w.unsent_mut().len() < wire.max_unsent() {
                let frames = self.taken(&mut st);
                encode(w.unsent_mut(), encoding, &frames);
            }
            drop(st);
            drop(w);
            self.wake.notify_one();
            return DirectWrite::Blocked;
        }
        if st.frames.is_empty() {
            return DirectWrite::Done;
        }
        let frames = self.taken(&mut st);
        drop(st);
        buf.clear();
        encode(buf, encoding, &frames);
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

    /// The connection task's share of direct writes: what the socket did not take, then
    /// whatever is queued, until both are out (or the socket fails).
    pub async fn flush_direct(&self, wire: &Wire, closing: bool) -> std::io::Result<()> {
        loop {
            wire.drain().await?;
            match with_buf(|buf| self.write_direct(buf, closing)) {
                DirectWrite::Blocked => continue,
                DirectWrite::Done | DirectWrite::Off => return Ok(()),
            }
        }
    }
}

fn encode(out: &mut Vec<u8>, encoding: Encoding, frames: &VecDeque<Frame>) {
    match encoding {
        Encoding::WebSocket => {
            for f in frames {
                encode_frame(out, f, None);
            }
        }
        Encoding::WebSocketDeflate { threshold } => {
            for f in frames {
                encode_frame(out, f, Some(threshold));
            }
        }
        Encoding::Chunked => encode_chunk(out, frames),
    }
}

/// The flushers of direct writes, started with the first connection that needs one; one
/// set serves every transport of a server, so a broadcast to clients of several
/// transports is written in one pass.
pub struct Flushers {
    n: usize,
    queues: OnceLock<Box<[Arc<FlushQueue>]>>,
    next: AtomicUsize,
}

impl Flushers {
    /// `n` flusher tasks; 0 turns direct writes off (each connection's task then writes).
    pub fn new(n: usize) -> Flushers {
        Flushers {
            n,
            queues: OnceLock::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// Whether direct writes are on.
    pub fn enabled(&self) -> bool {
        self.n > 0
    }

    /// A flush queue for a new direct connection (round robin over the flushers).
    pub fn queue(&self) -> Arc<FlushQueue> {
        let queues = self.queues.get_or_init(|| {
            (0..self.n.max(1))
                .map(|_| {
                    let q = Arc::new(FlushQueue::new());
                    tokio::spawn(q.clone().run());
                    q
                })
                .collect()
        });
        let i = self.next.fetch_add(1, Ordering::Relaxed) % queues.len();
        queues[i].clone()
    }
}

impl Drop for Flushers {
    fn drop(&mut self) {
        for q in self.queues.get().into_iter().flatten() {
            q.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[derive(Default)]
    struct Count {
        taken: AtomicU64,
        dropped: AtomicU64,
    }

    impl OutboxCounters for Count {
        fn taken(&self, frames: usize, _: Duration) {
            self.taken.fetch_add(frames as u64, Ordering::Relaxed);
        }
        fn dropped(&self) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn full_outbox_drops_volatile_then_closes_as_slow() {
        let count = Arc::new(Count::default());
        let out = Outbox::new(2, count.clone());
        assert_eq!(out.push(Frame::message("a"), false), Push::Queued);
        assert_eq!(out.push(Frame::message("b"), false), Push::Queued);
        assert_eq!(out.push(Frame::message("c"), true), Push::Dropped);
        assert_eq!(count.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(out.closed_reason(), None);
        assert_eq!(out.push(Frame::message("d"), false), Push::Closed);
        assert_eq!(out.closed_reason(), Some(CloseReason::SlowClient));
        assert_eq!(out.push(Frame::message("e"), false), Push::Closed);
        assert_eq!(out.take().len(), 2);
        assert_eq!(count.taken.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_group_stays_whole_and_an_empty_outbox_takes_any_group() {
        let out = Outbox::new(2, Arc::new(Count::default()));
        let three = || (0..3).map(|i| Frame::message(&i.to_string()));
        assert_eq!(out.push_all(three(), false), Push::Queued);
        assert_eq!(out.push_all(three(), true), Push::Dropped);
        assert_eq!(out.take().len(), 3);
        assert!(out.close(CloseReason::ServerShutdown));
        assert!(!out.close(CloseReason::SlowClient));
        assert_eq!(out.closed_reason(), Some(CloseReason::ServerShutdown));
    }
}

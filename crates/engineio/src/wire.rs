//! Direct WebSocket writes: the write side of a WebSocket session's TCP stream, shared by
//! the session's own task and the engine's flushers.
//!
//! Why: a broadcast to N sessions used to wake N connection tasks, each writing its own
//! frame (one scheduler round trip and one `sendto` per delivery, and an operation that
//! arrives meanwhile waits behind all N tasks in the run queue). Now a push only queues
//! the frame and puts the session on a [`FlushQueue`] (once, however many frames arrive
//! before it is served); a flusher task takes each queued session in turn and writes
//! everything in its outbox with one non-blocking write. Under load a session waits in
//! the queue while more frames arrive for it, so writes carry several frames; when idle,
//! the flusher runs right after the publisher and nothing waits.
//!
//! Invariants:
//! - Every byte to the socket goes through [`Wire`] under its lock, and a writer takes
//!   the outbox while holding it: frames leave in the order they were queued, and
//!   tungstenite's own writes (pong replies, the close frame) never split a frame.
//! - A write the socket does not take whole leaves the rest in `unsent`; from then on
//!   only the session's task writes to the socket (it waits for writability). Queued
//!   frames move on into `unsent` up to `ws_max_write_buffer` bytes (a slowly reading
//!   client's write buffer); beyond that they stay in the outbox, where the slow-client
//!   bound applies.
//! - Lock order: flush queue, then nothing; wire, then session state; session state, then
//!   flush queue.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::frame::Frame;

/// The write side of one WebSocket connection.
pub(crate) struct Wire {
    tcp: Arc<TcpStream>,
    st: Mutex<WireState>,
    /// Bytes a blocked socket may have waiting before frames stay in the outbox (where the
    /// slow-client bound applies): the write buffer of a client that reads slowly.
    max_unsent: usize,
}

#[derive(Default)]
pub(crate) struct WireState {
    /// Bytes accepted but not yet taken by the socket.
    unsent: Vec<u8>,
    /// A write failed: the connection is gone.
    failed: bool,
}

impl WireState {
    pub(crate) fn is_blocked(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// The bytes waiting for a blocked socket; frames appended here go out after them.
    pub(crate) fn unsent_mut(&mut self) -> &mut Vec<u8> {
        &mut self.unsent
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrote {
    All,
    /// The socket took part (or nothing); the rest waits in `unsent` for the session's task.
    Blocked,
}

impl Wire {
    pub(crate) fn new(tcp: Arc<TcpStream>, max_unsent: usize) -> Wire {
        Wire {
            tcp,
            st: Mutex::new(WireState::default()),
            max_unsent,
        }
    }

    pub(crate) fn max_unsent(&self) -> usize {
        self.max_unsent
    }

    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, WireState> {
        self.st.lock()
    }

    /// Writes `bytes` now (after anything unsent), keeping what the socket does not take.
    pub(crate) fn write_locked(&self, st: &mut WireState, bytes: &[u8]) -> io::Result<Wrote> {
        if st.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if st.is_blocked() {
            st.unsent.extend_from_slice(bytes);
            return Ok(Wrote::Blocked);
        }
        let mut done = 0;
        while done < bytes.len() {
            match self.tcp.try_write(&bytes[done..]) {
                Ok(0) => {
                    st.failed = true;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    st.unsent.extend_from_slice(&bytes[done..]);
                    return Ok(Wrote::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    st.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(Wrote::All)
    }

    /// Writes what is unsent, waiting for the socket as needed (the session's task only).
    pub(crate) fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            {
                let mut st = self.st.lock();
                if st.failed {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                if st.unsent.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match self.tcp.try_write(&st.unsent) {
                    Ok(0) => {
                        st.failed = true;
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Ok(n) => {
                        st.unsent.drain(..n);
                        if st.unsent.is_empty() {
                            // A slow client's backlog can be large; do not keep its memory.
                            st.unsent = Vec::new();
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        st.failed = true;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }

    pub(crate) async fn drain(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }
}

/// Runs `f` with this thread's encode buffer (one per thread, not one per connection).
pub(crate) fn with_buf<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            let out = f(&mut buf);
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
            out
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Appends one unmasked server-to-client WebSocket frame (RFC 6455 §5.2) for `frame`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, frame: &Frame) {
    let (opcode, payload): (u8, &[u8]) = match frame {
        Frame::Text(t) => (0x1, t.as_bytes()),
        Frame::Binary(b) => (0x2, b),
        // The close handshake belongs to the session's task.
        Frame::Close => return,
    };
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// The stream tungstenite reads from: the connection's TCP stream (after any bytes hyper
/// read past the upgrade request), with writes going through the [`Wire`].
pub(crate) struct WireIo {
    wire: Arc<Wire>,
    prefix: Bytes,
}

impl WireIo {
    pub(crate) fn new(wire: Arc<Wire>, prefix: Bytes) -> WireIo {
        // `prefix` is a slice of hyper's read buffer (8 KB or more): even empty, it would
        // keep that whole buffer alive for the life of the connection.
        let prefix = if prefix.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&prefix)
        };
        WireIo { wire, prefix }
    }
}

impl AsyncRead for WireIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        let tcp = &self.wire.tcp;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            // `try_read` clears the readiness when the socket has nothing: the next
            // `poll_read_ready` then registers for the next bytes.
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for WireIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.wire.lock();
        Poll::Ready(self.wire.write_locked(&mut st, buf).map(|_| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wire.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the last handle goes; the session detaches its wire
        // when it finishes.
        self.wire.poll_drain(cx)
    }
}

/// A session a flusher can serve.
pub(crate) trait Flushable: Send + Sync {
    /// Writes everything queued for this session (see [`crate::Session`]).
    fn flush_queued(&self, buf: &mut Vec<u8>);
}

/// Sessions with frames to write, served in arrival order by one flusher task.
pub(crate) struct FlushQueue {
    queue: Mutex<VecDeque<Arc<dyn Flushable>>>,
    notify: Notify,
    stopped: AtomicBool,
}

/// Sessions a flusher serves before it lets other tasks of its worker run.
const BATCH: usize = 128;

impl FlushQueue {
    pub(crate) fn new() -> FlushQueue {
        FlushQueue {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            stopped: AtomicBool::new(false),
        }
    }

    pub(crate) fn push(&self, session: Arc<dyn Flushable>) {
        let was_empty = {
            let mut q = self.queue.lock();
            q.push_back(session);
            q.len() == 1
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// The flusher: until stopped, serves queued sessions in order.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut batch: Vec<Arc<dyn Flushable>> = Vec::with_capacity(BATCH);
        loop {
            {
                let mut q = self.queue.lock();
                let n = q.len().min(BATCH);
                batch.extend(q.drain(..n));
            }
            if batch.is_empty() {
                if self.stopped.load(Ordering::SeqCst) {
                    return;
                }
                self.notify.notified().await;
                continue;
            }
            for s in batch.drain(..) {
                with_buf(|buf| s.flush_queued(buf));
            }
            // Let the worker's other tasks (reads, the next operation) run between batches.
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    #[test]
    fn frame_lengths_use_the_three_encodings() {
        let mut out = Vec::new();
        encode_frame(&mut out, &Frame::Text(Utf8Bytes::from_static("42")));
        assert_eq!(out, [0x81, 2, b'4', b'2']);

        out.clear();
        let mid = "x".repeat(300);
        encode_frame(&mut out, &Frame::Text(Utf8Bytes::from(mid.clone())));
        assert_eq!(&out[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(out.len(), 4 + 300);

        out.clear();
        let big = vec![7u8; 70_000];
        encode_frame(&mut out, &Frame::Binary(Bytes::from(big)));
        assert_eq!(&out[..2], &[0x82, 127]);
        assert_eq!(&out[2..10], &70_000u64.to_be_bytes());
        assert_eq!(out.len(), 10 + 70_000);

        out.clear();
        encode_frame(&mut out, &Frame::Close);
        assert!(out.is_empty());
    }
}

//! Direct writes: the write side of a connection's TCP stream, shared by the connection's
//! own task and the flushers (an Engine.IO WebSocket session, a `/ws` connection, an SSE
//! stream; their outboxes are `crate::outbox`).
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
//! Everything else the connection writes (tungstenite's pongs and close frame, hyper's
//! response head and last chunk) goes through [`WireIo`], so through the same lock.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::frame::Frame;

/// The write side of one connection.
pub struct Wire {
    /// Owned here, not in an `Arc` of its own: the reading side (`WireIo`) reaches it
    /// through the same `Arc<Wire>`, so each connection has one allocation for both.
    tcp: TcpStream,
    st: Mutex<WireState>,
    /// Bytes a blocked socket may have waiting before frames stay in the outbox (where the
    /// slow-client bound applies): the write buffer of a client that reads slowly.
    max_unsent: AtomicUsize,
}

/// What a [`Wire`] keeps under its lock.
#[derive(Default)]
pub struct WireState {
    /// Bytes accepted but not yet taken by the socket.
    unsent: Vec<u8>,
    /// A write failed: the connection is gone.
    failed: bool,
    /// Flushes through [`WireIo`]: the HTTP server flushes only once all it buffered is
    /// written, so a flush means everything it wrote before is in the wire.
    flushes: u64,
    /// Woken by the next such flush ([`Wire::poll_flushed_after`]).
    flush_waker: Option<Waker>,
}

impl WireState {
    /// Whether bytes wait for the socket (only the connection's task writes then).
    pub fn is_blocked(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// The bytes waiting for a blocked socket; frames appended here go out after them.
    pub(crate) fn unsent_mut(&mut self) -> &mut Vec<u8> {
        &mut self.unsent
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// The socket took everything.
    All,
    /// The socket took part (or nothing); the rest waits in `unsent` for the session's task.
    Blocked,
}

impl Wire {
    /// The write side of `tcp`; up to `max_unsent` bytes may wait for a blocked socket.
    pub fn new(tcp: TcpStream, max_unsent: usize) -> Wire {
        Wire {
            tcp,
            st: Mutex::new(WireState::default()),
            max_unsent: AtomicUsize::new(max_unsent),
        }
    }

    pub(crate) fn max_unsent(&self) -> usize {
        self.max_unsent.load(Ordering::Relaxed)
    }

    /// Changes the write-buffer bound (a connection the server wrapped at accept, taken
    /// over by a transport with its own bound).
    pub fn set_max_unsent(&self, max_unsent: usize) {
        self.max_unsent.store(max_unsent, Ordering::Relaxed);
    }

    /// How many times the writer through [`WireIo`] has flushed.
    pub fn flushes(&self) -> u64 {
        self.st.lock().flushes
    }

    /// Ready once the writer through [`WireIo`] has flushed since [`Wire::flushes`] was
    /// `seen`: whatever it wrote before (an HTTP response head, the first chunks) is then
    /// in the wire, so direct writes come after it.
    pub fn poll_flushed_after(&self, seen: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.st.lock();
        if st.flushes > seen {
            return Poll::Ready(());
        }
        st.flush_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The wire's state, locked: hold it to write several things in a row.
    pub fn lock(&self) -> parking_lot::MutexGuard<'_, WireState> {
        self.st.lock()
    }

    /// Whether bytes wait for the socket.
    pub fn is_blocked(&self) -> bool {
        self.st.lock().is_blocked()
    }

    /// Writes `bytes` now without waiting (after anything unsent, which keeps the rest);
    /// `Blocked` means the connection's task must drain.
    pub fn write_now(&self, bytes: &[u8]) -> io::Result<Wrote> {
        let mut st = self.st.lock();
        self.write_locked(&mut st, bytes)
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

    /// Writes what is unsent, waiting for the socket as needed (the connection's task only).
    pub fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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

    /// [`Wire::poll_drain`] as a future.
    pub async fn drain(&self) -> io::Result<()> {
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

/// Appends the bytes of every frame as one HTTP/1.1 chunk (`<hex length>\r\n...\r\n`);
/// nothing for no bytes (an empty chunk would end the body).
pub(crate) fn encode_chunk<'a, I>(out: &mut Vec<u8>, frames: I)
where
    I: IntoIterator<Item = &'a Frame>,
    I::IntoIter: Clone,
{
    let frames = frames.into_iter();
    let bytes = |f: &'a Frame| -> &'a [u8] { f.payload().map_or(&[], |(_, p)| p) };
    let n: usize = frames.clone().map(|f| bytes(f).len()).sum();
    if n == 0 {
        return;
    }
    use std::io::Write as _;
    let _ = write!(out, "{n:x}\r\n");
    for f in frames {
        out.extend_from_slice(bytes(f));
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one unmasked server-to-client WebSocket frame (RFC 6455 §5.2) for `frame`;
/// with `deflate_from`, a payload of at least that many bytes goes compressed (RFC 7692:
/// RSV1 set) when that is smaller, a shared frame's compressed once for all recipients.
pub(crate) fn encode_frame(out: &mut Vec<u8>, frame: &Frame, deflate_from: Option<usize>) {
    // The close handshake belongs to the session's task.
    let Some((opcode, payload)) = frame.payload() else {
        return;
    };
    let deflated = deflate_from
        .filter(|&min| payload.len() >= min)
        .and_then(|_| frame.deflated());
    match &deflated {
        Some(d) => put_frame(out, 0xc0 | opcode, d),
        None => put_frame(out, 0x80 | opcode, payload),
    }
}

/// Appends a frame with first byte `b0` (FIN, RSV1, opcode) and `payload`, unmasked.
fn put_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8]) {
    out.push(b0);
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
pub struct WireIo {
    wire: Arc<Wire>,
    prefix: Bytes,
}

impl WireIo {
    /// Reads from the wire's stream (after `prefix`, bytes read past a request), writes
    /// through the wire.
    pub fn new(wire: Arc<Wire>, prefix: Bytes) -> WireIo {
        // `prefix` is a slice of hyper's read buffer (8 KB or more): even empty, it would
        // keep that whole buffer alive for the life of the connection.
        let prefix = if prefix.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&prefix)
        };
        WireIo { wire, prefix }
    }

    /// The wire this stream writes through.
    pub fn wire(&self) -> &Arc<Wire> {
        &self.wire
    }
}

/// The TCP stream under an upgraded HTTP connection, for direct writes: the stream itself
/// (a server that serves hyper plain `TcpStream`s) or the wire the server already wrapped
/// it in (`WireIo`), with `max_unsent` as its write-buffer bound. A TLS stream, or
/// anything else, comes back as it was.
pub fn direct_io(
    io: hyper::upgrade::Upgraded,
    max_unsent: usize,
) -> Result<(Arc<Wire>, WireIo), hyper::upgrade::Upgraded> {
    use hyper_util::rt::TokioIo;
    let io = match io.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let wire = Arc::new(Wire::new(parts.io.into_inner(), max_unsent));
            return Ok((wire.clone(), WireIo::new(wire, parts.read_buf)));
        }
        Err(io) => io,
    };
    let parts = io.downcast::<TokioIo<WireIo>>()?;
    let old = parts.io.into_inner();
    old.wire.set_max_unsent(max_unsent);
    let prefix = if old.prefix.is_empty() {
        parts.read_buf
    } else {
        let mut joined = Vec::with_capacity(old.prefix.len() + parts.read_buf.len());
        joined.extend_from_slice(&old.prefix);
        joined.extend_from_slice(&parts.read_buf);
        Bytes::from(joined)
    };
    let wire = old.wire;
    Ok((wire.clone(), WireIo::new(wire, prefix)))
}

/// Reads what the socket has into `buf` through this thread's scratch buffer, never
/// through `buf`'s uninitialized space: safe code would have to zero that first, a memset
/// of all of hyper's read buffer (8 KB or more) on every read of an HTTP connection, for
/// the few hundred bytes a request usually is.
///
/// A read that returns less than it asked for has drained the socket, so it clears the
/// socket's read readiness as tokio's own `TcpStream::poll_read` does: the next read then
/// waits for the next bytes instead of first making a `recvfrom` that can only answer
/// `EAGAIN` (one wasted system call per request of a client that sends one frame at a
/// time). Bytes that arrive after the read raise a new readiness event, which the clear
/// does not touch (tokio compares the event's tick).
fn read_into(tcp: &TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Box<[u8]>> =
            std::cell::RefCell::new(vec![0; 16 * 1024].into_boxed_slice());
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            let n = buf.remaining().min(scratch.len());
            let got = read_draining(tcp, &mut scratch[..n])?;
            buf.put_slice(&scratch[..got]);
            Ok(())
        }
        Err(_) => {
            let got = read_draining(tcp, buf.initialize_unfilled())?;
            buf.advance(got);
            Ok(())
        }
    })
}

/// `try_read` into `dst`; a short read (the socket drained) also clears the read
/// readiness. `WouldBlock` only when nothing was read.
fn read_draining(tcp: &TcpStream, dst: &mut [u8]) -> io::Result<usize> {
    let wanted = dst.len();
    let mut got = None;
    let outcome = tcp.try_io(tokio::io::Interest::READABLE, || {
        let n = tcp.try_read(dst)?;
        got = Some(n);
        if n > 0 && n < wanted {
            // Drained: `try_io` clears the readiness on `WouldBlock`; the bytes are kept.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match (outcome, got) {
        (Ok(()), Some(n)) => Ok(n),
        (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => Ok(n),
        (Err(e), _) => Err(e),
        (Ok(()), None) => Err(io::ErrorKind::WouldBlock.into()),
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
            match read_into(tcp, buf) {
                Ok(()) => return Poll::Ready(Ok(())),
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
        let waker = {
            let mut st = self.wire.lock();
            st.flushes += 1;
            st.flush_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        self.wire.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the last handle goes; the session detaches its wire
        // when it finishes.
        self.wire.poll_drain(cx)
    }
}

/// A connection a flusher can serve.
pub trait Flushable: Send + Sync {
    /// Writes everything queued for this connection (`Outbox::write_direct`).
    fn flush_queued(&self, buf: &mut Vec<u8>);
}

/// Connections with frames to write, served in arrival order by one flusher task.
pub struct FlushQueue {
    queue: Mutex<VecDeque<Arc<dyn Flushable>>>,
    notify: Notify,
    stopped: AtomicBool,
}

impl Default for FlushQueue {
    fn default() -> Self {
        FlushQueue::new()
    }
}

/// Sessions a flusher serves before it lets other tasks of its worker run.
const BATCH: usize = 128;

impl FlushQueue {
    /// An empty queue; its flusher is [`FlushQueue::run`].
    pub fn new() -> FlushQueue {
        FlushQueue {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Puts a connection on the queue (its outbox makes sure it is there once).
    pub fn push(&self, session: Arc<dyn Flushable>) {
        let was_empty = {
            let mut q = self.queue.lock();
            q.push_back(session);
            q.len() == 1
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Ends the flusher once the queue is empty.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// The flusher: until stopped, serves queued sessions in order.
    pub async fn run(self: Arc<Self>) {
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
        encode_frame(&mut out, &Frame::Text(Utf8Bytes::from_static("42")), None);
        assert_eq!(out, [0x81, 2, b'4', b'2']);

        out.clear();
        let mid = "x".repeat(300);
        encode_frame(&mut out, &Frame::Text(Utf8Bytes::from(mid.clone())), None);
        assert_eq!(&out[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(out.len(), 4 + 300);

        out.clear();
        let big = vec![7u8; 70_000];
        encode_frame(&mut out, &Frame::Binary(Bytes::from(big)), None);
        assert_eq!(&out[..2], &[0x82, 127]);
        assert_eq!(&out[2..10], &70_000u64.to_be_bytes());
        assert_eq!(out.len(), 10 + 70_000);

        out.clear();
        encode_frame(&mut out, &Frame::Close, None);
        assert!(out.is_empty());
    }

    #[test]
    fn chunks_carry_every_frame_and_never_end_the_body() {
        let mut out = Vec::new();
        let frames = [
            Frame::Binary(Bytes::from_static(b"data: 1\n\n")),
            Frame::Text(Utf8Bytes::from("y".repeat(20))),
        ];
        encode_chunk(&mut out, &frames);
        let mut expected = b"1d\r\ndata: 1\n\n".to_vec();
        expected.extend_from_slice(&[b'y'; 20]);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(out, expected);
        out.clear();
        encode_chunk(&mut out, &[Frame::Close]);
        assert!(out.is_empty(), "a zero-length chunk would end the response");
    }
}

//! permessage-deflate (RFC 7692) on the server's WebSockets: the negotiation, the
//! compression of outgoing messages, and [`Inflating`], which inflates the client's
//! compressed messages before tungstenite reads them.
//!
//! Owns: which offers we accept and what we answer, deflating one payload (no context:
//! every message stands alone), and the read-side frame scanner. Never: what the messages
//! mean, which frames are compressed (the outbox's encoder asks, by size), or the close
//! handshake (tungstenite's, through the connection's task).
//!
//! Why this shape:
//! - We always answer `server_no_context_takeover`: a message's compressed bytes then
//!   depend on the message alone, so a broadcast is compressed once and the same bytes go
//!   to every recipient (`Frame::Shared`), and no connection keeps a deflate window.
//! - We always answer `client_no_context_takeover` (RFC 7692 §7.1.1.2 lets a server ask
//!   for it unprompted; Node's `ws` and Chromium accept it): each client message inflates
//!   alone, so the inflate state (miniz_oxide's, about 40 KB with its 32 KB window) exists
//!   only while a compressed message is being read, never for an idle client.
//! - tungstenite 0.30 refuses frames with RSV1 set and has no extension hooks. Rather
//!   than replace its reader (close codes, UTF-8 checks, fragmentation, control frames,
//!   limits, all exercised by the official Engine.IO suite), [`Inflating`] sits between
//!   the socket and tungstenite: it passes uncompressed frames through unchanged and
//!   rewrites each compressed frame as the same frame with its payload inflated and
//!   RSV1 cleared. tungstenite then applies every rule of RFC 6455 as before.
//! - An inflated message longer than the connection's maximum is never built: past the
//!   limit the scanner hands tungstenite a frame header announcing one byte more than
//!   the maximum, which tungstenite refuses as too big (the connection closes with 1009).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::HeaderMap;
use http::header::SEC_WEBSOCKET_EXTENSIONS;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Our answer to an accepted offer (`Sec-WebSocket-Extensions`).
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The 4 bytes a sync flush ends with, left off on the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Whether the request offers permessage-deflate with parameters we can honour (any of
/// its offers: the first acceptable one is the one we answer with [`RESPONSE`]).
pub fn accepts(headers: &HeaderMap) -> bool {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(offer_ok)
}

/// One extension offer (`name; param; param=value`): permessage-deflate with known,
/// valid, unrepeated parameters. `server_max_window_bits` below 15 is declined: our
/// compressor always uses the 32 KB window, and a broadcast is compressed once for all.
fn offer_ok(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
    {
        return false;
    }
    let mut seen = [false; 4];
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let bits = |v: Option<&str>| {
            v.and_then(|v| {
                v.parse::<u8>()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter(|b| (8..=15).contains(b))
        };
        let (slot, ok) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            "server_max_window_bits" => (2, bits(value) == Some(15)),
            // A value is the window the client will use; none means it can take one.
            "client_max_window_bits" => (3, value.is_none() || bits(value).is_some()),
            _ => return false,
        };
        if !ok || seen[slot] {
            return false;
        }
        seen[slot] = true;
    }
    true
}

/// `payload` deflated as one message with no context (RFC 7692 §7.2.1: sync flush, the
/// trailing `00 00 ff ff` removed), or `None` when that is not smaller.
pub(crate) fn deflate(payload: &[u8]) -> Option<Bytes> {
    thread_local! {
        // One compressor per thread, reset per message: no connection keeps one.
        static COMPRESS: RefCell<Option<Compress>> = const { RefCell::new(None) };
    }
    COMPRESS.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let c = c.get_or_insert_with(|| Compress::new(Compression::default(), false));
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let done = c.total_in() as usize;
            c.compress_vec(&payload[done..], &mut out, FlushCompress::Sync)
                .ok()?;
            // Finished once every byte is in and the flush did not fill the buffer.
            if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() >= payload.len() + TAIL.len() {
                return None;
            }
            out.reserve(out.capacity().max(256));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        (out.len() < payload.len()).then(|| Bytes::from(out))
    })
}

/// A stream whose client frames are inflated before the WebSocket reader sees them (see
/// the module docs); writes pass through. Without negotiation it only forwards.
///
/// The scanner's state is allocated when a read begins and freed whenever it holds
/// nothing (between frames, no message half inflated): an idle connection that
/// negotiated compression costs 16 bytes here, like one that did not.
pub struct Inflating<S> {
    inner: S,
    /// The largest message inflated; 0 when compression was not negotiated.
    max: usize,
    st: Option<Box<Scanner>>,
}

impl<S> Inflating<S> {
    /// Inflates compressed client messages of at most `max_message` bytes (inflated) when
    /// `negotiated`; otherwise a plain pass-through.
    pub fn new(inner: S, negotiated: bool, max_message: usize) -> Inflating<S> {
        Inflating {
            inner,
            max: if negotiated { max_message.max(1) } else { 0 },
            st: None,
        }
    }

    /// The client's side (a load generator): the server's HTTP response head passes
    /// through first, then compressed server frames are inflated when `offered` (the
    /// server may still decline; then none come).
    pub fn client(inner: S, offered: bool, max_message: usize) -> Inflating<S> {
        let mut this = Inflating::new(inner, offered, max_message);
        if offered {
            let mut st = Box::new(Scanner::new(this.max));
            st.mode = Mode::Head(0);
            // A load generator reads many messages on few connections: it keeps its
            // state and reuses one inflater, so its own cost stays out of the numbers.
            st.reuse = true;
            this.st = Some(st);
        }
        this
    }

    /// Whether the scanner holds state now (a frame or message in progress).
    pub fn holds_state(&self) -> bool {
        self.st.is_some()
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.max == 0 {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let max = this.max;
        let st = this.st.get_or_insert_with(|| Box::new(Scanner::new(max)));
        let polled = loop {
            if st.take_out(buf) || st.dead {
                break Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 2048];
            let mut rb = ReadBuf::new(&mut raw);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => break Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    if let Err(e) = st.feed(rb.filled()) {
                        break Poll::Ready(Err(e));
                    }
                }
                other => break other,
            }
        };
        if st.is_empty() && !st.reuse {
            this.st = None;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where the scanner is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A client reading the server's HTTP response head: `\r\n\r\n` matched so far.
    Head(u8),
    /// Collecting a frame header.
    Header,
    /// Copying an uncompressed frame's payload as it is.
    Pass,
    /// Inflating a compressed frame's payload.
    Inflate,
}

/// The read side's state for one connection that negotiated compression.
struct Scanner {
    max: usize,
    mode: Mode,
    /// Dead after a refused message: nothing more is read.
    dead: bool,
    /// Kept between messages, with its inflater reset rather than dropped (a client's).
    reuse: bool,
    head: [u8; 14],
    head_len: u8,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    mask: [u8; 4],
    /// The current compressed frame was masked (a client's); its rewrite is too.
    masked: bool,
    /// Payload bytes of the current frame seen so far (for the mask's phase).
    seen: u64,
    /// The current compressed frame's first header byte (FIN and opcode).
    first: u8,
    /// Inside a compressed message (its continuations are compressed too).
    compressed: bool,
    /// Inflated bytes of the current message in frames already passed on.
    msg_len: usize,
    /// Inflate state of the current message only (no client context takeover).
    inflate: Option<Box<Decompress>>,
    /// The current message's deflate stream ended (a final block): the rest is ignored.
    ended: bool,
    /// The current compressed frame, inflated so far.
    frame: Vec<u8>,
    /// Bytes ready for the reader, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
}

impl Scanner {
    fn new(max: usize) -> Scanner {
        Scanner {
            max,
            mode: Mode::Header,
            dead: false,
            reuse: false,
            head: [0; 14],
            head_len: 0,
            remaining: 0,
            mask: [0; 4],
            masked: true,
            seen: 0,
            first: 0,
            compressed: false,
            msg_len: 0,
            inflate: None,
            ended: false,
            frame: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Nothing in progress and nothing to hand on: the state can go.
    fn is_empty(&self) -> bool {
        self.mode == Mode::Header
            && self.head_len == 0
            && !self.dead
            && !self.compressed
            && self.out_pos == self.out.len()
    }

    /// Moves ready bytes into `buf`; false if there were none.
    fn take_out(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let ready = &self.out[self.out_pos..];
        if ready.is_empty() || buf.remaining() == 0 {
            return false;
        }
        let n = ready.len().min(buf.remaining());
        buf.put_slice(&ready[..n]);
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out_pos = 0;
            // A large message's bytes are not kept for an idle connection.
            if self.out.capacity() > 4096 {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        }
        true
    }

    /// Scans bytes read from the socket.
    fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() && !self.dead {
            match self.mode {
                Mode::Head(mut matched) => {
                    let mut n = 0;
                    for &b in data {
                        n += 1;
                        matched = match (matched, b) {
                            (0 | 2, b'\r') => matched + 1,
                            (1 | 3, b'\n') => matched + 1,
                            (_, b'\r') => 1,
                            _ => 0,
                        };
                        if matched == 4 {
                            break;
                        }
                    }
                    self.out.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.mode = if matched == 4 {
                        Mode::Header
                    } else {
                        Mode::Head(matched)
                    };
                }
                Mode::Header => {
                    let take = (self.header_len() - self.head_len as usize).min(data.len());
                    let at = self.head_len as usize;
                    self.head[at..at + take].copy_from_slice(&data[..take]);
                    self.head_len += take as u8;
                    data = &data[take..];
                    if self.head_len as usize == self.header_len() {
                        self.start_frame()?;
                    }
                }
                Mode::Pass => {
                    let n = (self.remaining.min(data.len() as u64)) as usize;
                    self.out.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.mode = Mode::Header;
                    }
                }
                Mode::Inflate => {
                    let n = (self.remaining.min(data.len() as u64)) as usize;
                    let (chunk, rest) = data.split_at(n);
                    data = rest;
                    let mut plain = [0u8; 1024];
                    for part in chunk.chunks(plain.len()) {
                        for (i, b) in part.iter().enumerate() {
                            plain[i] = b ^ self.mask[((self.seen + i as u64) % 4) as usize];
                        }
                        self.seen += part.len() as u64;
                        self.inflate_more(&plain[..part.len()])?;
                        if self.dead {
                            return Ok(());
                        }
                    }
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.end_frame()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The full header length, as far as the bytes so far tell.
    fn header_len(&self) -> usize {
        if self.head_len < 2 {
            2
        } else {
            header_size(self.head[1])
        }
    }

    fn start_frame(&mut self) -> io::Result<()> {
        let head = &self.head[..self.head_len as usize];
        let (b0, b1) = (head[0], head[1]);
        let opcode = b0 & 0x0f;
        let rsv1 = b0 & 0x40 != 0;
        let masked = b1 & 0x80 != 0;
        let len = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            127 => u64::from_be_bytes(head[2..10].try_into().unwrap_or_default()),
            n => u64::from(n),
        };
        let control = opcode & 0x08 != 0;
        // A data frame starts a message (compressed if RSV1); a continuation carries on
        // the message's; a control frame is never compressed. Anything malformed (RSV1
        // on a continuation or control frame, an unmasked frame, a bad sequence) passes
        // through unchanged, for tungstenite to refuse. Unmasked compressed frames are a
        // server's (the scanner also serves a client: the load generator).
        let inflate = if control {
            false
        } else if opcode == 0 {
            self.compressed && !rsv1
        } else {
            self.compressed = rsv1;
            rsv1
        };
        self.head_len = 0;
        if !inflate {
            self.out.extend_from_slice(&self.head[..header_size(b1)]);
            self.remaining = len;
            self.mode = if len == 0 { Mode::Header } else { Mode::Pass };
            if !control && b0 & 0x80 != 0 {
                self.compressed = false;
            }
            return Ok(());
        }
        self.masked = masked;
        self.mask = [0; 4];
        if masked {
            let at = header_size(b1) - 4;
            self.mask.copy_from_slice(&self.head[at..at + 4]);
        }
        self.first = b0 & 0x8f;
        if opcode != 0 {
            // A message starts: its own inflate state, made now and dropped at its end.
            self.msg_len = 0;
            self.ended = false;
        }
        if len > self.max as u64 {
            self.refuse();
            return Ok(());
        }
        self.remaining = len;
        self.seen = 0;
        self.mode = Mode::Inflate;
        if len == 0 {
            self.end_frame()?;
        }
        Ok(())
    }

    /// Inflates `input` into the current frame, refusing the message past the maximum.
    fn inflate_more(&mut self, mut input: &[u8]) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        let d = self
            .inflate
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        loop {
            let used = self.msg_len + self.frame.len();
            if used > self.max {
                self.refuse();
                return Ok(());
            }
            if self.frame.len() == self.frame.capacity() {
                // Never more room than the limit needs: a bomb is refused before it grows.
                let room = (self.max + 1 - used).min(self.frame.capacity().max(1024));
                self.frame.reserve_exact(room);
            }
            let (in_before, out_before) = (d.total_in(), self.frame.len());
            let status = d
                .decompress_vec(input, &mut self.frame, FlushDecompress::None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let used_in = (d.total_in() - in_before) as usize;
            input = &input[used_in..];
            if self.msg_len + self.frame.len() > self.max {
                self.refuse();
                return Ok(());
            }
            if status == Status::StreamEnd {
                self.ended = true;
                return Ok(());
            }
            let progressed = used_in > 0 || self.frame.len() > out_before;
            if input.is_empty() && self.frame.len() < self.frame.capacity() {
                return Ok(());
            }
            if !progressed && self.frame.len() < self.frame.capacity() {
                return Ok(());
            }
        }
    }

    /// The current compressed frame is complete: pass it on inflated, RSV1 cleared.
    fn end_frame(&mut self) -> io::Result<()> {
        let fin = self.first & 0x80 != 0;
        if fin {
            self.inflate_more(&TAIL)?;
            if self.dead {
                return Ok(());
            }
        }
        let len = self.frame.len();
        self.put_header(len as u64);
        self.out.extend_from_slice(&self.frame);
        self.msg_len += len;
        self.frame.clear();
        if self.frame.capacity() > 4096 {
            self.frame = Vec::new();
        }
        if fin {
            self.compressed = false;
            self.msg_len = 0;
            match (&mut self.inflate, self.reuse) {
                (Some(d), true) => d.reset(false),
                _ => self.inflate = None,
            }
        }
        self.mode = Mode::Header;
        Ok(())
    }

    /// The message is too big: tungstenite is shown a frame one byte over its limit,
    /// refuses it before reading any payload (close 1009), and nothing more is read.
    fn refuse(&mut self) {
        self.put_header((self.max as u64).saturating_add(1));
        self.dead = true;
        self.inflate = None;
        self.frame = Vec::new();
    }
}

impl Scanner {
    /// The rewritten frame's header: RSV1 cleared, a client's frame masked with a zero
    /// key (tungstenite's server wants client frames masked, its client refuses masks).
    fn put_header(&mut self, len: u64) {
        let mask = if self.masked { 0x80 } else { 0 };
        self.out.push(self.first);
        if len < 126 {
            self.out.push(mask | len as u8);
        } else if let Ok(n) = u16::try_from(len) {
            self.out.push(mask | 126);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            self.out.push(mask | 127);
            self.out.extend_from_slice(&len.to_be_bytes());
        }
        if self.masked {
            self.out.extend_from_slice(&[0; 4]);
        }
    }
}

/// A frame header's size, from its second byte (length code and mask bit).
fn header_size(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

#[cfg(test)]
mod tests;

//! A client's connection as the server sees it: bytes counted as they arrive (what the
//! server put on the wire), and permessage-deflate frames inflated before tungstenite
//! reads them (the server's own `engineio::deflate::Inflating`, which also reads a
//! server's unmasked frames).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use engineio::deflate::Inflating;

/// What a client offers when it asks for compression: what Node's `ws` offers.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A stream that adds every byte read to a shared counter.
pub struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, read: Arc<AtomicU64>) -> Self {
        Self { inner, read }
    }
}

/// A measured client connection: counted on the wire, inflated above it.
pub type Conn = Inflating<Counted<TcpStream>>;

/// Wraps `tcp`: bytes read count into `read`; compressed frames are inflated (up to 1 MiB
/// a message) when `deflate` was offered.
pub fn conn(tcp: TcpStream, read: Arc<AtomicU64>, deflate: bool) -> Conn {
    Inflating::client(Counted::new(tcp, read), deflate, 1 << 20)
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        this.read.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
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

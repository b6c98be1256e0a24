//! One Socket.IO client on one namespace, over one WebSocket. It answers heartbeats
//! itself and hands every other packet for its namespace to the caller; it never spawns,
//! buffers or retries, so the caller (one task per client) owns all timing.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::packet::{self, Frame, PacketKind};
use super::target::Target;
use super::wire;

/// A namespace name and its packet prefix, built once and shared by all clients.
#[derive(Debug)]
pub struct Namespace {
    name: Box<str>,
    prefix: Box<str>,
}

impl Namespace {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            prefix: packet::nsp_prefix(name).into(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SioError {
    #[error("tcp connect: {0}")]
    Tcp(#[source] std::io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("namespace refused the connection: {0}")]
    ConnectRefused(String),
    #[error("server disconnected the namespace")]
    Disconnected,
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Malformed(#[from] packet::ParseError),
    #[error("expected the Engine.IO open packet, got {0:?}")]
    NoOpen(String),
}

impl SioError {
    /// A short stable label, for counting failures by cause.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::Ws(_) => "websocket",
            Self::ConnectRefused(_) => "connect_error",
            Self::Disconnected => "disconnected",
            Self::Closed => "closed",
            Self::Malformed(_) | Self::NoOpen(_) => "protocol",
        }
    }
}

/// A packet for the client's namespace other than a heartbeat; owns the frame text.
#[derive(Debug)]
pub struct Incoming {
    pub kind: PacketKind,
    pub id: Option<u64>,
    text: Utf8Bytes,
    data: Range<usize>,
}

impl Incoming {
    /// The JSON payload, e.g. `["event",1]` for an event or `["room1"]` for an ack.
    pub fn data(&self) -> &str {
        self.text
            .as_str()
            .get(self.data.clone())
            .unwrap_or_default()
    }
}

/// Small buffers: thousands of idle clients live in one process, and frames are tiny.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

pub struct Client<S = TcpStream> {
    ws: WebSocketStream<S>,
    nsp: Arc<Namespace>,
    next_ack: u64,
    /// Events that arrived while waiting for something else (see [`Client::wait_ack`]).
    pub skipped_events: u64,
    /// Heartbeats answered so far.
    pub pongs: u64,
    /// The data of the server's CONNECT answer (`{"sid":..,"pid":..}` with recovery).
    pub connect_data: String,
}

impl Client<TcpStream> {
    /// TCP connect, WebSocket upgrade, Engine.IO open, Socket.IO namespace connect.
    pub async fn connect(
        target: &Target,
        nsp: &Arc<Namespace>,
        auth: Option<&str>,
    ) -> Result<Self, SioError> {
        Self::connect_with_query(target, "", nsp, auth).await
    }

    /// [`Client::connect`] with extra handshake query parameters (`userId=u1&...`).
    pub async fn connect_with_query(
        target: &Target,
        query: &str,
        nsp: &Arc<Namespace>,
        auth: Option<&str>,
    ) -> Result<Self, SioError> {
        Self::connect_from(target, None, query, nsp, auth).await
    }

    /// [`Client::connect_with_query`] from the local address `source` (a loopback
    /// address such as `127.0.0.2`, see [`super::target::Sources`]); `None` lets the
    /// kernel choose.
    pub async fn connect_from(
        target: &Target,
        source: Option<IpAddr>,
        query: &str,
        nsp: &Arc<Namespace>,
        auth: Option<&str>,
    ) -> Result<Self, SioError> {
        let tcp = super::target::tcp_connect(target.addr, source)
            .await
            .map_err(SioError::Tcp)?;
        if query.is_empty() {
            Self::handshake(tcp, &target.ws_url, nsp, auth).await
        } else {
            let url = format!("{}&{query}", target.ws_url);
            Self::handshake(tcp, &url, nsp, auth).await
        }
    }
}

impl Client<wire::Conn> {
    /// [`Client::connect_with_query`] over a measured connection: bytes read count into
    /// `read`, and the client offers permessage-deflate when `deflate`.
    pub async fn connect_measured(
        target: &Target,
        query: &str,
        nsp: &Arc<Namespace>,
        auth: Option<&str>,
        measured: (bool, Arc<std::sync::atomic::AtomicU64>),
    ) -> Result<Self, SioError> {
        Self::connect_measured_from(target, None, query, nsp, auth, measured).await
    }

    /// [`Client::connect_measured`] from the local address `source` (see
    /// [`Client::connect_from`]).
    pub async fn connect_measured_from(
        target: &Target,
        source: Option<IpAddr>,
        query: &str,
        nsp: &Arc<Namespace>,
        auth: Option<&str>,
        (deflate, read): (bool, Arc<std::sync::atomic::AtomicU64>),
    ) -> Result<Self, SioError> {
        let tcp = super::target::tcp_connect(target.addr, source)
            .await
            .map_err(SioError::Tcp)?;
        let url = if query.is_empty() {
            target.ws_url.clone()
        } else {
            format!("{}&{query}", target.ws_url)
        };
        let offer = deflate.then_some(wire::DEFLATE_OFFER);
        Self::handshake_offering(wire::conn(tcp, read, deflate), &url, offer, nsp, auth).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// The protocol part of [`Client::connect`] over any byte stream.
    pub async fn handshake(
        stream: S,
        ws_url: &str,
        nsp: &Arc<Namespace>,
        auth: Option<&str>,
    ) -> Result<Self, SioError> {
        Self::handshake_offering(stream, ws_url, None, nsp, auth).await
    }

    /// [`Client::handshake`] with a `Sec-WebSocket-Extensions` offer (compression).
    pub async fn handshake_offering(
        stream: S,
        ws_url: &str,
        extensions: Option<&str>,
        nsp: &Arc<Namespace>,
        auth: Option<&str>,
    ) -> Result<Self, SioError> {
        use tungstenite::client::IntoClientRequest;
        let mut request = ws_url.into_client_request()?;
        if let Some(offer) = extensions {
            let offer = tungstenite::http::HeaderValue::from_str(offer)
                .map_err(|e| SioError::Ws(tungstenite::Error::HttpFormat(e.into())))?;
            request
                .headers_mut()
                .insert(tungstenite::http::header::SEC_WEBSOCKET_EXTENSIONS, offer);
        }
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
        let mut client = Self {
            ws,
            nsp: Arc::clone(nsp),
            next_ack: 1,
            skipped_events: 0,
            pongs: 0,
            connect_data: String::new(),
        };
        let open = client.next_text().await?;
        if !matches!(packet::parse_frame(&open), Ok(Frame::Open(_))) {
            return Err(SioError::NoOpen(open.as_str().chars().take(64).collect()));
        }
        let connect = packet::connect(&client.nsp.prefix, auth);
        client.send(connect).await?;
        loop {
            let p = client.recv_packet().await?;
            match p.kind {
                PacketKind::Connect => {
                    client.connect_data = p.data().to_owned();
                    return Ok(client);
                }
                PacketKind::ConnectError => return Err(SioError::ConnectRefused(p.data().into())),
                _ => {}
            }
        }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.nsp
    }

    /// Emits `event` with already-encoded JSON `args`, without an ack.
    pub async fn emit(&mut self, event: &str, args: &[&str]) -> Result<(), SioError> {
        let text = packet::event(&self.nsp.prefix, None, event, args);
        self.send(text).await
    }

    /// Emits `event` asking for an ack; returns the ack id to pass to [`Client::wait_ack`].
    pub async fn emit_with_ack(&mut self, event: &str, args: &[&str]) -> Result<u64, SioError> {
        let id = self.next_ack;
        self.next_ack += 1;
        let text = packet::event(&self.nsp.prefix, Some(id), event, args);
        self.send(text).await?;
        Ok(id)
    }

    /// Answers an event the server sent with ack id `id`.
    pub async fn ack(&mut self, id: u64, args: &[&str]) -> Result<(), SioError> {
        let text = packet::ack(&self.nsp.prefix, id, args);
        self.send(text).await
    }

    /// Reads until the ack for `id` arrives; events read meanwhile are only counted.
    pub async fn wait_ack(&mut self, id: u64) -> Result<Incoming, SioError> {
        loop {
            let p = self.recv_packet().await?;
            match p.kind {
                PacketKind::Ack | PacketKind::BinaryAck if p.id == Some(id) => return Ok(p),
                PacketKind::Event | PacketKind::BinaryEvent => self.skipped_events += 1,
                _ => {}
            }
        }
    }

    /// The next event or ack for this namespace. Heartbeats are answered on the way;
    /// a disconnect or close ends the client. Cancel-safe between frames.
    pub async fn recv_packet(&mut self) -> Result<Incoming, SioError> {
        loop {
            let text = self.next_text().await?;
            let parsed = match packet::parse_frame(&text)? {
                Frame::Ping(data) => {
                    let pong = packet::pong(data);
                    self.send(pong).await?;
                    self.pongs += 1;
                    continue;
                }
                Frame::Close => return Err(SioError::Closed),
                Frame::Open(_) | Frame::Noop => continue,
                Frame::Message(p) => p,
            };
            if parsed.nsp != &*self.nsp.name {
                continue;
            }
            if parsed.kind == PacketKind::Disconnect {
                return Err(SioError::Disconnected);
            }
            let start = parsed.data.as_ptr() as usize - text.as_str().as_ptr() as usize;
            return Ok(Incoming {
                kind: parsed.kind,
                id: parsed.id,
                data: start..start + parsed.data.len(),
                text,
            });
        }
    }

    /// Leaves the namespace on purpose (a Socket.IO DISCONNECT, as `socket.disconnect()`
    /// sends): the server ends the session for good, with no recovery.
    pub async fn disconnect(mut self) {
        let text = format!("41{}", self.nsp.prefix);
        let _ = self.send(text).await;
        let _ = self.ws.close(None).await;
    }

    /// Sends a WebSocket close and flushes it; the caller bounds how long that may take.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    async fn send(&mut self, text: String) -> Result<(), SioError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next text frame; binary frames (attachments) and control frames are skipped.
    async fn next_text(&mut self) -> Result<Utf8Bytes, SioError> {
        loop {
            match self.ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Err(SioError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(_)) => {}
            }
        }
    }
}

//! The members of the published-to room, one per transport, and the HTTP publisher.
//! Each is the smallest client that speaks its protocol over loopback: enough to join
//! and to read messages, no reconnection.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::realtime;
use crate::sio::wire::{self, Conn, DEFLATE_OFFER};
use crate::sio::{Client, Namespace, PacketKind, SioError, Target};

/// The event name every publish carries.
pub(super) const EVENT: &str = "bench-publish";

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Sio(#[from] SioError),
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(String),
    #[error("connection closed")]
    Closed,
}

impl MemberError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sio(e) => e.kind(),
            Self::Ws(_) => "websocket",
            Self::Io(_) => "io",
            Self::Http(_) => "http",
            Self::Closed => "closed",
        }
    }
}

/// The `seq` number in a published payload (`..."seq":12...`), without a JSON parse.
pub(super) fn seq_of(text: &str) -> Option<u64> {
    let at = text.find("\"seq\":")? + 6;
    let digits: &str = &text[at..];
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// One member of the room.
pub(super) enum Member {
    Sio(Client<Conn>),
    Ws(WebSocketStream<Conn>),
    Sse(Sse),
}

impl Member {
    pub(super) fn transport(&self) -> &'static str {
        match self {
            Self::Sio(_) => "socketio",
            Self::Ws(_) => "ws",
            Self::Sse(_) => "sse",
        }
    }

    /// The `seq` of the next published message (other messages are skipped).
    pub(super) async fn next_seq(&mut self) -> Result<u64, MemberError> {
        loop {
            match self {
                Self::Sio(c) => {
                    let p = c.recv_packet().await?;
                    if p.kind == PacketKind::Event
                        && p.data().starts_with("[\"bench-publish\"")
                        && let Some(seq) = seq_of(p.data())
                    {
                        return Ok(seq);
                    }
                }
                Self::Ws(ws) => match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Err(MemberError::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(t))) => {
                        if t.as_str().starts_with("{\"event\":\"bench-publish\"")
                            && let Some(seq) = seq_of(t.as_str())
                        {
                            return Ok(seq);
                        }
                    }
                    Some(Ok(_)) => {}
                },
                Self::Sse(s) => {
                    let (event, data) = s.next_event().await?;
                    if event == EVENT
                        && let Some(seq) = seq_of(&data)
                    {
                        return Ok(seq);
                    }
                }
            }
        }
    }

    pub(super) async fn close(self) {
        match self {
            Self::Sio(c) => c.close().await,
            Self::Ws(mut ws) => {
                let _ = ws.close(None).await;
            }
            Self::Sse(_) => {}
        }
    }
}

/// How a WebSocket member connects: whether it offers permessage-deflate, and where it
/// counts the bytes it reads.
#[derive(Clone)]
pub(super) struct Wire {
    pub(super) deflate: bool,
    pub(super) read: Arc<AtomicU64>,
}

impl Wire {
    async fn connect(&self, target: &Target) -> Result<Conn, std::io::Error> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(wire::conn(tcp, self.read.clone(), self.deflate))
    }

    fn offer(&self) -> Option<&'static str> {
        self.deflate.then_some(DEFLATE_OFFER)
    }
}

/// A Socket.IO member: `/realtime`, joined to the event room.
pub(super) async fn sio(
    target: &Target,
    user: &str,
    event: i64,
    via: &Wire,
) -> Result<Member, MemberError> {
    let nsp: Arc<Namespace> = Namespace::new(realtime::NAMESPACE);
    let query = format!("userId={user}");
    let measured = (via.deflate, via.read.clone());
    let mut c = Client::connect_measured(target, &query, &nsp, None, measured).await?;
    realtime::wait_connected(&mut c).await?;
    realtime::join_event(&mut c, event, realtime::DEMO_CATEGORIES_PER_EVENT).await?;
    Ok(Member::Sio(c))
}

/// A plain WebSocket member of `room`.
pub(super) async fn ws(
    target: &Target,
    user: &str,
    room: &str,
    via: &Wire,
) -> Result<Member, MemberError> {
    use tungstenite::client::IntoClientRequest;
    let conn = via.connect(target).await?;
    let mut request = format!("ws://{}/ws?userId={user}", target.addr).into_client_request()?;
    if let Some(offer) = via.offer() {
        request.headers_mut().insert(
            tungstenite::http::header::SEC_WEBSOCKET_EXTENSIONS,
            tungstenite::http::HeaderValue::from_static(offer),
        );
    }
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, conn, Some(config)).await?;
    let join = format!("{{\"action\":\"join\",\"roomId\":\"{room}\"}}");
    ws.send(Message::text(join)).await?;
    loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Err(MemberError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) if t.as_str().starts_with("{\"event\":\"joined\"") => {
                return Ok(Member::Ws(ws));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// A Server-Sent Events member subscribed to `room`.
pub(super) async fn sse(target: &Target, user: &str, room: &str) -> Result<Member, MemberError> {
    let mut s = Sse::open(target, &format!("channels={room}&userId={user}"), None).await?;
    loop {
        let (event, _) = s.next_event().await?;
        if event == "connected" {
            return Ok(Member::Sse(s));
        }
    }
}

/// An SSE stream: HTTP/1.1 response body (chunked or not), split into events.
pub(crate) struct Sse {
    tcp: TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// Body bytes not yet split into events.
    body: Vec<u8>,
    chunked: bool,
    /// The `id:` of the last event that had one (what a resume sends as `Last-Event-ID`).
    pub(crate) last_id: Option<u64>,
}

impl Sse {
    /// `GET /events?{query}`, with `Last-Event-ID` when resuming; fails unless the answer
    /// is 200.
    pub(crate) async fn open(
        target: &Target,
        query: &str,
        last_event_id: Option<u64>,
    ) -> Result<Self, MemberError> {
        let mut tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let resume =
            last_event_id.map_or_else(String::new, |id| format!("Last-Event-ID: {id}\r\n"));
        let request = format!(
            "GET /events?{query} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}\r\n",
            target.addr
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut s = Sse {
            tcp,
            raw: Vec::with_capacity(1024),
            body: Vec::with_capacity(1024),
            chunked: false,
            last_id: last_event_id,
        };
        let head = s.read_head().await?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(MemberError::Http(
                head.lines().next().unwrap_or("").to_owned(),
            ));
        }
        s.chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Ok(s)
    }

    async fn fill(&mut self) -> Result<(), MemberError> {
        let mut buf = [0u8; 4096];
        let n = self.tcp.read(&mut buf).await?;
        if n == 0 {
            return Err(MemberError::Closed);
        }
        self.raw.extend_from_slice(&buf[..n]);
        Ok(())
    }

    async fn read_head(&mut self) -> Result<String, MemberError> {
        loop {
            if let Some(end) = find(&self.raw, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                self.raw.drain(..end + 4);
                return Ok(head);
            }
            if self.raw.len() > 16 * 1024 {
                return Err(MemberError::Http("response head too long".into()));
            }
            self.fill().await?;
        }
    }

    /// Moves complete chunks from `raw` into `body`.
    fn dechunk(&mut self) -> Result<(), MemberError> {
        if !self.chunked {
            self.body.append(&mut self.raw);
            return Ok(());
        }
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return Ok(());
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]);
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| MemberError::Http(format!("bad chunk size {size_hex:?}")))?;
            if size == 0 {
                return Err(MemberError::Closed);
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return Ok(());
            }
            let start = line_end + 2;
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }

    /// The next event's name (`message` when unnamed) and data; comments are skipped.
    pub(crate) async fn next_event(&mut self) -> Result<(String, String), MemberError> {
        loop {
            self.dechunk()?;
            while let Some(end) = find(&self.body, b"\n\n") {
                let block = String::from_utf8_lossy(&self.body[..end]).into_owned();
                self.body.drain(..end + 2);
                let mut event = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("id:")
                        && let Ok(id) = v.trim().parse()
                    {
                        self.last_id = Some(id);
                    }
                }
                if event.is_some() || !data.is_empty() {
                    return Ok((event.unwrap_or_else(|| "message".into()), data));
                }
            }
            self.fill().await?;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `POST /api/publish` over one keep-alive connection.
pub(crate) struct Publisher {
    tcp: TcpStream,
    host: String,
    auth: String,
    buf: Vec<u8>,
}

impl Publisher {
    pub(crate) async fn connect(target: &Target, api_key: &str) -> Result<Self, MemberError> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Self {
            tcp,
            host: target.addr.to_string(),
            auth: format!("Bearer {api_key}"),
            buf: Vec::with_capacity(1024),
        })
    }

    /// Publishes `{"seq": seq}` (then `extra`, more fields) as [`EVENT`] to `room` and
    /// waits for the answer.
    pub(super) async fn publish(
        &mut self,
        room: &str,
        seq: u64,
        extra: &str,
    ) -> Result<(), MemberError> {
        let body = format!(
            "{{\"room\":\"{room}\",\"event\":\"{EVENT}\",\"data\":{{\"seq\":{seq}{extra}}}}}"
        );
        self.post(&body).await
    }

    /// Posts one publish request body (JSON) and waits for a 200.
    pub(crate) async fn post(&mut self, body: &str) -> Result<(), MemberError> {
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.auth,
            body.len()
        );
        self.tcp.write_all(request.as_bytes()).await?;
        // Head, then a Content-Length body.
        let head_end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            self.read_more().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while self.buf.len() < head_end + 4 + length {
            self.read_more().await?;
        }
        let response_body =
            String::from_utf8_lossy(&self.buf[head_end + 4..head_end + 4 + length]).into_owned();
        self.buf.drain(..head_end + 4 + length);
        if !head.starts_with("HTTP/1.1 200") {
            return Err(MemberError::Http(format!(
                "{}: {response_body}",
                head.lines().next().unwrap_or("")
            )));
        }
        Ok(())
    }

    async fn read_more(&mut self) -> Result<(), MemberError> {
        let mut chunk = [0u8; 2048];
        let n = self.tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(MemberError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_seq() {
        assert_eq!(seq_of(r#"["bench-publish",{"seq":12},"99"]"#), Some(12));
        assert_eq!(
            seq_of(r#"{"event":"bench-publish","data":{"seq":7},"room":"event_1","offset":3}"#),
            Some(7)
        );
        assert_eq!(seq_of(r#"{"x":1}"#), None);
    }
}

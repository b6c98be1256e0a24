//! One outbound unit of a session and its long-polling form.
//!
//! Owns: [`Frame`] and its polling encoding, and the compressed form a shared frame keeps
//! for every recipient. Never: queues or sockets (the session queues frames, `wire`
//! encodes them for a WebSocket).

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One outbound unit. Text frames hold a complete Engine.IO packet (type character
/// included), so a broadcast builds the buffer once and every recipient shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete Engine.IO packet as text (type character included).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// The session is being closed by the server: `1` on polling, a close frame on WebSocket.
    Close,
    /// A text or binary frame shared by the recipients of a broadcast, with its
    /// permessage-deflate form made by the first writer that needs it (once for all).
    Shared(Arc<Shared>),
}

/// A broadcast's frame and its compressed form (see [`Frame::Shared`]).
#[derive(Debug)]
pub struct Shared {
    /// Text or binary, never `Close` or another `Shared`.
    frame: Frame,
    /// The deflated payload (RFC 7692, no context), or `None` when not smaller.
    deflated: OnceLock<Option<Bytes>>,
}

impl PartialEq for Shared {
    fn eq(&self, other: &Shared) -> bool {
        self.frame == other.frame
    }
}

impl Eq for Shared {}

impl Frame {
    /// This frame as one a broadcast's recipients share, compressed at most once.
    pub fn shared(self) -> Frame {
        match self {
            Frame::Text(_) | Frame::Binary(_) => Frame::Shared(Arc::new(Shared {
                frame: self,
                deflated: OnceLock::new(),
            })),
            other => other,
        }
    }

    /// The frame itself: a shared frame's text or binary form.
    pub fn plain(&self) -> &Frame {
        match self {
            Frame::Shared(s) => &s.frame,
            other => other,
        }
    }

    /// The WebSocket opcode and payload (`None` for `Close`).
    pub(crate) fn payload(&self) -> Option<(u8, &[u8])> {
        match self.plain() {
            Frame::Text(t) => Some((0x1, t.as_bytes())),
            Frame::Binary(b) => Some((0x2, b)),
            Frame::Close | Frame::Shared(_) => None,
        }
    }

    /// The payload deflated (RFC 7692), made once per shared frame; `None` when that is
    /// not smaller than the payload.
    pub(crate) fn deflated(&self) -> Option<Bytes> {
        let (_, payload) = self.payload()?;
        match self {
            Frame::Shared(s) => s
                .deflated
                .get_or_init(|| crate::deflate::deflate(payload))
                .clone(),
            _ => crate::deflate::deflate(payload),
        }
    }

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

    /// The frame as a tungstenite message, for a connection's task that writes its own
    /// frames (uncompressed: RFC 7692 lets a sender leave any message so).
    pub fn to_ws_message(&self) -> Option<tokio_tungstenite::tungstenite::Message> {
        use tokio_tungstenite::tungstenite::Message;
        match self.plain() {
            Frame::Text(t) => Some(Message::Text(t.clone())),
            Frame::Binary(b) => Some(Message::Binary(b.clone())),
            Frame::Close | Frame::Shared(_) => None,
        }
    }

    /// Appends the polling form of this frame to `out`.
    pub(crate) fn encode_polling(&self, out: &mut String) {
        match self.plain() {
            Frame::Text(t) => out.push_str(t),
            Frame::Binary(b) => {
                out.push('b');
                BASE64.encode_string(b, out);
            }
            Frame::Close => out.push('1'),
            Frame::Shared(_) => {}
        }
    }
}

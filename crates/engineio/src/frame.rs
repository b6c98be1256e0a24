//! One outbound unit of a session and its long-polling form.
//!
//! Owns: [`Frame`] and its polling encoding. Never: queues or sockets (the session
//! queues frames, `wire` encodes them for a WebSocket).

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

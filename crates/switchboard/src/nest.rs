//! The NestJS microservice wire formats (see `shared/reference/nestjs-wire.md`):
//! the RMQ packet (`{pattern, data, id?}`) and its reply, and the TCP transport's
//! `<length>#<json>` frames, whose length counts UTF-16 code units.
//!
//! Owns: decoding and encoding bytes. Never: I/O, or what a pattern means.

use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};
use tokio_util::codec::{Decoder, Encoder};

/// The `err` a NestJS server sends for a request pattern it has no handler for.
pub const NO_MESSAGE_HANDLER: &str =
    "There is no matching message handler defined in the remote service.";

/// One decoded NestJS packet: an event (`id` absent) or a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// String patterns as sent; object patterns as JSON with sorted keys (NestJS's own
    /// normalization), so they can be compared as strings.
    pub pattern: String,
    pub data: Value,
    /// Present for `client.send` (a request), absent for `client.emit` (an event).
    pub id: Option<Value>,
}

/// Why a body is not a NestJS packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("packet has no pattern")]
    NoPattern,
}

/// Decodes an RMQ message body.
pub fn decode_packet(body: &[u8]) -> Result<Packet, PacketError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PacketError::NotJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(PacketError::NotObject);
    };
    let pattern = match obj.remove("pattern") {
        Some(Value::String(s)) => s,
        // serde_json's map is ordered by key, so this is the sorted-keys form.
        Some(p @ Value::Object(_)) => p.to_string(),
        _ => return Err(PacketError::NoPattern),
    };
    let data = obj.remove("data").unwrap_or(Value::Null);
    let id = obj.remove("id").filter(|v| !v.is_null());
    Ok(Packet { pattern, data, id })
}

/// The body of a successful reply to a request.
pub fn reply_ok(id: Option<&Value>, response: &Value) -> Vec<u8> {
    json!({"err": null, "response": response, "isDisposed": true, "id": id})
        .to_string()
        .into_bytes()
}

/// The body of a failed reply: `err` in the shape a NestJS `RpcException` produces.
pub fn reply_err(id: Option<&Value>, message: &str) -> Vec<u8> {
    json!({
        "err": {"status": "error", "message": message},
        "isDisposed": true,
        "id": id,
    })
    .to_string()
    .into_bytes()
}

/// The reply NestJS itself sends for an unknown request pattern.
pub fn reply_no_handler(id: Option<&Value>) -> Vec<u8> {
    json!({"err": NO_MESSAGE_HANDLER, "status": "error", "isDisposed": true, "id": id})
        .to_string()
        .into_bytes()
}

// ----- TCP frames -------------------------------------------------------------------

/// Encodes one TCP frame: `<length>#<json>`, length in UTF-16 code units.
pub fn encode_frame(json: &str) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(json.len() + 12);
    put_frame(json, &mut out);
    out.to_vec()
}

fn put_frame(json: &str, dst: &mut BytesMut) {
    let units = json.encode_utf16().count();
    dst.reserve(json.len() + 21);
    dst.put_slice(units.to_string().as_bytes());
    dst.put_u8(b'#');
    dst.put_slice(json.as_bytes());
}

/// Why a TCP byte stream cannot be framed. The connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header is not 1 to 12 ASCII digits followed by `#`.
    #[error("corrupted length header")]
    BadLength,
    /// The declared length (in UTF-16 units) is above the limit.
    #[error("frame of {0} units exceeds the limit")]
    Oversized(u64),
    /// The frame's bytes are not UTF-8.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// The declared length ends inside a character (between the halves of a surrogate
    /// pair).
    #[error("frame length splits a character")]
    SplitCharacter,
}

/// Why a framed TCP connection ended with an error: its bytes, or the socket.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The peer sent bytes that are not `<length>#<json>` frames.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The TCP transport's `<length>#<json>` framing as a `tokio_util` codec: wrap a socket
/// in `Framed`/`FramedRead` with it. Decoding yields each frame's JSON text and scans each
/// byte once, so a large frame arriving in pieces costs linear time; a frame declared
/// longer than `max_units` UTF-16 units is refused before its body is read. Encoding
/// writes one frame per `&str`.
#[derive(Debug)]
pub struct FrameCodec {
    max_units: u64,
    /// Set once the header of the current frame is read.
    frame: Option<FrameScan>,
}

#[derive(Debug, Clone, Copy)]
struct FrameScan {
    /// Declared length in UTF-16 units.
    units: u64,
    /// Where the JSON starts in the read buffer.
    start: usize,
    /// Bytes after `start` already scanned, and the units they hold.
    scanned: usize,
    counted: u64,
}

const MAX_HEADER_DIGITS: usize = 12;

impl FrameCodec {
    /// A codec that refuses frames longer than `max_units` UTF-16 units.
    pub fn new(max_units: u64) -> Self {
        Self {
            max_units,
            frame: None,
        }
    }

    /// The next complete frame of `buf` (consumed from it), `Ok(None)` if more bytes are
    /// needed. The scan position of a partial frame is kept between calls, so `buf` must
    /// only grow at its end in between (as `FramedRead` does).
    fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<String>, FrameError> {
        let mut scan = match self.frame {
            Some(s) => s,
            None => {
                let Some(hash) = buf
                    .iter()
                    .take(MAX_HEADER_DIGITS + 1)
                    .position(|&b| b == b'#')
                else {
                    if buf.len() > MAX_HEADER_DIGITS || buf.iter().any(|b| !b.is_ascii_digit()) {
                        return Err(FrameError::BadLength);
                    }
                    return Ok(None);
                };
                let digits = &buf[..hash];
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(FrameError::BadLength);
                }
                let units: u64 = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(FrameError::BadLength)?;
                if units > self.max_units {
                    return Err(FrameError::Oversized(units));
                }
                FrameScan {
                    units,
                    start: hash + 1,
                    scanned: 0,
                    counted: 0,
                }
            }
        };
        let body = &buf[scan.start..];
        while scan.counted < scan.units {
            let rest = &body[scan.scanned..];
            let Some(&first) = rest.first() else { break };
            let width = match first {
                0x00..=0x7f => 1,
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => return Err(FrameError::NotUtf8),
            };
            if rest.len() < width {
                break;
            }
            let ch = std::str::from_utf8(&rest[..width]).map_err(|_| FrameError::NotUtf8)?;
            let units = ch.chars().map(char::len_utf16).sum::<usize>() as u64;
            if scan.counted + units > scan.units {
                return Err(FrameError::SplitCharacter);
            }
            scan.counted += units;
            scan.scanned += width;
        }
        if scan.counted < scan.units {
            self.frame = Some(scan);
            return Ok(None);
        }
        let frame = buf.split_to(scan.start + scan.scanned);
        self.frame = None;
        let text = std::str::from_utf8(&frame[scan.start..]).map_err(|_| FrameError::NotUtf8)?;
        Ok(Some(text.to_owned()))
    }
}

impl Decoder for FrameCodec {
    type Item = String;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, CodecError> {
        Ok(self.next_frame(src)?)
    }

    /// At the end of the stream a partial frame is dropped without an error: the
    /// connection simply ended (the caller sees the end of the stream).
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<String>, CodecError> {
        self.decode(src)
    }
}

impl Encoder<&str> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, json: &str, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_frame(json, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_requests_and_object_patterns() {
        let p = decode_packet(br#"{"pattern":"order-completed","data":{"orderId":"o1"}}"#)
            .expect("event");
        assert_eq!(p.pattern, "order-completed");
        assert_eq!(p.id, None);
        let p =
            decode_packet(br#"{"pattern":"confirm-ticket-lock","data":{"lockId":"l"},"id":"abc"}"#)
                .expect("request");
        assert_eq!(p.id, Some(json!("abc")));
        let p = decode_packet(br#"{"pattern":{"z":1,"a":"x"},"data":null}"#).expect("object");
        assert_eq!(p.pattern, r#"{"a":"x","z":1}"#);
        for (body, err) in [
            (&b"nope"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (b"{\"data\":1}", "no pattern"),
            (b"{\"pattern\":5}", "no pattern"),
        ] {
            let e = decode_packet(body).expect_err("bad");
            assert!(e.to_string().contains(err), "{e}");
        }
    }

    #[test]
    fn replies_have_the_nestjs_shape() {
        let ok: Value =
            serde_json::from_slice(&reply_ok(Some(&json!("i")), &json!({"success": true})))
                .expect("json");
        assert_eq!(
            ok,
            json!({"err": null, "response": {"success": true}, "isDisposed": true, "id": "i"})
        );
        let err: Value =
            serde_json::from_slice(&reply_err(None, "lock x not found")).expect("json");
        assert_eq!(err["err"]["message"], "lock x not found");
        assert_eq!(err["isDisposed"], true);
        assert!(err.get("response").is_none());
    }

    #[test]
    fn frame_length_counts_utf16_units() {
        assert_eq!(encode_frame("{}"), b"2#{}");
        // "é" is 2 bytes and 1 unit; the ticket emoji is 4 bytes and 2 units.
        let s = "\"é🎟\"";
        assert_eq!(s.len(), 8);
        assert_eq!(encode_frame(s), format!("5#{s}").into_bytes());
    }

    /// Every frame `codec` decodes from `wire` fed in `chunks`, as `FramedRead` feeds it.
    fn decode_all<'a>(
        codec: &mut FrameCodec,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<String>, FrameError> {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => got.push(f),
                    Ok(None) => break,
                    Err(CodecError::Frame(e)) => return Err(e),
                    Err(e) => panic!("no I/O here: {e}"),
                }
            }
        }
        Ok(got)
    }

    #[test]
    fn decoder_handles_split_and_joined_frames() {
        let texts = ["{\"a\":\"Zoné VIP 🎟️ — 前列\"}", "[]", "{\"id\":\"x\"}"];
        let mut wire = BytesMut::new();
        let mut encoder = FrameCodec::new(0);
        for t in texts {
            encoder.encode(t, &mut wire).expect("encode");
        }
        // Every split point, including inside multi-byte characters.
        for cut in 0..wire.len() {
            let got = decode_all(&mut FrameCodec::new(1 << 20), [&wire[..cut], &wire[cut..]]);
            assert_eq!(got.expect("valid"), texts, "cut at {cut}");
        }
        // Byte by byte.
        let got = decode_all(&mut FrameCodec::new(1 << 20), wire.chunks(1));
        assert_eq!(got.expect("valid"), texts);
    }

    #[test]
    fn decoder_refuses_garbage_and_oversized_frames() {
        let cases: [(&[u8], FrameError); 7] = [
            (b"abc#{}", FrameError::BadLength),
            (b"#{}", FrameError::BadLength),
            (b"1234567890123456#", FrameError::BadLength),
            (b"HTTP/1.1 200 OK\r\n", FrameError::BadLength),
            (b"99999999#", FrameError::Oversized(99_999_999)),
            // One unit asked, but the first character takes two (a surrogate pair).
            ("1#🎟".as_bytes(), FrameError::SplitCharacter),
            (b"2#\xff\xfe", FrameError::NotUtf8),
        ];
        for (wire, want) in cases {
            assert_eq!(
                decode_all(&mut FrameCodec::new(1 << 20), [wire]),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[tokio::test]
    async fn framed_socket_reads_frames_and_ends_quietly_mid_frame() {
        use futures_util::{SinkExt, StreamExt};
        use tokio::io::AsyncWriteExt;
        use tokio_util::codec::{FramedRead, FramedWrite};

        let (client, server) = tokio::io::duplex(4096);
        let mut frames = FramedRead::new(server, FrameCodec::new(1 << 20));
        let mut out = FramedWrite::new(client, FrameCodec::new(1 << 20));
        let long = format!("\"{}\"", "é".repeat(100));
        for t in ["{}", long.as_str()] {
            out.send(t).await.expect("send");
        }
        assert_eq!(frames.next().await.expect("frame").expect("ok"), "{}");
        assert_eq!(frames.next().await.expect("frame").expect("ok"), long);
        // Half a frame, then the peer goes away: the stream just ends.
        out.get_mut().write_all(b"9#{\"a\"").await.expect("write");
        drop(out);
        assert!(frames.next().await.is_none());
    }
}

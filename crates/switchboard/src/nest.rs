//! The NestJS microservice wire formats (see `shared/reference/nestjs-wire.md`):
//! the RMQ packet (`{pattern, data, id?}`) and its reply, and the TCP transport's
//! `<length>#<json>` frames, whose length counts UTF-16 code units.
//!
//! Owns: decoding and encoding bytes. Never: I/O, or what a pattern means.

use serde_json::{Value, json};

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
    let units = json.encode_utf16().count();
    let mut out = Vec::with_capacity(json.len() + 12);
    out.extend_from_slice(units.to_string().as_bytes());
    out.push(b'#');
    out.extend_from_slice(json.as_bytes());
    out
}

/// Why a TCP byte stream cannot be framed. The connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("corrupted length header")]
    BadLength,
    #[error("frame of {0} units exceeds the limit")]
    Oversized(u64),
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    #[error("frame length splits a character")]
    SplitCharacter,
}

/// Incremental decoder of `<length>#<json>` frames. Feed it bytes as they arrive; it
/// scans each byte once, so a large frame arriving in pieces costs linear time.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_units: u64,
    /// Set once the header of the current frame is read.
    frame: Option<FrameScan>,
}

#[derive(Debug, Clone, Copy)]
struct FrameScan {
    /// Declared length in UTF-16 units.
    units: u64,
    /// Where the JSON starts in `buf`.
    start: usize,
    /// Bytes after `start` already scanned, and the units they hold.
    scanned: usize,
    counted: u64,
}

const MAX_HEADER_DIGITS: usize = 12;

impl FrameDecoder {
    pub fn new(max_units: u64) -> Self {
        Self {
            buf: Vec::new(),
            max_units,
            frame: None,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's JSON text, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<String>, FrameError> {
        let mut scan = match self.frame {
            Some(s) => s,
            None => {
                let Some(hash) = self
                    .buf
                    .iter()
                    .take(MAX_HEADER_DIGITS + 1)
                    .position(|&b| b == b'#')
                else {
                    if self.buf.len() > MAX_HEADER_DIGITS
                        || self.buf.iter().any(|b| !b.is_ascii_digit())
                    {
                        return Err(FrameError::BadLength);
                    }
                    return Ok(None);
                };
                let digits = &self.buf[..hash];
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
        let body = &self.buf[scan.start..];
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
        let end = scan.start + scan.scanned;
        let text = std::str::from_utf8(&self.buf[scan.start..end])
            .map_err(|_| FrameError::NotUtf8)?
            .to_owned();
        self.buf.drain(..end);
        self.frame = None;
        Ok(Some(text))
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

    #[test]
    fn decoder_handles_split_and_joined_frames() {
        let texts = ["{\"a\":\"Zoné VIP 🎟️ — 前列\"}", "[]", "{\"id\":\"x\"}"];
        let mut wire = Vec::new();
        for t in texts {
            wire.extend(encode_frame(t));
        }
        // Every split point, including inside multi-byte characters.
        for cut in 0..wire.len() {
            let mut d = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            for chunk in [&wire[..cut], &wire[cut..]] {
                d.push(chunk);
                while let Some(f) = d.next_frame().expect("valid") {
                    got.push(f);
                }
            }
            assert_eq!(got, texts, "cut at {cut}");
        }
        // Byte by byte.
        let mut d = FrameDecoder::new(1 << 20);
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().expect("valid") {
                got.push(f);
            }
        }
        assert_eq!(got, texts);
    }

    #[test]
    fn decoder_refuses_garbage_and_oversized_frames() {
        let cases: [(&[u8], FrameError); 6] = [
            (b"abc#{}", FrameError::BadLength),
            (b"#{}", FrameError::BadLength),
            (b"1234567890123456#", FrameError::BadLength),
            (b"HTTP/1.1 200 OK\r\n", FrameError::BadLength),
            (b"99999999#", FrameError::Oversized(99_999_999)),
            // One unit asked, but the first character takes two (a surrogate pair).
            ("1#🎟".as_bytes(), FrameError::SplitCharacter),
        ];
        for (wire, want) in cases {
            let mut d = FrameDecoder::new(1 << 20);
            d.push(wire);
            assert_eq!(
                d.next_frame(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut d = FrameDecoder::new(1 << 20);
        d.push(b"2#\xff\xfe");
        assert_eq!(d.next_frame(), Err(FrameError::NotUtf8));
    }
}

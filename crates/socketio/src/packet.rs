//! Socket.IO v5 packets: `<type>[<attachments>-][<nsp>,][<id>][<json>]`.
//!
//! Pure encoding and decoding. Decoding borrows from the frame, validates the JSON fully
//! (serde_json's recursion limit stops deeply nested input), and never panics.

use bytes::Bytes;
use engineio::Frame;
use hub::Payload;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The Socket.IO packet types (the first character of a packet).
pub enum PacketType {
    /// `0`: join a namespace.
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event.
    Event,
    /// `3`: the answer to an event.
    Ack,
    /// `4`: a refused namespace join.
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an answer with binary attachments.
    BinaryAck,
}

/// A decoded packet. `data` is raw, validated JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet type.
    pub kind: PacketType,
    /// The namespace (`/` when absent).
    pub nsp: &'a str,
    /// The ack id, when the sender waits for an answer.
    pub id: Option<u64>,
    /// How many binary attachments follow (binary types only).
    pub attachments: usize,
    /// The JSON payload, unparsed.
    pub data: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// Why a packet could not be decoded.
pub enum ParseError {
    #[error("empty packet")]
    /// Nothing to decode.
    Empty,
    #[error("unknown packet type")]
    /// The type character is not a Socket.IO packet type.
    UnknownType,
    #[error("invalid attachment count")]
    /// The attachment count is not a number.
    Attachments,
    #[error("too many binary attachments")]
    /// More attachments than `max_attachments`.
    TooManyAttachments,
    #[error("invalid packet id")]
    /// The ack id is not a number.
    Id,
    #[error("invalid JSON payload")]
    /// The payload is not JSON.
    Json,
    #[error("payload does not fit the packet type")]
    /// The payload's shape does not fit the packet type.
    Payload,
    #[error("JSON nested too deeply")]
    /// The payload nests deeper than 32 levels.
    TooDeep,
}

/// Deepest JSON nesting accepted in a packet. Legitimate events are shallow; the limit
/// keeps every later parse (the application's) far from stack trouble.
pub const MAX_DEPTH: usize = 32;

/// Whether brackets outside strings nest at most `max` deep. One pass, no allocation.
fn nesting_within(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// An event's name and arguments, borrowed from the packet.
#[derive(Debug)]
pub struct EventData<'a> {
    /// The event name (the first array element).
    pub name: String,
    /// The remaining elements.
    pub args: Vec<&'a RawValue>,
}

impl<'a> Packet<'a> {
    /// Decodes one packet's text; `max_attachments` bounds binary packets.
    pub fn decode(text: &'a str, max_attachments: usize) -> Result<Packet<'a>, ParseError> {
        let bytes = text.as_bytes();
        let kind = match bytes.first().ok_or(ParseError::Empty)? {
            b'0' => PacketType::Connect,
            b'1' => PacketType::Disconnect,
            b'2' => PacketType::Event,
            b'3' => PacketType::Ack,
            b'4' => PacketType::ConnectError,
            b'5' => PacketType::BinaryEvent,
            b'6' => PacketType::BinaryAck,
            _ => return Err(ParseError::UnknownType),
        };
        let mut i = 1;
        let mut attachments = 0;
        if matches!(kind, PacketType::BinaryEvent | PacketType::BinaryAck) {
            let dash = text[i..].find('-').ok_or(ParseError::Attachments)? + i;
            let digits = &text[i..dash];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::Attachments);
            }
            attachments = digits
                .parse::<usize>()
                .map_err(|_| ParseError::TooManyAttachments)?;
            if attachments > max_attachments {
                return Err(ParseError::TooManyAttachments);
            }
            i = dash + 1;
        }
        let mut nsp = "/";
        if bytes.get(i) == Some(&b'/') {
            let end = text[i..].find(',').map_or(text.len(), |p| p + i);
            nsp = &text[i..end];
            i = (end + 1).min(text.len());
        }
        let mut id = None;
        let digits_end = text[i..]
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .map_or(text.len(), |p| p + i);
        if digits_end > i {
            id = Some(
                text[i..digits_end]
                    .parse::<u64>()
                    .map_err(|_| ParseError::Id)?,
            );
            i = digits_end;
        }
        let rest = &text[i..];
        let data = if rest.is_empty() {
            None
        } else {
            if !nesting_within(rest, MAX_DEPTH) {
                return Err(ParseError::TooDeep);
            }
            let raw: &RawValue = serde_json::from_str(rest).map_err(|_| ParseError::Json)?;
            Some(raw.get())
        };
        let first = data.and_then(|d| d.bytes().next());
        let valid = match kind {
            PacketType::Connect => data.is_none() || first == Some(b'{'),
            PacketType::Disconnect => data.is_none(),
            PacketType::Event | PacketType::BinaryEvent => first == Some(b'['),
            PacketType::Ack | PacketType::BinaryAck => first == Some(b'[') && id.is_some(),
            // Only servers send CONNECT_ERROR.
            PacketType::ConnectError => false,
        };
        if !valid {
            return Err(ParseError::Payload);
        }
        Ok(Packet {
            kind,
            nsp,
            id,
            attachments,
            data,
        })
    }

    /// The event name and arguments of an EVENT / BINARY_EVENT packet.
    pub fn event(&self) -> Result<EventData<'a>, ParseError> {
        let mut args: Vec<&'a RawValue> =
            serde_json::from_str(self.data.ok_or(ParseError::Payload)?)
                .map_err(|_| ParseError::Json)?;
        if args.is_empty() {
            return Err(ParseError::Payload);
        }
        let name: String = serde_json::from_str(args[0].get()).map_err(|_| ParseError::Payload)?;
        args.remove(0);
        Ok(EventData { name, args })
    }

    /// The arguments of an ACK / BINARY_ACK packet.
    pub fn ack_args(&self) -> Result<Vec<&'a RawValue>, ParseError> {
        serde_json::from_str(self.data.ok_or(ParseError::Payload)?).map_err(|_| ParseError::Json)
    }
}

fn push_header(out: &mut String, kind: u8, attachments: usize, nsp: &str, id: Option<u64>) {
    use std::fmt::Write as _;
    out.push('4'); // Engine.IO message
    out.push(kind as char);
    if attachments > 0 {
        let _ = write!(out, "{attachments}-");
    }
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
}

/// Appends `s` as a JSON string. Event names are plain ASCII nearly always: those are
/// copied between quotes with no allocation; anything else goes through serde_json.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
    }
}

fn frames(text: String, attachments: &[Bytes]) -> Vec<Frame> {
    let mut v = Vec::with_capacity(1 + attachments.len());
    v.push(Frame::Text(text.into()));
    v.extend(attachments.iter().cloned().map(Frame::Binary));
    v
}

/// An EVENT (or BINARY_EVENT) as Engine.IO frames. `offset` is appended as a last string
/// argument, as connection state recovery expects.
pub fn encode_event(
    nsp: &str,
    event: &str,
    payload: &Payload,
    id: Option<u64>,
    offset: Option<u64>,
) -> Vec<Frame> {
    let n = payload.attachments.len();
    let mut out = String::with_capacity(16 + nsp.len() + event.len() + payload.args.len());
    push_header(&mut out, if n > 0 { b'5' } else { b'2' }, n, nsp, id);
    out.push('[');
    push_json_str(&mut out, event);
    if payload.arg_count > 0 {
        out.push(',');
        out.push_str(&payload.args);
    }
    if let Some(o) = offset {
        use std::fmt::Write as _;
        let _ = write!(out, ",\"{o}\"");
    }
    out.push(']');
    frames(out, &payload.attachments)
}

/// An ACK (or BINARY_ACK) answering packet `id`.
pub fn encode_ack(nsp: &str, id: u64, payload: &Payload) -> Vec<Frame> {
    let n = payload.attachments.len();
    let mut out = String::with_capacity(16 + nsp.len() + payload.args.len());
    push_header(&mut out, if n > 0 { b'6' } else { b'3' }, n, nsp, Some(id));
    out.push('[');
    out.push_str(&payload.args);
    out.push(']');
    frames(out, &payload.attachments)
}

/// A CONNECT answer with its JSON body.
pub fn encode_connect(nsp: &str, body: &str) -> Frame {
    let mut out = String::new();
    push_header(&mut out, b'0', 0, nsp, None);
    out.push_str(body);
    Frame::Text(out.into())
}

/// A CONNECT_ERROR with a message (and optional raw JSON data).
pub fn encode_connect_error(nsp: &str, message: &str, data: Option<&str>) -> Frame {
    let mut out = String::new();
    push_header(&mut out, b'4', 0, nsp, None);
    let msg = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".to_owned());
    match data {
        Some(d) => out.push_str(&format!("{{\"message\":{msg},\"data\":{d}}}")),
        None => out.push_str(&format!("{{\"message\":{msg}}}")),
    }
    Frame::Text(out.into())
}

/// A DISCONNECT packet for `nsp`.
pub fn encode_disconnect(nsp: &str) -> Frame {
    let mut out = String::new();
    push_header(&mut out, b'1', 0, nsp, None);
    Frame::Text(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<Packet<'_>, ParseError> {
        Packet::decode(s, 10)
    }

    #[test]
    fn event_names_are_written_as_serde_json_writes_them() {
        for name in [
            "availability-update",
            "",
            "a/b c~",
            "quote\"d",
            "back\\slash",
            "tab\there",
            "nul\u{0}",
            "del\u{7f}",
            "é ünïcode 🎟",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, name);
            assert_eq!(out, serde_json::to_string(name).expect("json"), "{name:?}");
        }
    }

    #[test]
    fn decodes_the_suite_examples() {
        let p = dec("0").expect("connect");
        assert_eq!((p.kind, p.nsp, p.data), (PacketType::Connect, "/", None));
        let p = dec("0/custom,{\"token\":\"abc\"}").expect("connect");
        assert_eq!((p.nsp, p.data), ("/custom", Some("{\"token\":\"abc\"}")));
        assert_eq!(dec("0/custom").expect("no comma").nsp, "/custom");
        assert_eq!(
            dec("1/custom").expect("disconnect").kind,
            PacketType::Disconnect
        );
        let p = dec("2456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]").expect("event");
        assert_eq!(p.id, Some(456));
        let ev = p.event().expect("event data");
        assert_eq!(ev.name, "message-with-ack");
        assert_eq!(
            ev.args.iter().map(|a| a.get()).collect::<Vec<_>>(),
            vec!["1", "\"2\"", "{\"3\":[false]}"]
        );
        let p = dec(
            "52-789[\"m\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
        )
        .expect("binary");
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (PacketType::BinaryEvent, 2, Some(789))
        );
        let p = dec("3/custom,12[\"x\"]").expect("ack");
        assert_eq!(
            (p.kind, p.nsp, p.id),
            (PacketType::Ack, "/custom", Some(12))
        );
    }

    #[test]
    fn rejects_malformed_packets() {
        assert_eq!(dec(""), Err(ParseError::Empty));
        assert_eq!(dec("abc"), Err(ParseError::UnknownType));
        assert_eq!(dec("2{}"), Err(ParseError::Payload));
        assert_eq!(dec("2abc[\"m\"]"), Err(ParseError::Json));
        assert_eq!(
            dec("2[]").expect("array").event().err(),
            Some(ParseError::Payload)
        );
        assert_eq!(
            dec("2[1]").expect("array").event().err(),
            Some(ParseError::Payload)
        );
        assert_eq!(dec("0[1]"), Err(ParseError::Payload));
        assert_eq!(dec("1{}"), Err(ParseError::Payload));
        assert_eq!(dec("4{\"message\":\"x\"}"), Err(ParseError::Payload));
        assert_eq!(dec("3[1]"), Err(ParseError::Payload), "ack without id");
        assert_eq!(dec("5[\"m\"]"), Err(ParseError::Attachments));
        assert_eq!(dec("5x-[\"m\"]"), Err(ParseError::Attachments));
        assert_eq!(dec("511-[\"m\"]"), Err(ParseError::TooManyAttachments));
        assert_eq!(
            dec("599999999999999999999999-[\"m\"]"),
            Err(ParseError::TooManyAttachments)
        );
        assert_eq!(dec("299999999999999999999999[\"m\"]"), Err(ParseError::Id));
        assert_eq!(
            dec("2[\"m\",\"\u{e9}"),
            Err(ParseError::Json),
            "truncated multibyte text"
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = format!("2[\"m\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(dec(&deep), Err(ParseError::TooDeep));
        let ok = format!(
            "2[\"m\",{}{}]",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(dec(&ok).is_ok());
        let in_string = format!("2[\"m\",\"{}\\\"\"]", "[".repeat(1000));
        assert!(
            dec(&in_string).is_ok(),
            "brackets inside strings do not count"
        );
    }

    /// The limit is exactly 32 levels, counting the packet's own argument array: 32 pass,
    /// 33 are refused (literal numbers, so a changed constant fails here too).
    #[test]
    fn depth_limit_is_exactly_32_levels() {
        let nested = |levels: usize| {
            // The packet's array is level 1; `levels - 1` more brackets inside it.
            format!(
                "2[\"m\",{}{}]",
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        assert!(dec(&nested(32)).is_ok(), "exactly at the limit");
        assert_eq!(dec(&nested(33)), Err(ParseError::TooDeep), "one past it");
        let objects = format!("2[\"m\",{}1{}]", "{\"a\":".repeat(31), "}".repeat(31));
        assert!(dec(&objects).is_ok(), "32 levels of objects");
        let objects = format!("2[\"m\",{}1{}]", "{\"a\":".repeat(32), "}".repeat(32));
        assert_eq!(
            dec(&objects),
            Err(ParseError::TooDeep),
            "33 levels of objects"
        );
    }

    #[test]
    fn encodes_events_acks_and_errors() {
        let p = Payload::raw_args(["1", "\"2\""]);
        let f = encode_event("/", "m", &p, None, None);
        assert_eq!(f, vec![Frame::Text("42[\"m\",1,\"2\"]".into())]);
        let f = encode_event("/c", "m", &p, Some(7), Some(42));
        assert_eq!(f, vec![Frame::Text("42/c,7[\"m\",1,\"2\",\"42\"]".into())]);
        let bin = Payload {
            args: "{\"_placeholder\":true,\"num\":0}".into(),
            arg_count: 1,
            attachments: vec![Bytes::from_static(&[1])],
        };
        let f = encode_ack("/", 789, &bin);
        assert_eq!(
            f[0],
            Frame::Text("461-789[{\"_placeholder\":true,\"num\":0}]".into())
        );
        assert_eq!(f[1], Frame::Binary(Bytes::from_static(&[1])));
        assert_eq!(
            encode_connect_error("/random", "Invalid namespace", None),
            Frame::Text("44/random,{\"message\":\"Invalid namespace\"}".into())
        );
        assert_eq!(
            encode_connect("/", "{\"sid\":\"x\"}"),
            Frame::Text("40{\"sid\":\"x\"}".into())
        );
        assert_eq!(encode_disconnect("/a"), Frame::Text("41/a,".into()));
    }
}

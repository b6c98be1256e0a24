//! Engine.IO v4 / Socket.IO v5 text packets: parse what the server sends, encode what a
//! client sends. Pure functions over `&str`; no I/O, no allocation when parsing.

use std::fmt::Write as _;

/// One Engine.IO text frame as received over WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `0{...}`: the handshake, with its JSON.
    Open(&'a str),
    /// `1`: the server closes the session.
    Close,
    /// `2...`: a heartbeat the client must answer with `3...` (same data).
    Ping(&'a str),
    /// `6`: nothing to do (upgrade helper).
    Noop,
    /// `4...`: a Socket.IO packet.
    Message(Packet<'a>),
}

/// Socket.IO packet types (the digit after the Engine.IO `4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// `<kind>[<attachments>-][<nsp>,][<id>][<data>]`, borrowed from the frame text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub kind: PacketKind,
    /// `/` when the packet names no namespace.
    pub nsp: &'a str,
    pub id: Option<u64>,
    /// The JSON payload (possibly empty), as sent.
    pub data: &'a str,
}

/// Why a frame could not be read; carries the offending text, cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed packet {0:?}")]
pub struct ParseError(pub String);

impl ParseError {
    fn new(text: &str) -> Self {
        Self(text.chars().take(64).collect())
    }
}

/// Parses one text frame.
pub fn parse_frame(text: &str) -> Result<Frame<'_>, ParseError> {
    let Some(kind) = text.as_bytes().first() else {
        return Err(ParseError::new(text));
    };
    let rest = &text[1..];
    match kind {
        b'0' => Ok(Frame::Open(rest)),
        b'1' => Ok(Frame::Close),
        b'2' => Ok(Frame::Ping(rest)),
        b'6' => Ok(Frame::Noop),
        b'4' => parse_packet(rest)
            .map(Frame::Message)
            .ok_or_else(|| ParseError::new(text)),
        _ => Err(ParseError::new(text)),
    }
}

fn parse_packet(s: &str) -> Option<Packet<'_>> {
    let kind = match s.as_bytes().first()? {
        b'0' => PacketKind::Connect,
        b'1' => PacketKind::Disconnect,
        b'2' => PacketKind::Event,
        b'3' => PacketKind::Ack,
        b'4' => PacketKind::ConnectError,
        b'5' => PacketKind::BinaryEvent,
        b'6' => PacketKind::BinaryAck,
        _ => return None,
    };
    let mut rest = &s[1..];
    if matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
        let dash = rest.find('-')?;
        if dash == 0 || !rest[..dash].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest = &rest[dash + 1..];
    }
    let mut nsp = "/";
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                nsp = &rest[..comma];
                rest = &rest[comma + 1..];
            }
            None => {
                nsp = rest;
                rest = "";
            }
        }
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        Some(rest[..digits].parse().ok()?)
    } else {
        None
    };
    Some(Packet {
        kind,
        nsp,
        id,
        data: &rest[digits..],
    })
}

/// What goes between the packet type and the payload: `""` for `/`, else `"/nsp,"`.
pub fn nsp_prefix(nsp: &str) -> String {
    if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    }
}

/// `40[/nsp,][auth]`.
pub fn connect(prefix: &str, auth: Option<&str>) -> String {
    format!("40{prefix}{}", auth.unwrap_or(""))
}

/// `42[/nsp,][id]["event",args...]`; `args` are already-encoded JSON values.
pub fn event(prefix: &str, id: Option<u64>, name: &str, args: &[&str]) -> String {
    let mut out = String::with_capacity(8 + prefix.len() + name.len() + 16 * args.len());
    out.push_str("42");
    out.push_str(prefix);
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
    out.push('[');
    // A `&str` always serializes; the fallback keeps this function infallible.
    out.push_str(&serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into()));
    for arg in args {
        out.push(',');
        out.push_str(arg);
    }
    out.push(']');
    out
}

/// `43[/nsp,]id[args...]`: the answer to an event the server sent with an ack id.
pub fn ack(prefix: &str, id: u64, args: &[&str]) -> String {
    format!("43{prefix}{id}[{}]", args.join(","))
}

/// `3<data>`: the answer to `2<data>`.
pub fn pong(data: &str) -> String {
    format!("3{data}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(text: &str) -> Packet<'_> {
        match parse_frame(text) {
            Ok(Frame::Message(p)) => p,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn engine_frames() {
        assert_eq!(
            parse_frame("0{\"sid\":\"a\"}"),
            Ok(Frame::Open("{\"sid\":\"a\"}"))
        );
        assert_eq!(parse_frame("2"), Ok(Frame::Ping("")));
        assert_eq!(parse_frame("2probe"), Ok(Frame::Ping("probe")));
        assert_eq!(parse_frame("1"), Ok(Frame::Close));
        assert_eq!(parse_frame("6"), Ok(Frame::Noop));
        assert!(parse_frame("").is_err());
        assert!(parse_frame("9").is_err());
        assert!(parse_frame("4").is_err());
    }

    #[test]
    fn connect_answers() {
        let p = packet("40/e2e,{\"sid\":\"x\"}");
        assert_eq!(p.kind, PacketKind::Connect);
        assert_eq!(p.nsp, "/e2e");
        assert_eq!(p.data, "{\"sid\":\"x\"}");
        let p = packet("40{\"sid\":\"x\"}");
        assert_eq!((p.kind, p.nsp), (PacketKind::Connect, "/"));
        let p = packet("44/e2e,{\"message\":\"nope\"}");
        assert_eq!(p.kind, PacketKind::ConnectError);
        let p = packet("41/e2e");
        assert_eq!(
            (p.kind, p.nsp, p.data),
            (PacketKind::Disconnect, "/e2e", "")
        );
    }

    #[test]
    fn events_and_acks() {
        let p = packet("43/e2e,1[\"room1\"]");
        assert_eq!((p.kind, p.nsp, p.id), (PacketKind::Ack, "/e2e", Some(1)));
        assert_eq!(p.data, "[\"room1\"]");
        let p = packet("42[\"hello\",1]");
        assert_eq!((p.kind, p.nsp, p.id), (PacketKind::Event, "/", None));
        let p = packet("4212[\"ask\"]");
        assert_eq!(p.id, Some(12));
        let p = packet("451-/e2e,3[\"bin\",{\"_placeholder\":true,\"num\":0}]");
        assert_eq!(
            (p.kind, p.nsp, p.id),
            (PacketKind::BinaryEvent, "/e2e", Some(3))
        );
        assert!(parse_frame("45-[]").is_err());
        assert!(parse_frame("4299999999999999999999[]").is_err());
    }

    #[test]
    fn encodes() {
        let e2e = nsp_prefix("/e2e");
        assert_eq!(
            connect(&e2e, Some("{\"token\":\"x\"}")),
            "40/e2e,{\"token\":\"x\"}"
        );
        assert_eq!(connect(&nsp_prefix("/"), None), "40");
        assert_eq!(
            event(&e2e, Some(1), "join", &["\"room1\""]),
            "42/e2e,1[\"join\",\"room1\"]"
        );
        assert_eq!(event("", None, "a\"b", &[]), "42[\"a\\\"b\"]");
        assert_eq!(ack(&e2e, 7, &["1", "2"]), "43/e2e,7[1,2]");
        assert_eq!(pong(""), "3");
    }
}

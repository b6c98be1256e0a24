//! Engine.IO v4 packets and the long-polling payload format.
//!
//! Owns encoding and decoding only: no sessions, no I/O. Every decoder returns a
//! typed error for bad input and never panics (fuzzed by `tests/packet_props.rs`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The record separator between packets of one long-polling payload.
pub const SEPARATOR: char = '\x1e';

/// One Engine.IO packet as it travels on a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0` + handshake JSON.
    Open(Utf8Bytes),
    /// `1`.
    Close,
    /// `2`, or `2probe` during an upgrade.
    Ping {
        /// Part of the upgrade handshake.
        probe: bool,
    },
    /// `3`, or `3probe` during an upgrade.
    Pong {
        /// Part of the upgrade handshake.
        probe: bool,
    },
    /// `4` + text: an application message. The text excludes the type character.
    Message(Utf8Bytes),
    /// A binary application message (a WebSocket binary frame, or `b` + base64 on polling).
    Binary(Bytes),
    /// `5`.
    Upgrade,
    /// `6`.
    Noop,
}

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    /// Nothing to decode.
    Empty,
    #[error("unknown packet type {0:?}")]
    /// The type character is not an Engine.IO packet type.
    UnknownType(char),
    #[error("invalid base64 in binary packet")]
    /// A binary packet's base64 does not decode.
    Base64,
    #[error("unexpected data after packet type")]
    /// A packet type that carries no data has some.
    TrailingData,
}

impl Packet {
    /// Decodes one text packet into an owned packet (tests and tools; the server uses [`Inbound`]).
    pub fn decode_text(text: &str) -> Result<Packet, DecodeError> {
        Ok(match Inbound::decode(text)? {
            Inbound::Close => Packet::Close,
            Inbound::Ping { probe } => Packet::Ping { probe },
            Inbound::Pong { probe } => Packet::Pong { probe },
            Inbound::Message(t) => Packet::Message(Utf8Bytes::from(t.to_owned())),
            Inbound::Binary(b) => Packet::Binary(b),
            Inbound::Upgrade => Packet::Upgrade,
            Inbound::Noop => Packet::Noop,
        })
    }

    /// Appends this packet's text form to `out`, as used on polling (binary as `b` + base64).
    pub fn encode_text_into(&self, out: &mut String) {
        match self {
            Packet::Open(json) => {
                out.push('0');
                out.push_str(json);
            }
            Packet::Close => out.push('1'),
            Packet::Ping { probe } => {
                out.push('2');
                if *probe {
                    out.push_str("probe");
                }
            }
            Packet::Pong { probe } => {
                out.push('3');
                if *probe {
                    out.push_str("probe");
                }
            }
            Packet::Message(text) => {
                out.push('4');
                out.push_str(text);
            }
            Packet::Binary(data) => {
                out.push('b');
                BASE64.encode_string(data, out);
            }
            Packet::Upgrade => out.push('5'),
            Packet::Noop => out.push('6'),
        }
    }

    /// The text of this packet as a WebSocket text frame; `None` for binary packets.
    pub fn to_ws_text(&self) -> Option<Utf8Bytes> {
        match self {
            Packet::Binary(_) => None,
            Packet::Close => Some(Utf8Bytes::from_static("1")),
            Packet::Ping { probe: false } => Some(Utf8Bytes::from_static("2")),
            Packet::Pong { probe: false } => Some(Utf8Bytes::from_static("3")),
            Packet::Pong { probe: true } => Some(Utf8Bytes::from_static("3probe")),
            Packet::Noop => Some(Utf8Bytes::from_static("6")),
            other => {
                let mut s = String::new();
                other.encode_text_into(&mut s);
                Some(Utf8Bytes::from(s))
            }
        }
    }
}

/// A packet received from a client, borrowing its text from the frame or body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// `1`: the client closes the session.
    Close,
    /// `2`, or `2probe` during an upgrade.
    Ping {
        /// Part of the upgrade handshake.
        probe: bool,
    },
    /// `3`, or `3probe` during an upgrade.
    Pong {
        /// Part of the upgrade handshake.
        probe: bool,
    },
    /// `4` + text: an application message (the text excludes the type character).
    Message(&'a str),
    /// A binary application message.
    Binary(Bytes),
    /// `5`: the client finishes an upgrade.
    Upgrade,
    /// `6`.
    Noop,
}

impl<'a> Inbound<'a> {
    /// Decodes one text packet (a WebSocket text frame, or one record of a polling payload).
    pub fn decode(text: &'a str) -> Result<Inbound<'a>, DecodeError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(DecodeError::Empty)?;
        let rest = chars.as_str();
        let no_data = |p: Inbound<'a>| {
            if rest.is_empty() {
                Ok(p)
            } else {
                Err(DecodeError::TrailingData)
            }
        };
        match kind {
            // Clients never send `0`; treat it as invalid like Node does.
            '1' => no_data(Inbound::Close),
            '2' => match rest {
                "" => Ok(Inbound::Ping { probe: false }),
                "probe" => Ok(Inbound::Ping { probe: true }),
                _ => Err(DecodeError::TrailingData),
            },
            '3' => match rest {
                "" => Ok(Inbound::Pong { probe: false }),
                "probe" => Ok(Inbound::Pong { probe: true }),
                _ => Err(DecodeError::TrailingData),
            },
            '4' => Ok(Inbound::Message(rest)),
            '5' => no_data(Inbound::Upgrade),
            '6' => no_data(Inbound::Noop),
            'b' => BASE64
                .decode(rest)
                .map(|v| Inbound::Binary(Bytes::from(v)))
                .map_err(|_| DecodeError::Base64),
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

/// Decodes a long-polling POST body into packets, in order.
pub fn decode_payload(body: &str) -> Result<Vec<Inbound<'_>>, DecodeError> {
    body.split(SEPARATOR).map(Inbound::decode).collect()
}

/// Encodes packets as one long-polling response body.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a Packet>) -> String {
    let mut out = String::new();
    for (i, p) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        p.encode_text_into(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_packet_type() {
        assert_eq!(Packet::decode_text("1"), Ok(Packet::Close));
        assert_eq!(Packet::decode_text("2"), Ok(Packet::Ping { probe: false }));
        assert_eq!(
            Packet::decode_text("2probe"),
            Ok(Packet::Ping { probe: true })
        );
        assert_eq!(Packet::decode_text("3"), Ok(Packet::Pong { probe: false }));
        assert_eq!(
            Packet::decode_text("4héllo"),
            Ok(Packet::Message("héllo".into()))
        );
        assert_eq!(Packet::decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(Packet::decode_text("6"), Ok(Packet::Noop));
        assert_eq!(
            Packet::decode_text("bAQID"),
            Ok(Packet::Binary(Bytes::from_static(&[1, 2, 3])))
        );
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(Packet::decode_text(""), Err(DecodeError::Empty));
        assert_eq!(
            Packet::decode_text("abc"),
            Err(DecodeError::UnknownType('a'))
        );
        assert_eq!(
            Packet::decode_text("0{}"),
            Err(DecodeError::UnknownType('0'))
        );
        assert_eq!(Packet::decode_text("b!!"), Err(DecodeError::Base64));
        assert_eq!(Packet::decode_text("1x"), Err(DecodeError::TrailingData));
        assert_eq!(Packet::decode_text("2prob"), Err(DecodeError::TrailingData));
        assert_eq!(Packet::decode_text("é"), Err(DecodeError::UnknownType('é')));
    }

    #[test]
    fn payload_round_trip() {
        let packets = vec![
            Packet::Message("hello".into()),
            Packet::Binary(Bytes::from_static(&[1, 2, 3])),
            Packet::Ping { probe: false },
        ];
        let body = encode_payload(&packets);
        assert_eq!(body, "4hello\x1ebAQID\x1e2");
        let back: Vec<Packet> = body
            .split(SEPARATOR)
            .map(|r| Packet::decode_text(r).expect("valid record"))
            .collect();
        assert_eq!(back, packets);
        assert_eq!(decode_payload(&body).map(|v| v.len()), Ok(3));
    }

    #[test]
    fn one_bad_record_fails_the_payload() {
        assert!(decode_payload("4a\x1ex\x1e4b").is_err());
    }
}

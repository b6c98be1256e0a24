//! The broadcast messages on Redis, as Node's `@socket.io/redis-adapter` (v8, classic)
//! writes them: msgpack (as `notepack.io` encodes it) of `[uid, packet, opts]` with
//! `packet = {type: 2, data: [event, ...args], nsp}` and
//! `opts = {rooms, except, flags}`, on `<prefix>#<nsp>#` (`<prefix>#<nsp>#<room>#` for
//! exactly one room).
//!
//! A Switchboard node adds a fourth element, `{"r", "x", "a", "p", "s", "o"}`: the hub's own
//! room keys (`r`, except `x`), to-everyone (`a`), kept for replay (`p`), the sender's
//! sequence number (`s`) and the cluster offset (`o`), written last as a msgpack float64
//! so the publish script can append its 8 bytes. Node's adapter reads the first three
//! elements only, so it delivers these messages like its own.
//!
//! Owns the byte format and the JSON <-> msgpack mapping of event arguments (binary
//! attachments travel as msgpack bin, as Node sends them). Never: I/O, the hub.

use std::sync::Arc;

use bytes::Bytes;
use hub::{Payload, Publish, RoomId};
use rmpv::Value;
use serde_json::Value as Json;

/// Socket.IO's EVENT packet type.
const EVENT: i64 = 2;
/// Deepest msgpack nesting accepted from the bus (as the Socket.IO JSON decoder's limit).
pub(crate) const MAX_DEPTH: usize = 32;

/// Why a bus message was dropped (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Not msgpack, nested too deep, or trailing bytes.
    #[error("malformed msgpack")]
    Malformed,
    /// msgpack, but not `[uid, packet, opts]` with an EVENT packet.
    #[error("not a broadcast")]
    Shape,
}

impl DecodeError {
    /// The label of `/metrics`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            DecodeError::Malformed => "malformed",
            DecodeError::Shape => "shape",
        }
    }
}

/// Where the fabric's rooms live among Socket.IO namespaces.
#[derive(Debug, Clone)]
pub(crate) struct Namespaces {
    /// The namespace whose rooms are hub rooms by the same name (`/realtime`).
    pub(crate) fabric: String,
}

impl Namespaces {
    /// The Socket.IO namespace and room names of hub rooms, as Node nodes know them.
    fn to_socketio(&self, rooms: &[RoomId]) -> (String, Vec<String>) {
        let mut nsp: Option<&str> = None;
        let mut names = Vec::with_capacity(rooms.len());
        for r in rooms {
            let (n, room) = if let Some(n) = r.strip_prefix("nsp:") {
                (n, None)
            } else if r.starts_with('/') {
                match r.split_once('#') {
                    Some((n, room)) => (n, Some(room)),
                    None => (self.fabric.as_str(), Some(&**r)),
                }
            } else {
                (self.fabric.as_str(), Some(&**r))
            };
            nsp.get_or_insert(n);
            names.extend(room.map(str::to_owned));
        }
        (nsp.unwrap_or(&self.fabric).to_owned(), names)
    }

    /// The hub rooms of a Socket.IO broadcast from a Node node.
    fn to_hub(&self, nsp: &str, rooms: &[String]) -> Vec<RoomId> {
        if rooms.is_empty() {
            return vec![Arc::from(format!("nsp:{nsp}"))];
        }
        rooms
            .iter()
            .map(|r| {
                if nsp == self.fabric {
                    Arc::from(r.as_str())
                } else {
                    Arc::from(format!("{nsp}#{r}"))
                }
            })
            .collect()
    }
}

/// A message ready for the publish script: the channel, and the bytes without the
/// offset's 8 (the script appends them).
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) channel: String,
    pub(crate) head: Vec<u8>,
}

/// Encodes a publish of this node (`uid`, its `seq`-th relayed message).
pub(crate) fn encode(
    prefix: &str,
    uid: &str,
    epoch: u64,
    seq: u64,
    msg: &Publish,
    nsps: &Namespaces,
) -> Outgoing {
    let (nsp, rooms) = nsps.to_socketio(&msg.rooms);
    let (_, except) = nsps.to_socketio(&msg.except);
    let mut data = Vec::with_capacity(msg.payload.arg_count + 1);
    data.push(Value::from(&*msg.event));
    data.extend(args_to_msgpack(&msg.payload));
    let packet = Value::Map(vec![
        (Value::from("type"), Value::from(EVENT)),
        (Value::from("data"), Value::Array(data)),
        (Value::from("nsp"), Value::from(nsp.as_str())),
    ]);
    let mut flags = Vec::new();
    if msg.volatile {
        flags.push((Value::from("volatile"), Value::Boolean(true)));
    }
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
    let keys = |v: &[RoomId]| Value::Array(v.iter().map(|s| Value::from(&**s)).collect());
    let opts = Value::Map(vec![
        (Value::from("rooms"), strings(&rooms)),
        (Value::from("except"), strings(&except)),
        (Value::from("flags"), Value::Map(flags)),
    ]);
    let ext = Value::Map(vec![
        (Value::from("r"), keys(&msg.rooms)),
        (Value::from("x"), keys(&msg.except)),
        (Value::from("a"), Value::Boolean(msg.everyone)),
        (
            Value::from("p"),
            Value::Boolean(msg.persist && !msg.volatile),
        ),
        (Value::from("e"), Value::from(epoch)),
        (Value::from("s"), Value::from(seq)),
        (Value::from("o"), Value::F64(0.0)),
    ]);
    let whole = Value::Array(vec![Value::from(uid), packet, opts, ext]);
    let mut head = Vec::with_capacity(64 + msg.payload.args.len());
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut head, &whole);
    head.truncate(head.len() - 8);
    let mut channel = format!("{prefix}#{nsp}#");
    if rooms.len() == 1 && !msg.everyone {
        channel.push_str(&rooms[0]);
        channel.push('#');
    }
    Outgoing { channel, head }
}

/// What a node added to a message (absent in Node's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ext {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) offset: u64,
}

/// A broadcast read from the bus.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) uid: String,
    /// The message for this node's hub.
    pub(crate) publish: Publish,
    /// Present when a Switchboard node sent it.
    pub(crate) ext: Option<Ext>,
}

/// Decodes one bus message. `nsps` maps a Node node's namespace rooms to hub rooms.
pub(crate) fn decode(bytes: &[u8], nsps: &Namespaces) -> Result<Incoming, DecodeError> {
    let mut rd = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .map_err(|_| DecodeError::Malformed)?;
    if !rd.is_empty() {
        return Err(DecodeError::Malformed);
    }
    let Value::Array(mut parts) = value else {
        return Err(DecodeError::Shape);
    };
    if parts.len() < 3 {
        return Err(DecodeError::Shape);
    }
    let ext = if parts.len() > 3 { parts.pop() } else { None };
    let opts = parts.pop().unwrap_or(Value::Nil);
    let packet = parts.pop().unwrap_or(Value::Nil);
    let uid = match parts.pop() {
        Some(Value::String(s)) => s.into_str().ok_or(DecodeError::Shape)?,
        _ => return Err(DecodeError::Shape),
    };
    let kind = get(&packet, "type").and_then(Value::as_i64);
    if kind != Some(EVENT) && kind != Some(5) {
        return Err(DecodeError::Shape);
    }
    let nsp = get(&packet, "nsp").and_then(Value::as_str).unwrap_or("/");
    let Some(Value::Array(data)) = get(&packet, "data") else {
        return Err(DecodeError::Shape);
    };
    let Some(event) = data.first().and_then(Value::as_str) else {
        return Err(DecodeError::Shape);
    };
    let payload = args_from_msgpack(&data[1..]);
    let names = |key: &str, from: &Value| -> Result<Vec<String>, DecodeError> {
        match get(from, key) {
            None | Some(Value::Nil) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.as_str().map(str::to_owned).ok_or(DecodeError::Shape),
                    // Node allows numeric room names.
                    Value::Integer(i) => Ok(i.to_string()),
                    _ => Err(DecodeError::Shape),
                })
                .collect(),
            Some(_) => Err(DecodeError::Shape),
        }
    };
    let volatile = get(&opts, "flags")
        .and_then(|f| get(f, "volatile"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut publish = Publish {
        event: event.into(),
        payload,
        volatile,
        ..Publish::default()
    };
    let ext = match ext {
        Some(ext @ Value::Map(_)) => {
            let keys = |k: &str| -> Result<Vec<RoomId>, DecodeError> {
                Ok(names(k, &ext)?.into_iter().map(Arc::from).collect())
            };
            publish.rooms = keys("r")?.into_iter().collect();
            publish.except = keys("x")?.into_iter().collect();
            publish.everyone = get(&ext, "a").and_then(Value::as_bool).unwrap_or(false);
            publish.persist = get(&ext, "p").and_then(Value::as_bool).unwrap_or(false);
            let seq = get(&ext, "s")
                .and_then(Value::as_u64)
                .ok_or(DecodeError::Shape)?;
            let epoch = get(&ext, "e").and_then(Value::as_u64).unwrap_or(0);
            let offset = match get(&ext, "o") {
                Some(Value::F64(f)) if f.is_finite() && *f >= 0.0 => *f as u64,
                Some(v) => v.as_u64().ok_or(DecodeError::Shape)?,
                None => return Err(DecodeError::Shape),
            };
            Some(Ext { epoch, seq, offset })
        }
        _ => {
            let rooms = names("rooms", &opts)?;
            let except = names("except", &opts)?;
            publish.rooms = nsps.to_hub(nsp, &rooms).into_iter().collect();
            publish.except = except
                .iter()
                .flat_map(|r| nsps.to_hub(nsp, std::slice::from_ref(r)))
                .collect();
            // Live only: a Node node's broadcast carries no cluster offset.
            publish.persist = false;
            None
        }
    };
    Ok(Incoming { uid, publish, ext })
}

fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    match map {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The payload's JSON arguments as msgpack values; binary placeholders become bin.
pub(crate) fn args_to_msgpack(payload: &Payload) -> Vec<Value> {
    if payload.arg_count == 0 {
        return Vec::new();
    }
    let text = format!("[{}]", payload.args);
    match serde_json::from_str::<Vec<Json>>(&text) {
        Ok(args) => args
            .iter()
            .map(|a| json_to_msgpack(a, &payload.attachments))
            .collect(),
        // Payloads are validated JSON when made; keep the count if one is not.
        Err(_) => vec![Value::Nil; payload.arg_count],
    }
}

pub(crate) fn json_to_msgpack(v: &Json, attachments: &[Bytes]) -> Value {
    match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::Array(a.iter().map(|x| json_to_msgpack(x, attachments)).collect()),
        Json::Object(o) => {
            if o.get("_placeholder") == Some(&Json::Bool(true))
                && let Some(bin) = o
                    .get("num")
                    .and_then(Json::as_u64)
                    .and_then(|n| attachments.get(n as usize))
            {
                return Value::Binary(bin.to_vec());
            }
            Value::Map(
                o.iter()
                    .map(|(k, x)| (Value::from(k.as_str()), json_to_msgpack(x, attachments)))
                    .collect(),
            )
        }
    }
}

/// msgpack arguments as a payload: JSON text, bin values as placeholders + attachments.
fn args_from_msgpack(args: &[Value]) -> Payload {
    let mut attachments = Vec::new();
    let json: Vec<String> = args
        .iter()
        .map(|a| msgpack_to_json(a, &mut attachments).to_string())
        .collect();
    let mut p = Payload::raw_args(json.iter().map(String::as_str));
    p.attachments = attachments;
    p
}

pub(crate) fn msgpack_to_json(v: &Value, attachments: &mut Vec<Bytes>) -> Json {
    match v {
        // notepack writes `undefined` as fixext 1 type 0; JSON has only null.
        Value::Nil | Value::Ext(..) => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => i
            .as_i64()
            .map(Json::from)
            .or_else(|| i.as_u64().map(Json::from))
            .unwrap_or(Json::Null),
        Value::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number)
        }
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.as_str().unwrap_or_default().to_owned()),
        Value::Binary(b) => {
            attachments.push(Bytes::copy_from_slice(b));
            serde_json::json!({"_placeholder": true, "num": attachments.len() - 1})
        }
        Value::Array(a) => Json::Array(a.iter().map(|x| msgpack_to_json(x, attachments)).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, x)| {
                    let key = match k {
                        Value::String(s) => s.as_str().unwrap_or_default().to_owned(),
                        other => other.to_string(),
                    };
                    (key, msgpack_to_json(x, attachments))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nsps() -> Namespaces {
        Namespaces {
            fabric: "/realtime".into(),
        }
    }

    /// The bytes the publish script sends: the head and the offset as a big-endian f64.
    fn sequenced(out: &Outgoing, offset: u64) -> Vec<u8> {
        let mut b = out.head.clone();
        b.extend_from_slice(&(offset as f64).to_be_bytes());
        b
    }

    fn publish(rooms: &[&str]) -> Publish {
        let mut payload = Payload::raw_args([r#"{"a":1,"b":[true,null,2.5]}"#, r#""x""#]);
        payload.args = format!("{},{}", payload.args, r#"{"_placeholder":true,"num":0}"#);
        payload.arg_count = 3;
        payload.attachments = vec![Bytes::from_static(b"\x00\x01")];
        Publish {
            rooms: rooms.iter().map(|r| Arc::from(*r)).collect(),
            except: std::iter::once(Arc::from("event_9")).collect(),
            event: "availability-update".into(),
            payload,
            persist: true,
            ..Publish::default()
        }
    }

    #[test]
    fn a_publish_round_trips_with_its_offset() {
        let msg = publish(&["event_1"]);
        let out = encode("socket.io", "node-a", 3, 7, &msg, &nsps());
        assert_eq!(out.channel, "socket.io#/realtime#event_1#");
        let got = decode(&sequenced(&out, 1_732_990_000_123_456), &nsps()).expect("decodes");
        assert_eq!(got.uid, "node-a");
        assert_eq!(
            got.ext,
            Some(Ext {
                epoch: 3,
                seq: 7,
                offset: 1_732_990_000_123_456
            })
        );
        assert_eq!(&*got.publish.event, "availability-update");
        assert_eq!(
            got.publish.rooms.to_vec(),
            vec![Arc::<str>::from("event_1")]
        );
        assert_eq!(
            got.publish.except.to_vec(),
            vec![Arc::<str>::from("event_9")]
        );
        assert!(got.publish.persist);
        assert_eq!(got.publish.payload.arg_count, 3);
        assert_eq!(
            got.publish.payload.args,
            r#"{"a":1,"b":[true,null,2.5]},"x",{"_placeholder":true,"num":0}"#
        );
        assert_eq!(got.publish.payload.attachments, msg.payload.attachments);
    }

    #[test]
    fn namespaces_and_channels_as_node_expects_them() {
        let everyone = Publish {
            rooms: std::iter::once(Arc::from("nsp:/realtime")).collect(),
            ..publish(&[])
        };
        let out = encode("socket.io", "n", 1, 1, &everyone, &nsps());
        assert_eq!(out.channel, "socket.io#/realtime#");
        let two = encode("p", "n", 1, 1, &publish(&["a", "b"]), &nsps());
        assert_eq!(two.channel, "p#/realtime#");
        let other = encode("socket.io", "n", 1, 1, &publish(&["/chat#room-1"]), &nsps());
        assert_eq!(other.channel, "socket.io#/chat#room-1#");
        // What Node reads: [uid, {type, data, nsp}, {rooms, except, flags}].
        let Value::Array(parts) =
            rmpv::decode::read_value(&mut &sequenced(&other, 5)[..]).expect("msgpack")
        else {
            panic!("not an array")
        };
        assert_eq!(get(&parts[1], "nsp").and_then(Value::as_str), Some("/chat"));
        assert_eq!(get(&parts[1], "type").and_then(Value::as_i64), Some(2));
        let rooms = get(&parts[2], "rooms").expect("rooms");
        assert_eq!(rooms, &Value::Array(vec![Value::from("room-1")]));
    }

    /// `["uid", {type: 2, data: ["hello", 1, <bin 2a>], nsp: "/realtime"}, {rooms:
    /// ["event_1"], except: [], flags: {}}]` as notepack.io writes it.
    const FROM_NODE: &[u8] = b"\x93\xa3uid\x83\xa4type\x02\xa4data\x93\xa5hello\x01\xc4\x01\x2a\xa3nsp\xa9/realtime\x83\xa5rooms\x91\xa7event_1\xa6except\x90\xa5flags\x80";

    #[test]
    fn a_node_broadcast_is_live_only_and_mapped_to_hub_rooms() {
        let got = decode(FROM_NODE, &nsps()).expect("decodes");
        assert_eq!(got.uid, "uid");
        assert!(got.ext.is_none());
        assert!(!got.publish.persist);
        assert_eq!(
            got.publish.rooms.to_vec(),
            vec![Arc::<str>::from("event_1")]
        );
        assert_eq!(
            got.publish.payload.args,
            r#"1,{"_placeholder":true,"num":0}"#
        );
        assert_eq!(&got.publish.payload.attachments[0][..], b"\x2a");
        let other = Namespaces {
            fabric: "/other".into(),
        };
        let got = decode(FROM_NODE, &other).expect("decodes");
        assert_eq!(
            got.publish.rooms.to_vec(),
            vec![Arc::<str>::from("/realtime#event_1")]
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"\xc1",
            b"{\"json\":1}",
            b"\x93\xa3uid\xc0\xc0",
            b"\x92\xa3uid\x80",
            b"\x93\x01\x80\x80",
            b"\x93\xa3uid\x83\xa4type\x02\xa4data\x90\xa3nsp\xa1/\x80",
            b"\x93\xa3uid\x83\xa4type\x02\xa4data\x91\x01\xa3nsp\xa1/\x80",
            &FROM_NODE[..FROM_NODE.len() - 3],
        ];
        for c in cases {
            assert!(decode(c, &nsps()).is_err(), "{c:?}");
        }
        // Nested deeper than the limit.
        let mut deep = vec![0x91u8; 100];
        deep.push(0xc0);
        assert_eq!(decode(&deep, &nsps()).err(), Some(DecodeError::Malformed));
        // Trailing bytes.
        let mut trailing = FROM_NODE.to_vec();
        trailing.push(0);
        assert_eq!(
            decode(&trailing, &nsps()).err(),
            Some(DecodeError::Malformed)
        );
    }
}

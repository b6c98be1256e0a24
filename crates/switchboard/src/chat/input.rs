//! Decoding what clients send (Socket.IO arguments, `/ws` actions, HTTP bodies) into
//! typed requests, with a clear refusal for anything off. Pure.

use serde_json::{Map, Value};

use super::error::ChatError;
use super::model::{MessageType, RoomKind};

/// Longest `clientMsgId`, `replyTo` or user id accepted.
const MAX_ID: usize = 200;
/// Most messages one `history` returns.
pub const MAX_HISTORY: usize = 100;
const DEFAULT_HISTORY: usize = 50;

fn bad(msg: impl Into<String>) -> ChatError {
    ChatError::BadInput(msg.into())
}

fn obj(data: &Value) -> Result<&Map<String, Value>, ChatError> {
    data.as_object()
        .ok_or_else(|| bad("Invalid payload: expected an object"))
}

fn opt_str<'a>(o: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ChatError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_ID => Ok(Some(s)),
        Some(_) => Err(bad(format!(
            "{name} must be a string of 1 to {MAX_ID} characters"
        ))),
    }
}

fn req_str<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a str, ChatError> {
    opt_str(o, name)?.ok_or_else(|| bad(format!("{name} is required")))
}

/// A room id: `"room"` or `{roomId: "room"}`.
pub fn room_arg(data: &Value) -> Result<String, ChatError> {
    match data {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => Ok(req_str(o, "roomId")?.to_owned()),
        _ => Err(bad("roomId is required")),
    }
}

/// The `roomId` field of an object.
pub fn room_field(data: &Value) -> Result<String, ChatError> {
    Ok(req_str(obj(data)?, "roomId")?.to_owned())
}

/// A whole number written plainly: digits, no sign, no leading zero.
fn canonical(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0') && !s.is_empty()
}

/// A message id: a string or a number (ids are the server's sequence numbers).
pub fn message_id(v: Option<&Value>, name: &str) -> Result<i64, ChatError> {
    let parsed = match v {
        Some(Value::String(s)) if canonical(s) && s.len() <= 18 => s.parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        None | Some(Value::Null) => return Err(bad(format!("{name} is required"))),
        _ => None,
    };
    parsed
        .filter(|n| *n > 0)
        .ok_or_else(|| bad(format!("{name} must be a message id")))
}

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct SendInput {
    pub room: String,
    pub content: String,
    pub kind: MessageType,
    pub reply_to: Option<String>,
    pub metadata: Option<Value>,
    pub client_msg_id: Option<String>,
}

/// Only whitespace: Unicode's, and the information separators U+001C-U+001F, which
/// Python's `\s` also counts (the API fuzzer's idea of whitespace, see `api::tighten`).
fn blank(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Content rules shared by sends and edits.
pub fn content(o: &Map<String, Value>, max_bytes: usize) -> Result<String, ChatError> {
    match o.get("content") {
        Some(Value::String(s)) if blank(s) => Err(ChatError::EmptyContent),
        Some(Value::String(s)) if s.len() > max_bytes => {
            Err(ChatError::TooLarge { max: max_bytes })
        }
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(ChatError::EmptyContent),
        Some(_) => Err(ChatError::ContentNotString),
    }
}

/// `{roomId, content, type?, replyTo?, metadata?, clientMsgId?}`. `system` only when
/// `allow_system` (the HTTP API); a `senderId` other than `sender` is refused. The room
/// comes from `room` when the transport names it elsewhere (the HTTP path).
pub fn send(
    data: &Value,
    room: Option<&str>,
    sender: Option<&str>,
    max_bytes: usize,
    allow_system: bool,
) -> Result<SendInput, ChatError> {
    let o = obj(data)?;
    if let Some(claimed) = o.get("senderId").filter(|v| !v.is_null())
        && sender.is_some_and(|s| claimed.as_str() != Some(s))
    {
        return Err(ChatError::ForgedSender);
    }
    let room = match room {
        Some(r) => r.to_owned(),
        None => req_str(o, "roomId")?.to_owned(),
    };
    let content = content(o, max_bytes)?;
    let kind = match o.get("type") {
        None | Some(Value::Null) => MessageType::Text,
        Some(Value::String(t)) => match MessageType::parse(t) {
            Some(MessageType::System) if !allow_system => {
                return Err(ChatError::BadType(t.clone()));
            }
            Some(k) => k,
            None => return Err(ChatError::BadType(t.clone())),
        },
        Some(other) => return Err(ChatError::BadType(other.to_string())),
    };
    let metadata = match o.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => Some(m.clone()),
        Some(_) => return Err(bad("metadata must be an object")),
    };
    if let Some(m) = &metadata
        && m.to_string().len() > max_bytes
    {
        return Err(ChatError::TooLarge { max: max_bytes });
    }
    let reply_to = match o.get("replyTo") {
        None | Some(Value::Null) => None,
        Some(v) => Some(message_id(Some(v), "replyTo")?.to_string()),
    };
    Ok(SendInput {
        room,
        content,
        kind,
        reply_to,
        metadata,
        client_msg_id: opt_str(o, "clientMsgId")?.map(str::to_owned),
    })
}

/// `{roomId, before?, limit?}`: limit 1..=100 (50 when absent).
pub fn history(data: &Value) -> Result<(String, Option<i64>, usize), ChatError> {
    let o = obj(data)?;
    let room = req_str(o, "roomId")?.to_owned();
    let before = match o.get("before") {
        None | Some(Value::Null) => None,
        v => Some(message_id(v, "before")?),
    };
    Ok((room, before, limit(o.get("limit"))?))
}

/// A history limit: a whole number 1..=100, or absent (50).
pub fn limit(v: Option<&Value>) -> Result<usize, ChatError> {
    let n = match v {
        None | Some(Value::Null) => return Ok(DEFAULT_HISTORY),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) if canonical(s) && s.len() <= 18 => s.parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (1..=MAX_HISTORY as i64).contains(&n) => Ok(n as usize),
        _ => Err(ChatError::BadLimit),
    }
}

/// `{roomId, messageId}`.
pub fn read(data: &Value) -> Result<(String, i64), ChatError> {
    let o = obj(data)?;
    Ok((
        req_str(o, "roomId")?.to_owned(),
        message_id(o.get("messageId"), "messageId")?,
    ))
}

/// `{id, content}` (content `None` for a delete).
pub fn edit(
    data: &Value,
    max_bytes: usize,
    with_content: bool,
) -> Result<(i64, Option<String>), ChatError> {
    let o = obj(data)?;
    let id = message_id(o.get("id").or_else(|| o.get("messageId")), "id")?;
    let content = if with_content {
        Some(content(o, max_bytes)?)
    } else {
        None
    };
    Ok((id, content))
}

/// A room to create.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateInput {
    pub room: Option<String>,
    pub kind: RoomKind,
    pub name: Option<String>,
    pub private: bool,
    pub members: Vec<String>,
    pub metadata: Option<Value>,
}

/// `{roomId?, type: group | channel, name?, private?, members?, metadata?}`.
pub fn create(data: &Value) -> Result<CreateInput, ChatError> {
    let o = obj(data)?;
    let kind = match o.get("type").and_then(Value::as_str) {
        None => RoomKind::Group,
        Some(t) => match RoomKind::parse(t) {
            Some(RoomKind::Direct) => {
                return Err(bad("direct rooms are opened with room:direct {userId}"));
            }
            Some(k) => k,
            None => return Err(bad("type must be group or channel")),
        },
    };
    let private = match o.get("private") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("private must be true or false")),
    };
    let members = match o.get("members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 1000 => a
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if !s.is_empty() && s.len() <= MAX_ID => Ok(s.to_owned()),
                _ => Err(bad("members must be user ids (strings)")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("members must be a list of at most 1000 user ids")),
    };
    let metadata = match o.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) if m.to_string().len() <= 16 * 1024 => Some(m.clone()),
        Some(_) => return Err(bad("metadata must be an object of at most 16 KiB")),
    };
    Ok(CreateInput {
        room: opt_str(o, "roomId")?.map(str::to_owned),
        kind,
        name: opt_str(o, "name")?.map(str::to_owned),
        private,
        members,
        metadata,
    })
}

/// A user id field (`room:direct {userId}`, `room:kick {roomId, userId}`).
pub fn user_field(data: &Value) -> Result<String, ChatError> {
    let o = obj(data)?;
    let u = req_str(o, "userId")?;
    if u.contains(':') {
        return Err(bad("userId must not contain ':'"));
    }
    Ok(u.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sends_are_checked() {
        let ok = send(
            &json!({"roomId": "r", "content": "hi", "clientMsgId": "c1"}),
            None,
            Some("ana"),
            10,
            false,
        )
        .expect("valid");
        assert_eq!(ok.content, "hi");
        assert_eq!(ok.client_msg_id.as_deref(), Some("c1"));
        let refuse = |v: Value| {
            send(&v, None, Some("ana"), 10, false)
                .err()
                .map(|e| e.to_string())
        };
        assert!(refuse(json!({"roomId": "r", "content": ""})).is_some_and(|m| m.contains("empty")));
        assert!(refuse(json!({"roomId": "r", "content": "   "})).is_some());
        assert!(refuse(json!({"roomId": "r", "content": 5})).is_some_and(|m| m.contains("string")));
        assert!(
            refuse(json!({"roomId": "r", "content": "x".repeat(11)}))
                .is_some_and(|m| m.contains("10 bytes"))
        );
        assert!(
            refuse(json!({"roomId": "r", "content": "hi", "senderId": "bob"}))
                .is_some_and(|m| m.contains("senderId"))
        );
        assert!(refuse(json!({"roomId": "r", "content": "hi", "type": "system"})).is_some());
        assert!(refuse(json!({"content": "hi"})).is_some_and(|m| m.contains("roomId")));
        assert!(
            send(
                &json!({"roomId": "r", "content": "hi", "senderId": "ana"}),
                None,
                Some("ana"),
                10,
                false
            )
            .is_ok()
        );
        assert!(
            send(
                &json!({"content": "hi", "type": "system"}),
                Some("r"),
                None,
                10,
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn history_limits() {
        assert_eq!(limit(None).ok(), Some(50));
        assert_eq!(limit(Some(&json!(100))).ok(), Some(100));
        for bad in [
            json!(0),
            json!(-1),
            json!(10_000),
            json!(1.5),
            json!("x"),
            json!([]),
            json!("+5"),
            json!("05"),
        ] {
            assert!(limit(Some(&bad)).is_err(), "{bad}");
        }
        assert_eq!(
            history(&json!({"roomId": "r", "before": "9"})).ok(),
            Some(("r".into(), Some(9), 50))
        );
    }

    #[test]
    fn room_arguments() {
        assert_eq!(room_arg(&json!("r")).ok(), Some("r".into()));
        assert_eq!(room_arg(&json!({"roomId": "r"})).ok(), Some("r".into()));
        assert!(room_arg(&json!(5)).is_err());
    }
}

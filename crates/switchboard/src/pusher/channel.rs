//! Channel names and kinds, how a channel maps onto a hub room, how hub envelopes become
//! Pusher frames, and the presence book (each present user's `user_info`).

use std::collections::HashMap;
use std::sync::Arc;

use hub::{Envelope, Payload};
use parking_lot::Mutex;
use serde_json::value::RawValue;

/// Pusher's channel name limit.
pub(crate) const MAX_CHANNEL_LEN: usize = 164;

/// The prefix of a signed-in user's own channel, the hub room `user:{id}`.
pub(crate) const USER_CHANNEL: &str = "#server-to-user-";

/// What a channel name says about its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Public,
    Private,
    Encrypted,
    Presence,
    /// `#server-to-user-{id}`: only the signed-in user `id`.
    User,
}

impl Kind {
    pub(crate) fn of(channel: &str) -> Kind {
        if channel.starts_with("private-encrypted-") {
            Kind::Encrypted
        } else if channel.starts_with("private-") {
            Kind::Private
        } else if channel.starts_with("presence-") {
            Kind::Presence
        } else if channel.starts_with(USER_CHANNEL) {
            Kind::User
        } else {
            Kind::Public
        }
    }

    /// Client events are allowed here (when the app allows them).
    pub(crate) fn takes_client_events(self) -> bool {
        matches!(self, Kind::Private | Kind::Presence)
    }
}

/// A channel name as Pusher accepts it: 1 to 164 of `[A-Za-z0-9_\-=@,.;]`, or a user
/// channel. Such a name is never one of the hub's reserved rooms (`user:`, `sid:`, `/`).
pub(crate) fn valid_name(channel: &str) -> bool {
    let body = channel.strip_prefix(USER_CHANNEL).unwrap_or(channel);
    !body.is_empty()
        && channel.len() <= MAX_CHANNEL_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

/// The hub room of a channel: the same name, except `#server-to-user-{id}` is `user:{id}`
/// (so the publish API's `user` target reaches signed-in Pusher users too).
pub(crate) fn room_of(channel: &str) -> std::borrow::Cow<'_, str> {
    match channel.strip_prefix(USER_CHANNEL) {
        Some(id) => crate::realtime::user_room(id).into(),
        None => channel.into(),
    }
}

/// The channel of a hub room, if a Pusher client can be in it.
pub(crate) fn channel_of(room: &str) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(id) = room.strip_prefix("user:") {
        return Some(format!("{USER_CHANNEL}{id}").into());
    }
    valid_name(room).then_some(room.into())
}

/// A JSON string literal.
pub(crate) fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Pusher event data (a string) as a hub payload: the JSON it holds, untouched, when it
/// is JSON (so Socket.IO, `/ws` and SSE clients get the value), else the string itself.
pub(crate) fn payload_of_data(data: &str) -> Payload {
    if serde_json::from_str::<&RawValue>(data).is_ok() {
        Payload::raw_args([data])
    } else {
        Payload::raw_args([quoted(data).as_str()])
    }
}

/// A hub payload as the JSON of a Pusher frame's `data` field (always a string): a
/// string value as it is, anything else as its JSON text.
pub(crate) fn data_field(json: &str) -> String {
    if json.starts_with('"') {
        json.to_owned()
    } else {
        quoted(json)
    }
}

/// One Pusher frame.
pub(crate) fn frame(event: &str, channel: Option<&str>, data_json: &str) -> String {
    let mut out = String::with_capacity(event.len() + data_json.len() + 48);
    out.push_str("{\"event\":");
    out.push_str(&quoted(event));
    if let Some(c) = channel {
        out.push_str(",\"channel\":");
        out.push_str(&quoted(c));
    }
    out.push_str(",\"data\":");
    out.push_str(data_json);
    out.push('}');
    out
}

/// The arguments of a payload, each as raw JSON.
fn args_of(payload: &Payload) -> Vec<Box<RawValue>> {
    serde_json::from_str(&format!("[{}]", payload.args)).unwrap_or_default()
}

/// Presence announcements' payload (`member_joined` / `member_left`).
#[derive(serde::Deserialize)]
struct Announcement<'a> {
    #[serde(rename = "userId", borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "userInfo", borrow)]
    user_info: Option<&'a RawValue>,
}

/// A hub envelope as the Pusher frame for `channel`: presence announcements become
/// `pusher_internal:member_added` / `member_removed` on presence channels; anything else
/// is `{event, channel, data}`, with the sender's `user_id` for presence client events.
pub(crate) fn encode(env: &Envelope, channel: &str) -> Option<String> {
    let presence = Kind::of(channel) == Kind::Presence;
    let event = &*env.event;
    if event == "member_joined" || event == "member_left" {
        if !presence {
            // Other transports' room presence: a Pusher client only knows it on
            // presence channels.
            return None;
        }
        let a: Announcement = serde_json::from_str(&env.payload.args).ok()?;
        let user_id = a.user_id?;
        let user_id = match user_id.get().starts_with('"') {
            true => user_id.get().to_owned(),
            false => quoted(user_id.get()),
        };
        return Some(if event == "member_joined" {
            let info = a.user_info.map_or("null", RawValue::get);
            frame(
                "pusher_internal:member_added",
                Some(channel),
                &quoted(&format!("{{\"user_id\":{user_id},\"user_info\":{info}}}")),
            )
        } else {
            frame(
                "pusher_internal:member_removed",
                Some(channel),
                &quoted(&format!("{{\"user_id\":{user_id}}}")),
            )
        });
    }
    if event.starts_with("client-") && env.payload.arg_count == 2 {
        // A presence client event: [data, {"user_id": ...}].
        let args = args_of(&env.payload);
        if let [data, meta] = args.as_slice() {
            let user = serde_json::from_str::<serde_json::Value>(meta.get())
                .ok()
                .and_then(|m| m.get("user_id").and_then(|u| u.as_str().map(str::to_owned)));
            let mut out = frame(event, Some(channel), &data_field(data.get()));
            if let Some(u) = user {
                out.pop();
                out.push_str(",\"user_id\":");
                out.push_str(&quoted(&u));
                out.push('}');
            }
            return Some(out);
        }
    }
    Some(frame(
        event,
        Some(channel),
        &data_field(&env.payload.as_single_json()),
    ))
}

/// The hub room of one Pusher socket (cluster mode): a reserved `sid:` room, never a
/// channel, which a publish names in its `except` to skip that socket on any node.
pub(crate) fn socket_room(socket_id: &str) -> String {
    format!("sid:pusher:{socket_id}")
}

/// The `user_info` of each user present in each presence channel, with how many Pusher
/// subscriptions hold it. Plain strings and counts: what a cluster would keep in Redis
/// (a hash per channel, `user_id -> user_info`) to answer from any node.
#[derive(Default)]
pub(crate) struct PresenceBook {
    rooms: Mutex<HashMap<Arc<str>, Users>>,
}

/// A presence room's users: `user_id -> (user_info JSON, subscriptions)`.
type Users = HashMap<Box<str>, (Box<str>, u32)>;

impl PresenceBook {
    pub(crate) fn add(&self, room: &str, user: &str, info: &str) {
        let mut rooms = self.rooms.lock();
        let users = rooms.entry(Arc::from(room)).or_default();
        let e = users
            .entry(user.into())
            .or_insert_with(|| (Box::from("null"), 0));
        e.0 = info.into();
        e.1 += 1;
    }

    pub(crate) fn remove(&self, room: &str, user: &str) {
        let mut rooms = self.rooms.lock();
        let Some(users) = rooms.get_mut(room) else {
            return;
        };
        if let Some(e) = users.get_mut(user) {
            e.1 -= 1;
            if e.1 == 0 {
                users.remove(user);
            }
        }
        if users.is_empty() {
            rooms.remove(room);
        }
    }

    /// The `user_info` JSON of `user` in `room`, `null` when unknown (a member of
    /// another transport).
    pub(crate) fn info(&self, room: &str, user: &str) -> String {
        self.rooms
            .lock()
            .get(room)
            .and_then(|u| u.get(user))
            .map_or_else(|| "null".to_owned(), |(i, _)| i.to_string())
    }

    /// `{"presence": {ids, hash, count}}` for these users: each one's `user_info` as
    /// this node knows it, else the one in `infos` (the same index: another node's
    /// member), else `null`.
    pub(crate) fn members_json(
        &self,
        room: &str,
        users: &[String],
        infos: &[Option<String>],
    ) -> String {
        let rooms = self.rooms.lock();
        let book = rooms.get(room);
        let mut ids = Vec::with_capacity(users.len());
        let mut hash = String::from("{");
        for (i, u) in users.iter().enumerate() {
            let q = quoted(u);
            if i > 0 {
                hash.push(',');
            }
            hash.push_str(&q);
            hash.push(':');
            hash.push_str(
                book.and_then(|b| b.get(u.as_str()))
                    .map(|e| &*e.0)
                    .or_else(|| infos.get(i).and_then(Option::as_deref))
                    .unwrap_or("null"),
            );
            ids.push(q);
        }
        hash.push('}');
        format!(
            "{{\"presence\":{{\"ids\":[{}],\"hash\":{hash},\"count\":{}}}}}",
            ids.join(","),
            users.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub::{Hub, HubConfig, Publish};

    #[test]
    fn names_and_kinds() {
        for ok in [
            "prices",
            "private-a",
            "presence-b_c",
            "a-=@,.;",
            "#server-to-user-u1",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "user:x",
            "sid:1",
            "/ns",
            "*",
            "#other",
            "#server-to-user-",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"x".repeat(165)));
        assert_eq!(Kind::of("private-encrypted-x"), Kind::Encrypted);
        assert_eq!(Kind::of("private-x"), Kind::Private);
        assert_eq!(Kind::of("presence-x"), Kind::Presence);
        assert_eq!(Kind::of("#server-to-user-1"), Kind::User);
        assert_eq!(Kind::of("x"), Kind::Public);
        assert_eq!(room_of("#server-to-user-u1"), "user:u1");
        assert_eq!(channel_of("user:u1").as_deref(), Some("#server-to-user-u1"));
        assert_eq!(channel_of("sid:abc"), None);
        assert_eq!(channel_of("prices").as_deref(), Some("prices"));
    }

    #[test]
    fn data_round_trips() {
        for (data, field) in [
            (r#"{"a":1}"#, r#""{\"a\":1}""#),
            ("hello", r#""hello""#),
            ("12", r#""12""#),
        ] {
            let p = payload_of_data(data);
            assert_eq!(data_field(&p.as_single_json()), field, "{data}");
        }
        assert_eq!(payload_of_data("hello").args, "\"hello\"");
        assert_eq!(payload_of_data(r#"{"a":1}"#).args, r#"{"a":1}"#);
    }

    /// Envelopes come from a hub: publish into one and capture what a member gets.
    fn envelope(event: &str, payload: Payload) -> Arc<Envelope> {
        struct Grab(Mutex<Option<Arc<Envelope>>>);
        impl hub::Member for Grab {
            fn deliver(&self, e: &Arc<Envelope>) -> hub::Delivery {
                *self.0.lock() = Some(e.clone());
                hub::Delivery::Delivered
            }
            fn transport(&self) -> &'static str {
                "test"
            }
        }
        let hub = Hub::new(HubConfig::default());
        let grab = Arc::new(Grab(Mutex::new(None)));
        let m = hub.add_member(grab.clone());
        hub.join(m, "r").expect("join");
        hub.publish(Publish {
            rooms: std::iter::once(Arc::from("r")).collect(),
            event: event.into(),
            payload,
            ..Publish::default()
        });
        let e = grab.0.lock().take();
        e.expect("delivered")
    }

    #[test]
    fn frames() {
        let env = envelope("update", Payload::json(&serde_json::json!({"p": 1})));
        assert_eq!(
            encode(&env, "prices").as_deref(),
            Some(r#"{"event":"update","channel":"prices","data":"{\"p\":1}"}"#)
        );
        let joined = envelope(
            "member_joined",
            Payload::raw_args([r#"{"roomId":"presence-a","userId":"u1","userInfo":{"n":1}}"#]),
        );
        assert_eq!(encode(&joined, "prices"), None);
        assert_eq!(
            encode(&joined, "presence-a").as_deref(),
            Some(
                r#"{"event":"pusher_internal:member_added","channel":"presence-a","data":"{\"user_id\":\"u1\",\"user_info\":{\"n\":1}}"}"#
            )
        );
        let left = envelope(
            "member_left",
            Payload::json(&serde_json::json!({"roomId": "presence-a", "userId": "u1"})),
        );
        assert_eq!(
            encode(&left, "presence-a").as_deref(),
            Some(
                r#"{"event":"pusher_internal:member_removed","channel":"presence-a","data":"{\"user_id\":\"u1\"}"}"#
            )
        );
        let client = envelope(
            "client-typing",
            Payload::raw_args([r#"{"t":true}"#, r#"{"user_id":"u2"}"#]),
        );
        assert_eq!(
            encode(&client, "presence-a").as_deref(),
            Some(
                r#"{"event":"client-typing","channel":"presence-a","data":"{\"t\":true}","user_id":"u2"}"#
            )
        );
    }

    #[test]
    fn presence_book_counts_subscriptions() {
        let book = PresenceBook::default();
        book.add("presence-a", "u1", r#"{"n":1}"#);
        book.add("presence-a", "u1", r#"{"n":2}"#);
        assert_eq!(book.info("presence-a", "u1"), r#"{"n":2}"#);
        book.remove("presence-a", "u1");
        assert_eq!(book.info("presence-a", "u1"), r#"{"n":2}"#);
        assert_eq!(
            book.members_json("presence-a", &["u1".into(), "ws-user".into()], &[]),
            r#"{"presence":{"ids":["u1","ws-user"],"hash":{"u1":{"n":2},"ws-user":null},"count":2}}"#
        );
        // Another node's member: its info from the fleet's book; this node's own wins.
        assert_eq!(
            book.members_json(
                "presence-a",
                &["u1".into(), "far".into()],
                &[Some("{\"n\":9}".into()), Some("[1]".into())]
            ),
            r#"{"presence":{"ids":["u1","far"],"hash":{"u1":{"n":2},"far":[1]},"count":2}}"#
        );
        book.remove("presence-a", "u1");
        assert_eq!(book.info("presence-a", "u1"), "null");
        assert!(book.rooms.lock().is_empty());
    }
}

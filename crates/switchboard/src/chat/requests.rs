//! What clients send to the chat, as types: the argument of each `/chat` Socket.IO event
//! ([`ChatRequests`], by event name) and each `/ws` chat action ([`WsChatAction`]). The
//! TypeScript in `clients/typescript/` is generated from these (`crate::contract`).
//!
//! They describe what a well-behaved client sends; `input` stays the gate: it accepts
//! every payload these types allow (the tests below feed each one through `dispatch`'s
//! parsers) and refuses anything else with the same messages as always (a little more is
//! tolerated there than typed here: numeric strings for `limit`, `messageId` for `id` in
//! edits and deletes, `null` for an absent field).
//!
//! Never: decoding (`input`), what the server sends (`wire`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use ts_rs::TS;

/// `{roomId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RoomRef {
    pub room_id: String,
}

/// A room: its id alone, or `{roomId}` (`join`, `leave`, `typing`, `typing:start`,
/// `typing:stop` accept both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum RoomArg {
    Id(String),
    Ref(RoomRef),
}

/// A message id as the server sends it (a string of digits), or as a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum MessageId {
    Text(String),
    Number(i64),
}

/// What a client's message carries (`system` is only for the HTTP API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum ClientMessageType {
    Text,
    Image,
    File,
}

/// `message`: a message to the room (the sender is the token's user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(optional_fields)]
pub struct SendMessage {
    pub room_id: String,
    /// Not only whitespace, at most `max_message_bytes` bytes.
    #[ts(optional = false)]
    pub content: String,
    /// `text` when absent.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ClientMessageType>,
    /// The message this one answers (of the same room).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// Any JSON object, kept with the message (counted in `max_message_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(as = "Option<HashMap<String, Value>>")]
    pub metadata: Option<Value>,
    /// The client's id for this message (1 to 200 characters): a repeat answers the
    /// first message and stores nothing, so an offline queue may retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// Tolerated only when it is the token's user (a forged sender is refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
}

/// `message:edit`: the sender's new content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct EditMessage {
    pub id: MessageId,
    pub content: String,
}

/// `message:delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct DeleteMessage {
    pub id: MessageId,
}

/// `read`: everything up to this message of the room is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ReadRequest {
    pub room_id: String,
    pub message_id: MessageId,
}

/// `history`: a page of messages before `before` (newest last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(optional_fields)]
pub struct HistoryRequest {
    #[ts(optional = false)]
    pub room_id: String,
    /// The newest page when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<MessageId>,
    /// 1 to 100 (50 when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A status a user may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum ChosenStatus {
    Online,
    Away,
}

/// `presence:update` (and `presence`): the status the user chooses; without one, a
/// heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[ts(optional_fields)]
pub struct PresenceRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ChosenStatus>,
}

/// The kinds of room `room:create` makes (direct rooms come from `room:direct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum CreatableKind {
    Group,
    Channel,
}

/// `room:create`: the creator becomes its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(optional_fields)]
pub struct CreateRoom {
    /// A generated `room_…` id when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// `group` when absent.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<CreatableKind>,
    /// The room id when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only members may join (false when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    /// Users made members at once (at most 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    /// Any JSON object (at most 16 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(as = "Option<HashMap<String, Value>>")]
    pub metadata: Option<Value>,
}

/// `room:direct`: the canonical private room of the user and `userId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct DirectRoom {
    pub user_id: String,
}

/// `room:kick`: an owner or admin removes a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct KickMember {
    pub room_id: String,
    pub user_id: String,
}

/// A role the owner may give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum GrantableRole {
    Admin,
    Member,
}

/// `room:role`: the owner makes a member an admin or back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SetRole {
    pub room_id: String,
    pub user_id: String,
    pub role: GrantableRole,
}

/// The argument of every `/chat` event, by event name (`null`: the event takes none).
/// Not a payload itself: a map for typing an emitter, e.g.
/// `emitWithAck<E extends keyof ChatRequests>(event: E, data: ChatRequests[E])`.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ChatRequests {
    pub join: RoomArg,
    pub leave: RoomArg,
    pub message: SendMessage,
    #[serde(rename = "message:edit")]
    pub message_edit: EditMessage,
    #[serde(rename = "message:delete")]
    pub message_delete: DeleteMessage,
    pub typing: RoomArg,
    #[serde(rename = "typing:start")]
    pub typing_start: RoomArg,
    #[serde(rename = "typing:stop")]
    pub typing_stop: RoomArg,
    pub read: ReadRequest,
    pub history: HistoryRequest,
    pub presence: PresenceRequest,
    #[serde(rename = "presence:heartbeat")]
    pub presence_heartbeat: (),
    #[serde(rename = "presence:update")]
    pub presence_update: PresenceRequest,
    pub rooms: (),
    #[serde(rename = "room:create")]
    pub room_create: CreateRoom,
    #[serde(rename = "room:direct")]
    pub room_direct: DirectRoom,
    #[serde(rename = "room:kick")]
    pub room_kick: KickMember,
    #[serde(rename = "room:role")]
    pub room_role: SetRole,
}

/// A `/ws` chat action: the event's fields beside `action` (an object: a room is always
/// `roomId`), plus the frame's optional `ack` number. The answer is `joined`, `left`,
/// `sent`, or `<action>:ack` (`join`, `leave` and `message` are chat actions only for
/// chat rooms; other rooms keep `/ws`'s plain relay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "action")]
pub enum WsChatAction {
    #[serde(rename = "join")]
    Join(RoomRef),
    #[serde(rename = "leave")]
    Leave(RoomRef),
    #[serde(rename = "message")]
    Message(SendMessage),
    #[serde(rename = "message:edit")]
    Edit(EditMessage),
    #[serde(rename = "message:delete")]
    Delete(DeleteMessage),
    #[serde(rename = "typing")]
    Typing(RoomRef),
    #[serde(rename = "typing:start")]
    TypingStart(RoomRef),
    #[serde(rename = "typing:stop")]
    TypingStop(RoomRef),
    #[serde(rename = "read")]
    Read(ReadRequest),
    #[serde(rename = "history")]
    History(HistoryRequest),
    #[serde(rename = "presence")]
    Presence(PresenceRequest),
    #[serde(rename = "presence:heartbeat")]
    Heartbeat,
    #[serde(rename = "presence:update")]
    PresenceUpdate(PresenceRequest),
    #[serde(rename = "rooms")]
    Rooms,
    #[serde(rename = "room:create")]
    Create(CreateRoom),
    #[serde(rename = "room:direct")]
    Direct(DirectRoom),
    #[serde(rename = "room:kick")]
    Kick(KickMember),
    #[serde(rename = "room:role")]
    Role(SetRole),
}

#[cfg(test)]
mod tests {
    //! Every shape the types allow passes the parsers `dispatch` uses.

    use serde_json::json;

    use super::super::input;
    use super::*;

    fn v(x: &impl Serialize) -> Value {
        serde_json::to_value(x).expect("serializes")
    }

    #[test]
    fn room_args_in_both_shapes_are_accepted() {
        for arg in [
            RoomArg::Id("r".into()),
            RoomArg::Ref(RoomRef {
                room_id: "r".into(),
            }),
        ] {
            assert_eq!(input::room_arg(&v(&arg)).ok().as_deref(), Some("r"));
        }
    }

    #[test]
    fn every_typed_payload_parses() {
        let ids = [MessageId::Text("7".into()), MessageId::Number(7)];
        for id in &ids {
            let send = SendMessage {
                room_id: "r".into(),
                content: "hi".into(),
                kind: Some(ClientMessageType::Image),
                reply_to: Some(id.clone()),
                metadata: Some(json!({"a": 1})),
                client_msg_id: Some("c1".into()),
                sender_id: Some("ana".into()),
            };
            let got = input::send(&v(&send), None, Some("ana"), 100, false).expect("accepted");
            assert_eq!(got.reply_to.as_deref(), Some("7"));
            let edit = EditMessage {
                id: id.clone(),
                content: "x".into(),
            };
            assert_eq!(
                input::edit(&v(&edit), 100, true).ok(),
                Some((7, Some("x".into())))
            );
            let del = DeleteMessage { id: id.clone() };
            assert_eq!(input::edit(&v(&del), 100, false).ok(), Some((7, None)));
            let read = ReadRequest {
                room_id: "r".into(),
                message_id: id.clone(),
            };
            assert_eq!(input::read(&v(&read)).ok(), Some(("r".into(), 7)));
            let page = HistoryRequest {
                room_id: "r".into(),
                before: Some(id.clone()),
                limit: Some(100),
            };
            assert_eq!(
                input::history(&v(&page)).ok(),
                Some(("r".into(), Some(7), 100))
            );
        }
        let bare = SendMessage {
            room_id: "r".into(),
            content: "hi".into(),
            kind: None,
            reply_to: None,
            metadata: None,
            client_msg_id: None,
            sender_id: None,
        };
        assert_eq!(v(&bare), json!({"roomId": "r", "content": "hi"}));
        assert!(input::send(&v(&bare), None, Some("ana"), 100, false).is_ok());
        let page = HistoryRequest {
            room_id: "r".into(),
            before: None,
            limit: None,
        };
        assert_eq!(input::history(&v(&page)).ok(), Some(("r".into(), None, 50)));
        let create = CreateRoom {
            room_id: Some("g".into()),
            kind: Some(CreatableKind::Channel),
            name: Some("G".into()),
            private: Some(true),
            members: Some(vec!["bob".into()]),
            metadata: Some(json!({"topic": "x"})),
        };
        let c = input::create(&v(&create)).expect("accepted");
        assert_eq!(
            (c.room.as_deref(), c.private, c.members.len()),
            (Some("g"), true, 1)
        );
        let empty = CreateRoom {
            room_id: None,
            kind: None,
            name: None,
            private: None,
            members: None,
            metadata: None,
        };
        assert!(input::create(&v(&empty)).is_ok());
        let kick = KickMember {
            room_id: "r".into(),
            user_id: "bob".into(),
        };
        assert_eq!(input::room_field(&v(&kick)).ok().as_deref(), Some("r"));
        assert_eq!(input::user_field(&v(&kick)).ok().as_deref(), Some("bob"));
        let direct = DirectRoom {
            user_id: "bob".into(),
        };
        assert_eq!(input::user_field(&v(&direct)).ok().as_deref(), Some("bob"));
    }

    #[test]
    fn ws_actions_are_the_event_fields_beside_action() {
        let a = WsChatAction::Typing(RoomRef {
            room_id: "r".into(),
        });
        assert_eq!(v(&a), json!({"action": "typing", "roomId": "r"}));
        assert_eq!(v(&WsChatAction::Rooms), json!({"action": "rooms"}));
        let role = WsChatAction::Role(SetRole {
            room_id: "r".into(),
            user_id: "bob".into(),
            role: GrantableRole::Admin,
        });
        assert_eq!(
            v(&role),
            json!({"action": "room:role", "roomId": "r", "userId": "bob", "role": "admin"})
        );
        let presence = WsChatAction::PresenceUpdate(PresenceRequest {
            status: Some(ChosenStatus::Away),
        });
        assert_eq!(
            v(&presence),
            json!({"action": "presence:update", "status": "away"})
        );
    }
}

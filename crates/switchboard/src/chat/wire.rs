//! What chat clients receive, as types: every event and ack of `/chat`, `/ws` and SSE
//! and every body of the chat's HTTP routes. The TypeScript in `clients/typescript/`
//! is generated from these (`crate::contract`), so a change here is a change of the
//! contract.
//!
//! Fields are declared in the order of their JSON names: the payloads were `json!`
//! objects (keys sorted) before they were types, and the wire stays byte-identical.
//!
//! Never: rules (`service`) or decoding what clients send (`input`).

use serde::Serialize;
use serde_json::Value;
use ts_rs::TS;
use utoipa::ToSchema;

use super::live::Status;
use super::model::{MessageType, Role, RoomKind};

/// Where a message is in its life, as its sender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Stored; no other user had a connection in the room.
    Sent,
    /// Another user had a connection in the room when it was stored.
    Delivered,
    /// Another user's read position reaches it.
    Read,
}

/// A stored message (the catalogue's schema): the `message`, `message:edited` and
/// `message:deleted` events, and every ack and page that carries messages.
#[derive(Debug, Clone, PartialEq, Serialize, TS, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The sender's own id for it, when they gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub client_msg_id: Option<String>,
    pub content: String,
    /// Milliseconds since the epoch (the server's clock).
    pub created_at: i64,
    /// Deleted: the message stays in history as a tombstone.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub edited_at: Option<i64>,
    /// The server's id: a decimal number as a string, increasing with time.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The other users who have read it.
    pub read_by: Vec<String>,
    /// The id of the message this one answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reply_to: Option<String>,
    pub room_id: String,
    pub sender_id: String,
    pub status: MessageStatus,
    #[serde(rename = "type")]
    pub kind: MessageType,
}

/// A chat room: `room:added`, and inside acks.
#[derive(Debug, Clone, PartialEq, Serialize, TS, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    pub created_at: i64,
    pub created_by: String,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub name: String,
    /// Only members may join.
    pub private: bool,
    pub room_id: String,
    #[serde(rename = "type")]
    pub kind: RoomKind,
}

/// A room of the user's, in the `rooms` ack.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RoomEntry {
    #[serde(flatten)]
    #[ts(flatten)]
    pub room: RoomInfo,
    pub role: Role,
    pub unread: i64,
}

/// A member of a room, in the `join` ack.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub joined_at: i64,
    pub last_read_at: Option<i64>,
    /// Has a connection in the room now.
    pub online: bool,
    pub role: Role,
    pub user_id: String,
}

/// `user_joined`, `user_left`, `typing`, `typing:start`, `typing:stop`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct UserInRoom {
    pub room_id: String,
    pub user_id: String,
}

/// `read`: everything up to `messageId` is read by `userId`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ReadReceipt {
    pub message_id: String,
    pub read_at: i64,
    pub room_id: String,
    pub user_id: String,
}

/// `presence:update`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct PresenceUpdate {
    pub last_seen: i64,
    pub status: Status,
    pub user_id: String,
}

/// A user's presence, as `GET /api/presence` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, TS, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    /// Last activity (milliseconds since the epoch), when known.
    pub last_seen: Option<i64>,
    pub status: Status,
    pub user_id: String,
}

/// `room:member_removed`: `userId` was removed from the room by `by`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MemberRemoved {
    pub by: String,
    pub room_id: String,
    pub user_id: String,
}

/// `room:role`, and its ack (with `success`).
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RoleChanged {
    pub role: Role,
    pub room_id: String,
    /// Only in the ack.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "true", optional)]
    pub success: Option<bool>,
    pub user_id: String,
}

/// The `connected` event of `/chat`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ChatConnected {
    pub session_id: String,
    #[ts(type = "true")]
    pub success: bool,
    pub user_id: String,
}

/// A refusal: the ack of the refused event, or an `error` event when it had no ack.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ChatRefusal {
    pub error: String,
    /// The event refused.
    pub event: String,
    #[ts(type = "false")]
    pub success: bool,
}

/// The ack of `join`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct JoinAck {
    pub members: Vec<MemberInfo>,
    pub room: RoomInfo,
    pub room_id: String,
    #[ts(type = "true")]
    pub success: bool,
    /// Messages the user has not read.
    pub unread: i64,
}

/// The ack of `leave`, `typing`, `typing:start` and `typing:stop`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RoomAck {
    pub room_id: String,
    #[ts(type = "true")]
    pub success: bool,
}

/// The ack of `message` (and the body of `POST /api/rooms/{room}/messages`).
#[derive(Debug, Clone, Serialize, TS, ToSchema)]
pub struct Sent {
    /// The `clientMsgId` was seen before: this is the first message, nothing was stored.
    pub duplicate: bool,
    pub message: ChatMessage,
    #[ts(type = "true")]
    pub success: bool,
}

/// The ack of `message:edit` and `message:delete`.
#[derive(Debug, Clone, Serialize, TS)]
pub struct MessageAck {
    pub message: ChatMessage,
    #[ts(type = "true")]
    pub success: bool,
}

/// The ack of `read`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ReadAck {
    pub message_id: String,
    /// The read position moved (false: the user had read this far already).
    pub moved: bool,
    pub read_at: i64,
    pub room_id: String,
    #[ts(type = "true")]
    pub success: bool,
    pub user_id: String,
}

/// A page of a room's history, newest last: the ack of `history` and the body of
/// `GET /api/rooms/{room}/messages`.
#[derive(Debug, Clone, Serialize, TS, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// Older messages exist (ask again with `before` = the first one's id).
    pub has_more: bool,
    pub messages: Vec<ChatMessage>,
    pub room_id: String,
    #[ts(type = "true")]
    pub success: bool,
}

/// The ack of `presence`, `presence:heartbeat` and `presence:update`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct PresenceAck {
    pub last_seen: i64,
    pub status: Status,
    #[ts(type = "true")]
    pub success: bool,
    pub user_id: String,
}

/// The ack of `rooms`.
#[derive(Debug, Clone, Serialize, TS)]
pub struct RoomsAck {
    pub rooms: Vec<RoomEntry>,
    #[ts(type = "true")]
    pub success: bool,
}

/// The ack of `room:create` and `room:direct` (`created` only there: false when the
/// direct room existed).
#[derive(Debug, Clone, Serialize, TS)]
pub struct RoomCreated {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub created: Option<bool>,
    pub room: RoomInfo,
    #[ts(type = "true")]
    pub success: bool,
}

/// The ack of `room:kick`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Kicked {
    pub room_id: String,
    #[ts(type = "true")]
    pub success: bool,
    pub user_id: String,
}

/// Any of these as the JSON value a transport answers with.
pub fn value(body: &impl Serialize) -> Value {
    // Serializing these types cannot fail: no maps with non-string keys, no custom
    // serializers.
    serde_json::to_value(body).unwrap_or(Value::Null)
}

//! The chat's records (rooms, members, messages) and their client-facing JSON.
//!
//! Owns: the words a store reads and writes and the one function that turns a stored
//! message into the catalogue's schema. Never: rules (`service`) or I/O (`store`).

use serde::Serialize;
use serde_json::Value;
use ts_rs::TS;
use utoipa::ToSchema;

use super::wire::{ChatMessage, MessageStatus, RoomInfo};

/// What kind of room: one canonical room per pair of users, or a named room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Direct,
    Group,
    Channel,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Direct => "direct",
            RoomKind::Group => "group",
            RoomKind::Channel => "channel",
        }
    }

    pub fn parse(s: &str) -> Option<RoomKind> {
        match s {
            "direct" => Some(RoomKind::Direct),
            "group" => Some(RoomKind::Group),
            "channel" => Some(RoomKind::Channel),
            _ => None,
        }
    }
}

/// A member's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }

    /// Owners and admins moderate: kick members, delete others' messages.
    pub fn moderates(self) -> bool {
        self >= Role::Admin
    }
}

/// What a message carries (`system` only from the HTTP API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Text,
    Image,
    File,
    System,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::Image => "image",
            MessageType::File => "file",
            MessageType::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<MessageType> {
        match s {
            "text" => Some(MessageType::Text),
            "image" => Some(MessageType::Image),
            "file" => Some(MessageType::File),
            "system" => Some(MessageType::System),
            _ => None,
        }
    }
}

/// A chat room.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    /// The room's name, the same on every transport (a fabric room).
    pub id: String,
    pub kind: RoomKind,
    /// A display name.
    pub name: String,
    /// Only members may join (direct rooms always are).
    pub private: bool,
    pub metadata: Option<Value>,
    pub created_by: String,
    pub created_at: i64,
}

impl Room {
    pub fn wire(&self) -> RoomInfo {
        RoomInfo {
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            metadata: self.metadata.clone(),
            name: self.name.clone(),
            private: self.private,
            room_id: self.id.clone(),
            kind: self.kind,
        }
    }
}

/// A user's membership of a room, with their read position.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: String,
    pub role: Role,
    pub joined_at: i64,
    /// The newest message the user has read (its sequence number; 0: none).
    pub read_seq: i64,
    pub last_read_at: Option<i64>,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room_id: String,
    pub sender_id: String,
    pub content: String,
    pub kind: MessageType,
    pub metadata: Option<Value>,
    pub reply_to: Option<String>,
    /// The sender's id for this message: a repeat returns the first one.
    pub client_msg_id: Option<String>,
    pub created_at: i64,
    /// Another user had a connection in the room when it was sent.
    pub delivered: bool,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its place in the store's one sequence (the client sees it as the string `id`).
    pub seq: i64,
    pub room_id: String,
    pub sender_id: String,
    pub content: String,
    pub kind: MessageType,
    pub metadata: Option<Value>,
    pub reply_to: Option<String>,
    pub client_msg_id: Option<String>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted: bool,
    pub delivered: bool,
}

impl Message {
    /// The catalogue's schema. `read_by`: the other users whose read position reaches
    /// this message.
    pub fn wire(&self, read_by: &[&str]) -> ChatMessage {
        let status = if !read_by.is_empty() {
            MessageStatus::Read
        } else if self.delivered {
            MessageStatus::Delivered
        } else {
            MessageStatus::Sent
        };
        ChatMessage {
            client_msg_id: self.client_msg_id.clone(),
            content: self.content.clone(),
            created_at: self.created_at,
            deleted: self.deleted.then_some(true),
            edited_at: self.edited_at,
            id: self.seq.to_string(),
            metadata: self.metadata.clone(),
            read_by: read_by.iter().map(|u| (*u).to_owned()).collect(),
            reply_to: self.reply_to.clone(),
            room_id: self.room_id.clone(),
            sender_id: self.sender_id.clone(),
            status,
            kind: self.kind,
        }
    }

    /// Who of `members` has read this message (the sender never counts).
    pub fn read_by<'a>(&self, members: &'a [Member]) -> Vec<&'a str> {
        members
            .iter()
            .filter(|m| m.read_seq >= self.seq && m.user_id != self.sender_id)
            .map(|m| m.user_id.as_str())
            .collect()
    }
}

/// How long messages are kept (`chat_history_days`, `chat_history_max_per_room`; 0: no
/// limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub days: u64,
    pub max_per_room: u64,
}

/// A room the user belongs to, with their role and unread count.
#[derive(Debug, Clone)]
pub struct RoomOf {
    pub room: Room,
    pub role: Role,
    pub unread: i64,
}

/// The canonical room of two users: the same name whoever asks.
pub fn direct_room(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{x}:{y}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_rooms_are_canonical() {
        assert_eq!(direct_room("bob", "ana"), direct_room("ana", "bob"));
        assert_eq!(direct_room("ana", "bob"), "dm:ana:bob");
    }

    #[test]
    fn status_follows_read_and_delivery() {
        let mut m = Message {
            seq: 5,
            room_id: "r".into(),
            sender_id: "ana".into(),
            content: "hi".into(),
            kind: MessageType::Text,
            metadata: None,
            reply_to: None,
            client_msg_id: None,
            created_at: 1,
            edited_at: None,
            deleted: false,
            delivered: false,
        };
        assert_eq!(m.wire(&[]).status, MessageStatus::Sent);
        m.delivered = true;
        assert_eq!(m.wire(&[]).status, MessageStatus::Delivered);
        let members = [
            Member {
                user_id: "ana".into(),
                role: Role::Owner,
                joined_at: 0,
                read_seq: 9,
                last_read_at: None,
            },
            Member {
                user_id: "bob".into(),
                role: Role::Member,
                joined_at: 0,
                read_seq: 5,
                last_read_at: Some(2),
            },
            Member {
                user_id: "cy".into(),
                role: Role::Member,
                joined_at: 0,
                read_seq: 4,
                last_read_at: Some(2),
            },
        ];
        let by = m.read_by(&members);
        assert_eq!(by, ["bob"]);
        let v = m.wire(&by);
        assert_eq!(v.status, MessageStatus::Read);
        assert_eq!(v.id, "5");
    }
}

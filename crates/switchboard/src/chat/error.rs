//! Every refusal of the chat, with the sentence a client reads. A refused request
//! changes nothing.

use super::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A missing or ill-typed field.
    #[error("{0}")]
    BadInput(String),
    #[error("Message content must not be empty")]
    EmptyContent,
    #[error("Message content must be a string")]
    ContentNotString,
    #[error("Message too large: at most {max} bytes (max_message_bytes)")]
    TooLarge { max: usize },
    #[error("Invalid room name: {0}")]
    BadRoomName(String),
    #[error("Unknown room {0:?}")]
    UnknownRoom(String),
    #[error("Not a member of room {0:?}")]
    NotMember(String),
    #[error("Join room {0:?} before this")]
    NotJoined(String),
    #[error("Room {0:?} already exists")]
    RoomExists(String),
    #[error("Room {0:?} is in use on the fabric: choose another name for a chat room")]
    RoomInUse(String),
    #[error("senderId must not be set: the sender is always the connection's user")]
    ForgedSender,
    #[error("type {0:?} is not allowed here (text, image or file; system only from the HTTP API)")]
    BadType(String),
    #[error("limit must be a whole number from 1 to 100")]
    BadLimit,
    #[error("Unknown message {0:?}")]
    UnknownMessage(String),
    #[error("Message {0:?} is not in room {1:?}")]
    MessageNotInRoom(String, String),
    #[error("Only the sender can edit a message")]
    NotYourMessage,
    #[error("Only the sender or a room admin can delete a message")]
    NotAllowedToDelete,
    #[error("Only a room owner or admin can do this")]
    NotModerator,
    #[error("Typing throttled: at most one every 2 s per room")]
    TypingThrottled,
    #[error("Too many rooms joined")]
    TooManyRooms,
    #[error("Storage unavailable, try again")]
    Store(#[from] StoreError),
}

impl ChatError {
    /// Every [`ChatError::reason`], the `reason` label of `switchboard_chat_refused_total`.
    pub const REASONS: [&'static str; 21] = [
        "bad_input",
        "empty_content",
        "content_not_string",
        "too_large",
        "bad_room_name",
        "unknown_room",
        "not_member",
        "not_joined",
        "room_exists",
        "room_in_use",
        "forged_sender",
        "bad_type",
        "bad_limit",
        "unknown_message",
        "message_not_in_room",
        "not_your_message",
        "not_allowed_to_delete",
        "not_moderator",
        "typing_throttled",
        "too_many_rooms",
        "store",
    ];

    /// Why, in one word (a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            ChatError::BadInput(_) => "bad_input",
            ChatError::EmptyContent => "empty_content",
            ChatError::ContentNotString => "content_not_string",
            ChatError::TooLarge { .. } => "too_large",
            ChatError::BadRoomName(_) => "bad_room_name",
            ChatError::UnknownRoom(_) => "unknown_room",
            ChatError::NotMember(_) => "not_member",
            ChatError::NotJoined(_) => "not_joined",
            ChatError::RoomExists(_) => "room_exists",
            ChatError::RoomInUse(_) => "room_in_use",
            ChatError::ForgedSender => "forged_sender",
            ChatError::BadType(_) => "bad_type",
            ChatError::BadLimit => "bad_limit",
            ChatError::UnknownMessage(_) => "unknown_message",
            ChatError::MessageNotInRoom(..) => "message_not_in_room",
            ChatError::NotYourMessage => "not_your_message",
            ChatError::NotAllowedToDelete => "not_allowed_to_delete",
            ChatError::NotModerator => "not_moderator",
            ChatError::TypingThrottled => "typing_throttled",
            ChatError::TooManyRooms => "too_many_rooms",
            ChatError::Store(_) => "store",
        }
    }

    /// Logs what the client does not see (a store failure), once.
    pub fn log(&self) {
        if let ChatError::Store(e) = self {
            tracing::warn!(error = %e, "chat store failed");
        }
    }

    /// The HTTP status of this refusal.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            ChatError::UnknownRoom(_) | ChatError::UnknownMessage(_) => StatusCode::NOT_FOUND,
            ChatError::NotMember(_)
            | ChatError::NotYourMessage
            | ChatError::NotAllowedToDelete
            | ChatError::NotModerator => StatusCode::FORBIDDEN,
            ChatError::RoomExists(_) | ChatError::RoomInUse(_) => StatusCode::CONFLICT,
            ChatError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ChatError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

//! One client event (a `/chat` Socket.IO event or a `/ws` action) to the service call it
//! names. Transport-neutral: the transport answers with what comes back.

use serde_json::Value;

use super::error::ChatError;
use super::input;
use super::live::{ChatConn, Status};
use super::model::Role;
use super::service::{Chat, TypingKind};
use super::wire::{self, Sent};

/// Every event name the chat handles.
pub const EVENTS: &[&str] = &[
    "join",
    "leave",
    "message",
    "message:edit",
    "message:delete",
    "typing",
    "typing:start",
    "typing:stop",
    "read",
    "history",
    "presence",
    "presence:heartbeat",
    "presence:update",
    "rooms",
    "room:create",
    "room:direct",
    "room:kick",
    "room:role",
];

/// The room an event would put the user in (`join`) or name (`room:create`): the
/// transport checks it against the room policy (token grants, private prefixes) first.
pub fn room_to_authorize(event: &str, data: &Value) -> Option<String> {
    match event {
        "join" => input::room_arg(data).ok(),
        "room:create" => data
            .get("roomId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Handles `event`; `None` when it is not a chat event.
pub async fn dispatch(
    chat: &Chat,
    conn: &dyn ChatConn,
    event: &str,
    data: &Value,
) -> Option<Result<Value, ChatError>> {
    if !EVENTS.contains(&event) {
        return None;
    }
    let result = handle(chat, conn, event, data).await;
    if let Err(e) = &result {
        chat.metrics().refused(e);
    }
    Some(result)
}

fn status(data: &Value) -> Result<Option<Status>, ChatError> {
    match data.get("status").and_then(Value::as_str) {
        Some("online") => Ok(Some(Status::Online)),
        Some("away") => Ok(Some(Status::Away)),
        None if data.is_null() || data.get("status").is_none() => Ok(None),
        _ => Err(ChatError::BadInput("status must be online or away".into())),
    }
}

async fn handle(
    chat: &Chat,
    conn: &dyn ChatConn,
    event: &str,
    data: &Value,
) -> Result<Value, ChatError> {
    let user = conn.user_id();
    let max = chat.config().max_message_bytes;
    match event {
        "join" => chat.join(conn, &input::room_arg(data)?).await,
        "leave" => chat.leave(conn, &input::room_arg(data)?).await,
        "message" => {
            let req = input::send(data, None, Some(user), max, false)?;
            let (message, created) = chat.send(user, req, false).await?;
            Ok(wire::value(&Sent {
                duplicate: !created,
                message,
                success: true,
            }))
        }
        "message:edit" => {
            let (id, content) = input::edit(data, max, true)?;
            chat.edit(user, id, content.unwrap_or_default()).await
        }
        "message:delete" => chat.delete(user, input::edit(data, max, false)?.0).await,
        "typing" => {
            chat.typing(conn, &input::room_arg(data)?, TypingKind::Typing)
                .await
        }
        "typing:start" => {
            chat.typing(conn, &input::room_arg(data)?, TypingKind::Start)
                .await
        }
        "typing:stop" => {
            chat.typing(conn, &input::room_arg(data)?, TypingKind::Stop)
                .await
        }
        "read" => {
            let (room, id) = input::read(data)?;
            chat.read(user, &room, id).await
        }
        "history" => {
            let (room, before, limit) = input::history(data)?;
            let page = chat.history(Some(user), &room, before, limit).await?;
            Ok(wire::value(&page))
        }
        "presence:heartbeat" => chat.presence(user, None).await,
        "presence" | "presence:update" => chat.presence(user, status(data)?).await,
        "rooms" => chat.rooms(user).await,
        "room:create" => chat.create_room(user, input::create(data)?).await,
        "room:direct" => chat.direct(user, &input::user_field(data)?).await,
        "room:kick" => {
            let room = input::room_field(data)?;
            chat.kick(user, &room, &input::user_field(data)?).await
        }
        "room:role" => {
            let room = input::room_field(data)?;
            let target = input::user_field(data)?;
            let role = match data
                .get("role")
                .and_then(Value::as_str)
                .and_then(Role::parse)
            {
                Some(r @ (Role::Admin | Role::Member)) => r,
                _ => return Err(ChatError::BadInput("role must be admin or member".into())),
            };
            chat.set_role(user, &room, &target, role).await
        }
        other => Err(ChatError::BadInput(format!("Unknown event: {other}"))),
    }
}

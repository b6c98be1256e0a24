//! The chat over HTTP for backend services (API key): send (system messages too), page
//! a room's history, look up presence. Documented in the OpenAPI document (`api.rs`
//! lists these paths).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::ChatError;
use super::service::Chat;
use super::wire::{HistoryPage, Sent, UserPresence};
use crate::admin::{ApiError, check_api_key};

#[derive(Clone)]
pub struct ChatApiState {
    pub chat: Arc<Chat>,
    pub api_keys: crate::admin::ApiKeys,
}

pub fn routes(state: ChatApiState) -> Router {
    Router::new()
        .route("/api/rooms/{room}/messages", get(history).post(send))
        .route("/api/presence", get(presence))
        .with_state(state)
}

/// Most users one presence lookup may name.
const MAX_USERS: usize = 1000;

/// A refusal as the HTTP API answers it, counted with the chat's others.
fn refused(chat: &Chat) -> impl Fn(ChatError) -> ApiError + '_ {
    move |e| {
        chat.metrics().refused(&e);
        e.log();
        ApiError::new(e.status(), e.to_string())
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// A message from a server-side sender.
#[derive(Debug, Deserialize, Serialize, ToSchema, ts_rs::TS)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[ts(optional_fields)]
pub struct PostMessage {
    /// Who the message is from (`system` when absent).
    sender_id: Option<String>,
    /// The text (at most `max_message_bytes` bytes, not only whitespace).
    content: String,
    /// `text` (default), `image`, `file` or `system`.
    #[serde(rename = "type")]
    #[ts(as = "Option<super::model::MessageType>")]
    kind: Option<String>,
    /// The id of the message this one answers (a message of the same room).
    reply_to: Option<String>,
    /// Any JSON object, kept with the message.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// The sender's id for this message: a repeat returns the first message and stores
    /// nothing.
    client_msg_id: Option<String>,
}

fn check_room_name(room: &str) -> Result<(), ApiError> {
    crate::transport::check_name(room).map_err(|e| bad(e.to_string()))
}

/// Send a message to a chat room (server-side senders; `system` messages).
#[utoipa::path(
    post, path = "/api/rooms/{room}/messages", tag = "chat",
    params(("room" = String, Path, description = "A chat room")),
    request_body = PostMessage,
    responses(
        (status = 200, description = "Stored, then announced to the room", body = Sent),
        (status = 400, description = "Invalid request (empty content, bad type, bad ids)", body = crate::api::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::api::ErrorBody),
        (status = 404, description = "No such room, or `replyTo` names no message", body = crate::api::ErrorBody),
        (status = 413, description = "Content over `max_message_bytes`", body = crate::api::ErrorBody),
        (status = 503, description = "API disabled, or storage unavailable", body = crate::api::ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn send(
    State(s): State<ChatApiState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Sent>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    check_room_name(&room)?;
    let req: PostMessage =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid request body: {e}")))?;
    let sender = req.sender_id.clone().unwrap_or_else(|| "system".to_owned());
    if sender.is_empty() || sender.chars().count() > 200 || sender.chars().any(char::is_control) {
        return Err(bad(
            "senderId must be 1 to 200 characters without control characters",
        ));
    }
    let value = serde_json::to_value(&req).map_err(|e| bad(e.to_string()))?;
    let max = s.chat.config().max_message_bytes;
    let input =
        super::input::send(&value, Some(&room), None, max, true).map_err(refused(&s.chat))?;
    let (message, created) = s
        .chat
        .send(&sender, input, true)
        .await
        .map_err(refused(&s.chat))?;
    Ok(Json(Sent {
        duplicate: !created,
        message,
        success: true,
    }))
}

/// A page of a chat room's history, newest last.
#[utoipa::path(
    get, path = "/api/rooms/{room}/messages", tag = "chat",
    params(
        ("room" = String, Path, description = "A chat room"),
        ("before" = Option<String>, Query, description = "Only messages older than this message id"),
        ("limit" = Option<u32>, Query, description = "At most this many messages (1 to 100, default 50)"),
    ),
    responses(
        (status = 200, body = HistoryPage),
        (status = 400, description = "Invalid limit or before", body = crate::api::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::api::ErrorBody),
        (status = 404, description = "No such room", body = crate::api::ErrorBody),
        (status = 503, description = "API disabled, or storage unavailable", body = crate::api::ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn history(
    State(s): State<ChatApiState>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<HistoryPage>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    check_room_name(&room)?;
    let limit = super::input::limit(q.get("limit").map(|l| Value::String(l.clone())).as_ref())
        .map_err(refused(&s.chat))?;
    let before = match q.get("before") {
        None => None,
        Some(b) => Some(
            super::input::message_id(Some(&Value::String(b.clone())), "before")
                .map_err(refused(&s.chat))?,
        ),
    };
    let page = s
        .chat
        .history(None, &room, before, limit)
        .await
        .map_err(refused(&s.chat))?;
    Ok(Json(page))
}

/// Presence of users: online, away or offline, with the last time they were seen.
#[utoipa::path(
    get, path = "/api/presence", tag = "chat",
    params(("users" = String, Query, description = "Comma-separated user ids")),
    responses(
        (status = 200, body = Vec<UserPresence>),
        (status = 400, description = "users missing or too many", body = crate::api::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::api::ErrorBody),
        (status = 503, description = "API disabled, or storage unavailable", body = crate::api::ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn presence(
    State(s): State<ChatApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Vec<UserPresence>>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let Some(users) = q.get("users") else {
        return Err(bad("users is required (comma-separated user ids)"));
    };
    let mut list: Vec<String> = Vec::new();
    for u in users.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        if !list.iter().any(|x| x == u) {
            list.push(u.to_owned());
        }
    }
    if list.len() > MAX_USERS {
        return Err(bad(format!("at most {MAX_USERS} users")));
    }
    Ok(Json(
        s.chat.presence_of(&list).await.map_err(refused(&s.chat))?,
    ))
}

/// The rules the handlers enforce that utoipa's derive cannot state, so a request valid
/// by the document is accepted and one the server refuses is invalid by it (schemathesis).
pub(crate) fn tighten(doc: &mut Value) {
    use crate::api::{NO_CONTROL, merge};
    use serde_json::json;
    let room =
        json!({"minLength": 1, "maxLength": crate::transport::MAX_ROOM_LEN, "pattern": NO_CONTROL});
    let id = json!({"pattern": "^[1-9][0-9]{0,17}$"});
    if let Some(props) = doc.pointer_mut("/components/schemas/PostMessage/properties") {
        // Not only whitespace (the same whitespace as the fuzzer's regular expressions).
        merge(&mut props["content"], json!({"pattern": "\\S"}));
        merge(
            &mut props["senderId"],
            json!({"minLength": 1, "maxLength": 200, "pattern": NO_CONTROL}),
        );
        merge(
            &mut props["clientMsgId"],
            json!({"minLength": 1, "maxLength": 200}),
        );
        merge(&mut props["replyTo"], id.clone());
        props["type"] =
            json!({"type": ["string", "null"], "enum": ["text", "image", "file", "system", null]});
    }
    for (path, method) in [("messages", "get"), ("messages", "post")] {
        let p = format!("/paths/~1api~1rooms~1{{room}}~1{path}/{method}/parameters");
        let Some(params) = doc.pointer_mut(&p).and_then(Value::as_array_mut) else {
            continue;
        };
        for p in params {
            match p["name"].as_str() {
                Some("room") => merge(&mut p["schema"], room.clone()),
                Some("before") => merge(&mut p["schema"], id.clone()),
                Some("limit") => merge(&mut p["schema"], json!({"minimum": 1, "maximum": 100})),
                _ => {}
            }
        }
    }
}

//! The HTTP API for backend services: publish to a room, a user or everyone, and look
//! at rooms. `Authorization: Bearer <api_key>` on every route. The OpenAPI document at
//! `/api/openapi.json` is generated from these handlers and types (utoipa).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hub::{Hub, Payload, Publish};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use ts_rs::TS;
use utoipa::{OpenApi, ToSchema};

use crate::admin::{ApiError, check_api_key};
use crate::cluster::RoomShare;
use crate::realtime::user_room;

#[derive(Clone)]
pub struct ApiState {
    pub hub: Arc<Hub>,
    pub api_keys: crate::admin::ApiKeys,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// On a cluster node: room counts come from every node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/publish/batch", post(publish_batch))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}", get(room))
        .route("/api/openapi.json", get(openapi))
        .with_state(state)
}

/// Most messages one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// A message to publish. Exactly one target: `room`, `user` or `broadcast: true`.
#[derive(Debug, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(optional_fields)]
pub struct PublishRequest {
    /// A room name (e.g. `event_12`); every transport's members of it receive the message.
    room: Option<String>,
    /// A user id: every connection of that user, on every transport (room `user:{id}`).
    user: Option<String>,
    /// `true`: every connected client.
    broadcast: Option<bool>,
    /// The event name clients listen for (e.g. `ticket-purchased`).
    event: String,
    /// Any JSON value, delivered as the event's data.
    #[schema(value_type = Object, nullable)]
    #[ts(as = "Option<serde_json::Value>")]
    data: Option<Box<RawValue>>,
    /// May be dropped for slow clients, and is not kept for replay.
    #[serde(default)]
    #[ts(as = "Option<bool>", optional)]
    volatile: bool,
}

/// What a publish did.
#[derive(Debug, Serialize, ToSchema, TS)]
pub struct Published {
    /// The message's offset: its SSE event id and replay position.
    offset: u64,
    /// Connections it was handed to on this node.
    delivered: usize,
}

/// Any refusal of the HTTP API.
#[derive(Debug, Serialize, ToSchema, TS)]
pub struct ErrorBody {
    error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomSummary {
    room: String,
    members: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    rooms: Vec<RoomSummary>,
    /// A cluster node lists the fleet's rooms: true when a live node did not answer in
    /// time (its members are then missing from the counts). Always false on one node.
    partial: bool,
    /// The live nodes that did not answer (cluster mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<String>,
    /// The fleet, as heartbeats report it: `{id, connections, lastSeen, members?}` (cluster mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    nodes: Option<Vec<serde_json::Value>>,
}

/// A room's members per transport and the users present (each user once).
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomDetail {
    room: String,
    members: usize,
    /// Members per transport: `socketio`, `ws`, `sse`.
    #[schema(value_type = Object)]
    transports: serde_json::Map<String, serde_json::Value>,
    users: Vec<String>,
    /// Messages kept for replay.
    history: usize,
    last_offset: u64,
    /// Cluster mode: a live node did not answer in time (see [`RoomList`]).
    partial: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<String>,
    /// Cluster mode: the fleet, each node with its `members` in this room.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    nodes: Option<Vec<serde_json::Value>>,
}

/// Event names a client library reserves or this server uses for its own signals.
pub(crate) const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
    "error",
    "reset",
    "connected",
    // The server's presence announcements: a forged one would add or remove a member
    // in every presence list (a Pusher presence channel's among them).
    "member_joined",
    "member_left",
];

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// An event name clients may be sent: 1 to 100 characters, no control characters, not
/// one a client library reserves.
pub(crate) fn check_event(event: &str) -> Result<(), ApiError> {
    if event.is_empty() || event.chars().count() > 100 || event.chars().any(char::is_control) {
        return Err(bad(
            "event must be 1 to 100 characters without control characters",
        ));
    }
    if RESERVED_EVENTS.contains(&event) {
        return Err(bad(format!("event {event:?} is reserved")));
    }
    Ok(())
}

/// Checks a request and turns it into a hub publish; nothing is published on error.
fn to_publish(req: PublishRequest) -> Result<Publish, ApiError> {
    let name_ok =
        |s: &str| !s.is_empty() && s.chars().count() <= 200 && !s.chars().any(char::is_control);
    let broadcast = req.broadcast == Some(true);
    let targets =
        usize::from(req.room.is_some()) + usize::from(req.user.is_some()) + usize::from(broadcast);
    if targets != 1 {
        return Err(bad(
            "exactly one target is required: \"room\", \"user\" or \"broadcast\": true",
        ));
    }
    check_event(&req.event)?;
    let room = match (&req.room, &req.user) {
        (Some(room), _) => {
            crate::transport::check_name(room).map_err(|e| bad(e.to_string()))?;
            let internal = room == hub::EVERYONE
                || room.starts_with("sid:")
                || room.starts_with("nsp:")
                || room.starts_with('/');
            if internal {
                return Err(bad(format!("room {room:?} is internal")));
            }
            Some(room.clone())
        }
        (None, Some(user)) => {
            if !name_ok(user) {
                return Err(bad(
                    "user must be 1 to 200 characters without control characters",
                ));
            }
            Some(user_room(user))
        }
        (None, None) => None,
    };
    let payload = match &req.data {
        Some(raw) => Payload::raw_args([raw.get()]),
        None => Payload::raw_args(["null"]),
    };
    Ok(Publish {
        rooms: room.map(|r| Arc::from(r.as_str())).into_iter().collect(),
        everyone: broadcast,
        event: req.event.into(),
        payload,
        volatile: req.volatile,
        persist: !req.volatile,
        ..Publish::default()
    })
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}")))
}

/// Publish one message.
#[utoipa::path(
    post, path = "/api/publish", tag = "publish",
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Published", body = Published),
        (status = 400, description = "Invalid request (no target, bad event name, bad JSON)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 503, description = "API disabled: no API key configured", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn publish(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Published>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let msg = to_publish(parse(&body)?)?;
    s.metrics
        .published
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (offset, delivered) = publish_one(&s.hub, msg).await;
    Ok(Json(Published { offset, delivered }))
}

/// Publishes and waits until the message is delivered on this node (on a cluster node:
/// after Redis sequenced it), for its offset and this node's recipient count.
async fn publish_one(hub: &Hub, msg: Publish) -> (u64, usize) {
    publish_waiting(hub, msg).await.unwrap_or((0, 0))
}

/// Publishes now; the receiver gets the offset and this node's recipients.
fn publish_waiting(hub: &Hub, msg: Publish) -> tokio::sync::oneshot::Receiver<(u64, usize)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    hub.publish_then(
        msg,
        Box::new(move |offset, delivered| {
            let _ = tx.send((offset, delivered));
        }),
    );
    rx
}

/// Publish several messages in order; all are checked first, so either all are
/// published or none is.
#[utoipa::path(
    post, path = "/api/publish/batch", tag = "publish",
    request_body = Vec<PublishRequest>,
    responses(
        (status = 200, description = "Published, in request order", body = Vec<Published>),
        (status = 400, description = "A message is invalid (the error names its index); nothing was published", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 503, description = "API disabled: no API key configured", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn publish_batch(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Vec<Published>>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let reqs: Vec<PublishRequest> = parse(&body)?;
    if reqs.len() > MAX_BATCH {
        return Err(bad(format!("a batch holds at most {MAX_BATCH} messages")));
    }
    let msgs = reqs
        .into_iter()
        .enumerate()
        .map(|(i, r)| to_publish(r).map_err(|e| e.prefixed(&format!("message {i}: "))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut waits = Vec::with_capacity(msgs.len());
    for m in msgs {
        s.metrics
            .published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        waits.push(publish_waiting(&s.hub, m));
    }
    let mut out = Vec::with_capacity(waits.len());
    for w in waits {
        let (offset, delivered) = w.await.unwrap_or((0, 0));
        out.push(Published { offset, delivered });
    }
    Ok(Json(out))
}

/// Rooms with members (internal per-socket rooms left out).
#[utoipa::path(
    get, path = "/api/rooms", tag = "rooms",
    responses(
        (status = 200, body = RoomList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 503, description = "API disabled: no API key configured", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn rooms(State(s): State<ApiState>, headers: HeaderMap) -> Result<Json<RoomList>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let Some(cluster) = &s.cluster else {
        let rooms = s
            .hub
            .rooms()
            .into_iter()
            .filter(|(r, _)| !r.starts_with("sid:") && !r.starts_with("nsp:"))
            .map(|(room, members)| RoomSummary { room, members })
            .collect();
        return Ok(Json(RoomList {
            rooms,
            partial: false,
            missing: Vec::new(),
            nodes: None,
        }));
    };
    let tally = cluster.census().rooms().await;
    let mut sum: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (_, rooms) in &tally.answers {
        for (room, n) in rooms {
            *sum.entry(room.clone()).or_default() += n;
        }
    }
    Ok(Json(RoomList {
        rooms: sum
            .into_iter()
            .map(|(room, members)| RoomSummary { room, members })
            .collect(),
        partial: !tally.missing.is_empty(),
        missing: tally.missing,
        nodes: Some(fleet(cluster, |_| None)),
    }))
}

/// The fleet as heartbeats list it, each node with `extra(id)` merged in.
fn fleet(
    cluster: &crate::cluster::Cluster,
    extra: impl Fn(&str) -> Option<(&'static str, serde_json::Value)>,
) -> Vec<serde_json::Value> {
    cluster
        .nodes()
        .into_iter()
        .map(|n| {
            let mut v = serde_json::to_value(&n).unwrap_or_default();
            if let (Some((k, x)), Some(obj)) = (extra(&n.id), v.as_object_mut()) {
                obj.insert(k.to_owned(), x);
            }
            v
        })
        .collect()
}

/// One room: members per transport and users present.
#[utoipa::path(
    get, path = "/api/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "Room name (URL-encoded)")),
    responses(
        (status = 200, body = RoomDetail),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 503, description = "API disabled: no API key configured", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn room(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<RoomDetail>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let Some(cluster) = &s.cluster else {
        let Some(info) = s.hub.room_info(&room) else {
            return Err(no_room(&room));
        };
        return Ok(Json(RoomDetail::from_share(
            info.room.clone(),
            RoomShare::from(info),
        )));
    };
    let tally = cluster.census().room(&room).await;
    let mut total: Option<RoomShare> = None;
    let mut per_node: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (node, share) in tally.answers {
        let Some(share) = share else { continue };
        per_node.insert(node, share.members);
        total = Some(match total {
            None => share,
            Some(mut t) => {
                t.members += share.members;
                for (tr, n) in share.by_transport {
                    match t.by_transport.iter_mut().find(|(x, _)| *x == tr) {
                        Some((_, m)) => *m += n,
                        None => t.by_transport.push((tr, n)),
                    }
                }
                t.users.extend(share.users);
                t.history = t.history.max(share.history);
                t.last_offset = t.last_offset.max(share.last_offset);
                t
            }
        });
    }
    let Some(mut total) = total else {
        return Err(no_room(&room));
    };
    total.users.sort();
    total.users.dedup();
    total.by_transport.sort();
    let mut detail = RoomDetail::from_share(room, total);
    detail.partial = !tally.missing.is_empty();
    detail.missing = tally.missing;
    detail.nodes = Some(fleet(cluster, |id| {
        Some(("members", per_node.get(id).copied().unwrap_or(0).into()))
    }));
    Ok(Json(detail))
}

fn no_room(room: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no room {room:?}"))
}

impl RoomDetail {
    fn from_share(room: String, share: RoomShare) -> RoomDetail {
        RoomDetail {
            room,
            members: share.members,
            transports: share
                .by_transport
                .into_iter()
                .map(|(t, n)| (t, serde_json::Value::from(n)))
                .collect(),
            users: share.users,
            history: share.history,
            last_offset: share.last_offset,
            partial: false,
            missing: Vec::new(),
            nodes: None,
        }
    }
}

struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard HTTP API", description = "Publish to rooms, users or everyone; inspect rooms; act on the Socket.IO sockets of every node (fetch, join, leave, disconnect, server-side emit, emit with acks). Authenticate with `Authorization: Bearer <SWITCHBOARD_API_KEY>`."),
    paths(
        publish, publish_batch, rooms, room,
        crate::sockets_api::fetch_sockets, crate::sockets_api::sockets_join,
        crate::sockets_api::sockets_leave, crate::sockets_api::disconnect_sockets,
        crate::sockets_api::server_side_emit, crate::sockets_api::emit_with_ack,
        crate::chat::api::send, crate::chat::api::history, crate::chat::api::presence,
    ),
    modifiers(&BearerKey)
)]
pub struct ApiDoc;

/// The OpenAPI document of this API: utoipa's, with the rules `to_publish` enforces
/// that its derive cannot express, so a request valid by the document is accepted and
/// one the server refuses is invalid by it (checked by schemathesis in CI).
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(req) = doc.pointer_mut("/components/schemas/PublishRequest") {
        tighten_publish_request(req);
    }
    let batch = "/paths/~1api~1publish~1batch/post/requestBody/content/application~1json/schema";
    if let Some(list) = doc.pointer_mut(batch) {
        merge(list, serde_json::json!({ "maxItems": MAX_BATCH }));
    }
    tighten_sockets(&mut doc);
    crate::chat::api::tighten(&mut doc);
    doc
}

/// The sockets API's rules (`sockets_api`): room names as for publishing, at most 100 per
/// list, `to` not empty, event names as for publishing, timeouts 1 to 60,000 ms.
fn tighten_sockets(doc: &mut serde_json::Value) {
    use serde_json::json;
    let room =
        json!({"minLength": 1, "maxLength": crate::transport::MAX_ROOM_LEN, "pattern": NO_CONTROL});
    let timeout = json!({"minimum": 1, "maximum": crate::cluster::MAX_TIMEOUT.as_millis() as u64});
    let rooms = |v: &mut serde_json::Value, min: usize| {
        merge(v, json!({"minItems": min, "maxItems": 100}));
        merge(&mut v["items"], room.clone());
    };
    for (schema, fields) in [
        ("MoveRequest", &["rooms", "except", "to"][..]),
        ("DisconnectRequest", &["rooms", "except"][..]),
        ("EmitWithAckRequest", &["rooms", "except"][..]),
    ] {
        if let Some(props) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties")) {
            for f in fields {
                rooms(&mut props[*f], usize::from(*f == "to"));
            }
        }
    }
    for (schema, t) in [
        ("ServerSideEmitRequest", "ackTimeoutMs"),
        ("EmitWithAckRequest", "timeoutMs"),
    ] {
        if let Some(props) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties")) {
            merge(
                &mut props["event"],
                json!({"minLength": 1, "maxLength": 100, "pattern": NO_CONTROL, "not": {"enum": RESERVED_EVENTS}}),
            );
            merge(&mut props[t], timeout.clone());
            // Any JSON values, as the handler passes them through.
            props["args"] = json!({"type": "array", "items": {}, "description": "The event's arguments: any JSON values."});
        }
    }
    if let Some(params) = doc.pointer_mut("/paths/~1api~1sockets/get/parameters")
        && let Some(params) = params.as_array_mut()
    {
        for p in params {
            match p["name"].as_str() {
                Some("room" | "except") => rooms(&mut p["schema"], 0),
                Some("timeoutMs") => merge(&mut p["schema"], timeout.clone()),
                _ => {}
            }
        }
    }
}

/// Names without control characters (`char::is_control`: U+0000-001F, U+007F-009F).
pub(crate) const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn tighten_publish_request(req: &mut serde_json::Value) {
    use serde_json::json;
    let props = &mut req["properties"];
    let name = |max: usize| json!({"minLength": 1, "maxLength": max, "pattern": NO_CONTROL});
    for (field, max) in [("event", 100), ("user", 200)] {
        merge(&mut props[field], name(max));
    }
    merge(
        &mut props["event"],
        json!({"not": {"enum": RESERVED_EVENTS}}),
    );
    merge(&mut props["room"], name(crate::transport::MAX_ROOM_LEN));
    // Internal rooms: everyone (`*`), per-socket and per-namespace rooms.
    merge(
        &mut props["room"],
        json!({"not": {"anyOf": [
            {"const": hub::EVERYONE},
            {"type": "string", "pattern": "^(sid:|nsp:|/)"}
        ]}}),
    );
    // Any JSON value, as the handler passes it through, and optional (`null` when absent).
    props["data"] = json!({"description": "Any JSON value, delivered as the event's data."});
    req["required"] = json!(["event"]);
    // Exactly one target.
    req["oneOf"] = json!([
        {"required": ["room"], "properties": {"room": {"type": "string"}}},
        {"required": ["user"], "properties": {"user": {"type": "string"}}},
        {"required": ["broadcast"], "properties": {"broadcast": {"const": true}}}
    ]);
}

/// Adds `extra`'s keys to the object `into`.
pub(crate) fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| Bytes::from(document().to_string()));
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.clone(),
    )
        .into_response()
}

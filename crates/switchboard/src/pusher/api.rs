//! Pusher's HTTP API under `/apps/{app_id}`, signed as Pusher signs it: `auth_key`,
//! `auth_timestamp` (within 600 s), `auth_version=1.0`, `body_md5` with a body, and
//! `auth_signature` over method, path and the sorted query. Errors are plain-text bodies
//! with Pusher's statuses (400 bad request, 401 bad signature or stale timestamp, 403 app
//! disabled, 404 unknown app, 413 too large). Nothing is published on any error.
//!
//! On a cluster node the channel queries (`/channels`, `/channels/{name}`, `/users`, and
//! the `info` of an event) count every node: the census asks each live node for its
//! share and adds them up (users counted once); a node that does not answer in time is
//! logged and left out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hub::Publish;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::channel::{self, Kind, room_of};
use super::service::{App, Pusher};
use super::sign;

/// How far a request's `auth_timestamp` may be from the server's clock.
const MAX_SKEW_SECS: i64 = 600;
/// Most channels one event may go to.
const MAX_CHANNELS: usize = 100;
/// Most events in one batch.
const MAX_BATCH: usize = 10;
/// Largest request body.
pub(crate) const MAX_BODY: usize = 256 * 1024;

/// An API refusal: a status and a message, as Pusher answers them (plain text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Checks a request's app and signature; returns the app.
pub(crate) fn authorize(
    p: &Pusher,
    app_id: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    now: i64,
) -> Result<Arc<App>, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is too large: at most {MAX_BODY} bytes"),
        ));
    }
    let app = p
        .app_by_id(app_id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Unknown app {app_id}")))?
        .clone();
    let query: Vec<(String, String)> = axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| bad(format!("Invalid query string: {e}")))?;
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let key = get("auth_key").ok_or_else(|| unauthorized("Missing auth_key"))?;
    if key != app.config.key {
        return Err(unauthorized("Invalid auth_key: not this app's key"));
    }
    if get("auth_version") != Some("1.0") {
        return Err(unauthorized("auth_version must be 1.0"));
    }
    let stamp = get("auth_timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| unauthorized("Missing or invalid auth_timestamp"))?;
    if (now - stamp).abs() > MAX_SKEW_SECS {
        return Err(unauthorized(format!(
            "Timestamp expired: given timestamp {stamp} is not within {MAX_SKEW_SECS}s of server time {now}"
        )));
    }
    match get("body_md5") {
        Some(md5) if md5 != sign::md5_hex(body) => {
            return Err(unauthorized("body_md5 does not match the body"));
        }
        None if !body.is_empty() => return Err(unauthorized("Missing body_md5")),
        _ => {}
    }
    let signature = get("auth_signature").ok_or_else(|| unauthorized("Missing auth_signature"))?;
    let message = sign::api_message(method.as_str(), uri.path(), &query);
    if !sign::verify(&app.config.secret, &message, signature) {
        return Err(unauthorized(format!(
            "Invalid signature: expected the HMAC SHA256 hex digest of {message:?}"
        )));
    }
    if !app.config.enabled {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "App is disabled"));
    }
    Ok(app)
}

/// One event of `/events` or `/batch_events`.
#[derive(Debug, Deserialize)]
struct EventRequest {
    name: Option<String>,
    data: Option<Value>,
    channels: Option<Vec<String>>,
    channel: Option<String>,
    socket_id: Option<String>,
    info: Option<String>,
}

/// A checked event, ready to publish.
struct Event {
    name: String,
    data: String,
    channels: Vec<String>,
    except: Option<hub::MemberId>,
    /// On a cluster node, the excluded socket's own room: the relay carries it, so the
    /// socket is skipped on whichever node it is.
    except_room: Option<String>,
    info: Vec<String>,
}

/// An event name only the server sends: a protocol event, or a presence announcement
/// (which becomes `pusher_internal:member_added` / `member_removed`).
fn reserved_event(name: &str) -> bool {
    name.starts_with("pusher:")
        || name.starts_with("pusher_internal:")
        || name == "member_joined"
        || name == "member_left"
}

fn check_event(p: &Pusher, app: &App, req: EventRequest) -> Result<Event, ApiError> {
    let name = req
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("Missing event name"))?;
    if name.len() > 200 {
        return Err(bad("Event name is longer than 200 characters"));
    }
    if reserved_event(&name) {
        return Err(bad(format!(
            "Event name {name:?} is reserved: pusher: and pusher_internal: events, and the presence announcements member_joined / member_left, come from the server only"
        )));
    }
    let data = match req.data {
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => return Err(bad("Missing data")),
    };
    if data.len() > p.config.max_event_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Event data is too large: at most {} bytes",
                p.config.max_event_bytes
            ),
        ));
    }
    let channels = match (req.channels, req.channel) {
        (Some(c), None) => c,
        (None, Some(c)) => vec![c],
        _ => return Err(bad("Give either channels or channel")),
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(bad(format!("Give 1 to {MAX_CHANNELS} channels")));
    }
    if let Some(c) = channels.iter().find(|c| !channel::valid_name(c)) {
        return Err(bad(format!("Invalid channel name {c:?}")));
    }
    if channels.len() > 1 && channels.iter().any(|c| Kind::of(c) == Kind::Encrypted) {
        return Err(bad(
            "An event to an encrypted channel goes to that channel alone",
        ));
    }
    let (except, except_room) = match req.socket_id {
        None => (None, None),
        Some(s) if valid_socket_id(&s) => (
            p.member_of_socket(app, &s),
            p.cluster.get().map(|_| channel::socket_room(&s)),
        ),
        Some(s) => return Err(bad(format!("Invalid socket_id {s:?}"))),
    };
    let info = info_fields(req.info.as_deref())?;
    Ok(Event {
        name,
        data,
        channels,
        except,
        except_room,
        info,
    })
}

fn valid_socket_id(s: &str) -> bool {
    s.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

fn info_fields(info: Option<&str>) -> Result<Vec<String>, ApiError> {
    let fields: Vec<String> = info
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(f) = fields
        .iter()
        .find(|f| !matches!(f.as_str(), "user_count" | "subscription_count"))
    {
        return Err(bad(format!("Unknown info attribute {f:?}")));
    }
    Ok(fields)
}

/// A room's members and users on every node (on this one without a cluster).
#[derive(Debug, Default)]
struct Occupancy {
    members: usize,
    /// Each user once, in the order the nodes listed them.
    users: Vec<String>,
}

/// The occupancy of `room` across the fleet.
async fn occupancy(p: &Pusher, room: &str) -> Occupancy {
    let Some(cluster) = p.cluster.get() else {
        return p
            .hub
            .room_info(room)
            .map(|r| Occupancy {
                members: r.members,
                users: r.users,
            })
            .unwrap_or_default();
    };
    let tally = cluster.census().room(room).await;
    if !tally.missing.is_empty() {
        tracing::warn!(room, missing = ?tally.missing, "pusher API: nodes did not answer the census; counted without them");
    }
    let mut out = Occupancy::default();
    let mut seen = std::collections::HashSet::new();
    for share in tally.answers.into_iter().filter_map(|(_, s)| s) {
        out.members += share.members;
        for u in share.users {
            if seen.insert(u.clone()) {
                out.users.push(u);
            }
        }
    }
    out
}

/// Every room with members across the fleet, with its member count.
async fn rooms(p: &Pusher) -> Vec<(String, usize)> {
    let Some(cluster) = p.cluster.get() else {
        return p.hub.rooms();
    };
    let tally = cluster.census().rooms().await;
    if !tally.missing.is_empty() {
        tracing::warn!(missing = ?tally.missing, "pusher API: nodes did not answer the census; listed without them");
    }
    let mut sum: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (room, n) in tally.answers.into_iter().flat_map(|(_, r)| r) {
        *sum.entry(room).or_default() += n;
    }
    sum.into_iter().collect()
}

/// The requested attributes of one channel.
async fn channel_info(p: &Pusher, channel: &str, fields: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    if fields.is_empty() {
        return out;
    }
    let o = occupancy(p, &room_of(channel)).await;
    for f in fields {
        match f.as_str() {
            "user_count" if Kind::of(channel) == Kind::Presence => {
                out.insert(f.clone(), json!(o.users.len()));
            }
            "subscription_count" => {
                out.insert(f.clone(), json!(o.members));
            }
            _ => {}
        }
    }
    out
}

fn publish(p: &Pusher, e: &Event) {
    let payload = channel::payload_of_data(&e.data);
    for c in &e.channels {
        p.hub.publish(Publish {
            rooms: std::iter::once(Arc::from(&*room_of(c))).collect(),
            event: e.name.as_str().into(),
            payload: payload.clone(),
            except: e
                .except_room
                .iter()
                .map(|r| Arc::from(r.as_str()))
                .collect(),
            except_member: e.except,
            persist: true,
            ..Publish::default()
        });
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is too large: at most {MAX_BODY} bytes"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON body: {e}")))
}

/// Counts the request, and the refusal with its cause logged once.
fn answer(p: &Pusher, result: Result<Value, ApiError>) -> Response {
    p.counters.api_requests.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            p.counters.api_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(status = %e.status, message = %e.message, "pusher API request refused");
            e.into_response()
        }
    }
}

/// `POST /apps/{app_id}/events`.
pub(crate) async fn events(
    State(p): State<Arc<Pusher>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let result: Result<Value, ApiError> = async {
        let app = authorize(&p, &app_id, &method, &uri, &body, now_secs())?;
        let e = check_event(&p, &app, parse(&body)?)?;
        publish(&p, &e);
        if e.info.is_empty() {
            return Ok(json!({}));
        }
        let mut channels = Map::new();
        for c in &e.channels {
            channels.insert(c.clone(), Value::Object(channel_info(&p, c, &e.info).await));
        }
        Ok(json!({ "channels": channels }))
    }
    .await;
    answer(&p, result)
}

/// `POST /apps/{app_id}/batch_events`: every event is checked before any is published.
pub(crate) async fn batch_events(
    State(p): State<Arc<Pusher>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    #[derive(Deserialize)]
    struct Batch {
        batch: Vec<EventRequest>,
    }
    let result: Result<Value, ApiError> = async {
        let app = authorize(&p, &app_id, &method, &uri, &body, now_secs())?;
        let batch: Batch = parse(&body)?;
        if batch.batch.is_empty() || batch.batch.len() > MAX_BATCH {
            return Err(bad(format!("Give 1 to {MAX_BATCH} events in a batch")));
        }
        let mut checked = Vec::with_capacity(batch.batch.len());
        for (i, req) in batch.batch.into_iter().enumerate() {
            if req.channels.is_some() {
                return Err(bad(format!("batch[{i}]: give channel, not channels")));
            }
            let e = check_event(&p, &app, req).map_err(|e| ApiError {
                message: format!("batch[{i}]: {}", e.message),
                ..e
            })?;
            checked.push(e);
        }
        for e in &checked {
            publish(&p, e);
        }
        if checked.iter().all(|e| e.info.is_empty()) {
            return Ok(json!({}));
        }
        let mut infos = Vec::with_capacity(checked.len());
        for e in &checked {
            infos.push(Value::Object(
                channel_info(&p, &e.channels[0], &e.info).await,
            ));
        }
        Ok(json!({ "batch": infos }))
    }
    .await;
    answer(&p, result)
}

fn query_get(uri: &Uri, key: &str) -> Option<String> {
    engineio::query_param(uri.query().unwrap_or(""), key)
}

/// `GET /apps/{app_id}/channels[?filter_by_prefix=&info=user_count]`: occupied channels.
pub(crate) async fn channels(
    State(p): State<Arc<Pusher>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
) -> Response {
    let result: Result<Value, ApiError> = async {
        authorize(&p, &app_id, &method, &uri, &[], now_secs())?;
        let prefix = query_get(&uri, "filter_by_prefix").unwrap_or_default();
        let info = info_fields(query_get(&uri, "info").as_deref())?;
        if info.iter().any(|f| f == "user_count") && !prefix.starts_with("presence-") {
            return Err(bad(
                "info=user_count needs filter_by_prefix=presence- (user counts are of presence channels)",
            ));
        }
        let mut out = Map::new();
        for (room, _) in rooms(&p).await {
            let Some(c) = channel::channel_of(&room) else {
                continue;
            };
            if Kind::of(&c) == Kind::User || !c.starts_with(&prefix) {
                continue;
            }
            out.insert(c.to_string(), Value::Object(channel_info(&p, &c, &info).await));
        }
        Ok(json!({ "channels": out }))
    }
    .await;
    answer(&p, result)
}

/// `GET /apps/{app_id}/channels/{channel}[?info=user_count,subscription_count]`.
pub(crate) async fn channel(
    State(p): State<Arc<Pusher>>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Response {
    let result: Result<Value, ApiError> = async {
        authorize(&p, &app_id, &method, &uri, &[], now_secs())?;
        if !channel::valid_name(&channel) {
            return Err(bad(format!("Invalid channel name {channel:?}")));
        }
        let info = info_fields(query_get(&uri, "info").as_deref())?;
        if info.iter().any(|f| f == "user_count") && Kind::of(&channel) != Kind::Presence {
            return Err(bad("info=user_count is only for presence channels"));
        }
        let o = occupancy(&p, &room_of(&channel)).await;
        let mut out = Map::new();
        for f in &info {
            match f.as_str() {
                "user_count" => out.insert(f.clone(), json!(o.users.len())),
                _ => out.insert(f.clone(), json!(o.members)),
            };
        }
        out.insert("occupied".into(), json!(o.members > 0));
        Ok(Value::Object(out))
    }
    .await;
    answer(&p, result)
}

/// `GET /apps/{app_id}/channels/{channel}/users`: a presence channel's users.
pub(crate) async fn users(
    State(p): State<Arc<Pusher>>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Response {
    let result: Result<Value, ApiError> = async {
        authorize(&p, &app_id, &method, &uri, &[], now_secs())?;
        if !channel::valid_name(&channel) || Kind::of(&channel) != Kind::Presence {
            return Err(bad("Users are listed for presence channels only"));
        }
        let users: Vec<Value> = occupancy(&p, &room_of(&channel))
            .await
            .users
            .into_iter()
            .map(|u| json!({ "id": u }))
            .collect();
        Ok(json!({ "users": users }))
    }
    .await;
    answer(&p, result)
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`: closes every connection
/// of the app signed in (or present) as that user, with 4009 (pusher-js does not
/// reconnect), on every node. 503 when the other nodes could not be told (this node's
/// connections are closed; the request can be repeated).
pub(crate) async fn terminate(
    State(p): State<Arc<Pusher>>,
    Path((app_id, user_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let result: Result<Value, ApiError> = async {
        let app = authorize(&p, &app_id, &method, &uri, &body, now_secs())?;
        p.terminate_local(&app, &user_id);
        if let Some(cluster) = p.cluster.get() {
            let body = json!({"app": app.config.id, "user": user_id});
            if let Err(e) = cluster
                .signals()
                .send(super::service::TERMINATE_SIGNAL, body)
                .await
            {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("Terminated on this node; the other nodes could not be told ({e})"),
                ));
            }
        }
        Ok(json!({}))
    }
    .await;
    answer(&p, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::config::{PusherApp, PusherConfig};

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    fn pusher() -> Arc<Pusher> {
        let config = PusherConfig {
            apps: vec![
                PusherApp {
                    id: "3".into(),
                    key: KEY.into(),
                    secret: SECRET.into(),
                    client_events: false,
                    user_authentication: false,
                    enabled: true,
                    webhooks: vec![],
                },
                PusherApp {
                    id: "4".into(),
                    key: "off".into(),
                    secret: "offsecret".into(),
                    client_events: false,
                    user_authentication: false,
                    enabled: false,
                    webhooks: vec![],
                },
            ],
            ..PusherConfig::default()
        };
        Pusher::new(
            config,
            hub::Hub::new(hub::HubConfig::default()),
            crate::Config::default().transports(),
            crate::limits::Limits::new(crate::Config::default().limits()),
            tokio_util::sync::CancellationToken::new(),
            tokio_util::task::TaskTracker::new(),
        )
        .expect("an app is configured")
    }

    /// A request signed as the pusher SDK signs it.
    fn signed(method: &str, path: &str, body: &str, stamp: i64, extra: &[(&str, &str)]) -> Uri {
        signed_with(method, path, body, stamp, extra, KEY, SECRET)
    }

    fn signed_with(
        method: &str,
        path: &str,
        body: &str,
        stamp: i64,
        extra: &[(&str, &str)],
        key: &str,
        secret: &str,
    ) -> Uri {
        let mut q: Vec<(String, String)> = vec![
            ("auth_key".into(), key.into()),
            ("auth_timestamp".into(), stamp.to_string()),
            ("auth_version".into(), "1.0".into()),
        ];
        if !body.is_empty() {
            q.push(("body_md5".into(), sign::md5_hex(body.as_bytes())));
        }
        q.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let sig = sign::sign(secret, &sign::api_message(method, path, &q));
        let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{path}?{}&auth_signature={sig}", query.join("&"))
            .parse()
            .expect("uri")
    }

    const NOW: i64 = 1_353_088_179;

    fn check(p: &Pusher, method: &Method, uri: &Uri, body: &str) -> Result<(), StatusCode> {
        authorize(p, "3", method, uri, body.as_bytes(), NOW)
            .map(|_| ())
            .map_err(|e| e.status)
    }

    #[tokio::test]
    async fn signed_requests_pass() {
        let p = pusher();
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        // Pusher's documented example request, signature included.
        let uri: Uri = "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c".parse().expect("uri");
        assert_eq!(check(&p, &Method::POST, &uri, body), Ok(()));
        let uri = signed(
            "GET",
            "/apps/3/channels",
            "",
            NOW,
            &[("filter_by_prefix", "presence-")],
        );
        assert_eq!(check(&p, &Method::GET, &uri, ""), Ok(()));
    }

    #[tokio::test]
    async fn bad_requests_are_refused() {
        let p = pusher();
        let body = r#"{"name":"e","channel":"c","data":"x"}"#;
        let post = Method::POST;
        // Stale and future timestamps.
        for stamp in [NOW - 601, NOW + 601] {
            let uri = signed("POST", "/apps/3/events", body, stamp, &[]);
            assert_eq!(check(&p, &post, &uri, body), Err(StatusCode::UNAUTHORIZED));
        }
        let within = signed("POST", "/apps/3/events", body, NOW - 599, &[]);
        assert_eq!(check(&p, &post, &within, body), Ok(()));
        // Another body than the one signed (body_md5 mismatch).
        let uri = signed("POST", "/apps/3/events", body, NOW, &[]);
        assert_eq!(
            check(&p, &post, &uri, r#"{"name":"e","channel":"c","data":"y"}"#),
            Err(StatusCode::UNAUTHORIZED)
        );
        // Signed with another secret, for another path, for another method.
        let uri = signed_with(
            "POST",
            "/apps/3/events",
            body,
            NOW,
            &[],
            KEY,
            "wrong-secret",
        );
        assert_eq!(check(&p, &post, &uri, body), Err(StatusCode::UNAUTHORIZED));
        let other_path = signed("POST", "/apps/3/batch_events", body, NOW, &[]).to_string();
        let uri: Uri = other_path
            .replace("batch_events", "events")
            .parse()
            .expect("uri");
        assert_eq!(check(&p, &post, &uri, body), Err(StatusCode::UNAUTHORIZED));
        let uri = signed("GET", "/apps/3/events", body, NOW, &[]);
        assert_eq!(check(&p, &post, &uri, body), Err(StatusCode::UNAUTHORIZED));
        // A query parameter added after signing.
        let uri: Uri = format!(
            "{}&info=user_count",
            signed("POST", "/apps/3/events", body, NOW, &[])
        )
        .parse()
        .expect("uri");
        assert_eq!(check(&p, &post, &uri, body), Err(StatusCode::UNAUTHORIZED));
        // Missing pieces.
        for uri in [
            "/apps/3/events",
            "/apps/3/events?auth_key=278d425bdf160c739803",
            "/apps/3/events?auth_key=other&auth_timestamp=1353088179&auth_version=1.0",
        ] {
            let uri: Uri = uri.parse().expect("uri");
            assert_eq!(
                check(&p, &post, &uri, body),
                Err(StatusCode::UNAUTHORIZED),
                "{uri}"
            );
        }
        // Unknown app, disabled app.
        let uri = signed("POST", "/apps/9/events", body, NOW, &[]);
        assert_eq!(
            authorize(&p, "9", &post, &uri, body.as_bytes(), NOW)
                .map(|_| ())
                .map_err(|e| e.status),
            Err(StatusCode::NOT_FOUND)
        );
        let uri = signed_with("POST", "/apps/4/events", body, NOW, &[], "off", "offsecret");
        assert_eq!(
            authorize(&p, "4", &post, &uri, body.as_bytes(), NOW)
                .map(|_| ())
                .map_err(|e| e.status),
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[tokio::test]
    async fn event_checks() {
        let p = pusher();
        let app = p.app_by_id("3").expect("app").clone();
        let ev = |v: Value| {
            check_event(&p, &app, serde_json::from_value(v).expect("shape"))
                .map(|e| e.channels.len())
        };
        assert_eq!(
            ev(json!({"name": "e", "channels": ["a", "b"], "data": "x"})),
            Ok(2)
        );
        let status = |v: Value| ev(v).map_err(|e| e.status);
        let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        assert_eq!(
            status(json!({"name": "e", "channels": many, "data": "x"})),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(json!({"name": "e", "channels": [], "data": "x"})),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(json!({"name": "e", "channels": ["a b"], "data": "x"})),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(json!({"channels": ["a"], "data": "x"})),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(json!({"name": "e", "channels": ["a"]})),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(json!({"name": "e", "channels": ["a"], "data": "x", "socket_id": "nope"})),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(json!({"name": "e", "channels": ["a"], "data": "x".repeat(10_241)})),
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            status(json!({"name": "e", "channels": ["private-encrypted-a", "b"], "data": "x"})),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(json!({"name": "e", "channels": ["a"], "data": "x", "info": "bogus"})),
            Err(StatusCode::BAD_REQUEST)
        );
        // Forged presence: the server's own events are refused.
        for name in [
            "member_joined",
            "member_left",
            "pusher_internal:member_added",
            "pusher:subscribe",
        ] {
            assert_eq!(
                status(json!({"name": name, "channels": ["presence-a"], "data": "{}"})),
                Err(StatusCode::BAD_REQUEST),
                "{name}"
            );
        }
        assert!(parse::<Value>(&vec![b' '; MAX_BODY + 1]).is_err());
        assert_eq!(
            parse::<Value>(b"{nope").map_err(|e| e.status),
            Err(StatusCode::BAD_REQUEST)
        );
    }
}

//! Operator and service HTTP endpoints: `/health` (liveness), `/ready`, `/stats`, and the
//! catalog admin API (`Authorization: Bearer <api_key>`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use hub::Hub;
use serde_json::json;
use socketio::Namespace;
use tickets::{Category, Event};

use crate::tickets::{HoldService, ServiceError};

#[derive(Clone)]
pub struct AdminState {
    pub holds: Arc<HoldService>,
    pub hub: Arc<Hub>,
    pub realtime: Arc<Namespace>,
    pub transports: Arc<crate::transport::Transports>,
    pub engine: Arc<engineio::Engine<socketio::SocketIo>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Socket.IO events refused by the rate limit (counted by the Socket.IO layer).
    pub sio_rate_limited: Arc<std::sync::atomic::AtomicU64>,
    /// Development mode: the dashboard feed is open without the API key.
    pub dev_mode: bool,
    pub api_keys: ApiKeys,
    /// The broker consumer and the catalog source (`/ready`, `/stats`).
    pub integrations: crate::ingest::Integrations,
    /// Connection admission: open connections, tracked addresses, refusals.
    pub limits: Arc<crate::limits::Limits>,
    /// The cluster link, when `redis_url` is set (`/ready`, `/stats`, `/metrics`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The Pusher endpoints, when an app is configured (`/stats`, `/metrics`, dashboard).
    pub pusher: Option<Arc<crate::pusher::Pusher>>,
    /// The chat (`/metrics`).
    pub chat: Arc<crate::chat::Chat>,
}

/// Liveness: the process serves HTTP.
pub(crate) async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

pub fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stats", get(stats))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/dashboard/stream", get(crate::dashboard::stream))
        .route("/api/events", get(list_events))
        .route("/api/events/{id}", put(put_event))
        .route("/api/events/{id}/categories/{category}", put(put_category))
        .with_state(state)
}

/// One answer for every admin error: a status and `{error}`; the cause is logged once.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError(status, message.into())
    }

    /// The same error with context in front of its message.
    pub fn prefixed(self, context: &str) -> ApiError {
        ApiError(self.0, format!("{context}{}", self.1))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Refused(m) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, m),
            ServiceError::Storage(cause) => {
                tracing::error!(%cause, "admin operation failed in the store");
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage unavailable".into(),
                )
            }
        }
    }
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    check_api_key(&state.api_keys, headers)
}

/// The accepted API keys, kept as SHA-256 digests: every check compares the digest of
/// the presented key with every accepted one in constant time (`subtle`), so neither the
/// keys' contents nor their lengths nor which key matched show in the timing. Never
/// logged: `Debug` prints only the count.
#[derive(Clone, Default)]
pub struct ApiKeys(std::sync::Arc<[[u8; 32]]>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key).into()
}

impl ApiKeys {
    /// Accepts each of `keys` (empty ones are ignored).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> ApiKeys {
        ApiKeys(
            keys.into_iter()
                .filter(|k| !k.is_empty())
                .map(|k| digest(k.as_bytes()))
                .collect(),
        )
    }

    /// No key configured: the APIs are disabled.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is one of the keys (constant time in the number of keys).
    pub fn accepts(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        let given = digest(given.as_bytes());
        let mut ok = subtle::Choice::from(0);
        for key in self.0.iter() {
            ok |= key.ct_eq(&given);
        }
        ok.into()
    }
}

/// `Authorization: Bearer <key>` against the configured API keys (none: API disabled).
pub(crate) fn check_api_key(keys: &ApiKeys, headers: &HeaderMap) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "API disabled: set SWITCHBOARD_API_KEY".into(),
        ));
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| keys.accepts(g)) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "invalid or missing API key".into(),
        ))
    }
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    // The app is only built once the store has opened and loaded; a configured broker
    // must be consuming (the sockets keep serving either way).
    let mut body = json!({"status": "ready", "store": "open"});
    let mut status = StatusCode::OK;
    // The hold authority must answer (a Redis one may be unreachable; holds are refused
    // meanwhile, the sockets keep serving).
    let (holds_ok, holds) = s.holds.readiness();
    if !holds_ok {
        status = StatusCode::SERVICE_UNAVAILABLE;
        body["status"] = json!("not ready");
        body["store"] = json!("unreachable");
    }
    body["holdStore"] = holds;
    if let Some(ingest) = &s.integrations.amqp {
        let (ok, broker) = ingest.readiness();
        if !ok {
            status = StatusCode::SERVICE_UNAVAILABLE;
            body["status"] = json!("not ready");
        }
        body["broker"] = broker;
    }
    if let Some(cluster) = &s.cluster {
        // A node without Redis still serves its own clients (/health stays 200), but a
        // load balancer should send new ones to nodes that reach the whole fleet.
        if !cluster.link().is_up() {
            status = StatusCode::SERVICE_UNAVAILABLE;
            body["status"] = json!("not ready");
        }
        body["redis"] = cluster.link().report();
    }
    (status, Json(body))
}

async fn stats(State(s): State<AdminState>) -> impl IntoResponse {
    let t = s.holds.stats();
    let hub = s.hub.stats();
    Json(json!({
        "service": "realtime-service",
        "status": "ok",
        "connectedUsers": s.realtime.connected(),
        "recoverableSessions": s.realtime.recoverable(),
        "connections": {
            "socketio": s.realtime.connected(),
            "ws": s.transports.ws_connections(),
            "sse": s.transports.sse_connections(),
            "pusher": s.pusher.as_ref().map_or(0, |p| p.connections()),
        },
        "ticketLocks": {
            "totalLocks": t.total_locks,
            "activeLocks": t.active_locks,
            "usersWithLocks": t.users_with_locks,
            "categoriesWithLocks": t.categories_with_locks,
            "locksByStatus": {
                "active": t.locks_by_status.active,
                "expired": t.locks_by_status.expired,
                "confirmed": t.locks_by_status.confirmed,
                "released": t.locks_by_status.released,
                "completed": t.locks_by_status.completed,
            },
            // With Redis: the holds this node claimed at their deadline (each expired
            // hold is claimed by exactly one node; the fleet's sum is `expired`).
            "expiredByThisNode": s.holds.expired_by_this_node(),
        },
        "hub": hub,
        "amqp": s.integrations.amqp.as_ref().map(|i| i.stats()),
        "eventsService": s.integrations.catalog.stats(),
        "cluster": s.cluster.as_ref().map(|c| {
            let nodes = c.nodes();
            json!({
                "node": c.node_id(),
                "redis": c.link().report(),
                // Every transport's connections on every live node, as of its last heartbeat.
                "connections": nodes.iter().map(|n| n.connections).sum::<u64>(),
                "nodes": nodes,
                // Whether this node's share is in each of the fleet's books (presence,
                // Pusher's channel occupancy).
                "presenceSynced": c.books_synced(),
            })
        }),
    }))
}

async fn list_events(State(s): State<AdminState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(json!({"events": s.holds.catalog().await?})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    name: String,
    categories: Vec<Category>,
}

async fn put_event(
    State(s): State<AdminState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Result<Json<EventBody>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&s, &headers)?;
    let Json(body) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let event = Event {
        id,
        name: body.name,
        categories: body.categories,
    };
    s.holds.upsert_event(event).await?;
    Ok((StatusCode::OK, Json(json!({"success": true}))))
}

async fn put_category(
    State(s): State<AdminState>,
    Path((id, category)): Path<(i64, i64)>,
    headers: HeaderMap,
    body: Result<Json<Category>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&s, &headers)?;
    let Json(mut cat) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    cat.id = category;
    let mut event = s
        .holds
        .event(id)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("event {id} not found")))?;
    match event.categories.iter_mut().find(|c| c.id == category) {
        Some(c) => *c = cat,
        None => event.categories.push(cat),
    }
    s.holds.upsert_event(event).await?;
    Ok((StatusCode::OK, Json(json!({"success": true}))))
}

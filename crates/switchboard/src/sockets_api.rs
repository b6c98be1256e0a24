//! The fleet operations over HTTP, for backend services: what Node's
//! `io.of("/realtime").fetchSockets()`, `socketsJoin`, `socketsLeave`,
//! `disconnectSockets`, `serverSideEmit` and `timeout(t).emitWithAck` do, on every
//! node of the cluster (Node nodes on the same Redis included), or on this node alone
//! without `redis_url`. `Authorization: Bearer <api_key>` on every route.
//!
//! Sockets are chosen as Node chooses them: `rooms` (any of them; every socket when
//! empty) minus `except`. Every wait has a timeout (`timeoutMs`, at most 60,000); an
//! answer says how many nodes (`missing`) or clients (`missingAcks`) did not answer in
//! time.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;
use socketio::Selector;
use utoipa::ToSchema;

use crate::admin::{ApiError, check_api_key};
use crate::api::{ErrorBody, bad, check_event};
use crate::cluster::{Acked, Gathered, MAX_TIMEOUT, SocketOps};

/// What the routes need.
#[derive(Clone)]
pub struct SocketsState {
    pub ops: Arc<SocketOps>,
    pub api_keys: crate::admin::ApiKeys,
}

pub fn routes(state: SocketsState) -> Router {
    Router::new()
        .route("/api/sockets", get(fetch_sockets))
        .route("/api/sockets/join", post(sockets_join))
        .route("/api/sockets/leave", post(sockets_leave))
        .route("/api/sockets/disconnect", post(disconnect_sockets))
        .route("/api/server-side-emit", post(server_side_emit))
        .route("/api/emit-with-ack", post(emit_with_ack))
        .with_state(state)
}

/// Rooms one selector or one join may name, at most.
const MAX_ROOMS: usize = 100;
/// The wait when a request names none (Node's `requestsTimeout` default).
const DEFAULT_TIMEOUT_MS: u64 = 5000;

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid body: {e}")))
}

fn rooms_ok(what: &str, rooms: &[String]) -> Result<(), ApiError> {
    if rooms.len() > MAX_ROOMS {
        return Err(bad(format!("{what}: at most {MAX_ROOMS} rooms")));
    }
    for r in rooms {
        crate::transport::check_name(r).map_err(|e| bad(format!("{what}: {e}")))?;
    }
    Ok(())
}

/// A timeout in whole milliseconds (JSON's `5000.0` counts as a whole number, as JSON
/// Schema's `integer` says).
fn timeout_of(ms: Option<f64>) -> Result<Duration, ApiError> {
    let ms = ms.unwrap_or(DEFAULT_TIMEOUT_MS as f64);
    if !(1.0..=MAX_TIMEOUT.as_millis() as f64).contains(&ms) || ms.fract() != 0.0 {
        return Err(bad(format!(
            "timeoutMs must be 1 to {}",
            MAX_TIMEOUT.as_millis()
        )));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// Which sockets: in any of `rooms` (all when empty), minus those in `except`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Choose {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
}

impl Choose {
    fn selector(self) -> Result<Selector, ApiError> {
        rooms_ok("rooms", &self.rooms)?;
        rooms_ok("except", &self.except)?;
        Ok(Selector {
            rooms: self.rooms,
            except: self.except,
        })
    }
}

/// Sockets of every node.
#[derive(Debug, Serialize, ToSchema)]
pub struct SocketList {
    /// `{id, handshake, rooms, data}` as Node's `fetchSockets()` gives them.
    #[schema(value_type = Vec<Object>)]
    sockets: Vec<JsonValue>,
    /// Nodes that did not answer in time.
    missing: usize,
}

/// `fetchSockets()` across the fleet.
#[utoipa::path(
    get, path = "/api/sockets", tag = "sockets",
    params(
        ("room" = Option<Vec<String>>, Query, description = "Sockets in any of these rooms (repeat the parameter); all when absent"),
        ("except" = Option<Vec<String>>, Query, description = "Minus the sockets in any of these rooms"),
        ("timeoutMs" = Option<u64>, Query, description = "How long to wait for the other nodes (1 to 60000, default 5000)"),
    ),
    responses((status = 200, body = SocketList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn fetch_sockets(
    State(s): State<SocketsState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<SocketList>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let mut choose = Choose::default();
    let mut timeout_ms = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "room" => choose.rooms.push(v.into_owned()),
            "except" => choose.except.push(v.into_owned()),
            "timeoutMs" => {
                timeout_ms = Some(
                    v.parse::<u64>()
                        .map_err(|_| bad("timeoutMs must be a whole number of milliseconds"))?
                        as f64,
                );
            }
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
    }
    let sel = choose.selector()?;
    let Gathered { items, missing } = s.ops.fetch_sockets(&sel, timeout_of(timeout_ms)?).await;
    Ok(Json(SocketList {
        sockets: items,
        missing,
    }))
}

/// Sockets chosen by `rooms`/`except` join or leave `to`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    /// The rooms to join (or leave).
    to: Vec<String>,
}

/// What a fire-and-forget operation did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Told {
    /// Sockets chosen on this node.
    matched_here: usize,
    /// Whether the other nodes were told (false: Redis unreachable; this node only).
    relayed: bool,
}

/// Join (or leave) for the chosen sockets of every node.
async fn move_sockets(
    s: &SocketsState,
    headers: &HeaderMap,
    body: &[u8],
    join: bool,
) -> Result<Json<Told>, ApiError> {
    check_api_key(&s.api_keys, headers)?;
    let (sel, to) = move_request(body)?;
    let (matched_here, relayed) = if join {
        s.ops.sockets_join(&sel, &to).await
    } else {
        s.ops.sockets_leave(&sel, &to).await
    };
    Ok(Json(Told {
        matched_here,
        relayed,
    }))
}

fn move_request(body: &[u8]) -> Result<(Selector, Vec<String>), ApiError> {
    let req: MoveRequest = parse(body)?;
    if req.to.is_empty() {
        return Err(bad("to: at least one room"));
    }
    rooms_ok("to", &req.to)?;
    let sel = Choose {
        rooms: req.rooms,
        except: req.except,
    }
    .selector()?;
    Ok((sel, req.to))
}

/// `socketsJoin(to)` across the fleet.
#[utoipa::path(
    post, path = "/api/sockets/join", tag = "sockets",
    request_body = MoveRequest,
    responses((status = 200, body = Told), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn sockets_join(
    State(s): State<SocketsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Told>, ApiError> {
    move_sockets(&s, &headers, &body, true).await
}

/// `socketsLeave(to)` across the fleet.
#[utoipa::path(
    post, path = "/api/sockets/leave", tag = "sockets",
    request_body = MoveRequest,
    responses((status = 200, body = Told), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn sockets_leave(
    State(s): State<SocketsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Told>, ApiError> {
    move_sockets(&s, &headers, &body, false).await
}

/// Sockets to disconnect.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    /// Close the whole underlying connection, not only the namespace.
    #[serde(default)]
    close: bool,
}

/// `disconnectSockets(close)` across the fleet.
#[utoipa::path(
    post, path = "/api/sockets/disconnect", tag = "sockets",
    request_body = DisconnectRequest,
    responses((status = 200, body = Told), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn disconnect_sockets(
    State(s): State<SocketsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Told>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let req: DisconnectRequest = parse(&body)?;
    let sel = Choose {
        rooms: req.rooms,
        except: req.except,
    }
    .selector()?;
    let (matched_here, relayed) = s.ops.disconnect_sockets(&sel, req.close).await;
    Ok(Json(Told {
        matched_here,
        relayed,
    }))
}

/// An event for the other servers (not for clients).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSideEmitRequest {
    event: String,
    /// Its arguments.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    args: Vec<JsonValue>,
    /// Wait this long for one answer per server (`serverSideEmitWithAck`); absent: no wait.
    #[schema(value_type = Option<u64>)]
    ack_timeout_ms: Option<f64>,
}

/// The other servers' answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerSideAnswers {
    #[schema(value_type = Vec<Object>)]
    responses: Vec<JsonValue>,
    /// Servers that did not answer in time.
    missing: usize,
}

/// `serverSideEmit(event, ...args)` to every other server.
#[utoipa::path(
    post, path = "/api/server-side-emit", tag = "sockets",
    request_body = ServerSideEmitRequest,
    responses((status = 200, body = ServerSideAnswers), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn server_side_emit(
    State(s): State<SocketsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ServerSideAnswers>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let req: ServerSideEmitRequest = parse(&body)?;
    check_event(&req.event)?;
    let ack = req
        .ack_timeout_ms
        .map(|ms| timeout_of(Some(ms)))
        .transpose()?;
    let Gathered { items, missing } = s.ops.server_side_emit(&req.event, &req.args, ack).await;
    Ok(Json(ServerSideAnswers {
        responses: items,
        missing,
    }))
}

/// An event for the chosen clients, each expected to ack.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmitWithAckRequest {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    event: String,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    args: Vec<JsonValue>,
    /// How long each client has to ack (1 to 60000, default 5000).
    #[schema(value_type = Option<u64>)]
    timeout_ms: Option<f64>,
}

/// Every chosen client's ack.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AckAnswers {
    /// Clients the event went to, on every node that answered.
    clients: usize,
    /// Their acks (each client's first ack argument), in arrival order.
    #[schema(value_type = Vec<Object>)]
    acks: Vec<JsonValue>,
    /// Clients that did not ack in time.
    missing_acks: usize,
    /// Nodes that never said how many clients they had.
    missing_nodes: usize,
}

/// `io.timeout(t).emit(event, ...args)` with acks, across the fleet.
#[utoipa::path(
    post, path = "/api/emit-with-ack", tag = "sockets",
    request_body = EmitWithAckRequest,
    responses((status = 200, body = AckAnswers), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn emit_with_ack(
    State(s): State<SocketsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AckAnswers>, ApiError> {
    check_api_key(&s.api_keys, &headers)?;
    let req: EmitWithAckRequest = parse(&body)?;
    check_event(&req.event)?;
    let timeout = timeout_of(req.timeout_ms)?;
    let sel = Choose {
        rooms: req.rooms,
        except: req.except,
    }
    .selector()?;
    let Acked {
        clients,
        acks,
        missing_acks,
        missing_nodes,
    } = s
        .ops
        .emit_with_acks(&sel, &req.event, &req.args, timeout)
        .await;
    Ok(Json(AckAnswers {
        clients,
        acks,
        missing_acks,
        missing_nodes,
    }))
}

//! `GET /dashboard/stream`: the live dashboard's data, one small `stats` SSE event per
//! second, whatever the number of clients (aggregates only: no user ids, no room list
//! beyond the ten biggest). Open in development mode; otherwise it needs the API key
//! (`?key=`, since EventSource cannot set headers, or `Authorization: Bearer`).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::admin::{AdminState, check_api_key};

/// One snapshot of the server, as the dashboard draws it.
pub fn snapshot(s: &AdminState) -> Value {
    let es = s.engine.stats();
    let m = &s.metrics;
    let hub = s.hub.stats();
    let (polling, websocket) = s.engine.sessions_by_transport();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let messages_in = load(&es.messages_in[0])
        + load(&es.messages_in[1])
        + load(&m.ws.in_events)
        + load(&m.ws.in_actions)
        + load(&m.published);
    let messages_out = load(&es.frames_out) + load(&m.ws.out) + load(&m.sse.out);
    let t = s.holds.stats();
    let b = &t.locks_by_status;
    let mut rooms = s.hub.rooms();
    rooms.retain(|(r, _)| {
        !r.starts_with("nsp:") && !r.starts_with("user:") && !r.starts_with("sid:")
    });
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rooms.truncate(10);
    json!({
        "at": crate::tickets::now_ms(),
        "connections": {
            "socketio": polling + websocket,
            "socketioPolling": polling,
            "ws": s.transports.ws_connections(),
            "sse": s.transports.sse_connections(),
            "pusher": s.pusher.as_ref().map_or(0, |p| p.connections()),
        },
        "rooms": hub.rooms,
        "members": hub.members,
        "messages": {"in": messages_in, "out": messages_out},
        "dropped": load(&es.dropped) + load(&m.ws.dropped) + load(&m.sse.dropped),
        "rateLimited": load(&s.sio_rate_limited) + load(&m.ws.rate_limited),
        "holds": {
            "active": b.active,
            "confirmed": b.confirmed,
            "expired": b.expired,
            "released": b.released,
            "completed": b.completed,
        },
        "broker": s.integrations.amqp.as_ref().map(|a| a.readiness().1),
        "topRooms": rooms.iter().map(|(room, members)| json!({"room": room, "members": members})).collect::<Vec<_>>(),
    })
}

pub async fn stream(State(s): State<AdminState>, headers: HeaderMap, uri: Uri) -> Response {
    if !s.dev_mode {
        let mut h = headers.clone();
        if let Some(key) = engineio::query_param(uri.query().unwrap_or(""), "key")
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}"))
        {
            h.insert(header::AUTHORIZATION, v);
        }
        if let Err(e) = check_api_key(&s.api_keys, &h) {
            return e.into_response();
        }
    }
    let stop = s.transports.stop.clone();
    let period = Duration::from_secs(1);
    let tick = tokio::time::interval(period);
    let stream = futures_util::stream::unfold(
        (s, tick, stop, true),
        |(s, mut tick, stop, first)| async move {
            if first {
                return Some((
                    Ok::<_, Infallible>(Bytes::from_static(b"retry: 2000\n\n")),
                    (s, tick, stop, false),
                ));
            }
            tokio::select! {
                _ = stop.cancelled() => None,
                _ = tick.tick() => {
                    let chunk = format!("event: stats\ndata: {}\n\n", snapshot(&s));
                    Some((Ok(Bytes::from(chunk)), (s, tick, stop, false)))
                }
            }
        },
    );
    crate::transport::event_stream(Body::from_stream(stream))
}

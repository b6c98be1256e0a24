//! `GET /metrics` in the Prometheus text format, and the counters of the plain transports.
//!
//! Counters live where the work happens (atomics in the engine, the transports, the hold
//! service, the broker consumer); this module only reads them at scrape time and writes
//! the exposition. No per-socket or per-user labels: every label has a fixed, small set
//! of values.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use engineio::CloseReason;
use primitives::Histogram;

use crate::admin::AdminState;

/// How a `/ws` or `/events` connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    Client,
    Heartbeat,
    SlowClient,
    TooBig,
    Shutdown,
    Unauthorized,
    Error,
}

impl Close {
    pub const ALL: [Close; 7] = [
        Close::Client,
        Close::Heartbeat,
        Close::SlowClient,
        Close::TooBig,
        Close::Shutdown,
        Close::Unauthorized,
        Close::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Close::Client => "client close",
            Close::Heartbeat => "ping timeout",
            Close::SlowClient => "slow client",
            Close::TooBig => "message too big",
            Close::Shutdown => "server shutting down",
            Close::Unauthorized => "unauthorized",
            Close::Error => "transport error",
        }
    }
}

/// Counters of one plain transport (`/ws` or `/events`).
#[derive(Debug, Default)]
pub struct PlainCounters {
    pub opened: AtomicU64,
    pub closed: [AtomicU64; Close::ALL.len()],
    /// Frames from clients: application events, room actions, unusable frames.
    pub in_events: AtomicU64,
    pub in_actions: AtomicU64,
    pub in_invalid: AtomicU64,
    /// Messages written to clients.
    pub out: AtomicU64,
    /// Volatile messages dropped for a full queue.
    pub dropped: AtomicU64,
    pub rate_limited: AtomicU64,
    /// From queueing a message to writing it to the socket.
    pub delivery: Histogram,
}

impl PlainCounters {
    pub fn closed(&self, how: Close) {
        if let Some(i) = Close::ALL.iter().position(|c| *c == how) {
            self.closed[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The server's own counters (the engine and the hold service keep theirs).
#[derive(Debug, Default)]
pub struct Metrics {
    pub ws: PlainCounters,
    pub sse: PlainCounters,
    /// Messages accepted by the HTTP publish API.
    pub published: AtomicU64,
    /// WebSocket upgrades and event streams refused for their `Origin`, per transport.
    pub origin_refused: crate::transport::access::Refusals,
}

/// Writes one metric family.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let (counts, sum) = h.snapshot();
        for (i, c) in counts.iter().enumerate() {
            let le = Histogram::BOUNDS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, c);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(
            &format!("{name}_count"),
            labels,
            counts.last().copied().unwrap_or(0),
        );
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The whole exposition.
pub fn render(s: &AdminState) -> String {
    let mut out = String::with_capacity(8192);
    let mut f = Family { out: &mut out };
    let m = &s.metrics;
    let es = s.engine.stats();
    let (polling, websocket) = s.engine.sessions_by_transport();

    f.head(
        "switchboard_connections",
        "gauge",
        "Open client connections by transport.",
    );
    f.sample(
        "switchboard_connections",
        &[("transport", "socketio-polling")],
        polling,
    );
    f.sample(
        "switchboard_connections",
        &[("transport", "socketio-websocket")],
        websocket,
    );
    f.sample(
        "switchboard_connections",
        &[("transport", "ws")],
        s.transports.ws_connections(),
    );
    f.sample(
        "switchboard_connections",
        &[("transport", "sse")],
        s.transports.sse_connections(),
    );
    let pusher = s.pusher.as_ref().map(|p| p.stats());
    if let Some(p) = &pusher {
        f.sample(
            "switchboard_connections",
            &[("transport", "pusher")],
            p.connections,
        );
    }

    f.head(
        "switchboard_connections_opened_total",
        "counter",
        "Client connections opened, by transport.",
    );
    f.sample(
        "switchboard_connections_opened_total",
        &[("transport", "socketio-polling")],
        load(&es.opened[0]),
    );
    f.sample(
        "switchboard_connections_opened_total",
        &[("transport", "socketio-websocket")],
        load(&es.opened[1]),
    );
    f.sample(
        "switchboard_connections_opened_total",
        &[("transport", "ws")],
        load(&m.ws.opened),
    );
    f.sample(
        "switchboard_connections_opened_total",
        &[("transport", "sse")],
        load(&m.sse.opened),
    );
    if let Some(p) = &pusher {
        f.sample(
            "switchboard_connections_opened_total",
            &[("transport", "pusher")],
            p.opened,
        );
    }

    f.head(
        "switchboard_connections_closed_total",
        "counter",
        "Client connections closed, by transport and reason.",
    );
    for (i, r) in CloseReason::ALL.iter().enumerate() {
        f.sample(
            "switchboard_connections_closed_total",
            &[("transport", "socketio"), ("reason", r.as_str())],
            load(&es.closed[i]),
        );
    }
    for (name, c) in [("ws", &m.ws), ("sse", &m.sse)] {
        for (i, r) in Close::ALL.iter().enumerate() {
            f.sample(
                "switchboard_connections_closed_total",
                &[("transport", name), ("reason", r.as_str())],
                load(&c.closed[i]),
            );
        }
    }

    f.head(
        "switchboard_upgrades_total",
        "counter",
        "Socket.IO sessions upgraded from polling to WebSocket.",
    );
    f.sample("switchboard_upgrades_total", &[], load(&es.upgrades));

    f.head(
        "switchboard_messages_total",
        "counter",
        "Messages by direction, transport and type.",
    );
    let msg = "switchboard_messages_total";
    f.sample(
        msg,
        &[
            ("direction", "in"),
            ("transport", "socketio"),
            ("type", "text"),
        ],
        load(&es.messages_in[0]),
    );
    f.sample(
        msg,
        &[
            ("direction", "in"),
            ("transport", "socketio"),
            ("type", "binary"),
        ],
        load(&es.messages_in[1]),
    );
    f.sample(
        msg,
        &[("direction", "in"), ("transport", "ws"), ("type", "event")],
        load(&m.ws.in_events),
    );
    f.sample(
        msg,
        &[("direction", "in"), ("transport", "ws"), ("type", "action")],
        load(&m.ws.in_actions),
    );
    f.sample(
        msg,
        &[
            ("direction", "in"),
            ("transport", "ws"),
            ("type", "invalid"),
        ],
        load(&m.ws.in_invalid),
    );
    f.sample(
        msg,
        &[
            ("direction", "in"),
            ("transport", "http"),
            ("type", "publish"),
        ],
        load(&m.published),
    );
    f.sample(
        msg,
        &[
            ("direction", "out"),
            ("transport", "socketio"),
            ("type", "frame"),
        ],
        load(&es.frames_out),
    );
    f.sample(
        msg,
        &[("direction", "out"), ("transport", "ws"), ("type", "frame")],
        load(&m.ws.out),
    );
    f.sample(
        msg,
        &[
            ("direction", "out"),
            ("transport", "sse"),
            ("type", "event"),
        ],
        load(&m.sse.out),
    );
    if let Some(amqp) = &s.integrations.amqp {
        f.sample(
            msg,
            &[
                ("direction", "in"),
                ("transport", "amqp"),
                ("type", "message"),
            ],
            load(&amqp.counters.consumed),
        );
    }

    f.head(
        "switchboard_dropped_messages_total",
        "counter",
        "Volatile messages dropped because a slow client's queue was full.",
    );
    f.sample(
        "switchboard_dropped_messages_total",
        &[("transport", "socketio")],
        load(&es.dropped),
    );
    f.sample(
        "switchboard_dropped_messages_total",
        &[("transport", "ws")],
        load(&m.ws.dropped),
    );
    f.sample(
        "switchboard_dropped_messages_total",
        &[("transport", "sse")],
        load(&m.sse.dropped),
    );

    f.head(
        "switchboard_rate_limited_total",
        "counter",
        "Client events refused by the per-connection rate limit.",
    );
    f.sample(
        "switchboard_rate_limited_total",
        &[("transport", "socketio")],
        load(&s.sio_rate_limited),
    );
    f.sample(
        "switchboard_rate_limited_total",
        &[("transport", "ws")],
        load(&m.ws.rate_limited),
    );

    {
        use crate::transport::access::Via;
        f.head(
            "switchboard_room_refused_total",
            "counter",
            "Room joins refused (bad name, reserved, private or outside the token's rooms claim).",
        );
        for via in Via::ALL {
            f.sample(
                "switchboard_room_refused_total",
                &[("transport", via.as_str())],
                s.transports.realtime.rooms.refused.get(via),
            );
        }
        f.head(
            "switchboard_origin_refused_total",
            "counter",
            "WebSocket upgrades and event streams refused for their Origin (allowed_origins).",
        );
        for via in Via::ALL {
            f.sample(
                "switchboard_origin_refused_total",
                &[("transport", via.as_str())],
                m.origin_refused.get(via),
            );
        }
    }

    f.head(
        "switchboard_connections_refused_total",
        "counter",
        "New connections refused by an admission limit (HTTP 503; a Socket.IO connect_error for max_connections_per_user).",
    );
    for (i, reason) in crate::limits::Refusal::ALL.iter().enumerate() {
        f.sample(
            "switchboard_connections_refused_total",
            &[("limit", reason.as_str())],
            load(&s.limits.stats().refused[i]),
        );
    }
    f.head(
        "switchboard_admitted_connections",
        "gauge",
        "Open connections counted by the admission limits.",
    );
    f.sample("switchboard_admitted_connections", &[], s.limits.open());
    f.head(
        "switchboard_limit_tracked_addresses",
        "gauge",
        "Client addresses tracked by the per-address limits (open or refilling).",
    );
    f.sample(
        "switchboard_limit_tracked_addresses",
        &[],
        s.limits.tracked_addresses(),
    );
    f.head(
        "switchboard_limit_tracked_users",
        "gauge",
        "Users with at least one connection counted by the per-user limits.",
    );
    f.sample(
        "switchboard_limit_tracked_users",
        &[],
        s.limits.tracked_users(),
    );
    f.head(
        "switchboard_user_rate_limited_total",
        "counter",
        "Client events refused by the per-user rate limit (shared by a user's connections).",
    );
    for (i, via) in crate::limits::UserEvents::ALL.iter().enumerate() {
        f.sample(
            "switchboard_user_rate_limited_total",
            &[("transport", via.as_str())],
            load(&s.limits.stats().user_rate_limited[i]),
        );
    }

    f.head(
        "switchboard_delivery_seconds",
        "histogram",
        "From queueing a message for a client to handing it to the client's socket.",
    );
    f.histogram(
        "switchboard_delivery_seconds",
        &[("transport", "socketio")],
        &es.delivery,
    );
    f.histogram(
        "switchboard_delivery_seconds",
        &[("transport", "ws")],
        &m.ws.delivery,
    );
    f.histogram(
        "switchboard_delivery_seconds",
        &[("transport", "sse")],
        &m.sse.delivery,
    );

    f.head(
        "switchboard_hold_operation_seconds",
        "histogram",
        "Hold operations (lock, unlock, confirm, orders, expiry), including the durable write.",
    );
    f.histogram("switchboard_hold_operation_seconds", &[], &s.holds.latency);

    let t = s.holds.stats();
    f.head(
        "switchboard_holds",
        "gauge",
        "Holds known to the service, by status.",
    );
    let b = &t.locks_by_status;
    for (status, n) in [
        ("active", b.active),
        ("confirmed", b.confirmed),
        ("expired", b.expired),
        ("released", b.released),
        ("completed", b.completed),
    ] {
        f.sample("switchboard_holds", &[("status", status)], n);
    }

    let hub = s.hub.stats();
    f.head(
        "switchboard_rooms",
        "gauge",
        "Rooms in the hub (with members or history).",
    );
    f.sample("switchboard_rooms", &[], hub.rooms);
    f.head(
        "switchboard_hub_members",
        "gauge",
        "Connections registered in the hub (one per Socket.IO socket, /ws or /events client).",
    );
    f.sample("switchboard_hub_members", &[], hub.members);
    f.head(
        "switchboard_history_messages",
        "gauge",
        "Messages kept for replay across all rooms.",
    );
    f.sample("switchboard_history_messages", &[], hub.history_entries);

    // The soak (bench/soak) watches this for tasks that never end.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        f.head(
            "switchboard_runtime_tasks",
            "gauge",
            "Tasks alive on the server's tokio runtime (connections, timers, flushers, workers).",
        );
        f.sample(
            "switchboard_runtime_tasks",
            &[],
            rt.metrics().num_alive_tasks(),
        );
    }

    if let Some(amqp) = &s.integrations.amqp {
        let c = &amqp.counters;
        f.head(
            "switchboard_broker_messages_total",
            "counter",
            "RabbitMQ deliveries by outcome.",
        );
        let bm = "switchboard_broker_messages_total";
        f.sample(bm, &[("outcome", "consumed")], load(&c.consumed));
        f.sample(bm, &[("outcome", "acked")], load(&c.acked));
        f.sample(bm, &[("outcome", "redelivered")], load(&c.redelivered));
        f.sample(bm, &[("outcome", "duplicate")], load(&c.duplicates));
        f.sample(bm, &[("outcome", "replied")], load(&c.replies));
        f.sample(bm, &[("outcome", "error-reply")], load(&c.error_replies));
        f.sample(bm, &[("outcome", "requeued")], load(&c.requeued));
        for r in crate::ingest::Reason::ALL {
            let outcome = format!("dead-lettered:{}", r.as_str());
            f.sample(bm, &[("outcome", &outcome)], load(c.dead_lettered(r)));
        }
        f.head(
            "switchboard_broker_reconnects_total",
            "counter",
            "Broker connections made after the first.",
        );
        f.sample(
            "switchboard_broker_reconnects_total",
            &[],
            load(&c.reconnects),
        );
        f.head(
            "switchboard_broker_up",
            "gauge",
            "1 while the RabbitMQ consumer is connected.",
        );
        let up = amqp.state() == crate::ingest::BrokerState::Connected;
        f.sample("switchboard_broker_up", &[], u8::from(up));
    }
    if let Some(p) = &pusher {
        pusher_families(&mut f, p);
    }
    if let Some(cluster) = &s.cluster {
        cluster_families(&mut f, cluster);
    }
    chat_families(&mut f, s.chat.metrics());
    out
}

/// The chat: messages stored, refusals by reason, typing relayed or throttled, and how
/// long storing a message takes.
fn chat_families(f: &mut Family<'_>, c: &crate::chat::metrics::ChatMetrics) {
    f.head(
        "switchboard_chat_messages_stored_total",
        "counter",
        "Chat messages stored (a repeated clientMsgId stores nothing and is not counted).",
    );
    f.sample(
        "switchboard_chat_messages_stored_total",
        &[],
        load(&c.stored),
    );
    f.head(
        "switchboard_chat_refused_total",
        "counter",
        "Chat requests refused, on every transport and the HTTP API, by reason.",
    );
    for (reason, n) in c.refusals() {
        f.sample("switchboard_chat_refused_total", &[("reason", reason)], n);
    }
    f.head(
        "switchboard_chat_typing_total",
        "counter",
        "Typing events: relayed to the room, or throttled (at most one per user and room every 2 s).",
    );
    f.sample(
        "switchboard_chat_typing_total",
        &[("outcome", "relayed")],
        load(&c.typing_relayed),
    );
    f.sample(
        "switchboard_chat_typing_total",
        &[("outcome", "throttled")],
        load(&c.typing_throttled),
    );
    f.head(
        "switchboard_chat_fleet_fallback_total",
        "counter",
        "Cluster mode: typing throttles, typing stops and away/online decisions a node made alone because Redis failed or did not answer within 250 ms.",
    );
    f.sample(
        "switchboard_chat_fleet_fallback_total",
        &[],
        load(&c.fleet_fallback),
    );
    f.head(
        "switchboard_chat_store_seconds",
        "histogram",
        "Storing a chat message: the checked insert, durable before the ack.",
    );
    f.histogram("switchboard_chat_store_seconds", &[], &c.store_latency);
}

/// The Pusher endpoints: subscriptions, client events, errors by Pusher code, the
/// refusals of the socket and the HTTP API.
fn pusher_families(f: &mut Family<'_>, p: &crate::pusher::PusherStats) {
    f.head(
        "switchboard_pusher_subscriptions",
        "gauge",
        "Open Pusher channel subscriptions.",
    );
    f.sample("switchboard_pusher_subscriptions", &[], p.subscriptions);
    f.head(
        "switchboard_pusher_client_events_total",
        "counter",
        "Pusher client events (client-*) relayed.",
    );
    f.sample(
        "switchboard_pusher_client_events_total",
        &[],
        p.client_events,
    );
    f.head(
        "switchboard_pusher_errors_total",
        "counter",
        "Pusher connections closed with an error code, or errors sent that close nothing (4301), by code (other: any other).",
    );
    for (code, n) in &p.errors {
        let code = if *code == 0 {
            "other".to_owned()
        } else {
            code.to_string()
        };
        f.sample("switchboard_pusher_errors_total", &[("code", &code)], n);
    }
    f.head(
        "switchboard_pusher_refused_total",
        "counter",
        "Pusher frames and requests refused, by cause.",
    );
    for (cause, n) in [
        ("unknown_app", p.refused),
        ("invalid_frame", p.invalid),
        ("bad_signature", p.auth_failed),
        ("api", p.api_refused),
    ] {
        f.sample("switchboard_pusher_refused_total", &[("cause", cause)], n);
    }
    f.head(
        "switchboard_pusher_dropped_total",
        "counter",
        "Pusher messages dropped for slow clients, and webhook events dropped (queue full).",
    );
    f.sample(
        "switchboard_pusher_dropped_total",
        &[("what", "message")],
        p.dropped,
    );
    f.sample(
        "switchboard_pusher_dropped_total",
        &[("what", "webhook")],
        p.webhooks_dropped,
    );
    f.head(
        "switchboard_pusher_api_requests_total",
        "counter",
        "Pusher HTTP API requests.",
    );
    f.sample("switchboard_pusher_api_requests_total", &[], p.api_requests);
}

/// The cluster bus: Redis up, messages in and out, what could not be relayed, what was
/// dropped and why, relay latency.
fn cluster_families(f: &mut Family<'_>, cluster: &crate::cluster::Cluster) {
    let b = cluster.metrics();
    f.head(
        "switchboard_cluster_redis_up",
        "gauge",
        "1 while both Redis connections work.",
    );
    f.sample(
        "switchboard_cluster_redis_up",
        &[],
        u8::from(cluster.link().is_up()),
    );
    f.head(
        "switchboard_cluster_nodes",
        "gauge",
        "Live nodes of the cluster, this one included.",
    );
    f.sample("switchboard_cluster_nodes", &[], cluster.nodes().len());
    f.head(
        "switchboard_cluster_messages_total",
        "counter",
        "Bus messages: sent by this node, received from others.",
    );
    f.sample(
        "switchboard_cluster_messages_total",
        &[("direction", "out")],
        load(&b.sent),
    );
    f.sample(
        "switchboard_cluster_messages_total",
        &[("direction", "in")],
        load(&b.received),
    );
    f.head(
        "switchboard_cluster_not_relayed_total",
        "counter",
        "Publishes delivered to this node only: Redis down, queue full or echo lost.",
    );
    f.sample(
        "switchboard_cluster_not_relayed_total",
        &[],
        load(&b.not_relayed),
    );
    f.head(
        "switchboard_cluster_superseded_total",
        "counter",
        "Announcements not delivered: a newer or equal version of the same value already was.",
    );
    f.sample(
        "switchboard_cluster_superseded_total",
        &[],
        load(&b.superseded),
    );
    f.head(
        "switchboard_cluster_dropped_total",
        "counter",
        "Bus messages dropped, by reason.",
    );
    for (reason, c) in [
        ("malformed", &b.dropped_malformed),
        ("shape", &b.dropped_shape),
        ("oversized", &b.dropped_oversized),
        ("request", &b.dropped_request),
    ] {
        f.sample(
            "switchboard_cluster_dropped_total",
            &[("reason", reason)],
            load(c),
        );
    }
    f.head(
        "switchboard_cluster_relay_seconds",
        "histogram",
        "From a publish to its delivery on this node through Redis.",
    );
    f.histogram("switchboard_cluster_relay_seconds", &[], &b.relay_latency);
}

pub async fn metrics(State(s): State<AdminState>) -> Response {
    let mut res = render(&s).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

//! Typed configuration, composed from a TOML file < `SWITCHBOARD_*` environment < flags,
//! and validated once at start-up. The sources are injected ([`Sources`]), so tests
//! never touch the process environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every setting, with its default. Keys are the TOML keys; the environment variable of
/// a key is `SWITCHBOARD_` + the key in upper case (lists comma-separated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `text` or `json` log lines (levels from `RUST_LOG`).
    pub log_format: LogFormat,
    /// How long shutdown waits for connections to drain.
    pub shutdown_grace_ms: u64,
    /// Connections the kernel queues before the server accepts them (capped by the
    /// system's `somaxconn`); a reconnect storm beyond it costs clients a 1 s SYN retry.
    pub listen_backlog: u32,

    /// Engine.IO heartbeat: ping every interval, close after the timeout without a pong.
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// Largest message or polling body accepted, in bytes.
    pub max_payload: usize,
    pub upgrade_timeout_ms: u64,
    /// Packets queued per client before the slow-client policy applies (volatile
    /// messages are dropped, anything else disconnects the client).
    pub max_buffered_packets: usize,
    /// WebSocket read buffer per connection, in bytes.
    pub ws_read_buffer: usize,
    /// Flusher tasks writing Socket.IO WebSocket frames straight to the sockets, batching
    /// what queued up meanwhile; `0` lets each connection's task write its own.
    pub ws_flushers: usize,
    /// permessage-deflate (RFC 7692) on Socket.IO's WebSocket and `/ws`, for clients that
    /// offer it; `false` declines every offer.
    pub ws_compression: bool,
    /// Messages of at least this many bytes go compressed (smaller ones as they are).
    pub ws_compression_threshold: usize,
    /// Origins allowed to use long-polling from a browser: `["*"]` for any (without
    /// credentials), `[]` for none, or a list of exact origins.
    pub cors_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials` to listed origins.
    pub cors_credentials: bool,

    /// Time a client has to connect to a namespace after the handshake.
    pub connect_timeout_ms: u64,
    /// Binary attachments accepted in one Socket.IO packet.
    pub max_attachments: usize,
    /// Events queued per socket before the server stops reading from it.
    pub max_inbox: usize,
    /// Connection state recovery window of `/realtime`, in seconds; 0 turns it off.
    pub recovery_window_secs: u64,

    /// Messages kept per room for replay, and for how long.
    pub history_len: usize,
    pub history_age_secs: u64,
    /// Rooms one client may be in at once.
    pub max_rooms_per_client: usize,

    /// Plain WebSocket (`/ws`) ping interval, and SSE (`/events`) comment heartbeat.
    pub heartbeat_secs: u64,
    /// A `/ws` client that sends nothing (not even a pong) this long after a ping is
    /// closed (code 4008).
    pub heartbeat_timeout_secs: u64,
    /// Messages queued per `/ws` or `/events` client before the slow-client policy
    /// applies (volatile messages dropped, anything else disconnects).
    pub client_queue: usize,
    /// Rooms with more members than this do not announce `member_joined`/`member_left`
    /// (presence costs a scan of the room; big rooms are audiences, not groups).
    pub presence_max_members: usize,
    /// Events per second one connection may send (Socket.IO events, `/ws` frames), with
    /// a burst; over it an event is refused with an `error`. 0 turns the limit off.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,

    /// Catalog file (`{"events": [...]}`); empty serves the demo catalog.
    pub catalog: String,
    /// Where holds, confirmations and sales are stored (SQLite); `memory` keeps nothing.
    pub data_dir: String,
    /// Hold rules.
    pub hold_ttl_secs: u64,
    pub max_hold_quantity: u32,
    pub order_timeout_secs: u64,
    /// Availability updates of one category within this window are merged into one.
    pub coalesce_ms: u64,
    /// HS256 secret for client JWTs (`SWITCHBOARD_JWT_SECRET`).
    pub jwt_secret: String,
    /// RS256 public key (PEM file) for client JWTs; used instead of the secret when set.
    pub jwt_public_key_file: String,
    /// Skip token checks and take the user from the `userId` query parameter. When no
    /// key is configured and the server listens on loopback, this is on by default;
    /// beyond loopback without a key the server refuses to start unless this is set.
    pub dev_mode: bool,
    /// Bearer key of the admin and publish HTTP APIs (`SWITCHBOARD_API_KEY`); empty
    /// disables them (unless `api_keys` lists some).
    pub api_key: String,
    /// More accepted API keys (`SWITCHBOARD_API_KEYS`, comma-separated), for rotation:
    /// add the new key, move the clients, remove the old one.
    pub api_keys: Vec<String>,
    /// Accepted `iss` of client JWTs; empty: not checked.
    pub jwt_issuer: String,
    /// Accepted `aud` values of client JWTs (one must match); empty: not checked.
    pub jwt_audience: Vec<String>,
    /// JWKS URL of the identity provider (RS256/ES256 keys chosen by `kid`); used
    /// instead of `jwt_secret` / `jwt_public_key_file`.
    pub jwt_jwks_url: String,
    /// How long a fetched key set is trusted before it must be fetched again.
    pub jwt_jwks_cache_secs: u64,
    /// At most one JWKS fetch per this many seconds (unknown `kid`s, failures).
    pub jwt_jwks_min_refresh_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Room name prefixes that only a token whose `rooms` claim matches may join.
    pub private_room_prefixes: Vec<String>,
    /// Origins allowed to open WebSockets (Socket.IO, `/ws`) and SSE streams from a
    /// browser: `[]` follows `cors_origins`, `["*"]` any, or exact origins. Same-origin
    /// pages and clients that send no `Origin` are always allowed.
    pub allowed_origins: Vec<String>,
    /// PEM certificate chain of the listener (HTTPS, WSS); reloaded on SIGHUP.
    pub tls_cert_file: String,
    /// PEM private key of the listener.
    pub tls_key_file: String,

    /// RabbitMQ URL (`amqp://user:pass@host:5672/vhost`, or `amqps://` for TLS); empty
    /// turns the consumer off.
    pub amqp_url: String,
    /// The queue NestJS producers send to (declared durable, without arguments, as they
    /// assert it).
    pub amqp_queue: String,
    /// Where unprocessable messages go, with the reason in headers; empty means
    /// `<amqp_queue>.dlq` (its exchange is `<dead letter queue>.x`).
    pub amqp_dead_letter_queue: String,
    /// Unacked messages the broker may push at once.
    pub amqp_prefetch: u16,
    /// Reconnection backoff cap (it starts at 100 ms and doubles).
    pub amqp_reconnect_max_ms: u64,

    /// Redis URL of the cluster (`redis://[:password@]host:6379[/db]`, or `rediss://`);
    /// empty runs one node, with nothing shared.
    pub redis_url: String,
    /// This node's name in the cluster; empty picks a random one per process.
    pub node_id: String,
    /// A node that has not refreshed its heartbeat for this long is dead: its members
    /// leave presence and the counts.
    pub node_timeout_secs: u64,
    /// Who decides ticket holds: `auto` (Redis when `redis_url` is set, otherwise SQLite in
    /// `data_dir`, or memory when `data_dir` is `memory`), `sqlite`, `redis` or `memory`.
    pub hold_store: HoldStoreKind,
    /// Prefix of every hold key in Redis (several fleets, or tests, can share one Redis).
    pub hold_key_prefix: String,
    /// Channel prefix on Redis: the `key` option of Node's `@socket.io/redis-adapter`
    /// (`socket.io`), so Node and Switchboard nodes of one fleet hear each other.
    pub redis_prefix: String,

    /// Catalog source: `embedded` (the catalog file or demo) or `events-service` (a NestJS
    /// TCP events-service verifies every hold with `get-ticket-categories`).
    pub catalog_source: CatalogSourceKind,
    /// The events-service, `host[:port]` (default port 8879).
    pub events_service: String,
    /// How long a `get-ticket-categories` request may take.
    pub events_service_timeout_ms: u64,
    /// How long an answer is reused.
    pub events_service_cache_ms: u64,
    /// Largest frame accepted from the events-service, in UTF-16 code units.
    pub events_service_max_frame: u64,

    /// Open connections on the whole server (Engine.IO sessions, `/ws`, `/events`); over
    /// it a new one gets HTTP 503 with `Retry-After`. 0 turns the limit off.
    pub max_connections: usize,
    /// Open connections from one client address (see `trusted_proxies`); 0 is no limit.
    pub max_connections_per_ip: u32,
    /// New connections per second from one client address (a token bucket with
    /// `handshake_burst_per_ip`), against reconnect storms; 0 turns it off.
    pub handshake_rate_per_ip: u32,
    pub handshake_burst_per_ip: u32,
    /// Proxies (CIDRs, e.g. `["10.0.0.0/8"]`) whose `X-Forwarded-For` names the client;
    /// from any other peer the header is ignored and the peer address counts.
    pub trusted_proxies: Vec<String>,
    /// `Retry-After` of a refusal because the server or the address is full, in seconds.
    pub limits_retry_after_secs: u32,
    /// Open connections of one user (every transport together, on this node); over it a
    /// `/ws` or `/events` request gets HTTP 503 with `Retry-After` and a Socket.IO
    /// CONNECT a `connect_error`. 0 is no limit.
    pub max_connections_per_user: u32,
    /// Events per second one user may send across all its connections (Socket.IO
    /// events, `/ws` frames, Pusher frames of a signed-in user), with a burst, on top of
    /// `rate_limit_per_sec` per connection; 0 turns it off.
    pub rate_limit_per_user_per_sec: u32,
    pub rate_limit_per_user_burst: u32,
    /// Tests only: `abort-after-order-stored` or `order-store-fails-once` (see
    /// `failpoint.rs`); empty in any real deployment.
    pub failpoint: String,
    /// The Pusher Channels protocol: `[pusher]` with `[[pusher.apps]]` (see README
    /// "Pusher"); no app, nothing served.
    pub pusher: crate::pusher::PusherConfig,

    /// PostgreSQL URL of the chat store shared by a fleet (`postgresql://user@host/db`);
    /// empty keeps the chat in SQLite in `data_dir`.
    pub database_url: String,
    /// Chat (`/chat`, README "Chat"): largest message content in bytes (at most
    /// `max_payload` in effect).
    pub max_message_bytes: usize,
    /// A chat user without activity this long is `away`.
    pub presence_idle_secs: u64,
    /// Chat messages older than this many days are deleted; 0 keeps them.
    pub chat_history_days: u64,
    /// Only the newest this many messages of a chat room are kept; 0 keeps all.
    pub chat_history_max_per_room: u64,
}

/// Shortest HS256 secret accepted: 256 bits, the hash's output size (RFC 7518 §3.2).
pub const MIN_HS256_SECRET: usize = 32;

/// Why a server runs in development mode (client tokens not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevModeReason {
    /// `dev_mode = true` was set: unverified identities on any listener, on purpose.
    Explicit,
    /// No JWT key and a loopback listener: only this machine can connect.
    LoopbackWithoutKey,
}

impl DevModeReason {
    /// The name the pages and `/api/session-info` use.
    pub fn as_str(self) -> &'static str {
        match self {
            DevModeReason::Explicit => "explicit",
            DevModeReason::LoopbackWithoutKey => "loopback-without-key",
        }
    }

    /// One sentence for the start-up log.
    pub fn explain(self) -> &'static str {
        match self {
            DevModeReason::Explicit => {
                "dev_mode = true is set: tokens are NOT verified on any address this server listens on"
            }
            DevModeReason::LoopbackWithoutKey => {
                "no JWT key is configured and the server listens on loopback only"
            }
        }
    }
}

/// A listener only this machine can reach (`127.0.0.0/8`, `::1`, or `::ffff:127.x`).
fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Who decides ticket holds (`hold_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldStoreKind {
    /// Redis when `redis_url` is set, otherwise what `data_dir` says.
    Auto,
    /// This node alone: SQLite in `data_dir`.
    Sqlite,
    /// Redis, shared by every node (needs `redis_url`).
    Redis,
    /// This node alone, nothing kept across restarts.
    Memory,
}

/// Where the hold rules' catalog comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatalogSourceKind {
    Embedded,
    EventsService,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8880)),
            log_format: LogFormat::Text,
            shutdown_grace_ms: 10_000,
            listen_backlog: 4096,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 1_000_000,
            upgrade_timeout_ms: 10_000,
            max_buffered_packets: 1024,
            ws_read_buffer: 256,
            ws_flushers: 1,
            ws_compression: true,
            ws_compression_threshold: 1024,
            cors_origins: vec!["*".to_owned()],
            cors_credentials: false,
            connect_timeout_ms: 45_000,
            max_attachments: 10,
            max_inbox: 64,
            recovery_window_secs: 120,
            history_len: 1000,
            history_age_secs: 120,
            max_rooms_per_client: 256,
            heartbeat_secs: 30,
            heartbeat_timeout_secs: 20,
            client_queue: 256,
            presence_max_members: 100,
            rate_limit_per_sec: 50,
            rate_limit_burst: 100,
            catalog: String::new(),
            data_dir: "./data".to_owned(),
            hold_ttl_secs: 300,
            max_hold_quantity: 10,
            order_timeout_secs: 900,
            coalesce_ms: 100,
            jwt_secret: String::new(),
            jwt_public_key_file: String::new(),
            dev_mode: false,
            api_key: String::new(),
            api_keys: Vec::new(),
            jwt_issuer: String::new(),
            jwt_audience: Vec::new(),
            jwt_jwks_url: String::new(),
            jwt_jwks_cache_secs: 3600,
            jwt_jwks_min_refresh_secs: 10,
            jwt_leeway_secs: 0,
            private_room_prefixes: Vec::new(),
            allowed_origins: Vec::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            amqp_url: String::new(),
            amqp_queue: "realtime_queue".to_owned(),
            amqp_dead_letter_queue: String::new(),
            amqp_prefetch: 64,
            amqp_reconnect_max_ms: 5000,
            redis_url: String::new(),
            node_id: String::new(),
            node_timeout_secs: 15,
            hold_store: HoldStoreKind::Auto,
            hold_key_prefix: "switchboard:".to_owned(),
            redis_prefix: "socket.io".to_owned(),
            catalog_source: CatalogSourceKind::Embedded,
            events_service: "127.0.0.1:8879".to_owned(),
            events_service_timeout_ms: 2000,
            events_service_cache_ms: 1000,
            events_service_max_frame: 1 << 20,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            handshake_rate_per_ip: 0,
            handshake_burst_per_ip: 100,
            trusted_proxies: Vec::new(),
            limits_retry_after_secs: 5,
            max_connections_per_user: 50,
            rate_limit_per_user_per_sec: 100,
            rate_limit_per_user_burst: 200,
            failpoint: String::new(),
            pusher: crate::pusher::PusherConfig::default(),
            database_url: String::new(),
            max_message_bytes: 4096,
            presence_idle_secs: 300,
            chat_history_days: 0,
            chat_history_max_per_room: 0,
        }
    }
}

/// Where settings come from. `env` holds variables by name; `overrides` are flags as
/// `key=value` (they win over everything).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<(String, String)>,
    pub env: HashMap<String, String>,
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The process environment's `SWITCHBOARD_*` variables.
    pub fn process_env() -> HashMap<String, String> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD_"))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{origin}: unknown setting `{key}`")]
    UnknownKey { origin: String, key: String },
    #[error("{origin}: `{key}` = {value:?}: {message}")]
    BadValue {
        origin: String,
        key: String,
        value: String,
        message: String,
    },
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Composes file < environment < overrides, then validates.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let defaults =
            toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
                key: "defaults",
                message: e.to_string(),
            })?;
        let mut table = defaults.clone();
        if let Some((path, text)) = &sources.file {
            let file: toml::Table = toml::from_str(text).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for (k, v) in file {
                if !defaults.contains_key(&k) {
                    return Err(ConfigError::UnknownKey {
                        origin: path.clone(),
                        key: k,
                    });
                }
                table.insert(k, v);
            }
        }
        let mut env: Vec<_> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD_"))
            .collect();
        env.sort();
        for (name, value) in env {
            let key = name["SWITCHBOARD_".len()..].to_ascii_lowercase();
            // Variables of other components (API keys, secrets) are not settings here.
            if let Some(default) = defaults.get(&key) {
                table.insert(key.clone(), parse_like(default, value, name, &key)?);
            }
        }
        add_env_pusher_app(&mut table, &sources.env)?;
        for (key, value) in &sources.overrides {
            let Some(default) = defaults.get(key) else {
                return Err(ConfigError::UnknownKey {
                    origin: "flag".into(),
                    key: key.clone(),
                });
            };
            table.insert(key.clone(), parse_like(default, value, "flag", key)?);
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::File {
                    path: "composed config".into(),
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, key: &'static str, message: &str) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    message: message.to_owned(),
                })
            }
        }
        check(
            self.ping_interval_ms >= 10,
            "ping_interval_ms",
            "must be at least 10",
        )?;
        check(
            self.ping_timeout_ms >= 10,
            "ping_timeout_ms",
            "must be at least 10",
        )?;
        check(
            self.max_payload >= 1024,
            "max_payload",
            "must be at least 1024 bytes",
        )?;
        check(
            self.max_buffered_packets >= 16,
            "max_buffered_packets",
            "must be at least 16",
        )?;
        check(
            self.ws_read_buffer >= 128,
            "ws_read_buffer",
            "must be at least 128 bytes",
        )?;
        check(
            (16..=65_535).contains(&self.listen_backlog),
            "listen_backlog",
            "must be between 16 and 65535",
        )?;
        check(
            self.ws_flushers <= 64,
            "ws_flushers",
            "must be at most 64 (0 turns direct writes off)",
        )?;
        check(
            self.connect_timeout_ms >= 10,
            "connect_timeout_ms",
            "must be at least 10",
        )?;
        check(
            self.max_attachments <= 1000,
            "max_attachments",
            "must be at most 1000",
        )?;
        check(self.max_inbox >= 1, "max_inbox", "must be at least 1")?;
        check(self.history_len >= 1, "history_len", "must be at least 1")?;
        check(
            self.max_rooms_per_client >= 1,
            "max_rooms_per_client",
            "must be at least 1",
        )?;
        let short_name = |s: &str| !s.is_empty() && s.len() <= 200;
        check(
            short_name(&self.amqp_queue),
            "amqp_queue",
            "must be 1 to 200 bytes",
        )?;
        check(
            self.amqp_dead_letter_queue.is_empty() || short_name(&self.amqp_dead_letter_queue),
            "amqp_dead_letter_queue",
            "must be at most 200 bytes",
        )?;
        check(
            self.amqp_dead_letter_queue != self.amqp_queue,
            "amqp_dead_letter_queue",
            "must differ from amqp_queue",
        )?;
        check(
            self.amqp_url.is_empty()
                || self.amqp_url.starts_with("amqp://")
                || self.amqp_url.starts_with("amqps://"),
            "amqp_url",
            "must start with amqp:// or amqps:// (TLS, verified against the web PKI roots)",
        )?;
        check(
            self.amqp_prefetch >= 1,
            "amqp_prefetch",
            "must be at least 1",
        )?;
        check(
            self.amqp_reconnect_max_ms >= 100,
            "amqp_reconnect_max_ms",
            "must be at least 100",
        )?;
        check(
            self.redis_url.is_empty()
                || self.redis_url.starts_with("redis://")
                || self.redis_url.starts_with("rediss://")
                || self.redis_url.starts_with("redis+unix://")
                || self.redis_url.starts_with("unix://"),
            "redis_url",
            "must start with redis://, rediss:// or unix://",
        )?;
        check(
            self.node_id.len() <= 64
                && self
                    .node_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "node_id",
            "must be at most 64 letters, digits, '-', '_' or '.'",
        )?;
        check(
            !self.redis_prefix.is_empty()
                && self.redis_prefix.len() <= 100
                && !self.redis_prefix.contains(['#', '*', '?', '[', ']']),
            "redis_prefix",
            "must be 1 to 100 bytes without '#', '*', '?', '[' or ']'",
        )?;
        check(
            (2..=3600).contains(&self.node_timeout_secs),
            "node_timeout_secs",
            "must be between 2 and 3600",
        )?;
        check(
            self.hold_store != HoldStoreKind::Redis || !self.redis_url.is_empty(),
            "hold_store",
            "redis needs redis_url",
        )?;
        check(
            !self.hold_key_prefix.is_empty()
                && self.hold_key_prefix.len() <= 64
                && self
                    .hold_key_prefix
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"{}*?[]\\".contains(&b)),
            "hold_key_prefix",
            "must be 1 to 64 printable characters without spaces, braces or glob characters",
        )?;
        check(
            self.events_service_addr().is_some(),
            "events_service",
            "expected host or host:port",
        )?;
        check(
            self.events_service_timeout_ms >= 10,
            "events_service_timeout_ms",
            "must be at least 10",
        )?;
        check(
            self.events_service_max_frame >= 1024,
            "events_service_max_frame",
            "must be at least 1024",
        )?;
        check(
            self.heartbeat_secs >= 1,
            "heartbeat_secs",
            "must be at least 1",
        )?;
        check(
            self.heartbeat_timeout_secs >= 1,
            "heartbeat_timeout_secs",
            "must be at least 1",
        )?;
        check(self.client_queue >= 8, "client_queue", "must be at least 8")?;
        check(
            self.handshake_burst_per_ip >= 1,
            "handshake_burst_per_ip",
            "must be at least 1",
        )?;
        check(
            (1..=3600).contains(&self.limits_retry_after_secs),
            "limits_retry_after_secs",
            "must be between 1 and 3600",
        )?;
        check(
            self.rate_limit_per_user_burst >= 1,
            "rate_limit_per_user_burst",
            "must be at least 1",
        )?;
        check(
            self.database_url.is_empty()
                || ((self.database_url.starts_with("postgres://")
                    || self.database_url.starts_with("postgresql://"))
                    && self.database_url.parse::<tokio_postgres::Config>().is_ok()),
            "database_url",
            "must be a postgres:// or postgresql:// URL",
        )?;
        check(
            self.max_message_bytes >= 1,
            "max_message_bytes",
            "must be at least 1",
        )?;
        check(
            (1..=86_400).contains(&self.presence_idle_secs),
            "presence_idle_secs",
            "must be between 1 and 86400",
        )?;
        if let Err(message) = crate::failpoint::Failpoint::parse(&self.failpoint) {
            return Err(ConfigError::Invalid {
                key: "failpoint",
                message,
            });
        }
        if let Some(bad) = self
            .trusted_proxies
            .iter()
            .find_map(|c| c.parse::<crate::limits::Cidr>().err())
        {
            return Err(ConfigError::Invalid {
                key: "trusted_proxies",
                message: bad.to_string(),
            });
        }
        if let Some((key, message)) = self.pusher.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        if !self.has_jwt_key() && !self.dev_mode && !is_loopback(self.listen) {
            return Err(ConfigError::Invalid {
                key: "dev_mode",
                message: format!(
                    "listen = {} reaches beyond loopback and no JWT key is configured, so \
                     any client could claim any user with ?userId=. Set jwt_secret \
                     (SWITCHBOARD_JWT_SECRET, at least 32 bytes) or jwt_public_key_file, \
                     listen on 127.0.0.1, or set dev_mode = true (SWITCHBOARD_DEV_MODE=true) \
                     to run without token checks on purpose",
                    self.listen
                ),
            });
        }
        self.validate_security()?;
        check(
            !(self.cors_credentials && self.cors_origins.iter().any(|o| o == "*")),
            "cors_credentials",
            "cannot be combined with cors_origins = [\"*\"]; list the origins",
        )?;
        Ok(())
    }

    pub fn engine(&self) -> engineio::EngineConfig {
        let cors = if self.cors_origins.iter().any(|o| o == "*") {
            engineio::Cors::AnyOrigin
        } else if self.cors_origins.is_empty() {
            engineio::Cors::Off
        } else {
            engineio::Cors::Origins {
                origins: self.cors_origins.clone(),
                credentials: self.cors_credentials,
            }
        };
        engineio::EngineConfig {
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            ping_timeout: Duration::from_millis(self.ping_timeout_ms),
            max_payload: self.max_payload,
            upgrade_timeout: Duration::from_millis(self.upgrade_timeout_ms),
            max_buffered_packets: self.max_buffered_packets,
            ws_read_buffer: self.ws_read_buffer,
            ws_flushers: self.ws_flushers,
            ws_compression: self.ws_compression(),
            cors,
            ..engineio::EngineConfig::default()
        }
    }

    /// The smallest message compressed on a WebSocket, if compression is on.
    fn ws_compression(&self) -> Option<usize> {
        self.ws_compression.then_some(self.ws_compression_threshold)
    }

    pub fn socketio(&self) -> socketio::SocketIoConfig {
        socketio::SocketIoConfig {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_attachments: self.max_attachments,
            max_inbox: self.max_inbox,
            rate_limit: self.rate_limit(),
        }
    }

    pub fn rate_limit(&self) -> primitives::RateLimit {
        primitives::RateLimit {
            per_sec: self.rate_limit_per_sec as f32,
            burst: self.rate_limit_burst.max(1) as f32,
        }
    }

    pub fn hub(&self) -> hub::HubConfig {
        hub::HubConfig {
            history_len: self.history_len,
            history_age: Duration::from_secs(self.history_age_secs),
            max_rooms_per_member: self.max_rooms_per_client,
            // Offsets continue above any an earlier process handed out (microseconds
            // since the epoch stay below 2^53, so JavaScript clients read them exactly).
            first_offset: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }

    pub fn transports(&self) -> crate::transport::TransportConfig {
        crate::transport::TransportConfig {
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            heartbeat_timeout: Duration::from_secs(self.heartbeat_timeout_secs),
            queue: self.client_queue,
            presence_limit: self.presence_max_members,
            max_message: self.max_payload,
            ws_read_buffer: self.ws_read_buffer,
            ws_compression: self.ws_compression(),
            max_rooms: self.max_rooms_per_client,
            rate_limit: self.rate_limit(),
        }
    }

    /// The chat's settings (typing timings are the catalogue's: 2 s, 5 s).
    pub fn chat(&self) -> crate::chat::ChatConfig {
        crate::chat::ChatConfig {
            // No content can be bigger than the packet that carries it.
            max_message_bytes: self.max_message_bytes.min(self.max_payload),
            timing: crate::chat::live::Timing {
                typing_throttle: Duration::from_secs(2),
                typing_quiet: Duration::from_secs(5),
                idle: Duration::from_secs(self.presence_idle_secs),
            },
            retention: crate::chat::model::Retention {
                days: self.chat_history_days,
                max_per_room: self.chat_history_max_per_room,
            },
        }
    }

    /// Connection admission limits (trusted proxies already validated).
    pub fn limits(&self) -> crate::limits::LimitsConfig {
        crate::limits::LimitsConfig {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_rate_per_ip: f64::from(self.handshake_rate_per_ip),
            handshake_burst_per_ip: self.handshake_burst_per_ip,
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            retry_after_secs: self.limits_retry_after_secs,
            max_connections_per_user: self.max_connections_per_user,
            user_rate: primitives::RateLimit {
                per_sec: self.rate_limit_per_user_per_sec as f32,
                burst: self.rate_limit_per_user_burst.max(1) as f32,
            },
        }
    }

    pub fn has_jwt_key(&self) -> bool {
        !self.jwt_secret.is_empty()
            || !self.jwt_public_key_file.is_empty()
            || !self.jwt_jwks_url.is_empty()
    }

    /// Keys, TLS files, origins and room prefixes (issue #15, part A).
    fn validate_security(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < MIN_HS256_SECRET {
            return invalid(
                "jwt_secret",
                &format!(
                    "is {} bytes; an HS256 secret must be at least {MIN_HS256_SECRET} bytes \
                     (e.g. `openssl rand -base64 48`)",
                    self.jwt_secret.len()
                ),
            );
        }
        if !self.jwt_jwks_url.is_empty() {
            if !(self.jwt_jwks_url.starts_with("https://")
                || self.jwt_jwks_url.starts_with("http://"))
                || self.jwt_jwks_url.parse::<hyper::Uri>().is_err()
            {
                return invalid("jwt_jwks_url", "must be an http:// or https:// URL");
            }
            if !self.jwt_public_key_file.is_empty() || !self.jwt_secret.is_empty() {
                return invalid(
                    "jwt_jwks_url",
                    "cannot be combined with jwt_secret or jwt_public_key_file: choose one key source",
                );
            }
        }
        if self.jwt_jwks_cache_secs < 10 {
            return invalid("jwt_jwks_cache_secs", "must be at least 10");
        }
        if self.jwt_jwks_min_refresh_secs > self.jwt_jwks_cache_secs {
            return invalid(
                "jwt_jwks_min_refresh_secs",
                "must not exceed jwt_jwks_cache_secs",
            );
        }
        if self.jwt_leeway_secs > 300 {
            return invalid("jwt_leeway_secs", "must be at most 300");
        }
        if self.api_keys.iter().any(String::is_empty) {
            return invalid("api_keys", "must not contain an empty key");
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return invalid(
                "tls_cert_file",
                "tls_cert_file and tls_key_file must be set together",
            );
        }
        if self
            .private_room_prefixes
            .iter()
            .any(|p| crate::transport::check_name(p).is_err())
        {
            return invalid(
                "private_room_prefixes",
                "each prefix must be a valid room name (1 to 200 characters, no control characters)",
            );
        }
        if self
            .allowed_origins
            .iter()
            .any(|o| o != "*" && o != "self" && !o.contains("://"))
        {
            return invalid(
                "allowed_origins",
                "each entry must be \"*\", \"self\" or an origin such as https://app.example",
            );
        }
        Ok(())
    }

    /// Every accepted API key (`api_key` and `api_keys`).
    pub fn api_key_list(&self) -> Vec<String> {
        std::iter::once(&self.api_key)
            .chain(&self.api_keys)
            .filter(|k| !k.is_empty())
            .cloned()
            .collect()
    }

    /// Which browser origins may open WebSockets and event streams.
    pub fn origins(&self) -> engineio::AllowedOrigins {
        let list = if self.allowed_origins.is_empty() {
            &self.cors_origins
        } else {
            &self.allowed_origins
        };
        engineio::AllowedOrigins::from_list(list)
    }

    /// Claims checked besides the signature.
    pub fn jwt_claims(&self) -> crate::auth::Claims {
        crate::auth::Claims {
            issuer: if self.jwt_issuer.is_empty() {
                Vec::new()
            } else {
                vec![self.jwt_issuer.clone()]
            },
            audience: self.jwt_audience.clone(),
            leeway_secs: self.jwt_leeway_secs,
        }
    }

    /// The JWKS settings, when a JWKS URL is configured.
    pub fn jwks(&self) -> Option<crate::auth::JwksConfig> {
        (!self.jwt_jwks_url.is_empty()).then(|| crate::auth::JwksConfig {
            url: self.jwt_jwks_url.clone(),
            max_age: Duration::from_secs(self.jwt_jwks_cache_secs),
            min_refresh: Duration::from_secs(self.jwt_jwks_min_refresh_secs),
            timeout: Duration::from_secs(5),
        })
    }

    /// Development mode: asked for, or implied by no key on a loopback listener.
    pub fn effective_dev_mode(&self) -> bool {
        self.dev_mode_reason().is_some()
    }

    /// Why client tokens are not checked, or `None` when they are. A config that passed
    /// [`Config::validate`] never has no key on a non-loopback listener without
    /// `dev_mode`, so this is the whole truth about who is trusted.
    pub fn dev_mode_reason(&self) -> Option<DevModeReason> {
        if self.dev_mode {
            Some(DevModeReason::Explicit)
        } else if !self.has_jwt_key() && is_loopback(self.listen) {
            Some(DevModeReason::LoopbackWithoutKey)
        } else {
            None
        }
    }

    /// The hold store `hold_store` resolves to (`auto` decided).
    pub fn effective_hold_store(&self) -> HoldStoreKind {
        match self.hold_store {
            HoldStoreKind::Auto if !self.redis_url.is_empty() => HoldStoreKind::Redis,
            HoldStoreKind::Auto if self.data_dir == "memory" => HoldStoreKind::Memory,
            HoldStoreKind::Auto => HoldStoreKind::Sqlite,
            other => other,
        }
    }

    pub fn holds(&self) -> tickets::HoldConfig {
        tickets::HoldConfig {
            max_quantity: self.max_hold_quantity,
            hold_ttl_ms: self.hold_ttl_secs as i64 * 1000,
            order_timeout_ms: self.order_timeout_secs as i64 * 1000,
            ..tickets::HoldConfig::default()
        }
    }

    /// The consumer's settings, or `None` when no broker is configured.
    pub fn amqp(&self) -> Option<crate::ingest::AmqpConfig> {
        if self.amqp_url.is_empty() {
            return None;
        }
        let dead_letter_queue = if self.amqp_dead_letter_queue.is_empty() {
            format!("{}.dlq", self.amqp_queue)
        } else {
            self.amqp_dead_letter_queue.clone()
        };
        Some(crate::ingest::AmqpConfig {
            url: self.amqp_url.clone(),
            queue: self.amqp_queue.clone(),
            dead_letter_queue,
            prefetch: self.amqp_prefetch,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(self.amqp_reconnect_max_ms),
            retry_delay: Duration::from_millis(500),
            connection_name: format!("switchboard {}", self.listen),
        })
    }

    /// `events_service` as `host:port` (port 8879 when none is given).
    pub fn events_service_addr(&self) -> Option<String> {
        let s = self.events_service.trim();
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, p.parse::<u16>().ok()?),
            _ => (s, 8879),
        };
        (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| format!("{host}:{port}"))
    }

    /// The cluster node's settings, or `None` when `redis_url` is empty (one node).
    pub fn cluster(&self) -> Option<crate::cluster::ClusterConfig> {
        if self.redis_url.is_empty() {
            return None;
        }
        Some(crate::cluster::ClusterConfig {
            url: self.redis_url.clone(),
            node_id: if self.node_id.is_empty() {
                crate::cluster::random_node_id()
            } else {
                self.node_id.clone()
            },
            node_timeout: Duration::from_secs(self.node_timeout_secs),
            prefix: self.redis_prefix.clone(),
            fabric_namespace: "/realtime".to_owned(),
            queue: 8192,
            max_message: self.max_payload.saturating_mul(2).max(64 * 1024),
            supersedes: crate::tickets::announcement_version,
        })
    }

    /// The events-service client's settings, when it is the catalog source.
    pub fn events_service(&self) -> Option<crate::tickets::EventsServiceConfig> {
        if self.catalog_source != CatalogSourceKind::EventsService {
            return None;
        }
        Some(crate::tickets::EventsServiceConfig {
            addr: self.events_service_addr()?,
            timeout: Duration::from_millis(self.events_service_timeout_ms),
            cache_ttl: Duration::from_millis(self.events_service_cache_ms),
            max_frame: self.events_service_max_frame,
        })
    }

    /// This config with secrets replaced, for printing.
    pub fn redacted(&self) -> Config {
        let hide = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                "<redacted>".to_owned()
            }
        };
        Config {
            jwt_secret: hide(&self.jwt_secret),
            api_key: hide(&self.api_key),
            api_keys: self.api_keys.iter().map(|k| hide(k)).collect(),
            jwt_jwks_url: redact_url(&self.jwt_jwks_url),
            amqp_url: redact_url(&self.amqp_url),
            redis_url: redact_url(&self.redis_url),
            database_url: redact_url(&self.database_url),
            pusher: crate::pusher::PusherConfig {
                apps: self
                    .pusher
                    .apps
                    .iter()
                    .map(|a| crate::pusher::PusherApp {
                        secret: hide(&a.secret),
                        ..a.clone()
                    })
                    .collect(),
                ..self.pusher.clone()
            },
            ..self.clone()
        }
    }

    pub fn recovery_window(&self) -> Option<Duration> {
        (self.recovery_window_secs > 0).then(|| Duration::from_secs(self.recovery_window_secs))
    }

    /// The settings of `switchboard conformance`: what the official suites expect.
    pub fn conformance(mut self) -> Config {
        self.ping_interval_ms = 300;
        self.ping_timeout_ms = 200;
        self.connect_timeout_ms = 1000;
        // The suites measure protocol behaviour, not abuse handling.
        self.rate_limit_per_sec = 0;
        self.rate_limit_per_user_per_sec = 0;
        self.max_connections_per_user = 0;
        self
    }
}

/// A URL with its password replaced.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{scheme}://{user}:<redacted>@{host}{}",
                &rest[authority_end..]
            )
        }
        None => url.to_owned(),
    }
}

/// The Pusher app of `SWITCHBOARD_PUSHER_APP_ID`, `_KEY`, `_SECRET`: added to
/// `[pusher] apps`, replacing an app of the same id.
fn add_env_pusher_app(
    table: &mut toml::Table,
    env: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::BadValue {
        origin: "environment".into(),
        key: "pusher.apps".into(),
        value: crate::pusher::config::ENV_APP.join(", "),
        message,
    };
    let Some(app) = crate::pusher::PusherConfig::env_app(env).map_err(bad)? else {
        return Ok(());
    };
    let id = app.id.clone();
    let app = toml::Value::try_from(app).map_err(|e| bad(e.to_string()))?;
    let pusher = table
        .entry("pusher")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(pusher) = pusher else {
        return Err(bad("`pusher` must be a table".into()));
    };
    let apps = pusher
        .entry("apps")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(apps) = apps else {
        return Err(bad("`pusher.apps` must be an array of tables".into()));
    };
    apps.retain(|a| a.get("id").and_then(toml::Value::as_str) != Some(id.as_str()));
    apps.push(app);
    Ok(())
}

/// Parses an environment or flag string as the same TOML type as the default.
fn parse_like(
    default: &toml::Value,
    raw: &str,
    origin: &str,
    key: &str,
) -> Result<toml::Value, ConfigError> {
    let bad = |message: &str| ConfigError::BadValue {
        origin: origin.to_owned(),
        key: key.to_owned(),
        value: raw.to_owned(),
        message: message.to_owned(),
    };
    Ok(match default {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse::<i64>()
                .map_err(|_| bad("expected a whole number"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("expected true or false")),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => return Err(bad("cannot be set from a string")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(&Sources::default()).expect("defaults load");
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8880");
    }

    #[test]
    fn file_then_env_then_flags() {
        let sources = Sources {
            file: Some((
                "sb.toml".into(),
                "ping_interval_ms = 1000\nmax_payload = 5000\nlisten = \"0.0.0.0:9000\"".into(),
            )),
            env: env(&[
                ("SWITCHBOARD_MAX_PAYLOAD", "6000"),
                ("SWITCHBOARD_CORS_ORIGINS", "https://a.test, https://b.test"),
                ("SWITCHBOARD_API_KEY", "not-a-setting"),
            ]),
            overrides: vec![("listen".into(), "127.0.0.1:0".into())],
        };
        let c = Config::load(&sources).expect("loads");
        assert_eq!(c.ping_interval_ms, 1000, "file");
        assert_eq!(c.max_payload, 6000, "env beats file");
        assert_eq!(c.cors_origins, vec!["https://a.test", "https://b.test"]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:0", "flag beats file");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = Config::load(&Sources {
            env: env(&[("SWITCHBOARD_PING_INTERVAL_MS", "soon")]),
            ..Sources::default()
        })
        .expect_err("not a number");
        assert!(
            e.to_string().contains("SWITCHBOARD_PING_INTERVAL_MS"),
            "{e}"
        );
        let e = Config::load(&Sources {
            file: Some(("f.toml".into(), "nope = 1".into())),
            ..Sources::default()
        })
        .expect_err("unknown key");
        assert!(e.to_string().contains("unknown setting `nope`"), "{e}");
        let e = Config::load(&Sources {
            overrides: vec![("ping_timeout_ms".into(), "0".into())],
            ..Sources::default()
        })
        .expect_err("invalid");
        assert!(e.to_string().contains("ping_timeout_ms"), "{e}");
        let e = Config::load(&Sources {
            overrides: vec![("ws_flushers".into(), "100000".into())],
            ..Sources::default()
        })
        .expect_err("too many flushers");
        assert!(e.to_string().contains("ws_flushers"), "{e}");
        let e = Config::load(&Sources {
            file: Some(("f.toml".into(), "listen = \"nowhere\"".into())),
            ..Sources::default()
        })
        .expect_err("bad address");
        assert!(
            e.to_string().contains("composed config") || e.to_string().contains("listen"),
            "{e}"
        );
        let e = Config::load(&Sources {
            overrides: vec![("cors_credentials".into(), "true".into())],
            ..Sources::default()
        })
        .expect_err("credentials with *");
        assert!(e.to_string().contains("cors_credentials"), "{e}");
    }

    #[test]
    fn per_user_limits_load_and_bad_values_are_refused() {
        let c = Config::load(&Sources {
            file: Some(("f.toml".into(), "max_connections_per_user = 3".into())),
            env: env(&[("SWITCHBOARD_RATE_LIMIT_PER_USER_PER_SEC", "20")]),
            overrides: vec![("rate_limit_per_user_burst".into(), "40".into())],
        })
        .expect("loads");
        let l = c.limits();
        assert_eq!(l.max_connections_per_user, 3);
        assert_eq!((l.user_rate.per_sec, l.user_rate.burst), (20.0, 40.0));
        let d = Config::default();
        assert_eq!(
            (
                d.max_connections_per_user,
                d.rate_limit_per_user_per_sec,
                d.rate_limit_per_user_burst
            ),
            (50, 100, 200),
            "on by default"
        );
        let bad = |origin: Sources, key: &str| {
            let e = Config::load(&origin).expect_err(key).to_string();
            assert!(e.contains(key), "{e}");
            e
        };
        let e = bad(
            Sources {
                env: env(&[("SWITCHBOARD_MAX_CONNECTIONS_PER_USER", "-1")]),
                ..Sources::default()
            },
            "max_connections_per_user",
        );
        assert!(e.contains("-1") && e.contains("expected u32"), "{e}");
        bad(
            Sources {
                file: Some((
                    "f.toml".into(),
                    "rate_limit_per_user_per_sec = \"fast\"".into(),
                )),
                ..Sources::default()
            },
            "rate_limit_per_user_per_sec",
        );
        bad(
            Sources {
                overrides: vec![("rate_limit_per_user_burst".into(), "0".into())],
                ..Sources::default()
            },
            "rate_limit_per_user_burst",
        );
    }

    #[test]
    fn development_mode_only_on_loopback_or_when_asked_for() {
        let load = |pairs: &[(&str, &str)]| {
            Config::load(&Sources {
                overrides: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Sources::default()
            })
        };
        // Loopback without a key: development mode, implied.
        for listen in [
            "127.0.0.1:8880",
            "127.1.2.3:0",
            "[::1]:8880",
            "[::ffff:127.0.0.1]:1",
        ] {
            let c = load(&[("listen", listen)]).expect("loopback loads");
            assert_eq!(
                c.dev_mode_reason(),
                Some(DevModeReason::LoopbackWithoutKey),
                "{listen}"
            );
        }
        // Beyond loopback without a key: refused, saying what to set.
        for listen in [
            "0.0.0.0:8891",
            "[::]:8891",
            "192.168.1.20:8880",
            "10.0.0.7:80",
        ] {
            let e = load(&[("listen", listen)]).expect_err(listen).to_string();
            assert!(e.contains("dev_mode"), "{e}");
            assert!(e.contains("SWITCHBOARD_JWT_SECRET"), "{e}");
            assert!(e.contains(listen), "{e}");
        }
        // Beyond loopback with a key: tokens are checked.
        let c = load(&[
            ("listen", "0.0.0.0:8891"),
            ("jwt_secret", "k".repeat(32).as_str()),
        ])
        .expect("key loads");
        assert_eq!(c.dev_mode_reason(), None);
        assert!(!c.effective_dev_mode());
        // Beyond loopback with dev_mode asked for: allowed, and says so.
        let c = load(&[("listen", "0.0.0.0:8891"), ("dev_mode", "true")]).expect("explicit");
        assert_eq!(c.dev_mode_reason(), Some(DevModeReason::Explicit));
        assert!(c.effective_dev_mode());
        // Loopback with a key: not development mode.
        let c = load(&[("jwt_secret", "k".repeat(32).as_str())]).expect("key");
        assert_eq!(c.dev_mode_reason(), None);
    }

    #[test]
    fn pusher_apps_from_file_and_env() {
        let file = r#"
[pusher]
activity_timeout_secs = 60

[[pusher.apps]]
id = "1"
key = "key-one"
secret = "secret-one"
client_events = true
webhooks = ["http://127.0.0.1:9/hooks"]
"#;
        let c = Config::load(&Sources {
            file: Some(("f.toml".into(), file.into())),
            env: env(&[
                ("SWITCHBOARD_PUSHER_APP_ID", "2"),
                ("SWITCHBOARD_PUSHER_KEY", "key-two"),
                ("SWITCHBOARD_PUSHER_SECRET", "secret-two"),
            ]),
            ..Sources::default()
        })
        .expect("loads");
        assert_eq!(c.pusher.activity_timeout_secs, 60);
        assert_eq!(c.pusher.pong_timeout_secs, 30, "defaults fill the table");
        let ids: Vec<_> = c.pusher.apps.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["1", "2"]);
        assert!(c.pusher.apps[0].client_events && !c.pusher.apps[1].client_events);
        assert!(c.pusher.apps[1].enabled);
        assert_eq!(c.redacted().pusher.apps[0].secret, "<redacted>");
        assert!(!format!("{:?}", c.pusher.apps[0]).contains("secret-one"));
        // The environment's app replaces the file's of the same id.
        let c = Config::load(&Sources {
            file: Some(("f.toml".into(), file.into())),
            env: env(&[
                ("SWITCHBOARD_PUSHER_APP_ID", "1"),
                ("SWITCHBOARD_PUSHER_KEY", "key-env"),
                ("SWITCHBOARD_PUSHER_SECRET", "secret-env"),
            ]),
            ..Sources::default()
        })
        .expect("loads");
        assert_eq!(c.pusher.apps.len(), 1);
        assert_eq!(c.pusher.apps[0].key, "key-env");
        for bad in [
            "[pusher]\nnope = 1",
            "[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"short\"",
            "[[pusher.apps]]\nid = \"1\"\nkey = \"k k\"\nsecret = \"long-enough\"",
            "[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"long-enough\"\nwebhooks = [\"https://x/\"]",
            "[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"long-enough\"\n[[pusher.apps]]\nid = \"1\"\nkey = \"k2\"\nsecret = \"long-enough\"",
            "[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"long-enough\"\ncolour = 1",
        ] {
            let e = Config::load(&Sources {
                file: Some(("f.toml".into(), bad.into())),
                ..Sources::default()
            });
            assert!(e.is_err(), "{bad} accepted");
        }
        let e = Config::load(&Sources {
            env: env(&[("SWITCHBOARD_PUSHER_APP_ID", "1")]),
            ..Sources::default()
        })
        .expect_err("half an app");
        assert!(e.to_string().contains("SWITCHBOARD_PUSHER_KEY"), "{e}");
    }

    #[test]
    fn security_settings_are_validated_and_secrets_redacted() {
        let load = |pairs: &[(&str, &str)]| {
            Config::load(&Sources {
                overrides: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Sources::default()
            })
        };
        // A short HS256 secret is refused at start-up, saying how long it must be.
        let e = load(&[("jwt_secret", "k3y")])
            .expect_err("short secret")
            .to_string();
        assert!(
            e.contains("jwt_secret") && e.contains("at least 32 bytes"),
            "{e}"
        );
        assert!(!e.contains("k3y"), "the secret is not echoed: {e}");
        assert!(load(&[("jwt_secret", &"k".repeat(31))]).is_err());
        assert!(load(&[("jwt_secret", &"k".repeat(32))]).is_ok());
        let c = load(&[
            ("jwt_jwks_url", "https://id.example/.well-known/jwks.json"),
            ("jwt_audience", "a,b"),
            ("jwt_issuer", "https://id.example/"),
            ("jwt_leeway_secs", "30"),
            ("listen", "0.0.0.0:1"),
        ])
        .expect("jwks config");
        assert_eq!(c.dev_mode_reason(), None, "a JWKS URL is a key");
        assert_eq!(c.jwt_claims().audience, vec!["a", "b"]);
        assert!(c.jwks().is_some());
        for bad in [
            vec![("jwt_jwks_url", "ftp://id.example/jwks")],
            vec![
                ("jwt_jwks_url", "https://id.example/jwks"),
                ("jwt_secret", "0123456789abcdef0123456789abcdef"),
            ],
            vec![("jwt_leeway_secs", "301")],
            vec![("jwt_jwks_cache_secs", "5")],
            vec![("jwt_jwks_min_refresh_secs", "7200")],
            vec![("tls_cert_file", "cert.pem")],
            vec![("tls_key_file", "key.pem")],
            vec![("allowed_origins", "evil.example")],
            vec![("private_room_prefixes", "ok:,\u{1}")],
        ] {
            assert!(load(&bad).is_err(), "{bad:?} accepted");
        }
        let c = Config::load(&Sources {
            env: env(&[("SWITCHBOARD_API_KEYS", "new-1, new-2")]),
            overrides: vec![("api_key".into(), "old".into())],
            ..Sources::default()
        })
        .expect("keys");
        assert_eq!(c.api_key_list(), vec!["old", "new-1", "new-2"]);
        let shown = toml::to_string(&c.redacted()).expect("toml");
        for secret in ["old", "new-1", "new-2"] {
            assert!(!shown.contains(&format!("\"{secret}\"")), "{shown}");
        }
        // WebSocket origins follow cors_origins unless set.
        let c = load(&[("cors_origins", "https://a.example")]).expect("cors");
        assert_eq!(
            c.origins(),
            engineio::AllowedOrigins::List(vec!["https://a.example".into()])
        );
        let c = load(&[("allowed_origins", "*")]).expect("any");
        assert_eq!(c.origins(), engineio::AllowedOrigins::Any);
    }

    #[test]
    fn integration_settings() {
        let c = Config::load(&Sources {
            env: env(&[(
                "SWITCHBOARD_AMQP_URL",
                "amqp://guest:s3cret@127.0.0.1:5672/%2f",
            )]),
            overrides: vec![
                ("amqp_prefetch".into(), "8".into()),
                ("catalog_source".into(), "events-service".into()),
                ("events_service".into(), "events.internal".into()),
            ],
            ..Sources::default()
        })
        .expect("loads");
        let amqp = c.amqp().expect("enabled");
        assert_eq!(
            (
                amqp.queue.as_str(),
                amqp.dead_letter_queue.as_str(),
                amqp.prefetch
            ),
            ("realtime_queue", "realtime_queue.dlq", 8)
        );
        assert_eq!(
            c.events_service().map(|e| e.addr),
            Some("events.internal:8879".to_owned())
        );
        assert_eq!(
            c.redacted().amqp_url,
            "amqp://guest:<redacted>@127.0.0.1:5672/%2f"
        );
        assert!(Config::default().amqp().is_none());
        let c = Config::load(&Sources {
            env: env(&[("SWITCHBOARD_REDIS_URL", "redis://:pw@127.0.0.1:6379/0")]),
            overrides: vec![("node_id".into(), "node-a.1".into())],
            ..Sources::default()
        })
        .expect("cluster settings load");
        assert_eq!(
            c.redacted().redis_url,
            "redis://:<redacted>@127.0.0.1:6379/0"
        );
        assert_eq!(c.node_id, "node-a.1");
        assert!(Config::default().events_service().is_none());
        for (k, v) in [
            ("amqp_url", "http://x"),
            ("amqp_prefetch", "0"),
            ("amqp_prefetch", "70000"),
            ("catalog_source", "redis"),
            ("events_service", "a b:1"),
            ("events_service", "host:port"),
            ("amqp_dead_letter_queue", "realtime_queue"),
            ("redis_url", "http://127.0.0.1:6379"),
            ("node_id", "a b"),
            ("node_id", "node/1"),
            ("node_timeout_secs", "1"),
        ] {
            let e = Config::load(&Sources {
                overrides: vec![(k.into(), v.into())],
                ..Sources::default()
            });
            assert!(e.is_err(), "{k}={v} accepted");
        }
    }
}

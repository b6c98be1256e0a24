//! Engine.IO settings. Every limit is a setting (DESIGN.md principle 5).

use std::time::Duration;

/// Which origins may use the long-polling transport from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers at all: only same-origin pages can poll.
    Off,
    /// `Access-Control-Allow-Origin: *`, no credentials.
    AnyOrigin,
    /// Reflect the request's `Origin` when it is in the list.
    Origins {
        /// The allowed origins, compared byte for byte.
        origins: Vec<String>,
        /// Whether to send `Access-Control-Allow-Credentials: true`.
        credentials: bool,
    },
}

/// Settings of one Engine.IO server.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Time between server pings; the first ping goes out one interval after open.
    pub ping_interval: Duration,
    /// Time a client has to answer a ping before the session is closed.
    pub ping_timeout: Duration,
    /// Largest accepted message (WebSocket) or POST body (polling), in bytes.
    pub max_payload: usize,
    /// Time a client has to finish a polling-to-WebSocket upgrade.
    pub upgrade_timeout: Duration,
    /// Packets queued for one session before the slow-client policy applies.
    pub max_buffered_packets: usize,
    /// Whether each transport is offered.
    pub allow_polling: bool,
    /// Whether clients may open or upgrade to a WebSocket.
    pub allow_websocket: bool,
    /// WebSocket read buffer per connection, in bytes (tungstenite's default is 128 KiB).
    pub ws_read_buffer: usize,
    /// Bytes tungstenite may buffer for writing before it reports an error.
    pub ws_max_write_buffer: usize,
    /// Flusher tasks that write WebSocket sessions' frames straight to their sockets,
    /// batching whatever queued up (crate `wire`); 0 turns direct writes off (each
    /// session's task then writes its own frames).
    pub ws_flushers: usize,
    /// permessage-deflate (RFC 7692) for clients that offer it: messages of at least this
    /// many bytes go compressed; `None` declines every offer.
    pub ws_compression: Option<usize>,
    /// Which cross-origin requests the endpoints answer.
    pub cors: Cors,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_millis(10_000),
            max_buffered_packets: 1024,
            allow_polling: true,
            allow_websocket: true,
            ws_read_buffer: 256,
            ws_max_write_buffer: 4 * 1024 * 1024,
            ws_flushers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ws_compression: Some(1024),
            cors: Cors::AnyOrigin,
        }
    }
}

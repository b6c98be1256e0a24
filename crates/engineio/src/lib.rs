//! Engine.IO v4 server core.
//!
//! # Layout
//! - [`packet`]: the wire format (packets, polling payloads). Pure.
//! - `frame`: one outbound unit ([`Frame`]) and its polling form. Pure.
//! - `kind`: [`TransportKind`] and [`CloseReason`], the words every module shares.
//! - `heartbeat`: ping and pong deadlines. Pure, time passed in.
//! - [`session`]: one session's identity, bounded outbox and transport state, changed
//!   only through its methods; its one write is the non-blocking direct write.
//! - [`engine`]: the session table and lifecycles; `engine/routing.rs` routes a request
//!   (query, CORS, errors), `engine/polling.rs` and `engine/ws.rs` are the transports
//!   (the upgrade lives with the WebSocket).
//! - [`outbox`]: a connection's bounded outbox, its slow-client policy and its direct
//!   writes, shared with the server's other transports (`/ws`, SSE).
//! - [`deflate`]: permessage-deflate (RFC 7692): the offer we accept, compressing one
//!   message, and the read side that inflates client frames before tungstenite sees them.
//! - `wire`: the write side of a connection's TCP stream and the flush queues.
//! - `query`: [`query_param`], a query string's parameters (`form_urlencoded`).
//! - [`stats`]: the counters the metrics endpoint reads.
//! - [`config`]: every limit as a setting.
//! - [`admission`]: the [`Permit`] by which the server's connection limits follow a session.
//! - [`origin`]: which browser origins may open a WebSocket (checked by the router).
//!
//! Dependencies run one way: engine -> session -> outbox -> wire -> frame; nothing points
//! back.
//!
//! The layer above (Socket.IO) plugs in through [`Handler`] and never sees a transport.

#![warn(missing_docs)]

pub mod admission;
pub mod config;
pub mod deflate;
pub mod engine;
mod frame;
mod heartbeat;
mod kind;
pub mod origin;
pub mod outbox;
pub mod packet;
mod query;
pub mod session;
pub mod stats;
mod wire;

pub use admission::Permit;
pub use config::{Cors, EngineConfig};
pub use engine::{Body, Engine, Handler, Message, RemoteAddr, websocket_accept};
pub use frame::{Frame, Shared};
pub use kind::{CloseReason, TransportKind};
pub use origin::AllowedOrigins;
pub use query::query_param;
pub use session::{Handshake, Push, Session, Sid};
pub use stats::EngineStats;

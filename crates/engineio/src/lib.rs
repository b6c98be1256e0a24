//! Engine.IO v4 server core.
//!
//! # Layout
//! - [`packet`]: the wire format (packets, polling payloads). Pure.
//! - [`session`]: one session's identity, bounded outbox, heartbeat rules. No I/O.
//! - [`engine`]: the HTTP entry point: long-polling, WebSocket, the upgrade, lifecycles.
//! - `wire`: direct WebSocket writes and the flushers that batch them.
//! - [`config`]: every limit as a setting.
//! - [`admission`]: the [`Permit`] by which the server's connection limits follow a session.
//!
//! The layer above (Socket.IO) plugs in through [`Handler`] and never sees a transport.

pub mod admission;
pub mod config;
pub mod engine;
pub mod limit;
pub mod packet;
pub mod session;
pub mod stats;
mod wire;

pub use admission::Permit;
pub use config::{Cors, EngineConfig};
pub use engine::{Body, Engine, Handler, Message, RemoteAddr, websocket_accept};
pub use session::{CloseReason, Frame, Handshake, Push, Session, Sid, TransportKind};
pub use stats::{EngineStats, Histogram};

//! `publish`: HTTP publishes to one room whose members are Socket.IO, plain WebSocket
//! and SSE clients. Switchboard only (the peers have no such endpoints).

mod config;

pub use config::{PublishArgs, PublishConfig};

//! A minimal Socket.IO v5 client over Engine.IO v4 WebSocket only: enough to connect to
//! a namespace, emit with or without acks, and keep the session alive. No polling, no
//! reconnection, no binary attachments: the scenarios measure the server, not this.
//!
//! `packet` is the wire format (pure), `target` the address, `client` the connection,
//! `wire` a measured connection (bytes counted, permessage-deflate inflated).

mod client;
pub mod packet;
pub mod target;
pub mod wire;

pub use client::{Client, Incoming, Namespace, SioError};
pub use packet::PacketKind;
pub use target::{CLIENTS_PER_SOURCE, Sources, SourcesError, Target, TargetError};

//! Socket.IO v5 server on the Engine.IO core.
//!
//! # Layout
//! - [`packet`]: the Socket.IO packet format. Pure.
//! - [`server`]: [`SocketIo`], the Engine.IO handler: namespaces, CONNECT and
//!   CONNECT_ERROR, binary reassembly, acks, recovery.
//! - [`socket`]: [`Socket`], one client in one namespace (a hub member), its ordered
//!   inbox, and [`ConnState`], the sockets of one Engine.IO connection.
//!
//! Dependencies: server -> socket -> packet, server -> namespace; socket and namespace
//! name each other (a socket belongs to a namespace whose handler is given sockets).
//! - [`select`]: a namespace's connected sockets, chosen by rooms and exceptions as
//!   Node's adapter does (fetch, join, leave, disconnect, emit with acks to many).
//! - [`namespace`]: [`Namespace`] settings and the [`NamespaceHandler`] trait the
//!   application implements.
//!
//! Rooms, offsets and history live in the hub; this crate only maps Socket.IO's names and
//! wire format onto it.

#![warn(missing_docs)]

pub mod namespace;
pub mod packet;
pub mod select;
pub mod server;
pub mod socket;

pub use namespace::{
    ConnectError, ConnectRequest, DisconnectReason, Event, Identity, Namespace, NamespaceConfig,
    NamespaceHandler, SessionDirectory, SessionRecord,
};
pub use select::Selector;
pub use server::{SocketIo, SocketIoConfig, UserEventLimit};
pub use socket::{AckError, ConnState, Socket};

//! The Pusher Channels protocol (protocol 7) on the room fabric, so `pusher-js` and the
//! Pusher server SDKs work unchanged.
//!
//! A channel is the hub room of the same name (`#server-to-user-{id}` is `user:{id}`), a
//! connection is an ordinary hub member: a publish from the `/api/publish` API, Socket.IO,
//! `/ws` or another node reaches Pusher subscribers, and the Pusher HTTP API reaches every
//! transport. Presence is the hub's (users counted once across transports); the Pusher
//! side adds each user's `user_info` ([`channel::PresenceBook`]).
//!
//! # Layout
//! - [`config`]: the `[pusher]` table (apps, limits, webhooks).
//! - `sign`: channel, sign-in, API request and webhook signatures.
//! - `channel`: channel names and kinds, the room mapping, frames, the presence book.
//! - `socket`: one WebSocket connection at `/app/{key}`.
//! - `api`: the signed HTTP API under `/apps/{app_id}`.
//! - `webhook`: the bounded webhook queue and its sender.
//! - `service`: [`Pusher`], what the routes share.
//!
//! Owns: the protocol's rules (auth, client events, sign-in, close codes). Never: room
//! state or cross-node delivery (the hub and the cluster fabric).

mod api;
pub(crate) mod channel;
pub mod config;
mod service;
mod sign;
mod socket;
mod webhook;

pub use config::{PusherApp, PusherConfig};
pub(crate) use service::announce;
pub use service::{Pusher, PusherStats};

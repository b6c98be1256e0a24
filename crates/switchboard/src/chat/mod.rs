//! Chat on every transport: rooms with roles, persisted messages with idempotent sends,
//! edits, deletes, read receipts, typing, presence with last seen.
//!
//! Layout: `model` (records and their JSON), `store` (the storage trait), `sqlite` (its
//! SQLite implementation; `sqlite_sends` its group commit of sends), `postgres` (the one a fleet shares), `live` (connections, typing, presence: in-process state), `metrics` (its counters),
//! `service` (the rules), `fleet` and `fleet_live` (the same across a cluster's nodes), `input` (decoding client payloads), `requests` (what clients send, as types), `dispatch` (event ->
//! service call), `socket` (the `/chat` namespace), `api` (the HTTP routes), `wire` (what clients receive, as types). `/ws`
//! reaches the chat through `dispatch`; SSE only listens. Never: token checks (`auth`)
//! or room fan-out (the hub).

pub mod api;
pub mod dispatch;
pub mod error;
mod fleet;
mod fleet_live;
pub mod input;
pub mod live;
pub mod metrics;
pub mod model;
pub mod postgres;
pub mod requests;
pub mod service;
pub mod socket;
pub mod sqlite;
mod sqlite_sends;
pub mod store;
pub mod wire;

pub use dispatch::dispatch;
pub use error::ChatError;
pub use live::ChatConn;
pub use service::{Chat, ChatConfig};

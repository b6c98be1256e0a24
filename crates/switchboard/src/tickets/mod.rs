//! Ticket holds on the room fabric: the pure rules (`tickets` crate) driven with a clock,
//! made durable by a store (`store.rs`: SQLite; or Redis as the fleet's shared authority),
//! and broadcast as `availability-update`.
//!
//! Owns: the single `State` behind a mutex, the expiry timer, coalescing of updates.
//! Never: speaks a protocol (the `/realtime` handler does), or decides who a client is.

mod catalog;
mod coalesce;
mod commit;
mod events_source;
mod redis_batch;
pub mod redis_store;
pub mod requests;
mod service;
mod shared;
mod store;
pub mod wire;

pub use catalog::{CatalogError, demo_catalog, load_catalog};
pub use events_source::{
    CatalogSource, EventsClient, EventsServiceConfig, SourceError, VERIFY_FAILED,
};
pub use redis_store::{RedisHolds, RedisStoreError};
pub(crate) use service::ApplyError;
pub use service::{
    Clock, HoldService, ServiceError, UNAVAILABLE, announcement_version, event_room, now_ms,
};
pub use shared::{LivenessConfig, NodeLiveness, RedisLiveness};
pub use store::{HoldStore, MemoryStore, SqliteStore, StoreError};

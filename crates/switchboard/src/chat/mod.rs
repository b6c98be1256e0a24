//! Chat on every transport: rooms with roles, persisted messages with idempotent sends,
//! edits, deletes, read receipts, typing, presence with last seen.
//!
//! Layout: `model` (records and their JSON), `store` (the storage trait), `sqlite` (its
//! SQLite implementation). Never: token checks (`auth`) or room fan-out (the hub).

pub mod model;
pub mod sqlite;
pub mod store;

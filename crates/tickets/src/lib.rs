//! Pure ticket-hold rules for Switchboard.
//!
//! A buyer *holds* seats of one ticket category for a few minutes while they check out.
//! This crate decides whether a hold is granted, when it ends and what it does to the
//! availability that everyone else sees. It is a plain single-threaded state machine.
//!
//! # What it owns
//! - the catalog as far as holds care: events, their categories and each category's
//!   `totalSeats` / `availableSeats` (unsold seats);
//! - live holds (`active` and `confirmed`) and their deadlines;
//! - a bounded memory of processed order ids (so redelivered order messages are harmless)
//!   and of recently ended lock ids (so a late `confirm` gets a precise refusal);
//! - counters of ended holds for `/stats`.
//!
//! # What it never does
//! - **No I/O and no clock.** Time comes in as `now_ms` (unix milliseconds). Nothing here
//!   sleeps: [`State::next_deadline`] tells a driver when to call [`State::expire_due`].
//! - **No persistence.** Every mutation returns an [`Outcome`] whose [`Change`] records a
//!   store writes durably *before* the answer is given; [`State::snapshot`] and
//!   [`State::restore`] rebuild the machine after a restart.
//! - **No locking, no broadcasting, no authorization.** The caller wraps the state in a
//!   mutex, broadcasts `availability-update` for [`Outcome::touched`], and checks that a
//!   client may act on a given user or lock.
//! - **No panics.** Refusals are typed errors with messages fit for clients.
//!
//! # Layout
//! - [`config`]: limits and timeouts ([`HoldConfig`]).
//! - [`catalog`]: events, categories, availability figures.
//! - [`hold`]: the hold record and its status.
//! - [`change`]: change records and the [`Outcome`] of a mutation.
//! - [`error`]: one error type per operation.
//! - [`state`]: the state machine itself ([`State`]).
//! - [`snapshot`]: what a store persists to rebuild a [`State`].
//! - [`stats`]: counters for `/stats`.
//!
//! # Driving it
//! The caller is expected to call [`State::expire_due`] with the current time before each
//! command (and whenever [`State::next_deadline`] passes), so that commands only ever see
//! holds that are still within their deadline.
//!
//! ```
//! use tickets::{Category, Event, HoldConfig, HoldRequest, State};
//!
//! let mut state = State::new(HoldConfig::default())?;
//! let seats = Category { id: 7, name: "VIP".into(), price: 120.0, total_seats: 2, available_seats: 2 };
//! let _ = state.upsert_event(Event { id: 1, name: "Concert".into(), categories: vec![seats] })?;
//!
//! let now = 1_700_000_000_000;
//! let request = HoldRequest {
//!     user_id: "alice".into(),
//!     session_id: "sid-1".into(),
//!     event_id: 1,
//!     category_id: 7,
//!     quantity: 2,
//! };
//! let granted = state.lock(request, now)?;
//! // Persist `granted.changes`, then broadcast availability for `granted.touched`.
//! assert_eq!(state.availability(1, 7).map(|a| a.available_tickets), Some(0));
//!
//! // The driver sleeps until the next deadline, then sweeps.
//! let deadline = state.next_deadline().unwrap_or(now);
//! let expired = state.expire_due(deadline);
//! assert_eq!(expired.value[0].lock_id, granted.value.lock_id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod catalog;
pub mod change;
pub mod config;
pub mod error;
pub mod hold;
mod recent;
pub mod snapshot;
pub mod state;
pub mod stats;

pub use catalog::{Availability, Category, CategoryKey, Event};
pub use change::{Change, OrderEffect, OrderKind, Outcome};
pub use config::HoldConfig;
pub use error::{
    CatalogError, ConfigError, ConfirmError, LockError, OrderError, RestoreError, UnlockError,
};
pub use hold::{Hold, HoldRequest, HoldStatus, OrderMessage};
pub use snapshot::{EndedCounts, ProcessedOrder, Snapshot};
pub use state::State;
pub use stats::{LocksByStatus, Stats};

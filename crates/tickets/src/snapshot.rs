//! What a store persists so a [`State`](crate::State) can be rebuilt after a restart.
//!
//! Sold seats need no list of their own: they are already subtracted from each
//! category's `availableSeats`.

use serde::{Deserialize, Serialize};

use crate::catalog::Event;
use crate::change::OrderKind;
use crate::hold::Hold;

/// Counters of ended holds, kept instead of the ended holds themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndedCounts {
    /// Holds whose deadline passed.
    pub expired: u64,
    /// Holds unlocked, ended with their session, or cancelled with their order or event.
    pub released: u64,
    /// Holds whose order completed.
    pub completed: u64,
}

/// An order id already applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessedOrder {
    /// The orders service's id of the order.
    pub order_id: String,
    /// Whether it completed or was cancelled.
    pub kind: OrderKind,
}

/// Everything needed to rebuild a [`State`](crate::State).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Snapshot {
    /// The catalog, with each category's unsold seats.
    pub events: Vec<Event>,
    /// Live holds only (active or confirmed).
    pub holds: Vec<Hold>,
    /// Recently processed order ids, oldest first (only the newest `recent_capacity` are kept).
    pub processed_orders: Vec<ProcessedOrder>,
    /// Counters of ended holds.
    pub ended: EndedCounts,
    /// Sequence for generated lock ids; keeps them unique across restarts.
    pub next_lock_seq: u64,
}

//! Change records: the durable effect of a mutation, in a form a store can write as rows.
//!
//! Each record is self-contained and idempotent to apply (it carries resulting values,
//! never deltas), so a store can replay it safely after a crash:
//!
//! | record | SQL shape |
//! |---|---|
//! | [`Change::EventUpserted`] | `INSERT .. ON CONFLICT(id) DO UPDATE` on `events` |
//! | [`Change::CategoryUpserted`] | upsert on `categories` |
//! | [`Change::HoldCreated`] | `INSERT` on `holds` |
//! | [`Change::HoldStatus`] | `UPDATE holds SET status, expires_at WHERE lock_id` (or `DELETE` once not live) |
//! | [`Change::SeatsSold`] | `UPDATE categories SET available_seats` |
//! | [`Change::OrderRecorded`] | `INSERT` on `processed_orders` |

use serde::{Deserialize, Serialize};

use crate::catalog::{Category, CategoryKey};
use crate::hold::{Hold, HoldStatus};

/// What an order message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderKind {
    /// `order_completed`: the held seats are sold.
    Completed,
    /// `order_cancelled`: the held seats go back on sale.
    Cancelled,
}

/// One durable effect of a mutation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Change {
    /// An event was added or renamed (its categories follow as `CategoryUpserted`).
    EventUpserted {
        /// The event's id.
        event_id: i64,
        /// Its name now.
        name: String,
    },
    /// A category was added or changed (including a capacity change).
    CategoryUpserted {
        /// The event the category belongs to.
        event_id: i64,
        /// The category as it is now.
        category: Category,
    },
    /// A hold was granted.
    HoldCreated(Hold),
    /// A hold changed status. When `status` is not live the hold is gone from the state.
    HoldStatus {
        /// The hold's id.
        lock_id: String,
        /// Its new status.
        status: HoldStatus,
        /// Unix milliseconds: its deadline now (the order deadline once confirmed).
        expires_at: i64,
    },
    /// Seats were sold; `available_seats` is the category's new unsold count.
    SeatsSold {
        /// The event's id.
        event_id: i64,
        /// The category's id within the event.
        category_id: i64,
        /// Seats sold by this order.
        quantity: u32,
        /// The category's unsold seats after the sale.
        available_seats: u32,
    },
    /// An order id was processed; a redelivery of it has no further effect.
    OrderRecorded {
        /// The orders service's id of the order.
        order_id: String,
        /// Whether it completed or was cancelled.
        kind: OrderKind,
    },
}

/// The result of an order message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEffect {
    /// The matching hold was settled; it is returned with its final status.
    Applied(Hold),
    /// This order id was already processed (as `kind`); nothing changed.
    AlreadyApplied {
        /// What the first delivery of this order id did.
        kind: OrderKind,
    },
}

/// What a successful mutation returns: its value, the change records to persist, and the
/// categories whose availability changed (to broadcast `availability-update` for).
#[derive(Debug, Clone, PartialEq)]
#[must_use = "the changes must be persisted and the touched categories broadcast"]
pub struct Outcome<T> {
    /// What the operation answers (e.g. the granted hold).
    pub value: T,
    /// The change records to write durably before the answer is given, in order.
    pub changes: Vec<Change>,
    /// Categories whose availability changed, to broadcast `availability-update` for.
    /// Sorted, without duplicates.
    pub touched: Vec<CategoryKey>,
}

impl<T> Outcome<T> {
    /// An outcome that changed nothing.
    pub(crate) fn unchanged(value: T) -> Self {
        Self {
            value,
            changes: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Whether nothing changed.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Collects changes while a mutation runs.
#[derive(Debug)]
pub(crate) struct Effects {
    changes: Vec<Change>,
    touched: Vec<CategoryKey>,
    /// Whether change records are kept (see [`State::set_change_records`](crate::State::set_change_records)).
    keep: bool,
}

impl Effects {
    pub(crate) fn new(keep: bool) -> Self {
        Effects {
            changes: Vec::new(),
            touched: Vec::new(),
            keep,
        }
    }

    pub(crate) fn record(&mut self, change: Change) {
        if self.keep {
            self.changes.push(change);
        }
    }

    /// [`Effects::record`] for a record that costs copies to build: built only if kept.
    pub(crate) fn record_with(&mut self, change: impl FnOnce() -> Change) {
        if self.keep {
            self.changes.push(change());
        }
    }

    pub(crate) fn touch(&mut self, key: CategoryKey) {
        self.touched.push(key);
    }

    pub(crate) fn finish<T>(mut self, value: T) -> Outcome<T> {
        self.touched.sort_unstable();
        self.touched.dedup();
        Outcome {
            value,
            changes: self.changes,
            touched: self.touched,
        }
    }
}

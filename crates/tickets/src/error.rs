//! One error type per operation. Messages are written for the client that asked; they
//! never reveal other users' data beyond seat counts.

use thiserror::Error;

use crate::hold::HoldStatus;

/// A [`HoldConfig`](crate::HoldConfig) that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// `max_quantity` is 0: no hold could ever be granted.
    #[error("max_quantity must be at least 1")]
    ZeroMaxQuantity,
    /// `hold_ttl_ms` is 0 or negative (the value given).
    #[error("hold_ttl_ms must be positive, got {0}")]
    NonPositiveHoldTtl(i64),
    /// `order_timeout_ms` is 0 or negative (the value given).
    #[error("order_timeout_ms must be positive, got {0}")]
    NonPositiveOrderTimeout(i64),
    /// `recent_capacity` is 0: redelivered orders could not be recognised.
    #[error("recent_capacity must be at least 1")]
    ZeroRecentCapacity,
}

/// Why a hold was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LockError {
    /// The quantity is 0 or above the configured maximum.
    #[error("quantity must be between 1 and {max}, got {requested}")]
    InvalidQuantity {
        /// Seats asked for.
        requested: u32,
        /// The configured `max_quantity`.
        max: u32,
    },
    /// No event with this id.
    #[error("event {0} not found")]
    UnknownEvent(i64),
    /// The event has no category with this id.
    #[error("category {category_id} not found in event {event_id}")]
    UnknownCategory {
        /// The event's id.
        event_id: i64,
        /// The category asked for.
        category_id: i64,
    },
    /// The user already holds seats in this category (one hold per user per category).
    #[error("you already hold tickets in this category (lock {lock_id}); unlock it first")]
    AlreadyHolding {
        /// The hold the user has.
        lock_id: String,
    },
    /// Fewer seats can be held right now than were asked for.
    #[error("not enough tickets available: requested {requested}, available {available}")]
    NotEnoughSeats {
        /// Seats asked for.
        requested: u32,
        /// Seats that can be held right now.
        available: u32,
    },
    /// A caller-chosen lock id (see [`State::lock_with_id`](crate::State::lock_with_id))
    /// is taken.
    #[error("lock id {0} is already in use")]
    DuplicateLockId(String),
}

/// Why an unlock was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnlockError {
    /// The user holds nothing in this category.
    #[error("no active hold in category {category_id} of event {event_id}")]
    NoHold {
        /// The event's id.
        event_id: i64,
        /// The category's id within the event.
        category_id: i64,
    },
    /// The hold is confirmed: only its order's outcome (or timeout) ends it.
    #[error("lock {lock_id} is confirmed for an order and cannot be unlocked")]
    Confirmed {
        /// The confirmed hold.
        lock_id: String,
    },
}

/// Why a confirmation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfirmError {
    /// No hold with this id, live or recently ended.
    #[error("lock {0} not found")]
    UnknownLock(String),
    /// The hold's deadline passed.
    #[error("lock {0} has expired")]
    Expired(String),
    /// The hold ended recently in another way.
    #[error("lock {lock_id} is no longer held (it was {status})")]
    Ended {
        /// The ended hold.
        lock_id: String,
        /// How it ended.
        status: HoldStatus,
    },
}

/// Why an order message could not be applied. The caller should dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrderError {
    /// The user holds nothing the order could settle in that category.
    #[error(
        "order {order_id}: user {user_id} holds nothing in category {category_id} of event {event_id}"
    )]
    NoMatchingHold {
        /// The order's id.
        order_id: String,
        /// The buyer named by the order.
        user_id: String,
        /// The event's id.
        event_id: i64,
        /// The category's id within the event.
        category_id: i64,
    },
    /// The order is for 0 seats.
    #[error("order {order_id}: quantity must be at least 1")]
    InvalidQuantity {
        /// The order's id.
        order_id: String,
    },
    /// The category has fewer unsold seats than the order sells.
    #[error("order {order_id}: not enough seats to sell {requested}, available {available}")]
    NotEnoughSeats {
        /// The order's id.
        order_id: String,
        /// Seats the order sells.
        requested: u32,
        /// The category's unsold seats.
        available: u32,
    },
}

/// Why a catalog update was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    /// No event with this id.
    #[error("event {0} not found")]
    UnknownEvent(i64),
    /// The event has no category with this id.
    #[error("category {category_id} not found in event {event_id}")]
    UnknownCategory {
        /// The event's id.
        event_id: i64,
        /// The category asked for.
        category_id: i64,
    },
    /// A category would have more unsold seats than seats.
    #[error(
        "category {category_id} of event {event_id}: available seats {available} exceed total seats {total}"
    )]
    AvailableExceedsTotal {
        /// The event's id.
        event_id: i64,
        /// The category's id within the event.
        category_id: i64,
        /// Its unsold seats as given.
        available: u32,
        /// Its seats in all as given.
        total: u32,
    },
    /// The same category id appears twice in one event.
    #[error("event {event_id} lists category {category_id} twice")]
    DuplicateCategory {
        /// The event's id.
        event_id: i64,
        /// The repeated category id.
        category_id: i64,
    },
}

/// Why a [`Snapshot`](crate::Snapshot) could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestoreError {
    /// The configuration given with the snapshot cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An event of the snapshot is not a valid catalog entry.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The same event id appears twice.
    #[error("event {0} appears twice in the snapshot")]
    DuplicateEvent(i64),
    /// A hold names a category the snapshot's catalog does not have.
    #[error("hold {lock_id} refers to unknown category {category_id} of event {event_id}")]
    UnknownCategory {
        /// The hold's id.
        lock_id: String,
        /// The event it names.
        event_id: i64,
        /// The category it names.
        category_id: i64,
    },
    /// The same lock id appears twice.
    #[error("hold {0} appears twice")]
    DuplicateLockId(String),
    /// A hold that has ended: snapshots keep only live holds.
    #[error("hold {lock_id} is {status}; only active and confirmed holds are restored")]
    NotLive {
        /// The hold's id.
        lock_id: String,
        /// Its (ended) status.
        status: HoldStatus,
    },
    /// A hold of no seats.
    #[error("hold {lock_id} has quantity 0")]
    ZeroQuantity {
        /// The hold's id.
        lock_id: String,
    },
    /// One user with two live holds in one category.
    #[error("user {user_id} has two live holds in category {category_id} of event {event_id}")]
    DuplicateUserHold {
        /// The user.
        user_id: String,
        /// The event's id.
        event_id: i64,
        /// The category's id within the event.
        category_id: i64,
    },
}

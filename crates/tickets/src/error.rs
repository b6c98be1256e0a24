//! One error type per operation. Messages are written for the client that asked; they
//! never reveal other users' data beyond seat counts.

use thiserror::Error;

use crate::hold::HoldStatus;

/// A [`HoldConfig`](crate::HoldConfig) that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("max_quantity must be at least 1")]
    ZeroMaxQuantity,
    #[error("hold_ttl_ms must be positive, got {0}")]
    NonPositiveHoldTtl(i64),
    #[error("order_timeout_ms must be positive, got {0}")]
    NonPositiveOrderTimeout(i64),
    #[error("recent_capacity must be at least 1")]
    ZeroRecentCapacity,
}

/// Why a hold was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LockError {
    #[error("quantity must be between 1 and {max}, got {requested}")]
    InvalidQuantity { requested: u32, max: u32 },
    #[error("event {0} not found")]
    UnknownEvent(i64),
    #[error("category {category_id} not found in event {event_id}")]
    UnknownCategory { event_id: i64, category_id: i64 },
    #[error("you already hold tickets in this category (lock {lock_id}); unlock it first")]
    AlreadyHolding { lock_id: String },
    #[error("not enough tickets available: requested {requested}, available {available}")]
    NotEnoughSeats { requested: u32, available: u32 },
    #[error("lock id {0} is already in use")]
    DuplicateLockId(String),
}

/// Why an unlock was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnlockError {
    #[error("no active hold in category {category_id} of event {event_id}")]
    NoHold { event_id: i64, category_id: i64 },
    #[error("lock {lock_id} is confirmed for an order and cannot be unlocked")]
    Confirmed { lock_id: String },
}

/// Why a confirmation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfirmError {
    #[error("lock {0} not found")]
    UnknownLock(String),
    #[error("lock {0} has expired")]
    Expired(String),
    #[error("lock {lock_id} is no longer held (it was {status})")]
    Ended { lock_id: String, status: HoldStatus },
}

/// Why an order message could not be applied. The caller should dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrderError {
    #[error(
        "order {order_id}: user {user_id} holds nothing in category {category_id} of event {event_id}"
    )]
    NoMatchingHold {
        order_id: String,
        user_id: String,
        event_id: i64,
        category_id: i64,
    },
    #[error("order {order_id}: quantity must be at least 1")]
    InvalidQuantity { order_id: String },
    #[error("order {order_id}: not enough seats to sell {requested}, available {available}")]
    NotEnoughSeats {
        order_id: String,
        requested: u32,
        available: u32,
    },
}

/// Why a catalog update was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    #[error("event {0} not found")]
    UnknownEvent(i64),
    #[error("category {category_id} not found in event {event_id}")]
    UnknownCategory { event_id: i64, category_id: i64 },
    #[error(
        "category {category_id} of event {event_id}: available seats {available} exceed total seats {total}"
    )]
    AvailableExceedsTotal {
        event_id: i64,
        category_id: i64,
        available: u32,
        total: u32,
    },
    #[error("event {event_id} lists category {category_id} twice")]
    DuplicateCategory { event_id: i64, category_id: i64 },
}

/// Why a [`Snapshot`](crate::Snapshot) could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("event {0} appears twice in the snapshot")]
    DuplicateEvent(i64),
    #[error("hold {lock_id} refers to unknown category {category_id} of event {event_id}")]
    UnknownCategory {
        lock_id: String,
        event_id: i64,
        category_id: i64,
    },
    #[error("hold {0} appears twice")]
    DuplicateLockId(String),
    #[error("hold {lock_id} is {status}; only active and confirmed holds are restored")]
    NotLive { lock_id: String, status: HoldStatus },
    #[error("hold {lock_id} has quantity 0")]
    ZeroQuantity { lock_id: String },
    #[error("user {user_id} has two live holds in category {category_id} of event {event_id}")]
    DuplicateUserHold {
        user_id: String,
        event_id: i64,
        category_id: i64,
    },
}

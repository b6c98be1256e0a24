//! The hold record, its status, and the inputs that create or settle holds.

use serde::{Deserialize, Serialize};

use crate::catalog::CategoryKey;

/// Where a hold is in its life. Only `Active` and `Confirmed` holds are kept by the
/// [`State`](crate::State); the others are reported once, then only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum HoldStatus {
    /// Granted; ends at `expiresAt` unless confirmed, unlocked or settled.
    Active,
    /// An order is being paid for; ends at the order timeout unless settled.
    Confirmed,
    /// Its deadline passed.
    Expired,
    /// Unlocked, its session ended, its order was cancelled or its event was cancelled.
    Released,
    /// Its order completed: the seats are sold.
    Completed,
}

impl HoldStatus {
    /// Whether a hold with this status still takes seats.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Active | Self::Confirmed)
    }
}

impl std::fmt::Display for HoldStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Confirmed => "confirmed",
            Self::Expired => "expired",
            Self::Released => "released",
            Self::Completed => "completed",
        })
    }
}

/// One hold: `quantity` seats of one category for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct Hold {
    /// Unique among live holds: generated when the hold is granted, or chosen by the
    /// caller of [`State::lock_with_id`](crate::State::lock_with_id).
    pub lock_id: String,
    /// The buyer; a user holds at most one hold per category.
    pub user_id: String,
    /// The event's id.
    pub event_id: i64,
    /// The category's id within the event.
    pub category_id: i64,
    /// Seats held.
    pub quantity: u32,
    /// The session that asked for it; [`State::release_session`](crate::State::release_session)
    /// ends its active holds.
    pub session_id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds: the hold deadline while active, the order deadline once confirmed.
    pub expires_at: i64,
    /// Where the hold is in its life.
    pub status: HoldStatus,
}

impl Hold {
    /// The category it holds seats of.
    pub fn key(&self) -> CategoryKey {
        CategoryKey::new(self.event_id, self.category_id)
    }
}

/// A request for a new hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// The buyer asking.
    pub user_id: String,
    /// The connection asking; its end releases the hold while it is active.
    pub session_id: String,
    /// The event's id.
    pub event_id: i64,
    /// The category's id within the event.
    pub category_id: i64,
    /// Seats asked for (at least 1, at most the configured maximum).
    pub quantity: u32,
}

/// An `order_completed` or `order_cancelled` message from the orders service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderMessage {
    /// The orders service's id; a redelivery with an id still remembered (the newest
    /// `recent_capacity`) changes nothing.
    pub order_id: String,
    /// The event's id.
    pub event_id: i64,
    /// The category's id within the event.
    pub category_id: i64,
    /// Seats sold when it completes: the hold's own and free ones, never seats others hold.
    pub quantity: u32,
    /// The buyer whose hold the order settles.
    pub user_id: String,
}

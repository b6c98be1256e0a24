//! The hold record, its status, and the inputs that create or settle holds.

use serde::{Deserialize, Serialize};

use crate::catalog::CategoryKey;

/// Where a hold is in its life. Only `Active` and `Confirmed` holds are kept by the
/// [`State`](crate::State); the others are reported once, then only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
pub struct Hold {
    pub lock_id: String,
    pub user_id: String,
    pub event_id: i64,
    pub category_id: i64,
    pub quantity: u32,
    /// The session that asked for it; [`State::release_session`](crate::State::release_session)
    /// ends its active holds.
    pub session_id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds: the hold deadline while active, the order deadline once confirmed.
    pub expires_at: i64,
    pub status: HoldStatus,
}

impl Hold {
    pub fn key(&self) -> CategoryKey {
        CategoryKey::new(self.event_id, self.category_id)
    }
}

/// A request for a new hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    pub user_id: String,
    pub session_id: String,
    pub event_id: i64,
    pub category_id: i64,
    pub quantity: u32,
}

/// An `order_completed` or `order_cancelled` message from the orders service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderMessage {
    pub order_id: String,
    pub event_id: i64,
    pub category_id: i64,
    pub quantity: u32,
    pub user_id: String,
}

//! What `/realtime` clients receive, as types: the ticket contract's events and acks
//! (the same payloads on `/ws` and SSE). The TypeScript in `clients/typescript/` is
//! generated from these (`crate::contract`) and from the `tickets` crate's `Hold`.
//!
//! Fields are declared in the order of their JSON names: the payloads were `json!`
//! objects (keys sorted) before they were types, and the wire stays byte-identical.

use serde::Serialize;
use tickets::Hold;
use ts_rs::TS;

/// `connected`, on connecting to `/realtime`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeConnected {
    /// `Connected to realtime service`, or `Session recovered` after a recovery.
    pub message: String,
    pub session_id: String,
    pub success: bool,
}

/// `joined-event-room` and `left-event-room` (and their acks).
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct EventRoomAnswer {
    pub event_id: i64,
    pub message: String,
    pub success: bool,
}

/// `lock-tickets-response`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct LockAnswer {
    /// Seats of the category that can be held now (`null` when unknown).
    pub available_tickets: Option<u32>,
    /// Granted: when the hold ends unless an order confirms it (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub expires_at: Option<i64>,
    /// Granted: the hold's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub lock_id: Option<String>,
    pub message: String,
    pub success: bool,
}

/// `unlock-tickets-response`, and the ack of an event refused as bad input.
#[derive(Debug, Clone, Serialize, TS)]
pub struct Outcome {
    pub message: String,
    pub success: bool,
}

/// `my-locks-response`.
#[derive(Debug, Clone, Serialize, TS)]
pub struct MyLocks {
    pub locks: Vec<Hold>,
    /// Only on a failure, with `success: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub success: Option<bool>,
}

/// `heartbeat-response`.
#[derive(Debug, Clone, Serialize, TS)]
pub struct HeartbeatAnswer {
    pub success: bool,
    pub timestamp: i64,
}

/// `error`: an event refused as bad input.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ErrorEvent {
    pub message: String,
}

/// `availability-update`: one category's seats now.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct AvailabilityUpdate {
    pub available_tickets: u32,
    pub category_id: i64,
    pub event_id: i64,
    pub locked_tickets: u32,
    pub timestamp: i64,
    pub total_tickets: u32,
    /// With the shared (Redis) authority: the category's version; a client may drop an
    /// update older than one it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub version: Option<u64>,
}

/// How an order ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Completed,
    Cancelled,
}

/// `order-completed` and `order-cancelled`, to the order's user.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct OrderOutcome {
    pub category_id: i64,
    pub event_id: i64,
    pub lock_id: String,
    pub message: String,
    pub order_id: String,
    pub quantity: u32,
    pub status: OrderStatus,
    pub success: bool,
    pub timestamp: i64,
    pub user_id: String,
}

//! What `/realtime` clients send, as types: each event's argument by event name
//! ([`RealtimeRequests`]), the same as `data` of a `/ws` `{"event", "data"}` frame. The
//! TypeScript in `clients/typescript/` is generated from these (`crate::contract`).
//!
//! They describe what a well-behaved client sends; `realtime`'s field decoding stays the
//! gate (an id may be a number or a string of one, a quantity a whole number within
//! `max_quantity`; anything else is refused with the messages clients have always had).
//!
//! Never: decoding (`realtime`), what the server sends (`wire`).

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// An event's or category's id: a number, or a string of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum Id {
    Number(i64),
    Text(String),
}

/// `join-event-room` and `leave-event-room`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct EventRef {
    pub event_id: Id,
}

/// `lock-tickets`: hold `quantity` seats of a category (for the socket's session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct LockTickets {
    pub event_id: Id,
    pub category_id: Id,
    /// 1 to the server's `max_quantity` (a number, or a string of one).
    pub quantity: Id,
}

/// `unlock-tickets`: release the user's hold in a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct UnlockTickets {
    pub event_id: Id,
    pub category_id: Id,
}

/// The argument of every `/realtime` event, by event name (`null`: the event takes
/// none). Not a payload itself: a map for typing an emitter.
#[derive(Debug, Clone, Serialize, TS)]
pub struct RealtimeRequests {
    #[serde(rename = "join-event-room")]
    pub join_event_room: EventRef,
    #[serde(rename = "leave-event-room")]
    pub leave_event_room: EventRef,
    #[serde(rename = "lock-tickets")]
    pub lock_tickets: LockTickets,
    #[serde(rename = "unlock-tickets")]
    pub unlock_tickets: UnlockTickets,
    #[serde(rename = "get-my-locks")]
    pub get_my_locks: (),
    pub heartbeat: (),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_have_the_contract_s_field_names() {
        let lock = LockTickets {
            event_id: Id::Number(1),
            category_id: Id::Text("2".into()),
            quantity: Id::Number(3),
        };
        assert_eq!(
            serde_json::to_value(&lock).expect("serializes"),
            json!({"eventId": 1, "categoryId": "2", "quantity": 3})
        );
        let parsed: UnlockTickets =
            serde_json::from_value(json!({"eventId": "1", "categoryId": 2})).expect("parses");
        assert_eq!(parsed.event_id, Id::Text("1".into()));
    }
}

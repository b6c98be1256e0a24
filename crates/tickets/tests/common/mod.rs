//! Fixtures shared by the integration tests.
#![allow(dead_code)] // each test file uses a different subset

pub(crate) mod ops;

use tickets::{Category, Event, HoldConfig, HoldRequest, OrderMessage, State};

pub(crate) const EVENT: i64 = 1;
pub(crate) const VIP: i64 = 10;
pub(crate) const FLOOR: i64 = 20;
pub(crate) const T0: i64 = 1_700_000_000_000;
pub(crate) const MIN: i64 = 60_000;

pub(crate) fn category(id: i64, seats: u32) -> Category {
    Category {
        id,
        name: format!("cat {id}"),
        price: 49.5,
        total_seats: seats,
        available_seats: seats,
    }
}

/// Event 1 with VIP (`vip` seats) and FLOOR (`floor` seats), default config.
pub(crate) fn state_with(vip: u32, floor: u32) -> State {
    state_with_config(HoldConfig::default(), vip, floor)
}

pub(crate) fn state_with_config(config: HoldConfig, vip: u32, floor: u32) -> State {
    let mut state = State::new(config).expect("valid config");
    let _ = state
        .upsert_event(Event {
            id: EVENT,
            name: "Concert".into(),
            categories: vec![category(VIP, vip), category(FLOOR, floor)],
        })
        .expect("valid event");
    state
}

pub(crate) fn req(user: &str, category_id: i64, quantity: u32) -> HoldRequest {
    HoldRequest {
        user_id: user.into(),
        session_id: format!("sess-{user}"),
        event_id: EVENT,
        category_id,
        quantity,
    }
}

pub(crate) fn order(order_id: &str, user: &str, category_id: i64, quantity: u32) -> OrderMessage {
    OrderMessage {
        order_id: order_id.into(),
        event_id: EVENT,
        category_id,
        quantity,
        user_id: user.into(),
    }
}

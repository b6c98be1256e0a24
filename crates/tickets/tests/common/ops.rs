//! The random operation sequences of the model-based tests, shared with the Redis store's
//! model-agreement test (`crates/switchboard/tests/holds_model.rs` includes this file).

use proptest::prelude::*;
use tickets::HoldConfig;

use super::MIN;

pub(crate) const CATEGORIES: [(i64, u32); 3] = [(1, 3), (2, 5), (3, 8)];
pub(crate) const USERS: usize = 4;
pub(crate) const MAX_QTY: u32 = 4;
pub(crate) const TTL: i64 = 5 * MIN;

pub(crate) fn config() -> HoldConfig {
    HoldConfig {
        max_quantity: MAX_QTY,
        hold_ttl_ms: TTL,
        order_timeout_ms: 15 * MIN,
        recent_capacity: 8,
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Lock {
        user: usize,
        session: usize,
        cat: usize,
        qty: u32,
    },
    Unlock {
        user: usize,
        cat: usize,
    },
    Confirm {
        pick: usize,
    },
    Complete {
        user: usize,
        cat: usize,
        qty: u32,
        order: u8,
    },
    Cancel {
        user: usize,
        cat: usize,
        order: u8,
    },
    Advance {
        ms: i64,
    },
    /// What a driver does: sleep exactly until the next deadline.
    AdvanceToDeadline,
    Capacity {
        cat: usize,
        total: u32,
        avail: u32,
    },
    ReleaseSession {
        user: usize,
        session: usize,
    },
    EventCancelled,
    Restore,
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let cat = 0..CATEGORIES.len();
    prop_oneof![
        6 => (user.clone(), 0..2usize, cat.clone(), 0..=MAX_QTY + 1)
            .prop_map(|(user, session, cat, qty)| Op::Lock { user, session, cat, qty }),
        2 => (user.clone(), cat.clone()).prop_map(|(user, cat)| Op::Unlock { user, cat }),
        2 => any::<usize>().prop_map(|pick| Op::Confirm { pick }),
        2 => (user.clone(), cat.clone(), 0..=MAX_QTY + 1, 0..12u8)
            .prop_map(|(user, cat, qty, order)| Op::Complete { user, cat, qty, order }),
        1 => (user.clone(), cat.clone(), 0..12u8)
            .prop_map(|(user, cat, order)| Op::Cancel { user, cat, order }),
        3 => (0..8 * MIN).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::AdvanceToDeadline),
        1 => (cat.clone(), 0..12u32, 0..12u32).prop_map(|(cat, total, avail)| Op::Capacity {
            cat,
            total,
            avail: avail.min(total),
        }),
        1 => (user, 0..2usize).prop_map(|(user, session)| Op::ReleaseSession { user, session }),
        1 => Just(Op::EventCancelled),
        1 => Just(Op::Restore),
    ]
}

//! One test per rule and per refusal of the hold state machine.

mod common;

use common::*;
use tickets::{
    Availability, CatalogError, CategoryKey, Change, ConfigError, ConfirmError, Hold, HoldConfig,
    HoldStatus, LockError, OrderEffect, OrderError, OrderKind, RestoreError, Snapshot, State,
    UnlockError,
};

fn avail(state: &State, category_id: i64) -> Availability {
    state
        .availability(EVENT, category_id)
        .expect("known category")
}

fn lock(state: &mut State, user: &str, category_id: i64, quantity: u32, now: i64) -> Hold {
    state
        .lock(req(user, category_id, quantity), now)
        .expect("lock granted")
        .value
}

// ----- config -------------------------------------------------------------------------

#[test]
fn default_config_is_the_seed_contract() {
    let c = HoldConfig::default();
    assert_eq!(c.max_quantity, 10);
    assert_eq!(c.hold_ttl_ms, 5 * MIN);
    assert_eq!(c.order_timeout_ms, 15 * MIN);
}

#[test]
fn bad_configs_are_refused() {
    let base = HoldConfig::default();
    let cases = [
        (
            HoldConfig {
                max_quantity: 0,
                ..base.clone()
            },
            ConfigError::ZeroMaxQuantity,
        ),
        (
            HoldConfig {
                hold_ttl_ms: 0,
                ..base.clone()
            },
            ConfigError::NonPositiveHoldTtl(0),
        ),
        (
            HoldConfig {
                order_timeout_ms: -1,
                ..base.clone()
            },
            ConfigError::NonPositiveOrderTimeout(-1),
        ),
        (
            HoldConfig {
                recent_capacity: 0,
                ..base.clone()
            },
            ConfigError::ZeroRecentCapacity,
        ),
    ];
    for (config, want) in cases {
        assert_eq!(State::new(config).err(), Some(want));
    }
}

// ----- lock ---------------------------------------------------------------------------

#[test]
fn lock_grants_a_hold_and_reports_the_category() {
    let mut s = state_with(5, 100);
    let out = s.lock(req("alice", VIP, 2), T0).expect("granted");
    let hold = &out.value;
    assert_eq!(hold.status, HoldStatus::Active);
    assert_eq!(hold.quantity, 2);
    assert_eq!(hold.created_at, T0);
    assert_eq!(hold.expires_at, T0 + 5 * MIN);
    assert_eq!(hold.session_id, "sess-alice");
    assert!(hold.lock_id.starts_with("lock_"));
    assert_eq!(out.touched, vec![CategoryKey::new(EVENT, VIP)]);
    assert_eq!(out.changes, vec![Change::HoldCreated(hold.clone())]);
    assert_eq!(
        avail(&s, VIP),
        Availability {
            event_id: EVENT,
            category_id: VIP,
            available_tickets: 3,
            locked_tickets: 2,
            total_tickets: 5
        }
    );
    assert_eq!(s.holds_of_user("alice"), vec![hold.clone()]);
    assert_eq!(s.next_deadline(), Some(T0 + 5 * MIN));
}

#[test]
fn generated_lock_ids_are_unique() {
    let mut s = state_with(100, 100);
    let a = lock(&mut s, "a", VIP, 1, T0);
    let b = lock(&mut s, "b", VIP, 1, T0);
    let c = lock(&mut s, "a", FLOOR, 1, T0);
    assert_ne!(a.lock_id, b.lock_id);
    assert_ne!(b.lock_id, c.lock_id);
    assert_ne!(a.lock_id, c.lock_id);
}

#[test]
fn lock_with_caller_id_uses_it_and_refuses_duplicates() {
    let mut s = state_with(10, 10);
    let hold = s
        .lock_with_id("node1-7".into(), req("a", VIP, 1), T0)
        .expect("granted")
        .value;
    assert_eq!(hold.lock_id, "node1-7");
    let err = s.lock_with_id("node1-7".into(), req("b", VIP, 1), T0);
    assert_eq!(err, Err(LockError::DuplicateLockId("node1-7".into())));
}

#[test]
fn quantity_zero_is_refused() {
    let mut s = state_with(10, 10);
    assert_eq!(
        s.lock(req("a", VIP, 0), T0),
        Err(LockError::InvalidQuantity {
            requested: 0,
            max: 10
        })
    );
}

#[test]
fn quantity_above_the_maximum_is_refused() {
    let mut s = state_with(u32::MAX, 10);
    for q in [11, u32::MAX] {
        let err = s.lock(req("a", VIP, q), T0).expect_err("too many");
        assert_eq!(
            err,
            LockError::InvalidQuantity {
                requested: q,
                max: 10
            }
        );
        assert!(err.to_string().contains("between 1 and 10"));
    }
    // The maximum itself is fine, and it is configurable.
    assert!(s.lock(req("a", VIP, 10), T0).is_ok());
    let mut s = state_with_config(
        HoldConfig {
            max_quantity: 2,
            ..HoldConfig::default()
        },
        10,
        10,
    );
    assert!(matches!(
        s.lock(req("a", VIP, 3), T0),
        Err(LockError::InvalidQuantity { max: 2, .. })
    ));
}

#[test]
fn unknown_event_and_category_are_refused() {
    let mut s = state_with(10, 10);
    let mut r = req("a", VIP, 1);
    r.event_id = 99;
    assert_eq!(s.lock(r, T0), Err(LockError::UnknownEvent(99)));
    assert_eq!(
        s.lock(req("a", 77, 1), T0),
        Err(LockError::UnknownCategory {
            event_id: EVENT,
            category_id: 77
        })
    );
}

#[test]
fn second_hold_in_the_same_category_is_refused_but_another_category_is_fine() {
    let mut s = state_with(10, 10);
    let first = lock(&mut s, "a", VIP, 1, T0);
    let err = s.lock(req("a", VIP, 1), T0).expect_err("second hold");
    assert_eq!(
        err,
        LockError::AlreadyHolding {
            lock_id: first.lock_id.clone()
        }
    );
    assert!(err.to_string().contains("already hold"));
    assert!(s.lock(req("a", FLOOR, 1), T0).is_ok());
    // Also while confirmed.
    let _ = s.confirm(&first.lock_id, T0).expect("confirmed");
    assert!(matches!(
        s.lock(req("a", VIP, 1), T0),
        Err(LockError::AlreadyHolding { .. })
    ));
}

#[test]
fn not_enough_seats_reports_what_is_available() {
    let mut s = state_with(5, 10);
    let _ = lock(&mut s, "a", VIP, 3, T0);
    let err = s.lock(req("b", VIP, 3), T0).expect_err("only 2 left");
    assert_eq!(
        err,
        LockError::NotEnoughSeats {
            requested: 3,
            available: 2
        }
    );
    assert!(err.to_string().contains("available 2"));
    assert!(s.lock(req("b", VIP, 2), T0).is_ok());
    assert_eq!(avail(&s, VIP).available_tickets, 0);
}

#[test]
fn refusals_change_nothing() {
    let mut s = state_with(1, 10);
    let before = s.snapshot();
    assert!(s.lock(req("a", VIP, 2), T0).is_err());
    assert!(s.lock(req("a", VIP, 0), T0).is_err());
    assert!(s.unlock("a", EVENT, VIP).is_err());
    assert!(s.confirm("nope", T0).is_err());
    assert!(s.order_completed(&order("o1", "a", VIP, 1)).is_err());
    assert_eq!(s.snapshot(), before);
}

#[test]
fn thousand_buyers_racing_for_a_hundred_seats_get_exactly_a_hundred() {
    let mut s = state_with(100, 0);
    let mut granted = 0u32;
    for i in 0..1000 {
        match s.lock(req(&format!("buyer{i}"), VIP, 1), T0 + i) {
            Ok(out) => granted += out.value.quantity,
            Err(e) => assert_eq!(
                e,
                LockError::NotEnoughSeats {
                    requested: 1,
                    available: 0
                }
            ),
        }
    }
    assert_eq!(granted, 100);
    let a = avail(&s, VIP);
    assert_eq!((a.available_tickets, a.locked_tickets), (0, 100));
    assert_eq!(s.stats().active_locks, 100);
}

// ----- unlock and sessions ------------------------------------------------------------

#[test]
fn unlock_releases_the_users_hold() {
    let mut s = state_with(5, 5);
    let hold = lock(&mut s, "a", VIP, 2, T0);
    let out = s.unlock("a", EVENT, VIP).expect("unlocked");
    assert_eq!(out.value.lock_id, hold.lock_id);
    assert_eq!(out.value.status, HoldStatus::Released);
    assert_eq!(out.touched, vec![CategoryKey::new(EVENT, VIP)]);
    assert_eq!(avail(&s, VIP).available_tickets, 5);
    assert!(s.holds_of_user("a").is_empty());
    assert_eq!(s.next_deadline(), None);
    // The user may hold again.
    assert!(s.lock(req("a", VIP, 1), T0).is_ok());
}

#[test]
fn unlock_without_a_hold_is_refused() {
    let mut s = state_with(5, 5);
    let _ = lock(&mut s, "b", VIP, 1, T0);
    let err = s.unlock("a", EVENT, VIP).expect_err("a holds nothing");
    assert_eq!(
        err,
        UnlockError::NoHold {
            event_id: EVENT,
            category_id: VIP
        }
    );
}

#[test]
fn unlock_of_a_confirmed_hold_is_refused() {
    let mut s = state_with(5, 5);
    let hold = lock(&mut s, "a", VIP, 1, T0);
    let _ = s.confirm(&hold.lock_id, T0).expect("confirmed");
    assert_eq!(
        s.unlock("a", EVENT, VIP),
        Err(UnlockError::Confirmed {
            lock_id: hold.lock_id
        })
    );
}

#[test]
fn release_session_releases_its_active_holds_only() {
    let mut s = state_with(5, 5);
    let vip = lock(&mut s, "a", VIP, 1, T0);
    let floor = lock(&mut s, "a", FLOOR, 2, T0);
    let other = lock(&mut s, "b", VIP, 1, T0);
    let _ = s.confirm(&floor.lock_id, T0).expect("confirmed");
    let out = s.release_session("sess-a");
    assert_eq!(out.value.len(), 1);
    assert_eq!(out.value[0].lock_id, vip.lock_id);
    assert_eq!(out.value[0].status, HoldStatus::Released);
    assert_eq!(out.touched, vec![CategoryKey::new(EVENT, VIP)]);
    assert!(s.hold(&floor.lock_id).is_some(), "confirmed hold survives");
    assert!(s.hold(&other.lock_id).is_some(), "other session untouched");
    assert!(s.release_session("sess-a").is_noop());
    assert!(s.release_session("unknown").is_noop());
}

// ----- expiry -------------------------------------------------------------------------

#[test]
fn holds_expire_at_their_own_deadline() {
    let mut s = state_with(5, 5);
    let a = lock(&mut s, "a", VIP, 1, T0);
    let b = lock(&mut s, "b", VIP, 1, T0 + MIN);
    assert_eq!(s.next_deadline(), Some(a.expires_at));
    assert!(s.expire_due(a.expires_at - 1).is_noop());
    let out = s.expire_due(a.expires_at);
    assert_eq!(out.value.len(), 1);
    assert_eq!(out.value[0].lock_id, a.lock_id);
    assert_eq!(out.value[0].status, HoldStatus::Expired);
    assert_eq!(
        out.changes,
        vec![Change::HoldStatus {
            lock_id: a.lock_id.clone(),
            status: HoldStatus::Expired,
            expires_at: a.expires_at
        }]
    );
    assert_eq!(s.next_deadline(), Some(b.expires_at));
    let out = s.expire_due(T0 + 60 * MIN);
    assert_eq!(out.value.len(), 1);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(avail(&s, VIP).available_tickets, 5);
    assert_eq!(s.stats().locks_by_status.expired, 2);
}

#[test]
fn hold_ttl_is_configurable() {
    let mut s = state_with_config(
        HoldConfig {
            hold_ttl_ms: 1000,
            ..HoldConfig::default()
        },
        5,
        5,
    );
    let hold = lock(&mut s, "a", VIP, 1, T0);
    assert_eq!(hold.expires_at, T0 + 1000);
}

// ----- confirm ------------------------------------------------------------------------

#[test]
fn confirm_moves_the_deadline_to_the_order_timeout() {
    let mut s = state_with(5, 5);
    let hold = lock(&mut s, "a", VIP, 2, T0);
    let out = s.confirm(&hold.lock_id, T0 + MIN).expect("confirmed");
    assert_eq!(out.value.status, HoldStatus::Confirmed);
    assert_eq!(out.value.expires_at, T0 + 16 * MIN);
    assert!(out.touched.is_empty(), "availability is unchanged");
    assert_eq!(
        out.changes,
        vec![Change::HoldStatus {
            lock_id: hold.lock_id.clone(),
            status: HoldStatus::Confirmed,
            expires_at: T0 + 16 * MIN
        }]
    );
    // The hold timer no longer applies...
    assert!(s.expire_due(T0 + 10 * MIN).is_noop());
    assert_eq!(avail(&s, VIP).locked_tickets, 2);
    // ...the order timeout does.
    let out = s.expire_due(T0 + 16 * MIN);
    assert_eq!(out.value[0].status, HoldStatus::Expired);
    assert_eq!(avail(&s, VIP).locked_tickets, 0);
}

#[test]
fn confirm_is_idempotent() {
    let mut s = state_with(5, 5);
    let hold = lock(&mut s, "a", VIP, 1, T0);
    let first = s.confirm(&hold.lock_id, T0).expect("confirmed");
    let again = s.confirm(&hold.lock_id, T0 + MIN).expect("still confirmed");
    assert!(again.is_noop());
    assert_eq!(again.value, first.value, "deadline not pushed back");
    assert_eq!(s.stats().locks_by_status.confirmed, 1);
}

#[test]
fn confirm_of_unknown_expired_or_released_lock_is_refused() {
    let mut s = state_with(5, 5);
    assert_eq!(
        s.confirm("lock_404", T0),
        Err(ConfirmError::UnknownLock("lock_404".into()))
    );

    let expired = lock(&mut s, "a", VIP, 1, T0);
    // Past its deadline but not swept yet.
    assert_eq!(
        s.confirm(&expired.lock_id, expired.expires_at),
        Err(ConfirmError::Expired(expired.lock_id.clone()))
    );
    let _ = s.expire_due(expired.expires_at);
    let err = s
        .confirm(&expired.lock_id, expired.expires_at)
        .expect_err("expired");
    assert_eq!(err, ConfirmError::Expired(expired.lock_id.clone()));
    assert!(err.to_string().contains("expired"));

    let released = lock(&mut s, "a", VIP, 1, T0 + 10 * MIN);
    let _ = s.unlock("a", EVENT, VIP).expect("unlocked");
    assert_eq!(
        s.confirm(&released.lock_id, T0 + 10 * MIN),
        Err(ConfirmError::Ended {
            lock_id: released.lock_id,
            status: HoldStatus::Released
        })
    );
}

// ----- orders -------------------------------------------------------------------------

#[test]
fn order_completed_sells_the_held_seats() {
    let mut s = state_with(10, 5);
    let hold = lock(&mut s, "a", VIP, 3, T0);
    let _ = lock(&mut s, "b", VIP, 2, T0);
    let _ = s.confirm(&hold.lock_id, T0).expect("confirmed");
    let out = s
        .order_completed(&order("o1", "a", VIP, 3))
        .expect("applied");
    let OrderEffect::Applied(done) = &out.value else {
        panic!("expected Applied, got {:?}", out.value);
    };
    assert_eq!(done.lock_id, hold.lock_id);
    assert_eq!(done.status, HoldStatus::Completed);
    assert_eq!(out.touched, vec![CategoryKey::new(EVENT, VIP)]);
    assert!(out.changes.contains(&Change::SeatsSold {
        event_id: EVENT,
        category_id: VIP,
        quantity: 3,
        available_seats: 7
    }));
    assert!(out.changes.contains(&Change::OrderRecorded {
        order_id: "o1".into(),
        kind: OrderKind::Completed
    }));
    assert_eq!(s.category(EVENT, VIP).map(|c| c.available_seats), Some(7));
    let a = avail(&s, VIP);
    assert_eq!(
        (a.available_tickets, a.locked_tickets, a.total_tickets),
        (5, 2, 10)
    );
    assert!(s.holds_of_user("a").is_empty());
    assert_eq!(s.stats().locks_by_status.completed, 1);
}

#[test]
fn order_completed_works_from_an_active_hold_too() {
    let mut s = state_with(10, 5);
    let _ = lock(&mut s, "a", VIP, 1, T0);
    let out = s
        .order_completed(&order("o1", "a", VIP, 1))
        .expect("applied");
    assert!(matches!(out.value, OrderEffect::Applied(_)));
    assert_eq!(s.category(EVENT, VIP).map(|c| c.available_seats), Some(9));
}

#[test]
fn duplicate_order_id_has_no_second_effect() {
    let mut s = state_with(10, 5);
    let _ = lock(&mut s, "a", VIP, 2, T0);
    let _ = s
        .order_completed(&order("o1", "a", VIP, 2))
        .expect("applied");
    // The user holds again; a redelivered o1 must not sell these seats.
    let _ = lock(&mut s, "a", VIP, 2, T0);
    let again = s
        .order_completed(&order("o1", "a", VIP, 2))
        .expect("duplicate is not an error");
    assert_eq!(
        again.value,
        OrderEffect::AlreadyApplied {
            kind: OrderKind::Completed
        }
    );
    assert!(again.is_noop());
    assert_eq!(s.category(EVENT, VIP).map(|c| c.available_seats), Some(8));
    assert_eq!(s.holds_of_user("a").len(), 1);
    // A cancellation under the same id is also a duplicate.
    let cancel = s
        .order_cancelled(&order("o1", "a", VIP, 2))
        .expect("duplicate");
    assert!(cancel.is_noop());
}

#[test]
fn order_for_nothing_is_refused() {
    let mut s = state_with(10, 5);
    let _ = lock(&mut s, "b", VIP, 1, T0);
    let err = s
        .order_completed(&order("o1", "a", VIP, 1))
        .expect_err("a holds nothing");
    assert!(matches!(err, OrderError::NoMatchingHold { .. }));
    assert_eq!(s.category(EVENT, VIP).map(|c| c.available_seats), Some(10));
    assert!(matches!(
        s.order_cancelled(&order("o2", "a", VIP, 1)),
        Err(OrderError::NoMatchingHold { .. })
    ));
    // A refused order is not remembered: it can apply once the hold exists.
    let _ = lock(&mut s, "a", VIP, 1, T0);
    assert!(s.order_completed(&order("o1", "a", VIP, 1)).is_ok());
}

#[test]
fn order_with_zero_quantity_is_refused() {
    let mut s = state_with(10, 5);
    let _ = lock(&mut s, "a", VIP, 1, T0);
    assert_eq!(
        s.order_completed(&order("o1", "a", VIP, 0)),
        Err(OrderError::InvalidQuantity {
            order_id: "o1".into()
        })
    );
}

#[test]
fn order_never_sells_seats_held_by_others() {
    let mut s = state_with(4, 5);
    let _ = lock(&mut s, "a", VIP, 1, T0);
    let _ = lock(&mut s, "b", VIP, 2, T0);
    // a may buy its 1 held seat plus the 1 free seat, not b's.
    assert_eq!(
        s.order_completed(&order("o1", "a", VIP, 3)),
        Err(OrderError::NotEnoughSeats {
            order_id: "o1".into(),
            requested: 3,
            available: 2
        })
    );
    assert!(s.order_completed(&order("o1", "a", VIP, 2)).is_ok());
    let a = avail(&s, VIP);
    assert_eq!((a.available_tickets, a.locked_tickets), (0, 2));
}

#[test]
fn order_cancelled_releases_the_hold() {
    let mut s = state_with(10, 5);
    let hold = lock(&mut s, "a", VIP, 2, T0);
    let _ = s.confirm(&hold.lock_id, T0).expect("confirmed");
    let out = s
        .order_cancelled(&order("o1", "a", VIP, 2))
        .expect("applied");
    let OrderEffect::Applied(released) = out.value else {
        panic!("expected Applied");
    };
    assert_eq!(released.status, HoldStatus::Released);
    assert_eq!(avail(&s, VIP).available_tickets, 10);
    assert_eq!(s.category(EVENT, VIP).map(|c| c.available_seats), Some(10));
    assert!(
        s.order_cancelled(&order("o1", "a", VIP, 2))
            .expect("dup")
            .is_noop()
    );
}

#[test]
fn processed_order_ids_are_bounded() {
    let mut s = state_with_config(
        HoldConfig {
            recent_capacity: 2,
            ..HoldConfig::default()
        },
        10,
        10,
    );
    for i in 0..3 {
        let _ = lock(&mut s, "a", VIP, 1, T0);
        let _ = s
            .order_completed(&order(&format!("o{i}"), "a", VIP, 1))
            .expect("applied");
    }
    assert_eq!(s.snapshot().processed_orders.len(), 2);
    // o0 was forgotten; without a hold it still cannot sell anything.
    assert!(matches!(
        s.order_completed(&order("o0", "a", VIP, 1)),
        Err(OrderError::NoMatchingHold { .. })
    ));
    assert_eq!(s.category(EVENT, VIP).map(|c| c.available_seats), Some(7));
}

// ----- event cancelled and catalog ----------------------------------------------------

#[test]
fn event_cancelled_releases_all_its_holds() {
    let mut s = state_with(10, 10);
    let _ = s
        .upsert_event(tickets::Event {
            id: 2,
            name: "Other".into(),
            categories: vec![category(VIP, 10)],
        })
        .expect("valid");
    let a = lock(&mut s, "a", VIP, 1, T0);
    let _ = lock(&mut s, "b", FLOOR, 2, T0);
    let mut other = req("a", VIP, 1);
    other.event_id = 2;
    let kept = s.lock(other, T0).expect("granted").value;
    let _ = s.confirm(&a.lock_id, T0).expect("confirmed");
    let out = s.event_cancelled(EVENT);
    assert_eq!(out.value.len(), 2);
    assert!(out.value.iter().all(|h| h.status == HoldStatus::Released));
    assert_eq!(
        out.touched,
        vec![CategoryKey::new(EVENT, VIP), CategoryKey::new(EVENT, FLOOR)]
    );
    assert_eq!(s.holds().count(), 1);
    assert!(s.hold(&kept.lock_id).is_some());
    assert!(s.event_cancelled(99).is_noop());
}

#[test]
fn capacity_change_updates_the_category() {
    let mut s = state_with(10, 10);
    let _ = lock(&mut s, "a", VIP, 4, T0);
    let out = s.change_capacity(EVENT, VIP, 20, 15).expect("valid");
    assert_eq!(out.touched, vec![CategoryKey::new(EVENT, VIP)]);
    assert_eq!(
        out.value,
        Availability {
            event_id: EVENT,
            category_id: VIP,
            available_tickets: 11,
            locked_tickets: 4,
            total_tickets: 20
        }
    );
    assert!(matches!(
        out.changes.as_slice(),
        [Change::CategoryUpserted { event_id: EVENT, category }]
            if category.total_seats == 20 && category.available_seats == 15
    ));
}

#[test]
fn capacity_shrinking_below_holds_keeps_them_and_shows_zero() {
    let mut s = state_with(10, 10);
    let _ = lock(&mut s, "a", VIP, 4, T0);
    let out = s.change_capacity(EVENT, VIP, 10, 2).expect("valid");
    assert_eq!(out.value.available_tickets, 0);
    assert_eq!(out.value.locked_tickets, 4);
    assert!(matches!(
        s.lock(req("b", VIP, 1), T0),
        Err(LockError::NotEnoughSeats { available: 0, .. })
    ));
    // The holder cannot buy more than exist.
    assert!(matches!(
        s.order_completed(&order("o1", "a", VIP, 4)),
        Err(OrderError::NotEnoughSeats { available: 2, .. })
    ));
}

#[test]
fn catalog_refusals() {
    let mut s = state_with(10, 10);
    assert_eq!(
        s.change_capacity(99, VIP, 1, 1).err(),
        Some(CatalogError::UnknownEvent(99))
    );
    assert_eq!(
        s.change_capacity(EVENT, 77, 1, 1).err(),
        Some(CatalogError::UnknownCategory {
            event_id: EVENT,
            category_id: 77
        })
    );
    assert!(matches!(
        s.change_capacity(EVENT, VIP, 5, 6),
        Err(CatalogError::AvailableExceedsTotal { .. })
    ));
    assert_eq!(
        s.upsert_category(99, category(1, 1)).err(),
        Some(CatalogError::UnknownEvent(99))
    );
    let before = s.catalog();
    let bad = tickets::Event {
        id: EVENT,
        name: "renamed".into(),
        categories: vec![category(30, 5), category(30, 5)],
    };
    assert!(matches!(
        s.upsert_event(bad),
        Err(CatalogError::DuplicateCategory { .. })
    ));
    assert_eq!(s.catalog(), before, "a refused upsert changes nothing");
}

#[test]
fn upsert_category_adds_and_replaces() {
    let mut s = state_with(10, 10);
    let out = s.upsert_category(EVENT, category(30, 7)).expect("valid");
    assert_eq!(out.touched, vec![CategoryKey::new(EVENT, 30)]);
    assert_eq!(avail(&s, 30).available_tickets, 7);
    let _ = s.upsert_category(EVENT, category(30, 3)).expect("valid");
    assert_eq!(avail(&s, 30).total_tickets, 3);
    assert_eq!(s.catalog()[0].categories.len(), 3);
}

// ----- stats, serialization, snapshot -------------------------------------------------

#[test]
fn stats_count_live_and_ended_holds() {
    let mut s = state_with(10, 10);
    let a = lock(&mut s, "a", VIP, 1, T0);
    let _ = lock(&mut s, "a", FLOOR, 1, T0);
    let _ = lock(&mut s, "b", VIP, 1, T0);
    let _ = lock(&mut s, "c", VIP, 1, T0 + MIN);
    let _ = s.confirm(&a.lock_id, T0).expect("confirmed");
    let _ = s.unlock("b", EVENT, VIP).expect("unlocked");
    let _ = s.expire_due(T0 + 5 * MIN);
    let st = s.stats();
    assert_eq!(st.locks_by_status.active, 1); // c
    assert_eq!(st.locks_by_status.confirmed, 1); // a/VIP
    assert_eq!(st.locks_by_status.released, 1); // b
    assert_eq!(st.locks_by_status.expired, 1); // a/FLOOR
    assert_eq!(st.active_locks, 2);
    assert_eq!(st.total_locks, 4);
    assert_eq!(st.users_with_locks, 2);
    assert_eq!(st.categories_with_locks, 1);
}

#[test]
fn serde_shapes_match_the_wire() {
    let hold = Hold {
        lock_id: "lock_1_5".into(),
        user_id: "u".into(),
        event_id: 1,
        category_id: 2,
        quantity: 3,
        session_id: "s".into(),
        created_at: 5,
        expires_at: 6,
        status: HoldStatus::Confirmed,
    };
    let json = serde_json::to_value(&hold).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "lockId": "lock_1_5", "userId": "u", "eventId": 1, "categoryId": 2,
            "quantity": 3, "sessionId": "s", "createdAt": 5, "expiresAt": 6,
            "status": "confirmed"
        })
    );
    let change = Change::HoldStatus {
        lock_id: "lock_1_5".into(),
        status: HoldStatus::Expired,
        expires_at: 6,
    };
    assert_eq!(
        serde_json::to_value(&change).expect("serializes"),
        serde_json::json!({"type": "holdStatus", "lockId": "lock_1_5", "status": "expired", "expiresAt": 6})
    );
    let a = Availability {
        event_id: 1,
        category_id: 2,
        available_tickets: 3,
        locked_tickets: 4,
        total_tickets: 7,
    };
    assert_eq!(
        serde_json::to_value(a).expect("serializes"),
        serde_json::json!({"eventId": 1, "categoryId": 2, "availableTickets": 3, "lockedTickets": 4, "totalTickets": 7})
    );
    let stats = serde_json::to_value(State::new(HoldConfig::default()).expect("valid").stats())
        .expect("serializes");
    assert!(stats["locksByStatus"]["expired"].is_u64());
    assert!(stats["usersWithLocks"].is_u64());
}

#[test]
fn snapshot_round_trips() {
    let mut s = state_with(10, 10);
    let a = lock(&mut s, "a", VIP, 2, T0);
    let _ = lock(&mut s, "b", FLOOR, 1, T0);
    let _ = s.confirm(&a.lock_id, T0).expect("confirmed");
    let _ = lock(&mut s, "c", VIP, 1, T0);
    let _ = s
        .order_completed(&order("o1", "c", VIP, 1))
        .expect("applied");
    let snap = s.snapshot();
    let json = serde_json::to_string(&snap).expect("serializes");
    let parsed: Snapshot = serde_json::from_str(&json).expect("parses");
    assert_eq!(parsed, snap);
    let mut r = State::restore(HoldConfig::default(), parsed).expect("restores");
    assert_eq!(r.snapshot(), snap);
    assert_eq!(r.stats(), s.stats());
    assert_eq!(r.availability(EVENT, VIP), s.availability(EVENT, VIP));
    assert_eq!(r.next_deadline(), s.next_deadline());
    // Idempotency survives the restart, and new lock ids do not collide.
    assert!(
        r.order_completed(&order("o1", "c", VIP, 1))
            .expect("dup")
            .is_noop()
    );
    let fresh = lock(&mut r, "d", VIP, 1, T0);
    assert!(s.hold(&fresh.lock_id).is_none());
}

#[test]
fn restore_rejects_inconsistent_snapshots() {
    let mut s = state_with(10, 10);
    let a = lock(&mut s, "a", VIP, 1, T0);
    let good = s.snapshot();

    let mut dup = good.clone();
    dup.holds.push(a.clone());
    assert!(matches!(
        State::restore(HoldConfig::default(), dup),
        Err(RestoreError::DuplicateLockId(_))
    ));

    let mut second = good.clone();
    second.holds.push(Hold {
        lock_id: "x".into(),
        ..a.clone()
    });
    assert!(matches!(
        State::restore(HoldConfig::default(), second),
        Err(RestoreError::DuplicateUserHold { .. })
    ));

    let mut dead = good.clone();
    dead.holds[0].status = HoldStatus::Expired;
    assert!(matches!(
        State::restore(HoldConfig::default(), dead),
        Err(RestoreError::NotLive { .. })
    ));

    let mut orphan = good.clone();
    orphan.holds[0].category_id = 77;
    assert!(matches!(
        State::restore(HoldConfig::default(), orphan),
        Err(RestoreError::UnknownCategory { .. })
    ));

    let mut twice = good.clone();
    twice.events.push(twice.events[0].clone());
    assert!(matches!(
        State::restore(HoldConfig::default(), twice),
        Err(RestoreError::DuplicateEvent(EVENT))
    ));

    assert!(State::restore(HoldConfig::default(), Snapshot::default()).is_ok());
}

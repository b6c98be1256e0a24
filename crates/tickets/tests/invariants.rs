//! Property test: random operation sequences keep every invariant of the hold rules, and
//! the change records alone are enough to mirror the state (what a store relies on); a
//! twin state without change records (holds kept in memory only) ends every step the same.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::ops::*;
use common::*;
use proptest::prelude::*;
use tickets::{
    Availability, Category, CategoryKey, Change, Event, Hold, HoldStatus, LockError, OrderEffect,
    Outcome, State,
};

/// What a store would hold if it only ever applied change records.
#[derive(Debug, Default)]
struct Mirror {
    holds: BTreeMap<String, Hold>,
    categories: BTreeMap<CategoryKey, Category>,
    ended: BTreeMap<&'static str, u64>,
}

impl Mirror {
    fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::EventUpserted { .. } | Change::OrderRecorded { .. } => {}
                Change::CategoryUpserted { event_id, category } => {
                    self.categories
                        .insert(CategoryKey::new(*event_id, category.id), category.clone());
                }
                Change::HoldCreated(hold) => {
                    assert!(
                        self.holds
                            .insert(hold.lock_id.clone(), hold.clone())
                            .is_none()
                    );
                }
                Change::HoldStatus {
                    lock_id,
                    status,
                    expires_at,
                } => {
                    if status.is_live() {
                        let hold = self.holds.get_mut(lock_id).expect("status of a known hold");
                        hold.status = *status;
                        hold.expires_at = *expires_at;
                    } else {
                        assert!(self.holds.remove(lock_id).is_some(), "ends a live hold");
                        let name = match status {
                            HoldStatus::Expired => "expired",
                            HoldStatus::Completed => "completed",
                            _ => "released",
                        };
                        *self.ended.entry(name).or_default() += 1;
                    }
                }
                Change::SeatsSold {
                    event_id,
                    category_id,
                    available_seats,
                    ..
                } => {
                    let c = self
                        .categories
                        .get_mut(&CategoryKey::new(*event_id, *category_id))
                        .expect("sold in a known category");
                    c.available_seats = *available_seats;
                }
            }
        }
    }

    fn held(&self, key: CategoryKey) -> u64 {
        self.holds
            .values()
            .filter(|h| h.key() == key)
            .map(|h| u64::from(h.quantity))
            .sum()
    }

    fn available(&self, key: CategoryKey) -> u32 {
        let seats = self.categories.get(&key).map_or(0, |c| c.available_seats);
        u32::try_from(u64::from(seats).saturating_sub(self.held(key))).unwrap_or(u32::MAX)
    }
}

fn keys() -> impl Iterator<Item = CategoryKey> {
    CATEGORIES
        .iter()
        .map(|(id, _)| CategoryKey::new(EVENT, *id))
}

fn availabilities(state: &State) -> BTreeMap<CategoryKey, Availability> {
    keys()
        .map(|k| {
            let a = state
                .availability(k.event_id, k.category_id)
                .expect("known category");
            (k, a)
        })
        .collect()
}

fn user(i: usize) -> String {
    format!("u{i}")
}

struct Run {
    state: State,
    mirror: Mirror,
    now: i64,
    issued: Vec<String>,
    /// Unsold seats per category, from capacity changes and completed orders only.
    seats: BTreeMap<CategoryKey, u32>,
    /// The same operations on a state that keeps no change records.
    bare: State,
}

impl Run {
    fn new() -> Self {
        let mut state = State::new(config()).expect("valid config");
        let event = Event {
            id: EVENT,
            name: "prop".into(),
            categories: CATEGORIES.iter().map(|(id, n)| category(*id, *n)).collect(),
        };
        let mut bare = State::new(config()).expect("valid config");
        bare.set_change_records(false);
        let bare_out = bare.upsert_event(event.clone()).expect("valid event");
        assert!(bare_out.changes.is_empty());
        let out = state.upsert_event(event).expect("valid event");
        let mut mirror = Mirror::default();
        mirror.apply(&out.changes);
        let seats = CATEGORIES
            .iter()
            .map(|(id, n)| (CategoryKey::new(EVENT, *id), *n))
            .collect();
        Self {
            state,
            mirror,
            now: T0,
            issued: Vec::new(),
            seats,
            bare,
        }
    }

    /// Applies `op` to the twin without change records (after `step` applied it to the
    /// state): it must answer the same, record nothing, and end in the same state.
    fn step_bare(&mut self, op: &Op) {
        fn same<T: std::fmt::Debug, E: std::fmt::Debug>(
            out: Result<Outcome<T>, E>,
        ) -> Result<(T, Vec<CategoryKey>), E> {
            out.map(|o| {
                assert!(o.changes.is_empty(), "a state without records recorded");
                (o.value, o.touched)
            })
        }
        let now = self.now;
        let s = &mut self.bare;
        // The answers are formatted only to use them; the snapshots below compare states.
        let _answer = match *op {
            Op::Lock {
                user: u,
                session,
                cat,
                qty,
            } => {
                let key = keys().nth(cat).expect("category index");
                let mut request = req(&user(u), key.category_id, qty);
                request.session_id = format!("s{u}-{session}");
                format!("{:?}", same(s.lock(request, now)))
            }
            Op::Unlock { user: u, cat } => {
                let key = keys().nth(cat).expect("category index");
                format!(
                    "{:?}",
                    same(s.unlock(&user(u), key.event_id, key.category_id))
                )
            }
            Op::Confirm { pick } => {
                if self.issued.is_empty() {
                    return;
                }
                let id = self.issued[pick % self.issued.len()].clone();
                format!("{:?}", same(s.confirm(&id, now)))
            }
            Op::Complete {
                user: u,
                cat,
                qty,
                order: o,
            } => {
                let key = keys().nth(cat).expect("category index");
                let msg = order(&format!("o{o}"), &user(u), key.category_id, qty);
                format!("{:?}", same(s.order_completed(&msg)))
            }
            Op::Cancel {
                user: u,
                cat,
                order: o,
            } => {
                let key = keys().nth(cat).expect("category index");
                let msg = order(&format!("o{o}"), &user(u), key.category_id, 1);
                format!("{:?}", same(s.order_cancelled(&msg)))
            }
            Op::Advance { .. } | Op::AdvanceToDeadline => {
                format!("{:?}", same::<_, ()>(Ok(s.expire_due(now))))
            }
            Op::Capacity { cat, total, avail } => {
                let key = keys().nth(cat).expect("category index");
                format!(
                    "{:?}",
                    same(s.change_capacity(key.event_id, key.category_id, total, avail))
                )
            }
            Op::ReleaseSession { user: u, session } => {
                let out = s.release_session(&format!("s{u}-{session}"));
                format!("{:?}", same::<_, ()>(Ok(out)))
            }
            Op::EventCancelled => format!("{:?}", same::<_, ()>(Ok(s.event_cancelled(EVENT)))),
            Op::Restore => {
                *s = State::restore(config(), s.snapshot()).expect("restores");
                s.set_change_records(false);
                String::new()
            }
        };
        assert_eq!(self.bare.snapshot(), self.state.snapshot(), "after {op:?}");
        assert_eq!(availabilities(&self.bare), availabilities(&self.state));
    }

    fn absorb<T>(&mut self, out: &Outcome<T>, before: &BTreeMap<CategoryKey, Availability>) {
        self.mirror.apply(&out.changes);
        let after = availabilities(&self.state);
        for (key, a) in &after {
            if before.get(key) != Some(a) {
                assert!(out.touched.contains(key), "{key:?} changed but not touched");
            }
        }
    }

    fn step(&mut self, op: &Op) {
        let before = availabilities(&self.state);
        match *op {
            Op::Lock {
                user: u,
                session,
                cat,
                qty,
            } => {
                let key = keys().nth(cat).expect("category index");
                let mut request = req(&user(u), key.category_id, qty);
                request.session_id = format!("s{u}-{session}");
                let existing = self
                    .mirror
                    .holds
                    .values()
                    .find(|h| h.user_id == request.user_id && h.key() == key)
                    .map(|h| h.lock_id.clone());
                let free = self.mirror.available(key);
                let expected = if qty == 0 || qty > MAX_QTY {
                    Err(LockError::InvalidQuantity {
                        requested: qty,
                        max: MAX_QTY,
                    })
                } else if let Some(lock_id) = existing {
                    Err(LockError::AlreadyHolding { lock_id })
                } else if qty > free {
                    Err(LockError::NotEnoughSeats {
                        requested: qty,
                        available: free,
                    })
                } else {
                    Ok(())
                };
                match self.state.lock(request, self.now) {
                    Ok(out) => {
                        assert_eq!(expected, Ok(()));
                        self.issued.push(out.value.lock_id.clone());
                        self.absorb(&out, &before);
                        assert!(self.mirror.held(key) <= u64::from(self.seats[&key]));
                    }
                    Err(e) => assert_eq!(Err(e), expected),
                }
            }
            Op::Unlock { user: u, cat } => {
                let key = keys().nth(cat).expect("category index");
                if let Ok(out) = self.state.unlock(&user(u), key.event_id, key.category_id) {
                    assert_eq!(out.value.status, HoldStatus::Released);
                    self.absorb(&out, &before);
                }
            }
            Op::Confirm { pick } => {
                if self.issued.is_empty() {
                    return;
                }
                let id = self.issued[pick % self.issued.len()].clone();
                let was_live = self.mirror.holds.contains_key(&id);
                match self.state.confirm(&id, self.now) {
                    Ok(out) => {
                        assert!(was_live);
                        assert_eq!(out.value.status, HoldStatus::Confirmed);
                        self.absorb(&out, &before);
                    }
                    Err(_) => assert!(!was_live, "a live hold within its deadline confirms"),
                }
            }
            Op::Complete {
                user: u,
                cat,
                qty,
                order: o,
            } => {
                let key = keys().nth(cat).expect("category index");
                let msg = order(&format!("o{o}"), &user(u), key.category_id, qty);
                if let Ok(out) = self.state.order_completed(&msg) {
                    if let OrderEffect::Applied(hold) = &out.value {
                        assert_eq!(hold.status, HoldStatus::Completed);
                        let seats = self.seats.get_mut(&key).expect("known");
                        *seats = seats
                            .checked_sub(qty)
                            .expect("never sells more than unsold");
                        self.absorb(&out, &before);
                        // Selling never eats into seats held by others.
                        assert!(self.mirror.held(key) <= u64::from(self.seats[&key]));
                    } else {
                        assert!(out.is_noop());
                    }
                }
            }
            Op::Cancel {
                user: u,
                cat,
                order: o,
            } => {
                let key = keys().nth(cat).expect("category index");
                let msg = order(&format!("o{o}"), &user(u), key.category_id, 1);
                if let Ok(out) = self.state.order_cancelled(&msg) {
                    self.absorb(&out, &before);
                }
            }
            Op::Advance { .. } | Op::AdvanceToDeadline => {
                self.now = match *op {
                    Op::Advance { ms } => self.now + ms,
                    _ => self.state.next_deadline().unwrap_or(self.now).max(self.now),
                };
                let out = self.state.expire_due(self.now);
                assert!(out.value.iter().all(|h| h.status == HoldStatus::Expired));
                self.absorb(&out, &before);
                assert!(
                    self.state.holds().all(|h| h.expires_at > self.now),
                    "no hold past its deadline survives expire_due"
                );
            }
            Op::Capacity { cat, total, avail } => {
                let key = keys().nth(cat).expect("category index");
                let out = self
                    .state
                    .change_capacity(key.event_id, key.category_id, total, avail)
                    .expect("valid capacity");
                self.seats.insert(key, avail);
                self.absorb(&out, &before);
            }
            Op::ReleaseSession { user: u, session } => {
                let out = self.state.release_session(&format!("s{u}-{session}"));
                assert!(out.value.iter().all(|h| h.status == HoldStatus::Released));
                self.absorb(&out, &before);
                assert!(
                    self.state
                        .holds()
                        .all(|h| h.session_id != format!("s{u}-{session}")
                            || h.status == HoldStatus::Confirmed)
                );
            }
            Op::EventCancelled => {
                let out = self.state.event_cancelled(EVENT);
                self.absorb(&out, &before);
                assert_eq!(self.state.holds().count(), 0);
            }
            Op::Restore => {
                let snapshot = self.state.snapshot();
                self.state = State::restore(config(), snapshot.clone()).expect("restores");
                assert_eq!(self.state.snapshot(), snapshot);
            }
        }
        self.step_bare(op);
        self.check();
    }

    fn check(&self) {
        let live: Vec<&Hold> = self.state.holds().collect();
        // The change records alone rebuild the live holds and the catalog.
        assert_eq!(
            live.iter().map(|h| (*h).clone()).collect::<Vec<_>>(),
            self.mirror.holds.values().cloned().collect::<Vec<_>>()
        );
        let mut per_user_category = BTreeSet::new();
        for h in &live {
            assert!(h.status.is_live());
            assert!((1..=MAX_QTY).contains(&h.quantity));
            assert!(
                per_user_category.insert((h.user_id.clone(), h.key())),
                "one live hold per user per category"
            );
            if h.status == HoldStatus::Active {
                assert_eq!(h.expires_at, h.created_at + TTL);
            }
        }
        for key in keys() {
            let cat = self
                .state
                .category(key.event_id, key.category_id)
                .expect("known category");
            assert_eq!(cat.available_seats, self.seats[&key], "unsold seats");
            assert!(cat.available_seats <= cat.total_seats);
            assert_eq!(Some(cat), self.mirror.categories.get(&key));
            let held = self.mirror.held(key);
            let a = self
                .state
                .availability(key.event_id, key.category_id)
                .expect("known category");
            assert_eq!(u64::from(a.locked_tickets), held);
            assert_eq!(a.total_tickets, cat.total_seats);
            // available + held == unsold, unless a capacity cut left more held than unsold.
            assert_eq!(
                u64::from(a.available_tickets),
                u64::from(cat.available_seats).saturating_sub(held)
            );
        }
        assert_eq!(
            self.state.next_deadline(),
            live.iter().map(|h| h.expires_at).min()
        );
        let stats = self.state.stats();
        let confirmed = live
            .iter()
            .filter(|h| h.status == HoldStatus::Confirmed)
            .count() as u64;
        let by = stats.locks_by_status;
        assert_eq!(by.confirmed, confirmed);
        assert_eq!(by.active + by.confirmed, live.len() as u64);
        assert_eq!(stats.active_locks, live.len() as u64);
        assert_eq!(
            stats.users_with_locks,
            live.iter()
                .map(|h| &h.user_id)
                .collect::<BTreeSet<_>>()
                .len() as u64
        );
        assert_eq!(
            stats.categories_with_locks,
            live.iter().map(|h| h.key()).collect::<BTreeSet<_>>().len() as u64
        );
        let ended = |name| self.mirror.ended.get(name).copied().unwrap_or(0);
        assert_eq!(by.expired, ended("expired"));
        assert_eq!(by.released, ended("released"));
        assert_eq!(by.completed, ended("completed"));
        assert_eq!(
            stats.total_locks,
            live.len() as u64 + by.expired + by.released + by.completed
        );
        assert_eq!(stats.total_locks, self.issued.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_for_any_sequence(ops in prop::collection::vec(op(), 1..120)) {
        let mut run = Run::new();
        for op in &ops {
            run.step(op);
        }
    }
}

//! Model agreement: the Lua scripts of the Redis hold store against the pure rules.
//!
//! The random operation sequences of the `tickets` crate's own model test
//! (`crates/tickets/tests/common/ops.rs`) run against an in-memory `State` and a real
//! Redis store side by side (keys under a prefix unique to each case, deleted after it).
//! After every step the answers, the holds each side expired, the availability of every
//! category, the catalog, every live hold, each user's holds and the counters must be
//! identical. Needs Redis on 127.0.0.1:6379 (CI fails loudly without it).

#[path = "../../tickets/tests/common/mod.rs"]
mod common;

use common::ops::*;
use common::*;
use proptest::prelude::*;
use switchboard::tickets::redis_store::{self, Done, RedisHolds};
use tickets::{
    Availability, CategoryKey, Event, Hold, OrderEffect, OrderKind, OrderMessage, State,
};

const REDIS: &str = "redis://127.0.0.1:6379/";

/// A runtime and a connection shared by every case, or `None` (skip) outside CI.
fn shared() -> Option<&'static (tokio::runtime::Runtime, redis::aio::ConnectionManager)> {
    static SHARED: std::sync::OnceLock<
        Option<(tokio::runtime::Runtime, redis::aio::ConnectionManager)>,
    > = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let conn = rt.block_on(async {
                let conn = redis_store::connection(REDIS).ok()?;
                let mut c = conn.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .ok()?;
                Some(conn)
            });
            match conn {
                Some(conn) => Some((rt, conn)),
                None => {
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("Redis is required in CI on {REDIS}");
                    }
                    eprintln!("SKIPPED: no Redis on {REDIS}; CI runs these tests");
                    None
                }
            }
        })
        .as_ref()
}

fn user(i: usize) -> String {
    format!("u{i}")
}

fn key(cat: usize) -> CategoryKey {
    let (id, _) = CATEGORIES[cat];
    CategoryKey::new(EVENT, id)
}

fn sorted(a: Vec<(Availability, u64)>) -> Vec<Availability> {
    let mut a: Vec<Availability> = a.into_iter().map(|(a, _)| a).collect();
    a.sort_by_key(|a| (a.event_id, a.category_id));
    a
}

fn sorted_plain(mut a: Vec<Availability>) -> Vec<Availability> {
    a.sort_by_key(|a| (a.event_id, a.category_id));
    a
}

struct Run<'a> {
    rt: &'a tokio::runtime::Runtime,
    redis: RedisHolds,
    state: State,
    now: i64,
    issued: Vec<String>,
}

impl Run<'_> {
    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Both sides' answer to one operation, the Redis one with its effects. The State
    /// side's touched categories are compared with the availability Redis reported.
    fn agree<T: PartialEq + std::fmt::Debug, E: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        redis: Done<T, E>,
        state: Result<tickets::Outcome<T>, E>,
    ) -> Result<T, E> {
        assert!(
            redis.effects.swept.is_empty(),
            "{what}: swept after a sweep"
        );
        let (state_value, touched) = match state {
            Ok(out) => (Ok(out.value), out.touched),
            Err(e) => (Err(e), Vec::new()),
        };
        assert_eq!(redis.value, state_value, "{what}: answers differ");
        let expected: Vec<Availability> = touched
            .iter()
            .filter_map(|k| self.state.availability(k.event_id, k.category_id))
            .collect();
        assert_eq!(
            sorted(redis.effects.availability),
            sorted_plain(expected),
            "{what}: announced availability differs"
        );
        redis.value
    }

    fn sweep(&mut self) {
        let redis = self
            .block(self.redis.sweep(EVENT, self.now))
            .expect("redis");
        let state = self.state.expire_due(self.now);
        assert_eq!(redis.effects.swept, state.value, "expired holds differ");
        let expected: Vec<Availability> = state
            .touched
            .iter()
            .filter_map(|k| self.state.availability(k.event_id, k.category_id))
            .collect();
        assert_eq!(sorted(redis.effects.availability), sorted_plain(expected));
        assert_eq!(redis.effects.next_deadline, self.state.next_deadline());
    }

    fn step(&mut self, op: &Op) {
        // What the service does before every command (and the expiry timer at deadlines).
        self.sweep();
        let now = self.now;
        match *op {
            Op::Lock {
                user: u,
                session,
                cat,
                qty,
            } => {
                let k = key(cat);
                let mut request = req(&user(u), k.category_id, qty);
                request.session_id = format!("s{u}-{session}");
                let redis = self.block(self.redis.lock(&request, now)).expect("redis");
                let state = match &redis.value {
                    Ok(hold) => self.state.lock_with_id(hold.lock_id.clone(), request, now),
                    Err(_) => self.state.lock(request, now),
                };
                if let Ok(hold) = self.agree("lock", redis, state) {
                    self.issued.push(hold.lock_id);
                }
            }
            Op::Unlock { user: u, cat } => {
                let k = key(cat);
                let redis = self
                    .block(self.redis.unlock(&user(u), EVENT, k.category_id, now))
                    .expect("redis");
                let state = self.state.unlock(&user(u), EVENT, k.category_id);
                let _ = self.agree("unlock", redis, state);
            }
            Op::Confirm { pick } => {
                let id = if self.issued.is_empty() {
                    format!("lock_e{EVENT}_99_{now}")
                } else {
                    self.issued[pick % self.issued.len()].clone()
                };
                let redis = self.block(self.redis.confirm(&id, now)).expect("redis");
                let state = self.state.confirm(&id, now);
                let _ = self.agree("confirm", redis, state);
            }
            Op::Complete {
                user: u,
                cat,
                qty,
                order: o,
            } => {
                let msg = order(&format!("o{o}"), &user(u), key(cat).category_id, qty);
                self.order(OrderKind::Completed, &msg);
            }
            Op::Cancel {
                user: u,
                cat,
                order: o,
            } => {
                let msg = order(&format!("o{o}"), &user(u), key(cat).category_id, 1);
                self.order(OrderKind::Cancelled, &msg);
            }
            Op::Advance { ms } => {
                self.now += ms;
                self.sweep();
            }
            Op::AdvanceToDeadline => {
                self.now = self.state.next_deadline().unwrap_or(self.now).max(self.now);
                self.sweep();
            }
            Op::Capacity { cat, total, avail } => {
                let k = key(cat);
                let redis = self
                    .block(
                        self.redis
                            .change_capacity(EVENT, k.category_id, total, avail, now),
                    )
                    .expect("redis");
                let state = self
                    .state
                    .change_capacity(EVENT, k.category_id, total, avail);
                let _ = self.agree("capacity", redis, state);
            }
            Op::ReleaseSession { user: u, session } => {
                let sess = format!("s{u}-{session}");
                let redis = self
                    .block(self.redis.release_session(EVENT, &sess, now))
                    .expect("redis");
                let state = self.state.release_session(&sess);
                let _ = self.agree("release_session", redis, Ok(state));
            }
            Op::EventCancelled => {
                let redis = self
                    .block(self.redis.event_cancelled(EVENT, now))
                    .expect("redis");
                let state = self.state.event_cancelled(EVENT);
                let _ = self.agree("event_cancelled", redis, Ok(state));
            }
            // A restart of the local store (the rules rebuilt from a snapshot forget
            // ended lock ids); Redis has no restart of its own to model here.
            Op::Restore => {}
        }
        self.check();
    }

    fn order(&mut self, kind: OrderKind, msg: &OrderMessage) {
        let redis = self
            .block(self.redis.order(kind, msg, self.now))
            .expect("redis");
        let state = match kind {
            OrderKind::Completed => self.state.order_completed(msg),
            OrderKind::Cancelled => self.state.order_cancelled(msg),
        };
        if let Ok(OrderEffect::AlreadyApplied { .. }) = &redis.value {
            assert!(redis.effects.availability.is_empty());
        }
        let _ = self.agree("order", redis, state);
    }

    /// Identical state: catalog, availability, live holds, each user's holds, counters.
    fn check(&self) {
        let now = self.now;
        let (event, availability) = self
            .block(self.redis.event(EVENT, now))
            .expect("redis")
            .expect("event known");
        assert_eq!(Some(event), self.state.event(EVENT), "catalog differs");
        let availability: Vec<Availability> = availability.into_iter().map(|(a, _)| a).collect();
        assert_eq!(
            Some(availability),
            self.state.event_availability(EVENT),
            "availability differs"
        );
        let holds = self.block(self.redis.holds(EVENT, now)).expect("redis");
        let expected: Vec<Hold> = self.state.holds().cloned().collect();
        assert_eq!(holds, expected, "live holds differ");
        for u in 0..USERS {
            let mut mine = self
                .block(self.redis.holds_of_user(EVENT, &user(u), now))
                .expect("redis");
            mine.sort_by(|a, b| (a.created_at, &a.lock_id).cmp(&(b.created_at, &b.lock_id)));
            assert_eq!(mine, self.state.holds_of_user(&user(u)), "holds of u{u}");
        }
        let stats = self.block(self.redis.stats(EVENT, now)).expect("redis");
        assert_eq!(stats, self.state.stats(), "counters differ");
    }
}

fn run(ops: &[Op]) {
    let Some((rt, conn)) = shared() else {
        return;
    };
    let prefix = format!("sbtest:model:{:016x}:", rand::random::<u64>());
    let redis = RedisHolds::new(conn.clone(), &prefix, "node-a", config());
    let mut state = State::new(config()).expect("config");
    let event = Event {
        id: EVENT,
        name: "prop".into(),
        categories: CATEGORIES.iter().map(|(id, n)| category(*id, *n)).collect(),
    };
    let _ = state.upsert_event(event.clone()).expect("event");
    let seeded = rt
        .block_on(redis.upsert_event(&event, true, T0))
        .expect("redis");
    assert_eq!(seeded.value, Ok(true));
    let mut run = Run {
        rt,
        redis,
        state,
        now: T0,
        issued: Vec::new(),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run.check();
        for op in ops {
            run.step(op);
        }
    }));
    let _ = rt.block_on(run.redis.delete_all());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn redis_scripts_agree_with_the_rules(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}

#[test]
fn a_seed_never_overwrites_what_the_fleet_knows() {
    let Some((rt, conn)) = shared() else {
        return;
    };
    let prefix = format!("sbtest:seed:{:016x}:", rand::random::<u64>());
    let redis = RedisHolds::new(conn.clone(), &prefix, "node-a", config());
    let event = |seats| Event {
        id: EVENT,
        name: "seed".into(),
        categories: vec![category(VIP, seats)],
    };
    rt.block_on(async {
        assert_eq!(
            redis
                .upsert_event(&event(5), true, T0)
                .await
                .expect("r")
                .value,
            Ok(true)
        );
        assert_eq!(
            redis
                .upsert_event(&event(9), true, T0)
                .await
                .expect("r")
                .value,
            Ok(false)
        );
        let (ev, _) = redis.event(EVENT, T0).await.expect("r").expect("known");
        assert_eq!(ev.categories[0].total_seats, 5);
        assert_eq!(redis.event_ids().await.expect("r"), vec![EVENT]);
        // Unknown events and malformed lock ids are refused without a write.
        assert_eq!(redis.event(999, T0).await.expect("r"), None);
        let _ = redis.delete_all().await;
    });
}

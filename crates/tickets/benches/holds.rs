//! Lock + unlock pairs: the hot path of a busy on-sale.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use tickets::{Category, Event, HoldConfig, HoldRequest, State};

const EVENT: i64 = 1;
const CATEGORY: i64 = 1;

fn state(live_holds: u32) -> State {
    let mut state = State::new(HoldConfig::default()).expect("default config is valid");
    let _ = state
        .upsert_event(Event {
            id: EVENT,
            name: "bench".into(),
            categories: vec![Category {
                id: CATEGORY,
                name: "all".into(),
                price: 10.0,
                total_seats: 1_000_000,
                available_seats: 1_000_000,
            }],
        })
        .expect("valid event");
    for i in 0..live_holds {
        let _ = state
            .lock(request(&format!("bystander{i}")), i64::from(i))
            .expect("room for bystanders");
    }
    state
}

fn request(user: &str) -> HoldRequest {
    HoldRequest {
        user_id: user.to_owned(),
        session_id: format!("s-{user}"),
        event_id: EVENT,
        category_id: CATEGORY,
        quantity: 2,
    }
}

fn lock_unlock(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_unlock_pair");
    group.throughput(Throughput::Elements(1));
    for live in [0u32, 10_000] {
        let mut s = state(live);
        let req = request("buyer");
        let mut now = 1_700_000_000_000i64;
        group.bench_function(format!("{live}_live_holds"), |b| {
            b.iter(|| {
                now += 1;
                let locked = s.lock(black_box(req.clone()), now);
                let unlocked = s.unlock("buyer", EVENT, CATEGORY);
                black_box((locked.is_ok(), unlocked.is_ok()))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, lock_unlock);
criterion_main!(benches);

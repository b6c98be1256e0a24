//! The hold service under concurrency and across a restart.

use std::time::Duration;

use switchboard::tickets::{HoldService, SqliteStore};
use tickets::{Category, Event, HoldConfig, HoldRequest};

fn catalog(seats: u32) -> Vec<Event> {
    vec![Event {
        id: 1,
        name: "Race".into(),
        categories: vec![Category {
            id: 1,
            name: "GA".into(),
            price: 1.0,
            total_seats: seats,
            available_seats: seats,
        }],
    }]
}

fn req(user: usize, q: u32) -> HoldRequest {
    HoldRequest {
        user_id: format!("u{user}"),
        session_id: format!("s{user}"),
        event_id: 1,
        category_id: 1,
        quantity: q,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_buyers_race_for_a_hundred_seats() {
    let hub = hub::Hub::new(hub::HubConfig::default());
    let store = Box::new(SqliteStore::memory().expect("store"));
    let svc = HoldService::open(
        HoldConfig::default(),
        catalog(100),
        store,
        hub,
        Duration::ZERO,
    )
    .expect("service");
    let mut tasks = Vec::new();
    for user in 0..1000 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.lock(req(user, 1 + (user % 3) as u32))
                .await
                .ok()
                .map(|h| h.quantity)
        }));
    }
    let mut granted = 0u32;
    let mut winners = 0;
    for t in tasks {
        if let Some(q) = t.await.expect("task") {
            granted += q;
            winners += 1;
        }
    }
    let a = svc
        .availability(1, 1)
        .await
        .expect("store")
        .expect("category");
    assert!(granted <= 100, "oversold: {granted} seats held");
    assert_eq!(a.locked_tickets, granted);
    assert_eq!(a.available_tickets, 100 - granted);
    assert!(
        granted >= 98,
        "seats left unsold while buyers were refused: {granted}"
    );
    assert_eq!(svc.stats().active_locks, winners);
}

#[tokio::test]
async fn holds_survive_a_restart_with_their_deadlines() {
    let dir =
        std::env::temp_dir().join(format!("switchboard-holds-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hold = {
        let hub = hub::Hub::new(hub::HubConfig::default());
        let svc = HoldService::open(
            HoldConfig::default(),
            catalog(10),
            Box::new(SqliteStore::open(&dir).expect("open")),
            hub,
            Duration::ZERO,
        )
        .expect("service");
        svc.lock(req(1, 4)).await.expect("lock")
    };
    let hub = hub::Hub::new(hub::HubConfig::default());
    // A different catalog on restart does not override what the store already holds.
    let svc = HoldService::open(
        HoldConfig::default(),
        catalog(999),
        Box::new(SqliteStore::open(&dir).expect("reopen")),
        hub,
        Duration::ZERO,
    )
    .expect("service");
    let mine = svc.holds_of_user("u1").await.expect("store");
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (
            mine[0].lock_id.as_str(),
            mine[0].expires_at,
            mine[0].quantity
        ),
        (hold.lock_id.as_str(), hold.expires_at, 4)
    );
    let a = svc.availability(1, 1).await.expect("store");
    assert_eq!(a.map(|a| a.available_tickets), Some(6));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Collects what the hub delivers to one room.
#[derive(Default)]
struct Watcher(parking_lot::Mutex<Vec<serde_json::Value>>);

impl hub::Member for Watcher {
    fn deliver(&self, envelope: &std::sync::Arc<hub::Envelope>) -> hub::Delivery {
        if &*envelope.event == "availability-update" {
            let v = serde_json::from_str(&envelope.payload.as_single_json()).expect("json");
            self.0.lock().push(v);
        }
        hub::Delivery::Delivered
    }
    fn transport(&self) -> &'static str {
        "test"
    }
}

impl Watcher {
    /// `(availableTickets, lockedTickets)` of every update so far.
    fn seen(&self) -> Vec<(u64, u64)> {
        self.0
            .lock()
            .iter()
            .map(|v| {
                (
                    v["availableTickets"].as_u64().expect("available"),
                    v["lockedTickets"].as_u64().expect("locked"),
                )
            })
            .collect()
    }
}

/// On a paused clock (tokio's, which the hold rules follow through `Clock::tokio`): the
/// first change is announced at once, changes within the coalescing window go out as one
/// update when it ends, and each hold ends at its own `expiresAt`, announced once. No real
/// time passes. (tokio's timers have a resolution of one millisecond: each check waits
/// one tick past the instant it is about.)
#[tokio::test(start_paused = true)]
async fn expiry_and_coalescing_happen_at_their_instants() {
    use switchboard::tickets::Clock;
    use tokio::time::{Instant, sleep_until};

    let hub = hub::Hub::new(hub::HubConfig::default());
    let watcher = std::sync::Arc::new(Watcher::default());
    let id = hub.add_member(watcher.clone());
    hub.join(id, "event_1").expect("join");
    let config = HoldConfig {
        hold_ttl_ms: 60_000,
        ..HoldConfig::default()
    };
    let svc = HoldService::open_on(
        Clock::tokio(),
        config,
        catalog(10),
        Box::new(SqliteStore::memory().expect("store")),
        hub,
        Duration::from_millis(100),
    )
    .expect("service");
    let stop = tokio_util::sync::CancellationToken::new();
    let expiry = tokio::spawn(svc.clone().run_expiry(stop.clone()));
    let t0 = Instant::now();
    let at = |ms: u64| sleep_until(t0 + Duration::from_millis(ms));

    let first = svc.lock(req(1, 2)).await.expect("lock");
    assert_eq!(
        watcher.seen(),
        vec![(8, 2)],
        "the first change goes out at once"
    );
    at(10).await;
    let second = svc.lock(req(2, 3)).await.expect("lock");
    assert_eq!(
        second.expires_at - first.expires_at,
        10,
        "rules' time is tokio's"
    );
    at(30).await;
    svc.unlock("u2", 1, 1).await.expect("unlock");
    svc.lock(req(3, 1)).await.expect("lock");
    at(99).await;
    assert_eq!(watcher.seen().len(), 1, "merged until the window ends");
    at(101).await;
    assert_eq!(
        watcher.seen(),
        vec![(8, 2), (7, 3)],
        "one update with the numbers at the window's end"
    );

    // Just before its deadline, the first hold is still there; just after, it is not.
    at(59_999).await;
    assert_eq!(svc.holds_of_user("u1").await.expect("store").len(), 1);
    assert_eq!(svc.stats().locks_by_status.expired, 0);
    at(60_001).await;
    assert!(svc.holds_of_user("u1").await.expect("store").is_empty());
    assert_eq!(svc.stats().locks_by_status.expired, 1);
    assert_eq!(svc.expired_by_this_node(), 1);
    assert_eq!(
        watcher.seen().last(),
        Some(&(9, 1)),
        "the expiry is announced"
    );
    let announced = watcher.seen().len();
    // Nothing else is due until the third hold's deadline (t0 + 30 ms + 60 s).
    at(60_029).await;
    assert_eq!(watcher.seen().len(), announced, "announced once");
    assert_eq!(svc.stats().locks_by_status.expired, 1);
    at(60_031).await;
    assert_eq!(svc.stats().locks_by_status.expired, 2);
    // Within the window after the previous update: merged, sent when the window ends.
    at(61_000).await;
    assert_eq!(
        watcher.seen()[announced..],
        [(10, 0)],
        "each expiry announced once"
    );
    stop.cancel();
    expiry.await.expect("expiry task");
}

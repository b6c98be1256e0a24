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

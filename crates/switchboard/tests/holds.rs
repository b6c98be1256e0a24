//! The hold service under concurrency and across a restart.

use std::time::Duration;

use switchboard::tickets::{HoldService, HoldStore, MemoryStore, SqliteStore};
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
    race_for_a_hundred_seats(Box::new(SqliteStore::memory().expect("store"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_buyers_race_for_a_hundred_seats_without_a_store() {
    race_for_a_hundred_seats(Box::new(MemoryStore)).await;
}

async fn race_for_a_hundred_seats(store: Box<dyn HoldStore + Send>) {
    let hub = hub::Hub::new(hub::HubConfig::default());
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
    expiry_and_coalescing_at_their_instants(Box::new(SqliteStore::memory().expect("store"))).await;
}

/// The same with `data_dir = memory` (no store, no change records).
#[tokio::test(start_paused = true)]
async fn expiry_and_coalescing_happen_at_their_instants_without_a_store() {
    expiry_and_coalescing_at_their_instants(Box::new(MemoryStore)).await;
}

/// A confirmed hold's order deadline can come before the deadline the expiry timer sleeps
/// for: the operation that made it wakes the timer (it is not woken by every operation).
#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_wakes_the_expiry_timer() {
    use switchboard::tickets::Clock;
    use tokio::time::{Instant, sleep_until};

    let hub = hub::Hub::new(hub::HubConfig::default());
    let config = HoldConfig {
        hold_ttl_ms: 60_000,
        order_timeout_ms: 5_000,
        ..HoldConfig::default()
    };
    let svc = HoldService::open_on(
        Clock::tokio(),
        config,
        catalog(10),
        Box::new(MemoryStore),
        hub,
        Duration::ZERO,
    )
    .expect("service");
    let stop = tokio_util::sync::CancellationToken::new();
    let expiry = tokio::spawn(svc.clone().run_expiry(stop.clone()));
    let t0 = Instant::now();
    let at = |ms: u64| sleep_until(t0 + Duration::from_millis(ms));

    let held = svc.lock(req(1, 2)).await.expect("lock");
    svc.lock(req(2, 1)).await.expect("lock");
    // The timer now sleeps until the holds' deadline, 60 s away.
    at(10).await;
    svc.confirm(&held.lock_id).await.expect("confirm");
    at(5_009).await;
    assert_eq!(svc.stats().locks_by_status.expired, 0);
    at(5_011).await;
    assert_eq!(
        svc.stats().locks_by_status.expired,
        1,
        "the confirmed hold ended at its order deadline, with no operation to sweep it"
    );
    at(60_001).await;
    assert_eq!(svc.stats().locks_by_status.expired, 2);
    stop.cancel();
    expiry.await.expect("expiry task");
}

async fn expiry_and_coalescing_at_their_instants(store: Box<dyn HoldStore + Send>) {
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
        store,
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

// ----- group commit --------------------------------------------------------------------

/// A file store the test steers: it counts commits, can hold a commit at a gate (so the
/// next operations pile up behind it), and can fail the next one.
#[derive(Default)]
struct Steer {
    /// While true, a commit waits at the gate.
    closed: parking_lot::Mutex<bool>,
    opened: parking_lot::Condvar,
    /// A commit is waiting at the gate.
    waiting: std::sync::atomic::AtomicBool,
    fail_next: std::sync::atomic::AtomicBool,
    /// Change records of every commit that succeeded.
    commits: parking_lot::Mutex<Vec<usize>>,
}

impl Steer {
    fn close(&self) {
        *self.closed.lock() = true;
    }
    fn open(&self) {
        *self.closed.lock() = false;
        self.opened.notify_all();
    }
    async fn until_waiting(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.waiting.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(tokio::time::Instant::now() < deadline, "no commit came");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

struct SteeredStore {
    inner: SqliteStore,
    steer: std::sync::Arc<Steer>,
}

impl HoldStore for SteeredStore {
    fn load(&mut self) -> Result<Option<tickets::Snapshot>, switchboard::tickets::StoreError> {
        self.inner.load()
    }
    fn apply(
        &mut self,
        changes: &[tickets::Change],
    ) -> Result<(), switchboard::tickets::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        {
            let mut closed = self.steer.closed.lock();
            while *closed {
                self.steer.waiting.store(true, SeqCst);
                self.steer.opened.wait(&mut closed);
            }
            self.steer.waiting.store(false, SeqCst);
        }
        if self.steer.fail_next.swap(false, SeqCst) {
            return Err(switchboard::tickets::StoreError::Corrupt(
                "disk full (test)".into(),
            ));
        }
        self.inner.apply(changes)?;
        self.steer.commits.lock().push(changes.len());
        Ok(())
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-commit-{name}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A service on a steered file store in `dir`, and a watcher of its event room.
fn steered(
    dir: &std::path::Path,
    seats: u32,
) -> (
    std::sync::Arc<HoldService>,
    std::sync::Arc<Steer>,
    std::sync::Arc<Watcher>,
) {
    let hub = hub::Hub::new(hub::HubConfig::default());
    let watcher = std::sync::Arc::new(Watcher::default());
    let id = hub.add_member(watcher.clone());
    hub.join(id, "event_1").expect("join");
    let steer = std::sync::Arc::new(Steer::default());
    let store = SteeredStore {
        inner: SqliteStore::open(dir).expect("open"),
        steer: steer.clone(),
    };
    let svc = HoldService::open(
        HoldConfig::default(),
        catalog(seats),
        Box::new(store),
        hub,
        Duration::ZERO,
    )
    .expect("service");
    steer.commits.lock().clear();
    (svc, steer, watcher)
}

/// What the disk says, read by a fresh store.
fn on_disk(dir: &std::path::Path) -> tickets::Snapshot {
    SqliteStore::open(dir)
        .and_then(|mut s| s.load())
        .expect("load")
        .expect("data")
}

fn spawn_locks(
    svc: &std::sync::Arc<HoldService>,
    users: std::ops::Range<usize>,
) -> Vec<tokio::task::JoinHandle<Result<tickets::Hold, switchboard::tickets::ServiceError>>> {
    users
        .map(|u| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.lock(req(u, 1)).await })
        })
        .collect()
}

/// Operations that arrive while a commit is on its way share the next one: one write for
/// all of them, none answered (and nothing announced) before it, and each decided on the
/// effects of the ones before it, committed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_share_a_commit_and_see_each_others_effects() {
    let dir = temp_dir("share");
    let (svc, steer, watcher) = steered(&dir, 30);
    steer.close();
    let first = spawn_locks(&svc, 0..1);
    steer.until_waiting().await;
    let rest = spawn_locks(&svc, 1..50);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        first.iter().chain(&rest).all(|t| !t.is_finished()),
        "an answer before its commit"
    );
    assert!(
        watcher.seen().is_empty(),
        "an announcement before its commit"
    );
    // Every operation is applied in memory already: 29 more seats taken, 20 refused.
    steer.open();
    let mut granted = 0;
    let mut refused = 0;
    for t in first.into_iter().chain(rest) {
        match t.await.expect("task") {
            Ok(_) => granted += 1,
            Err(switchboard::tickets::ServiceError::Refused(_)) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((granted, refused), (30, 20));
    let commits = steer.commits.lock().clone();
    assert_eq!(
        commits.len(),
        2,
        "one commit for the first, one for the rest: {commits:?}"
    );
    assert_eq!(on_disk(&dir).holds.len(), 30);
    assert_eq!(watcher.seen().last(), Some(&(0, 30)));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A commit that fails fails every operation of its batch, and of the batch that piled up
/// behind it (those saw its effects): nothing of them is answered, announced or kept, in
/// memory or on disk, and the service goes on from what the disk says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_its_operations_and_memory_follows_the_disk() {
    let dir = temp_dir("fail");
    let (svc, steer, watcher) = steered(&dir, 10);
    svc.lock(req(100, 2)).await.expect("a hold before");
    let before = watcher.seen();
    steer.close();
    steer
        .fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let failing = spawn_locks(&svc, 0..1);
    steer.until_waiting().await;
    let behind = spawn_locks(&svc, 1..20);
    tokio::time::sleep(Duration::from_millis(100)).await;
    steer.open();
    for t in failing.into_iter().chain(behind) {
        match t.await.expect("task") {
            Err(switchboard::tickets::ServiceError::Storage(cause)) => {
                assert!(cause.contains("disk full"), "{cause}");
            }
            other => panic!("answered from a failed commit: {other:?}"),
        }
    }
    // Memory is the disk: only the first hold, 8 seats left, and every user may hold.
    let disk = on_disk(&dir);
    assert_eq!(disk.holds.len(), 1);
    let a = svc
        .availability(1, 1)
        .await
        .expect("store")
        .expect("category");
    assert_eq!((a.available_tickets, a.locked_tickets), (8, 2));
    assert!(svc.holds_of_user("u1").await.expect("store").is_empty());
    assert_eq!(svc.stats().active_locks, 1);
    // What clients heard is never a state that was taken back.
    assert!(
        watcher.seen()[before.len()..].iter().all(|s| *s == (8, 2)),
        "{:?}",
        watcher.seen()
    );
    // It goes on: the same users hold now.
    let again = spawn_locks(&svc, 1..9);
    for t in again {
        t.await.expect("task").expect("granted after the failure");
    }
    assert_eq!(on_disk(&dir).holds.len(), 9);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The hold service with Redis as the authority: several nodes (services) on one Redis,
//! exact expiry claimed once, orders applied once, outages refused and recovered from.
//!
//! Tests on the shared Redis (127.0.0.1:6379) use keys under a prefix unique to the test
//! and delete them after. Tests that stop or restart Redis start their own
//! `redis-server` (AOF on) on a free port in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use switchboard::tickets::{
    HoldService, LivenessConfig, RedisHolds, ServiceError, UNAVAILABLE, redis_store,
};
use tickets::{Category, Event, HoldConfig, HoldRequest, OrderEffect, OrderMessage};
use tokio_util::sync::CancellationToken;

const REDIS: &str = "redis://127.0.0.1:6379/";

/// The shared Redis, or `None` (skip) outside CI when it is not running.
async fn redis_or_skip() -> Option<redis::aio::ConnectionManager> {
    let conn = redis_store::connection(REDIS).ok()?;
    let mut c = conn.clone();
    match redis::cmd("PING").query_async::<String>(&mut c).await {
        Ok(_) => Some(conn),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("Redis is required in CI on {REDIS}: {e}");
            }
            eprintln!("SKIPPED: no Redis on {REDIS} ({e}); CI runs these tests");
            None
        }
    }
}

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

fn prefix(name: &str) -> String {
    format!("sbtest:{name}:{:016x}:", rand::random::<u64>())
}

struct Node {
    svc: Arc<HoldService>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    fn stop(self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// A node: a hold service on `conn`, its sweeper running.
fn node(
    conn: &redis::aio::ConnectionManager,
    prefix: &str,
    id: &str,
    config: HoldConfig,
    seats: u32,
) -> Node {
    let store = RedisHolds::new(conn.clone(), prefix, id, config);
    let hub = hub::Hub::new(hub::HubConfig::default());
    let svc = HoldService::open_shared(
        store,
        catalog(seats),
        hub,
        Duration::ZERO,
        LivenessConfig {
            node_timeout: Duration::from_secs(2),
            recovery_window: Duration::from_secs(1),
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(svc.clone().run_expiry(stop.clone()));
    Node { svc, stop, task }
}

/// Waits until `f` holds (the sweeper seeds and polls once a second).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn seeded(svc: &Arc<HoldService>) -> bool {
    matches!(svc.availability(1, 1).await, Ok(Some(_)))
}

async fn cleanup(conn: &redis::aio::ConnectionManager, prefix: &str) {
    let store = RedisHolds::new(conn.clone(), prefix, "cleanup", HoldConfig::default());
    let _ = store.delete_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_race_for_a_hundred_seats_and_never_oversell() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("race");
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&conn, &p, id, HoldConfig::default(), 100))
        .collect();
    for n in &nodes {
        eventually("the catalog seed", || seeded(&n.svc)).await;
    }
    let mut tasks = Vec::new();
    for user in 0..1000 {
        let svc = nodes[user % 3].svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.lock(req(user, 1 + (user % 3) as u32))
                .await
                .ok()
                .map(|h| (user, h.quantity))
        }));
    }
    let mut granted = 0u32;
    let mut winners = 0u64;
    // A buyer that got seats (the first spawned usually does, but the race decides).
    let mut a_winner = None;
    for t in tasks {
        if let Some((user, q)) = t.await.expect("task") {
            granted += q;
            winners += 1;
            a_winner.get_or_insert(user);
        }
    }
    let winner = a_winner.expect("someone won");
    assert!(granted <= 100, "oversold: {granted} seats held");
    assert!(
        granted >= 98,
        "seats left while buyers were refused: {granted}"
    );
    for n in &nodes {
        let a = n
            .svc
            .availability(1, 1)
            .await
            .expect("redis")
            .expect("known");
        assert_eq!(a.locked_tickets, granted);
        assert_eq!(a.available_tickets, 100 - granted);
    }
    // Every node reports the fleet's counters once its sweeper summed them.
    for n in &nodes {
        eventually("fleet counters", || async {
            n.svc.stats().active_locks == winners
        })
        .await;
    }
    // One hold per user and category, on any node.
    let again = nodes[1].svc.lock(req(winner, 1)).await;
    assert!(
        matches!(&again, Err(ServiceError::Refused(m)) if m.contains("already hold")),
        "{again:?}"
    );
    // get-my-locks answers the same on every node.
    let who = format!("u{winner}");
    let mine_a = nodes[0].svc.holds_of_user(&who).await.expect("redis");
    let mine_c = nodes[2].svc.holds_of_user(&who).await.expect("redis");
    assert_eq!(mine_a.len(), 1, "{who} holds one category");
    assert_eq!(mine_a, mine_c);
    for n in nodes {
        n.stop();
    }
    cleanup(&conn, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expiring_together_are_claimed_once_across_nodes() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("expiry");
    let config = HoldConfig {
        hold_ttl_ms: 1500,
        ..HoldConfig::default()
    };
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&conn, &p, id, config.clone(), 1000))
        .collect();
    for n in &nodes {
        eventually("the catalog seed", || seeded(&n.svc)).await;
    }
    let mut tasks = Vec::new();
    for user in 0..500 {
        let svc = nodes[user % 3].svc.clone();
        tasks.push(tokio::spawn(async move { svc.lock(req(user, 1)).await }));
    }
    for t in tasks {
        t.await.expect("task").expect("granted");
    }
    eventually("every hold expired", || async {
        let a = nodes[0].svc.availability(1, 1).await;
        matches!(a, Ok(Some(a)) if a.locked_tickets == 0)
    })
    .await;
    // A node counts what its script claimed once the script's answer is back: the
    // counts may trail Redis by that long, never exceed it.
    let claimed = || {
        nodes
            .iter()
            .map(|n| n.svc.expired_by_this_node())
            .sum::<u64>()
    };
    eventually("every expiry counted", || async { claimed() >= 500 }).await;
    assert_eq!(
        claimed(),
        500,
        "each expired hold claimed by exactly one node"
    );
    eventually("counters", || async {
        nodes[2].svc.stats().locks_by_status.expired == 500
    })
    .await;
    for n in nodes {
        n.stop();
    }
    cleanup(&conn, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_delivered_to_two_nodes_has_one_effect() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("orders");
    let a = node(&conn, &p, "a", HoldConfig::default(), 10);
    let b = node(&conn, &p, "b", HoldConfig::default(), 10);
    eventually("the catalog seed", || seeded(&a.svc)).await;
    let hold = a.svc.lock(req(7, 3)).await.expect("lock");
    b.svc
        .confirm(&hold.lock_id)
        .await
        .expect("confirm on another node");
    let order = OrderMessage {
        order_id: "order-1".into(),
        event_id: 1,
        category_id: 1,
        quantity: 3,
        user_id: "u7".into(),
    };
    let (ra, rb) = tokio::join!(a.svc.order_completed(&order), b.svc.order_completed(&order));
    let effects = [ra.expect("a"), rb.expect("b")];
    let applied = effects
        .iter()
        .filter(|e| matches!(e, OrderEffect::Applied(_)))
        .count();
    assert_eq!(applied, 1, "{effects:?}");
    let av = b
        .svc
        .availability(1, 1)
        .await
        .expect("redis")
        .expect("known");
    assert_eq!(
        (av.available_tickets, av.locked_tickets),
        (7, 0),
        "sold once"
    );
    a.stop();
    b.stop();
    cleanup(&conn, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_holds_are_released_after_the_recovery_window() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("dead");
    let a = node(&conn, &p, "a", HoldConfig::default(), 10);
    let b = node(&conn, &p, "b", HoldConfig::default(), 10);
    eventually("the catalog seed", || seeded(&a.svc)).await;
    let active = a.svc.lock(req(1, 2)).await.expect("lock");
    let confirmed = a.svc.lock(req(2, 3)).await.expect("lock");
    a.svc.confirm(&confirmed.lock_id).await.expect("confirm");
    // Node a dies: no more heartbeats, no disconnect handling.
    a.stop();
    eventually("the dead node's active hold released", || async {
        let mine = b.svc.holds_of_user("u1").await.expect("redis");
        mine.is_empty()
    })
    .await;
    // A confirmed hold waits for its order, whoever granted it.
    let kept = b.svc.holds_of_user("u2").await.expect("redis");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let av = b
        .svc
        .availability(1, 1)
        .await
        .expect("redis")
        .expect("known");
    assert_eq!(av.locked_tickets, 3);
    let _ = active;
    b.stop();
    cleanup(&conn, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_on_any_node_releases_its_holds() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("session");
    let a = node(&conn, &p, "a", HoldConfig::default(), 10);
    eventually("the catalog seed", || seeded(&a.svc)).await;
    a.svc.lock(req(1, 2)).await.expect("lock");
    let released = a.svc.release_session("s1").await.expect("release");
    assert_eq!(released.len(), 1);
    let av = a
        .svc
        .availability(1, 1)
        .await
        .expect("redis")
        .expect("known");
    assert_eq!(av.available_tickets, 10);
    a.stop();
    cleanup(&conn, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_write_nothing() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("bad");
    let a = node(&conn, &p, "a", HoldConfig::default(), 10);
    eventually("the catalog seed", || seeded(&a.svc)).await;
    let mut unknown_event = req(1, 1);
    unknown_event.event_id = 99;
    let mut unknown_category = req(1, 1);
    unknown_category.category_id = 99;
    for (r, expect) in [
        (req(1, 0), "quantity"),
        (req(1, 11), "quantity"),
        (unknown_event, "event 99 not found"),
        (unknown_category, "category 99 not found"),
    ] {
        let e = a.svc.lock(r).await.expect_err("refused");
        assert!(
            matches!(&e, ServiceError::Refused(m) if m.contains(expect)),
            "{e:?}"
        );
    }
    for bad in ["lock_x", "lock_e1_1", "lock_e99_1_1"] {
        assert!(matches!(
            a.svc.confirm(bad).await,
            Err(ServiceError::Refused(_))
        ));
    }
    let av = a
        .svc
        .availability(1, 1)
        .await
        .expect("redis")
        .expect("known");
    assert_eq!((av.available_tickets, av.locked_tickets), (10, 0));
    assert!(a.svc.holds_of_user("u1").await.expect("redis").is_empty());
    // Nothing but the seeded event exists under the prefix.
    let store = RedisHolds::new(conn.clone(), &p, "probe", HoldConfig::default());
    assert_eq!(store.event_ids().await.expect("redis"), vec![1]);
    a.stop();
    cleanup(&conn, &p).await;
}

/// A `redis-server` of our own (AOF `always`), on a free port in a temporary directory.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    fn start(dir: &std::path::Path, port: u16) -> Option<OwnRedis> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(OwnRedis {
                child,
                port,
                dir: dir.to_owned(),
            }),
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("redis-server is required in CI: {e}");
                }
                eprintln!("SKIPPED: cannot start redis-server ({e})");
                None
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if let Ok(conn) = redis_store::connection(&self.url()) {
                let mut c = conn;
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {} did not start", self.port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_refuses_holds_and_a_restart_keeps_confirmed_ones() {
    let dir = std::env::temp_dir().join(format!("sb-holds-aof-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let Some(mut server) = OwnRedis::start(&dir, port) else {
        return;
    };
    server.wait_ready().await;
    let conn = redis_store::connection(&server.url()).expect("url");
    let a = node(&conn, "sb:", "a", HoldConfig::default(), 10);
    eventually("the catalog seed", || seeded(&a.svc)).await;
    let confirmed = a.svc.lock(req(1, 2)).await.expect("lock");
    let confirmed = a.svc.confirm(&confirmed.lock_id).await.expect("confirm");
    let active = a.svc.lock(req(2, 3)).await.expect("lock");
    assert!(a.svc.readiness().0);

    server.kill();
    let refused = a.svc.lock(req(3, 1)).await.expect_err("refused while down");
    assert!(matches!(refused, ServiceError::Storage(_)));
    assert_eq!(refused.to_string(), UNAVAILABLE);
    assert!(!a.svc.readiness().0, "not ready while Redis is unreachable");
    assert!(a.svc.holds_of_user("u1").await.is_err());

    // The same Redis comes back with its append-only file: the node recovers by itself.
    let Some(_server) = OwnRedis::start(&dir, port) else {
        return;
    };
    eventually("recovery", || async {
        a.svc.holds_of_user("u1").await.is_ok()
    })
    .await;
    eventually("ready again", || async { a.svc.readiness().0 }).await;
    let mine = a.svc.holds_of_user("u1").await.expect("redis");
    assert_eq!(
        mine,
        vec![confirmed],
        "the confirmed hold survived with its expiresAt"
    );
    let theirs = a.svc.holds_of_user("u2").await.expect("redis");
    assert_eq!(
        theirs,
        vec![active],
        "with AOF always, every answered hold survives"
    );
    let later = a.svc.lock(req(3, 1)).await.expect("granted again");
    assert_eq!(later.quantity, 1);
    a.stop();
}

/// A store under `prefix` with the one-category event of ten seats seeded, and the time
/// it was seeded at.
async fn store_with_ten_seats(
    conn: &redis::aio::ConnectionManager,
    prefix: &str,
) -> (RedisHolds, i64) {
    store_with_ten_seats_and(conn, prefix, HoldConfig::default()).await
}

async fn store_with_ten_seats_and(
    conn: &redis::aio::ConnectionManager,
    prefix: &str,
    config: HoldConfig,
) -> (RedisHolds, i64) {
    let store = RedisHolds::new(conn.clone(), prefix, "a", config);
    let now = switchboard::tickets::now_ms();
    let seeded = store
        .upsert_event(&catalog(10)[0], true, now)
        .await
        .expect("redis");
    assert_eq!(seeded.value.ok(), Some(true));
    (store, now)
}

/// A refused lock answers its category's availability from the same script (the answer's
/// `availableTickets`), unchanged and not to be announced: no second script per refusal.
#[tokio::test]
async fn a_refused_lock_reads_its_category_in_the_same_script() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("observed");
    let (store, now) = store_with_ten_seats(&conn, &p).await;
    let granted = store.lock(&req(1, 8), now).await.expect("redis");
    assert!(granted.value.is_ok(), "{granted:?}");
    let [(after, version)] = granted.effects.availability[..] else {
        panic!("one touched category: {granted:?}");
    };
    assert_eq!(
        granted.effects.observed,
        [(after, version)],
        "a grant answers the state it announces"
    );
    for (r, refusal) in [(req(2, 5), "not enough"), (req(1, 1), "already holding")] {
        let refused = store.lock(&r, now).await.expect("redis");
        assert!(refused.value.is_err(), "{refusal}: {refused:?}");
        assert!(
            refused.effects.availability.is_empty(),
            "{refusal}: nothing changed"
        );
        assert_eq!(
            refused.effects.observed,
            [(after, version)],
            "{refusal}: the category as it stands, its version not bumped"
        );
        assert_eq!((after.available_tickets, after.locked_tickets), (2, 8));
    }
    let mut unknown = req(3, 1);
    unknown.category_id = 99;
    let refused = store.lock(&unknown, now).await.expect("redis");
    assert!(refused.effects.observed.is_empty(), "{refused:?}");
    cleanup(&conn, &p).await;
}

/// An event's lock, unlock and release operations run in the order they were submitted,
/// batched into one script while another is in flight: a session's release, sent after
/// its locks (a client that held and then disconnected), ends those holds; every answer
/// of a batch carries the category's state after it, the batch's version once.
#[tokio::test]
async fn an_events_operations_run_in_submission_order_in_batches() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("batch");
    let (store, now) = store_with_ten_seats(&conn, &p).await;
    let mut one_session = req(1, 2);
    one_session.user_id = "u1".into();
    let mut other_user = req(2, 3);
    other_user.session_id = "s1".into();
    let too_many = req(3, 9);
    let everything = req(4, 10);
    // Polled in this order: each is queued before the next (the first starts the batch).
    let (a, b, c, released, after) = tokio::join!(
        store.lock(&one_session, now),
        store.lock(&other_user, now),
        store.lock(&too_many, now),
        store.release_session(1, "s1", now),
        store.lock(&everything, now),
    );
    let (a, b, c) = (a.expect("redis"), b.expect("redis"), c.expect("redis"));
    assert!(a.value.is_ok() && b.value.is_ok(), "{a:?} {b:?}");
    assert!(
        matches!(
            c.value,
            Err(tickets::LockError::NotEnoughSeats { available: 5, .. })
        ),
        "the third lock saw the first two: {c:?}"
    );
    let released = released.expect("redis").value.expect("released");
    assert_eq!(
        released.len(),
        2,
        "the release ran after both locks: {released:?}"
    );
    let after = after.expect("redis");
    assert!(
        after.value.is_ok(),
        "all ten seats were free again: {after:?}"
    );
    // Whatever the batching, the last answer is the final state.
    let (last, _) = after.effects.observed[0];
    assert_eq!((last.available_tickets, last.locked_tickets), (0, 10));
    cleanup(&conn, &p).await;
}

/// The first read after Redis restarts is answered: the connection only learns that the
/// old one is gone when it is used, and a read (which changes nothing) is asked once more
/// on the new one instead of telling a joining client to try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_read_after_a_redis_restart_is_answered() {
    let dir = std::env::temp_dir().join(format!("sb-holds-read-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let Some(mut first) = OwnRedis::start(&dir, port) else {
        return;
    };
    first.wait_ready().await;
    let conn = redis_store::connection(&first.url()).expect("url");
    let (store, now) = store_with_ten_seats(&conn, "sb:").await;
    assert!(store.event(1, now).await.expect("redis").is_some());

    // Nothing uses the connection while Redis is down and back.
    first.kill();
    let Some(mut second) = OwnRedis::start(&dir, port) else {
        return;
    };
    second.wait_ready().await;
    let (_, availability) = store
        .event(1, now)
        .await
        .expect("answered at the first try")
        .expect("the event survived (append-only file)");
    assert_eq!(availability[0].0.available_tickets, 10);

    // The catalog's list of events (a plain command, not a script) does the same.
    second.kill();
    let Some(third) = OwnRedis::start(&dir, port) else {
        return;
    };
    third.wait_ready().await;
    assert_eq!(
        store.event_ids().await.expect("answered at the first try"),
        vec![1]
    );
}

/// A batch that ends more holds than the ended-lock memory keeps trims it once, at the end
/// of its script: exactly the newest `recent_capacity` ids are remembered (a confirm of one
/// of them says how it ended), the older ones are forgotten (unknown), and Redis holds
/// exactly that many entries in the memory's hash and its order list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_ends_many_holds_keeps_the_ended_memory_bounded() {
    let Some(conn) = redis_or_skip().await else {
        return;
    };
    let p = prefix("ended-cap");
    let config = HoldConfig {
        recent_capacity: 3,
        ..HoldConfig::default()
    };
    let (store, now) = store_with_ten_seats_and(&conn, &p, config).await;
    let mut locks = Vec::new();
    for u in 1..=5 {
        let granted = store.lock(&req(u, 1), now).await.expect("redis");
        locks.push(granted.value.expect("granted").lock_id);
    }
    // Polled in this order: the first unlock goes alone, the other four wait for it and
    // run together in one script, in order.
    let (a, b, c, d, e) = tokio::join!(
        store.unlock("u1", 1, 1, now),
        store.unlock("u2", 1, 1, now),
        store.unlock("u3", 1, 1, now),
        store.unlock("u4", 1, 1, now),
        store.unlock("u5", 1, 1, now),
    );
    for done in [a, b, c, d, e] {
        assert!(done.expect("redis").value.is_ok());
    }
    let mut redis = conn.clone();
    let base = format!("{p}{{e:1}}:");
    let (in_hash, in_list): (usize, usize) = redis::pipe()
        .hlen(format!("{base}ended"))
        .llen(format!("{base}endedq"))
        .query_async(&mut redis)
        .await
        .expect("redis");
    assert_eq!((in_hash, in_list), (3, 3), "trimmed to the capacity");
    for (i, lock) in locks.iter().enumerate() {
        let answer = store.confirm(lock, now).await.expect("redis").value;
        if i < 2 {
            assert_eq!(
                answer,
                Err(tickets::ConfirmError::UnknownLock(lock.clone())),
                "the oldest are forgotten"
            );
        } else {
            assert!(
                matches!(answer, Err(tickets::ConfirmError::Ended { .. })),
                "the newest three are remembered: {answer:?}"
            );
        }
    }
    cleanup(&conn, &p).await;
}

//! Separate `switchboard` processes on one Redis behind HAProxy (`deploy/haproxy.cfg`, as
//! deployed): 1,000 `/ws` buyers (1 to 3 seats each) connect through the load balancer,
//! join the event's room and race for 100 seats.
//!
//! - Never oversold; every node answers `available = 100 - granted`; every buyer, on
//!   every node, ends on those numbers from the `availability-update`s it received; Redis
//!   holds exactly the answered holds, with the `expiresAt` each buyer was told.
//! - A node killed with `kill -9` mid-race, after some holds were confirmed (an order
//!   waits for them): no confirmed hold is lost, the survivors' holds stay with their
//!   `expiresAt`, the dead node's active holds are released after its recovery window and
//!   every remaining buyer hears the new numbers.
//! - A Redis restart (AOF `always`, a `redis-server` of the test's own) mid-race, while
//!   seats are still free: never oversold, every answered and every confirmed hold
//!   survives with its `expiresAt`, and every buyer ends on the numbers Redis holds.
//! - 500 holds expiring within one second across three nodes: each released once (by one
//!   node) and announced once (every buyer's updates count down to 0 without a repeat).
//! - Two nodes consuming one RabbitMQ queue: copies of one order reach both, one effect.
//!
//! `HOLDS_RACE_RUNS` repetitions of the race (default 20, the number, on one
//! fleet) and `HOLDS_CHAOS_RUNS` of each chaos run (default 1, a new fleet each). Uses the
//! shared Redis on 127.0.0.1:6379 (keys under a unique prefix, deleted after), RabbitMQ
//! on 127.0.0.1:5672 and Debian's `haproxy`; missing, each test says SKIPPED, or fails
//! under `CI=true`. The tests of this file run one at a time (each loads both cores).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard::tickets::{RedisHolds, UNAVAILABLE, redis_store};
use tickets::{HoldConfig, HoldStatus};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const SHARED_REDIS: &str = "redis://127.0.0.1:6379/";
const SEATS: u32 = 100;
const BUYERS: usize = 1000;

/// One test of this file at a time: each one runs three servers, HAProxy and a thousand
/// clients on a two-core machine; together they would starve the nodes' heartbeats.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn race_runs() -> usize {
    env_count("HOLDS_RACE_RUNS", 20)
}

fn chaos_runs() -> usize {
    env_count("HOLDS_CHAOS_RUNS", 1)
}

fn redis_up(url: &str) -> bool {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

fn shared_redis_or_skip() -> bool {
    if redis_up(SHARED_REDIS) {
        return true;
    }
    common::skipped("no Redis on 127.0.0.1:6379");
    false
}

fn haproxy_or_skip() -> bool {
    let ok = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        common::skipped("haproxy is not installed (Debian: apt-get install haproxy)");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A store on the same keys as the nodes: the test reads what Redis holds and confirms
/// holds the way the orders-service does (through the same script a node runs).
fn checker(url: &str, prefix: &str) -> RedisHolds {
    let conn = redis_store::connection(url).expect("redis url");
    RedisHolds::new(conn, prefix, "checker", HoldConfig::default())
}

// ----- processes ---------------------------------------------------------------------------

/// One `switchboard` process.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start_with(
        redis_url: &str,
        prefix: &str,
        id: &str,
        catalog: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> Node {
        let bin = std::env::var("SWITCHBOARD_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard").to_owned());
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("SWITCHBOARD_") {
                cmd.env_remove(k);
            }
        }
        let set = |k: &str, v: &str| ["--set".to_owned(), format!("{k}={v}")];
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .args(["--listen", "127.0.0.1:0", "--data-dir", "memory"])
            .args(["--redis-url", redis_url])
            .arg("--catalog")
            .arg(catalog)
            .args(set("hold_store", "redis"))
            .args(set("hold_key_prefix", prefix))
            // The fabric's channels too, so fleets of concurrent tests never hear each other.
            .args(set(
                "redis_prefix",
                &format!("sb-test-{}", prefix.replace(['#', '*', '?', '[', ']'], "_")),
            ))
            .args(set("node_id", id))
            .args(set("rate_limit_per_sec", "0"))
            .args(set("rate_limit_per_user_per_sec", "0"))
            .args(set("coalesce_ms", "0"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.args(set(k, v));
        }
        let mut child = cmd.spawn().expect("spawn switchboard");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let name = id.to_owned();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // A node's warnings and errors go to the test's output (shown when it
                // fails), so a failure names the node's side of it.
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("[node {name}] {line}");
                }
                if !sent
                    && line.contains("switchboard listening")
                    && let Some(at) = line.find("listen=")
                {
                    let addr = line[at + 7..].split_whitespace().next().unwrap_or("");
                    if let Ok(a) = addr.parse::<SocketAddr>() {
                        let _ = tx.send(a);
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("switchboard listening");
        Node { child, addr }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Debian's haproxy with the repository's `deploy/haproxy.cfg` in front of three nodes.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
}

impl Haproxy {
    async fn start(nodes: [SocketAddr; 3]) -> Haproxy {
        let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy.cfg");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = Command::new("haproxy")
            .args(["-db", "-f", cfg])
            .env("SB_LB_BIND", addr.to_string())
            .env("SB_NODE_A", nodes[0].to_string())
            .env("SB_NODE_B", nodes[1].to_string())
            .env("SB_NODE_C", nodes[2].to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy");
        let lb = Haproxy { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy never listened on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lb
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a node answers `/ready` with 200 (Redis reachable, the fleet seen).
async fn ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if common::get_text(addr, "/ready").await.0 == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stats(addr: SocketAddr) -> Value {
    let (status, body) = common::get_text(addr, "/stats").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("stats json")
}

/// Three nodes on one Redis behind HAProxy.
struct Fleet {
    nodes: Vec<Option<Node>>,
    addrs: [SocketAddr; 3],
    lb: Haproxy,
    checker: RedisHolds,
}

impl Fleet {
    async fn start(
        url: &str,
        prefix: &str,
        catalog: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> Fleet {
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node::start_with(url, prefix, &format!("n{i}"), catalog, extra))
            .collect();
        let addrs = [nodes[0].addr, nodes[1].addr, nodes[2].addr];
        for a in addrs {
            ready(a).await;
        }
        let lb = Haproxy::start(addrs).await;
        Fleet {
            nodes: nodes.into_iter().map(Some).collect(),
            addrs,
            lb,
            checker: checker(url, prefix),
        }
    }
}

/// A catalog of `events` events (ids 1..), each with one category of `seats` seats.
fn catalog_file(tag: &str, events: usize, seats: u32) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "sb-cluster-{tag}-{:08x}.json",
        rand::random::<u32>()
    ));
    let events: Vec<Value> = (1..=events)
        .map(|id| {
            json!({"id": id, "name": format!("Race {id}"), "categories": [
                {"id": 1, "name": "GA", "price": 10.0, "totalSeats": seats, "availableSeats": seats}
            ]})
        })
        .collect();
    std::fs::write(&path, json!({ "events": events }).to_string()).expect("catalog file");
    path
}

// ----- clients -----------------------------------------------------------------------------

type Ws = common::Ws;

/// What one client heard: every `availability-update` of the race's category, in order,
/// and whether its connection ended.
#[derive(Debug, Default)]
struct Heard {
    updates: Mutex<Vec<(u32, u32)>>,
    /// In the event's room (a join refused while Redis restarted leaves it out).
    joined: AtomicBool,
    closed: AtomicBool,
}

impl Heard {
    fn last(&self) -> Option<(u32, u32)> {
        self.updates.lock().last().copied()
    }

    /// Records a frame if it is an `availability-update`.
    fn frame(&self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if v["event"] == "availability-update" {
            let d = &v["data"];
            let n = |k: &str| d[k].as_u64().expect("number") as u32;
            self.updates
                .lock()
                .push((n("availableTickets"), n("lockedTickets")));
        }
    }
}

/// Sends one contract event and waits for its ack, recording what else arrives.
async fn call(
    ws: &mut Ws,
    heard: &Heard,
    event: &str,
    data: Value,
    ack: u64,
) -> Result<Value, String> {
    let frame = json!({"event": event, "data": data, "ack": ack}).to_string();
    ws.send(Message::Text(frame.into()))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no answer to {event} in time"))?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v.get("ack").and_then(Value::as_u64) == Some(ack) {
                    return Ok(v["data"].clone());
                }
                heard.frame(&t);
            }
            Some(Ok(_)) => {}
            other => return Err(format!("connection ended: {other:?}")),
        }
    }
}

async fn connect(addr: SocketAddr, user: &str) -> Result<Ws, String> {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws?userId={user}"))
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// What a node says about the category (a fresh client joining the room there).
async fn view(addr: SocketAddr, event: i64) -> (u32, u32) {
    let mut ws = connect(addr, "checker").await.expect("checker connects");
    let heard = Heard::default();
    let joined = call(
        &mut ws,
        &heard,
        "join-event-room",
        json!({"eventId": event}),
        1,
    )
    .await
    .expect("joined");
    assert_eq!(joined["success"], true, "{joined}");
    loop {
        if let Some(last) = heard.last() {
            return last;
        }
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("availability in time");
        if let Some(Ok(Message::Text(t))) = msg {
            heard.frame(&t);
        }
    }
}

/// Connections kept open and read (a disconnect releases holds) until dropped.
#[derive(Debug, Default)]
struct Kept(Vec<tokio::task::AbortHandle>);

impl Kept {
    fn keep(&mut self, mut ws: Ws, heard: Arc<Heard>) {
        let task = tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    heard.frame(&t);
                }
            }
            heard.closed.store(true, Ordering::Relaxed);
        });
        self.0.push(task.abort_handle());
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// An answered hold.
#[derive(Debug, Clone)]
struct Grant {
    user: String,
    lock_id: String,
    expires_at: i64,
    quantity: u32,
    heard: Arc<Heard>,
}

/// How a buyer's error starts when it never connected.
const NOT_CONNECTED: &str = "not connected: ";

/// The step run once mid-race, given the holds answered so far.
type Chaos = Box<dyn FnOnce(Vec<Grant>) -> BoxFuture<'static, ()> + Send>;

#[derive(Default)]
struct Race {
    grants: Vec<Grant>,
    /// Refused by the rules (no seats left).
    refused: usize,
    /// Refused with `Hold service unavailable` (Redis did not answer).
    unavailable: usize,
    /// No answer: the connection broke, or an answer never came.
    errors: usize,
    /// Never connected: the load balancer had no node to offer (every node answered
    /// `/ready` 503 while Redis restarted, so HAProxy took them all out for a moment).
    unreachable: usize,
    heard: Vec<Arc<Heard>>,
    clients: Kept,
}

impl Race {
    fn granted(&self) -> u32 {
        self.grants.iter().map(|g| g.quantity).sum()
    }
}

/// `BUYERS` buyers (1 to 3 seats each) through `lb`, 250 at a time: each joins the
/// event's room, then asks for its seats. `chaos` runs once `trigger` seats are granted,
/// while the race goes on.
async fn race(lb: SocketAddr, event: i64, tag: &str, trigger: u32, chaos: Option<Chaos>) -> Race {
    let gate = Arc::new(tokio::sync::Semaphore::new(250));
    let seats = Arc::new(AtomicU32::new(0));
    let grants: Arc<Mutex<Vec<Grant>>> = Arc::default();
    let chaos = Arc::new(Mutex::new(chaos));
    let chaos_task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..BUYERS {
        let (gate, seats, grants) = (gate.clone(), seats.clone(), grants.clone());
        let (chaos, chaos_task) = (chaos.clone(), chaos_task.clone());
        let user = format!("{tag}b{i}");
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let quantity = 1 + (i % 3) as u32;
            let heard = Arc::new(Heard::default());
            let result = async {
                let mut ws = connect(lb, &user)
                    .await
                    .map_err(|e| format!("{NOT_CONNECTED}{e}"))?;
                let joined = call(
                    &mut ws,
                    &heard,
                    "join-event-room",
                    json!({"eventId": event}),
                    1,
                )
                .await?;
                if joined["success"] != true {
                    // Only while Redis restarts: the buyer hears `unavailable`.
                    return Ok((ws, joined));
                }
                heard.joined.store(true, Ordering::Relaxed);
                let data = json!({"eventId": event, "categoryId": 1, "quantity": quantity});
                let answer = call(&mut ws, &heard, "lock-tickets", data, 2).await?;
                Ok::<_, String>((ws, answer))
            }
            .await;
            if let Ok((_, answer)) = &result
                && answer["success"] == true
            {
                let grant = Grant {
                    user: user.clone(),
                    lock_id: answer["lockId"].as_str().expect("lockId").to_owned(),
                    expires_at: answer["expiresAt"].as_i64().expect("expiresAt"),
                    quantity,
                    heard: heard.clone(),
                };
                let so_far = {
                    let mut g = grants.lock();
                    g.push(grant);
                    g.clone()
                };
                if seats.fetch_add(quantity, Ordering::SeqCst) + quantity >= trigger
                    && let Some(step) = chaos.lock().take()
                {
                    *chaos_task.lock() = Some(tokio::spawn(step(so_far)));
                }
            }
            (result, heard)
        });
    }
    let mut race = Race::default();
    while let Some(done) = tasks.join_next().await {
        let (result, heard) = done.expect("buyer task");
        match result {
            Ok((ws, answer)) => {
                if answer["success"] != true {
                    if answer["message"] == UNAVAILABLE {
                        race.unavailable += 1;
                    } else {
                        race.refused += 1;
                    }
                }
                race.clients.keep(ws, heard.clone());
                race.heard.push(heard);
            }
            Err(e) if e.starts_with(NOT_CONNECTED) => race.unreachable += 1,
            Err(_) => race.errors += 1,
        }
    }
    let step = chaos_task.lock().take();
    if let Some(step) = step {
        step.await.expect("chaos step");
    }
    assert!(chaos.lock().is_none(), "the chaos step never ran");
    race.grants = std::mem::take(&mut *grants.lock());
    race
}

/// Every buyer still connected ends on `(available, locked)` from the updates it heard.
async fn clients_converge(heard: &[Arc<Heard>], want: (u32, u32)) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open: Vec<&Arc<Heard>> = heard
            .iter()
            .filter(|h| h.joined.load(Ordering::Relaxed) && !h.closed.load(Ordering::Relaxed))
            .collect();
        let behind = open.iter().filter(|h| h.last() != Some(want)).count();
        if behind == 0 {
            assert!(!open.is_empty(), "no client left to check");
            return;
        }
        if Instant::now() > deadline {
            let sample: Vec<Option<(u32, u32)>> = open
                .iter()
                .filter(|h| h.last() != Some(want))
                .take(5)
                .map(|h| h.last())
                .collect();
            panic!(
                "{behind} of {} clients never heard {want:?}; e.g. {sample:?}",
                open.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every node, asked fresh, says `(available, locked)`.
async fn nodes_agree(addrs: &[SocketAddr], event: i64, want: (u32, u32)) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut views = Vec::new();
        for &a in addrs {
            views.push(view(a, event).await);
        }
        if views.iter().all(|v| *v == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes say {views:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live holds Redis keeps for an event: lock id -> (user, expiresAt, seats, status).
async fn live_holds(
    store: &RedisHolds,
    event: i64,
) -> BTreeMap<String, (String, i64, u32, HoldStatus)> {
    // The test's own connection may find Redis just restarted: it reconnects.
    let mut tries = 0;
    let holds = loop {
        match store.holds(event, switchboard::tickets::now_ms()).await {
            Ok(h) => break h,
            Err(e) if tries < 50 => {
                tries += 1;
                retry_pause(&e).await;
            }
            Err(e) => panic!("redis does not answer: {e}"),
        }
    };
    holds
        .into_iter()
        .map(|h| (h.lock_id, (h.user_id, h.expires_at, h.quantity, h.status)))
        .collect()
}

async fn retry_pause(_why: &redis_store::RedisStoreError) {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Confirms every other hold answered so far, the way the orders-service does when a
/// buyer checks out (the order then waits for it); answers the confirmed holds.
async fn confirm_half(store: &RedisHolds, grants: &[Grant]) -> Vec<tickets::Hold> {
    let mut confirmed = Vec::new();
    for g in grants.iter().step_by(2) {
        let done = store
            .confirm(&g.lock_id, switchboard::tickets::now_ms())
            .await
            .expect("redis answers");
        confirmed.push(done.value.expect("confirmed"));
    }
    confirmed
}

/// The node that granted a hold: the `node` field the lock script writes (key layout in
/// `lua/prelude.lua`). Read before any release, it says exactly which holds a killed node
/// granted, whenever HAProxy gets round to closing that node's clients.
async fn granted_by(url: &str, prefix: &str, event: i64, lock: &str) -> Option<String> {
    let mut conn = redis_store::connection(url).expect("redis url");
    redis::cmd("HGET")
        .arg(format!("{prefix}{{e:{event}}}:h:{lock}"))
        .arg("node")
        .query_async(&mut conn)
        .await
        .expect("redis answers")
}

// ----- the race ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_haproxy_race_for_a_hundred_seats() {
    let _one = SERIAL.lock().await;
    if !shared_redis_or_skip() || !haproxy_or_skip() {
        return;
    }
    let runs = race_runs();
    let catalog = catalog_file("race", runs, SEATS);
    let prefix = format!("sbtest:cluster:{:016x}:", rand::random::<u64>());
    let fleet = Fleet::start(SHARED_REDIS, &prefix, &catalog, &[]).await;
    let started = Instant::now();
    for run in 0..runs {
        // A new event per run: the fleet and its load balancer stay.
        let event = run as i64 + 1;
        let race = race(fleet.lb.addr, event, &format!("r{run}"), u32::MAX, None).await;
        let granted = race.granted();
        eprintln!(
            "race {run}: granted {granted} seats to {} buyers, {} refused, {} unavailable, {} errors",
            race.grants.len(),
            race.refused,
            race.unavailable,
            race.errors
        );
        assert_eq!((race.errors, race.unreachable, race.unavailable), (0, 0, 0));
        assert!(granted <= SEATS, "oversold: {granted}");
        assert!(
            granted >= SEATS - 2,
            "seats left while buyers were refused: {granted}"
        );
        // The load balancer spread the buyers over every node.
        for a in fleet.addrs {
            let ws = stats(a).await["connections"]["ws"]
                .as_u64()
                .expect("ws count");
            assert!(ws > 0, "no buyer on {a}");
        }
        // Redis holds exactly the answered holds, with the expiresAt each buyer heard.
        let live = live_holds(&fleet.checker, event).await;
        let answered: BTreeMap<String, (String, i64, u32, HoldStatus)> = race
            .grants
            .iter()
            .map(|g| {
                (
                    g.lock_id.clone(),
                    (g.user.clone(), g.expires_at, g.quantity, HoldStatus::Active),
                )
            })
            .collect();
        assert_eq!(live, answered);
        let want = (SEATS - granted, granted);
        // Every buyer ends on the final numbers, including those whose join snapshot
        // raced the last updates (it is sent ordered with the room's deliveries).
        clients_converge(&race.heard, want).await;
        nodes_agree(&fleet.addrs, event, want).await;
    }
    eprintln!("{runs} races in {:?}", started.elapsed());
    drop(fleet);
    let _ = fleet_cleanup(SHARED_REDIS, &prefix).await;
    let _ = std::fs::remove_file(catalog);
}

async fn fleet_cleanup(url: &str, prefix: &str) -> Result<(), redis_store::RedisStoreError> {
    checker(url, prefix).delete_all().await
}

// ----- kill -9 -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_race_loses_no_confirmed_hold_and_its_active_holds_are_released() {
    let _one = SERIAL.lock().await;
    if !shared_redis_or_skip() || !haproxy_or_skip() {
        return;
    }
    let catalog = catalog_file("kill", 1, SEATS);
    for run in 0..chaos_runs() {
        let prefix = format!("sbtest:kill:{:016x}:", rand::random::<u64>());
        // A short node timeout and recovery window, so the test sees the release.
        let fast = [("node_timeout_secs", "3"), ("recovery_window_secs", "2")];
        let mut fleet = Fleet::start(SHARED_REDIS, &prefix, &catalog, &fast).await;
        // The victim is the node that granted the hold which brought the race to half the
        // seats, so it has granted some when it dies (with batching, one node's script may
        // take many seats before another's runs, so a node fixed in advance may have none).
        let nodes: Arc<Mutex<Vec<Option<Node>>>> =
            Arc::new(Mutex::new(std::mem::take(&mut fleet.nodes)));
        let victim: Arc<Mutex<Option<usize>>> = Arc::default();
        let (all, killed) = (nodes.clone(), victim.clone());
        let store = fleet.checker.clone();
        let confirmed: Arc<Mutex<Vec<tickets::Hold>>> = Arc::default();
        let c = confirmed.clone();
        let p = prefix.clone();
        let chaos: Chaos = Box::new(move |so_far| {
            Box::pin(async move {
                *c.lock() = confirm_half(&store, &so_far).await;
                let last = so_far.last().expect("a grant triggered the step");
                let node = granted_by(SHARED_REDIS, &p, 1, &last.lock_id)
                    .await
                    .expect("the hold names its node");
                let index: usize = node
                    .strip_prefix('n')
                    .and_then(|i| i.parse().ok())
                    .expect("node ids are n0, n1, n2");
                *killed.lock() = Some(index);
                let mut node = all.lock()[index].take().expect("a live node");
                tokio::task::spawn_blocking(move || node.kill9())
                    .await
                    .expect("kill");
            })
        });
        let race = race(fleet.lb.addr, 1, &format!("k{run}"), 50, Some(chaos)).await;
        let victim = victim.lock().expect("a node was killed");
        let victim_id = format!("n{victim}");
        let confirmed = std::mem::take(&mut *confirmed.lock());
        let granted = race.granted();
        // Nothing was released during the race (the dead node's holds go after its
        // recovery window): every answer counts.
        assert!(granted <= SEATS, "oversold: {granted}");
        // Which holds the killed node granted, from Redis (its release comes only after
        // the node timeout and the recovery window; a buyer's closed socket may not have
        // been seen yet when the race ends).
        let mut on_victim: Vec<&Grant> = Vec::new();
        for g in &race.grants {
            let node = granted_by(SHARED_REDIS, &prefix, 1, &g.lock_id).await;
            if node.as_deref() == Some(victim_id.as_str()) {
                on_victim.push(g);
            }
        }
        let victim_ids: std::collections::HashSet<&str> =
            on_victim.iter().map(|g| g.lock_id.as_str()).collect();
        let confirmed_ids: HashMap<&str, &tickets::Hold> =
            confirmed.iter().map(|h| (h.lock_id.as_str(), h)).collect();
        // What must remain: every confirmed hold (an order waits for it, whichever node
        // granted it) and every active hold a surviving node granted, each with the
        // expiresAt it was given.
        let mut want: BTreeMap<String, (String, i64, u32, HoldStatus)> = BTreeMap::new();
        for h in &confirmed {
            want.insert(
                h.lock_id.clone(),
                (
                    h.user_id.clone(),
                    h.expires_at,
                    h.quantity,
                    HoldStatus::Confirmed,
                ),
            );
        }
        for g in &race.grants {
            if !confirmed_ids.contains_key(g.lock_id.as_str())
                && !victim_ids.contains(g.lock_id.as_str())
            {
                want.insert(
                    g.lock_id.clone(),
                    (g.user.clone(), g.expires_at, g.quantity, HoldStatus::Active),
                );
            }
        }
        let confirmed_on_victim = on_victim
            .iter()
            .filter(|g| confirmed_ids.contains_key(g.lock_id.as_str()))
            .count();
        eprintln!(
            "kill run {run}: node {victim_id} killed; granted {granted} seats ({} holds, {} confirmed), {} holds on the killed node ({confirmed_on_victim} confirmed), {} refused, {} unavailable, {} errors (buyers of the killed node), {} not connected",
            race.grants.len(),
            confirmed.len(),
            on_victim.len(),
            race.refused,
            race.unavailable,
            race.errors,
            race.unreachable
        );
        assert!(!on_victim.is_empty(), "the killed node had granted nothing");
        // After the node timeout and the recovery window, another node releases the dead
        // node's active holds (and only those).
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut live = live_holds(&fleet.checker, 1).await;
        while live != want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            live = live_holds(&fleet.checker, 1).await;
        }
        let lost: Vec<&String> = want.keys().filter(|k| !live.contains_key(*k)).collect();
        assert!(lost.is_empty(), "holds lost: {lost:?}");
        assert_eq!(
            live, want,
            "the dead node's active holds are released, nothing else"
        );
        // By now HAProxy has closed every connection of the killed node.
        let open: Vec<&str> = on_victim
            .iter()
            .filter(|g| !g.heard.closed.load(Ordering::Relaxed))
            .map(|g| g.user.as_str())
            .collect();
        assert!(
            open.is_empty(),
            "buyers of the killed node still connected: {open:?}"
        );
        // ... and announced: every buyer still connected hears the new numbers.
        let locked: u32 = want.values().map(|v| v.2).sum();
        let survivors: Vec<SocketAddr> = (0..3)
            .filter(|&i| i != victim)
            .map(|i| fleet.addrs[i])
            .collect();
        clients_converge(&race.heard, (SEATS - locked, locked)).await;
        nodes_agree(&survivors, 1, (SEATS - locked, locked)).await;
        drop(race.clients);
        drop(nodes);
        drop(fleet);
        let _ = fleet_cleanup(SHARED_REDIS, &prefix).await;
    }
    let _ = std::fs::remove_file(catalog);
}

// ----- Redis restart -------------------------------------------------------------------------

/// A `redis-server` of this test's own with AOF `always`, restartable on the same port.
struct OwnRedis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    fn start() -> Option<OwnRedis> {
        let dir =
            std::env::temp_dir().join(format!("sb-cluster-aof-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut r = OwnRedis {
            child: None,
            port: free_port(),
            dir,
        };
        r.spawn().then_some(r)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                self.child = Some(c);
                for _ in 0..200 {
                    if redis_up(&self.url()) {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                false
            }
            Err(e) => {
                common::skipped(&format!("cannot start redis-server: {e}"));
                false
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_race_loses_no_answered_or_confirmed_hold() {
    let _one = SERIAL.lock().await;
    if !haproxy_or_skip() {
        return;
    }
    let catalog = catalog_file("restart", 1, SEATS);
    for run in 0..chaos_runs() {
        let Some(redis) = OwnRedis::start() else {
            return;
        };
        let url = redis.url();
        let fleet = Fleet::start(&url, "sb:", &catalog, &[]).await;
        let redis = Arc::new(Mutex::new(redis));
        let r = redis.clone();
        let store = fleet.checker.clone();
        let confirmed: Arc<Mutex<Vec<tickets::Hold>>> = Arc::default();
        let c = confirmed.clone();
        let restarted = Arc::new(AtomicUsize::new(0));
        let seen = restarted.clone();
        let chaos: Chaos = Box::new(move |so_far| {
            Box::pin(async move {
                *c.lock() = confirm_half(&store, &so_far).await;
                // Killed (no shutdown save: only the append-only file) and started again
                // on the same port and directory, while buyers keep asking.
                seen.store(
                    so_far.iter().map(|g| g.quantity as usize).sum(),
                    Ordering::Relaxed,
                );
                tokio::task::spawn_blocking(move || {
                    let mut r = r.lock();
                    r.kill9();
                    assert!(r.spawn(), "redis-server restarts");
                })
                .await
                .expect("restart");
            })
        });
        let race = race(fleet.lb.addr, 1, &format!("s{run}"), 30, Some(chaos)).await;
        let confirmed = std::mem::take(&mut *confirmed.lock());
        let granted = race.granted();
        eprintln!(
            "restart run {run}: Redis restarted with {} seats held; granted {granted} seats ({} holds, {} confirmed), {} refused, {} unavailable while it restarted, {} not let in by HAProxy (no node ready), {} errors",
            restarted.load(Ordering::Relaxed),
            race.grants.len(),
            confirmed.len(),
            race.refused,
            race.unavailable,
            race.unreachable,
            race.errors
        );
        assert_eq!(race.errors, 0, "the open sockets kept serving");
        assert!(granted <= SEATS, "oversold: {granted}");
        assert!(
            restarted.load(Ordering::Relaxed) < SEATS as usize,
            "restarted mid-race"
        );
        let live = live_holds(&fleet.checker, 1).await;
        // Every answered hold survived with its expiresAt (confirmed ones with the
        // order's deadline). A hold Redis applied whose answer was lost in the kill may
        // be there too (its buyer heard `unavailable`): it counts, nothing is oversold.
        let confirmed_ids: HashMap<&str, &tickets::Hold> =
            confirmed.iter().map(|h| (h.lock_id.as_str(), h)).collect();
        for g in &race.grants {
            let want = match confirmed_ids.get(g.lock_id.as_str()) {
                Some(h) => (
                    h.user_id.clone(),
                    h.expires_at,
                    h.quantity,
                    HoldStatus::Confirmed,
                ),
                None => (g.user.clone(), g.expires_at, g.quantity, HoldStatus::Active),
            };
            assert_eq!(
                live.get(&g.lock_id),
                Some(&want),
                "hold {} lost or changed",
                g.lock_id
            );
        }
        let locked: u32 = live.values().map(|v| v.2).sum();
        assert!(locked <= SEATS, "oversold: {locked} seats held in Redis");
        // Every buyer ends on the numbers Redis holds, as does every node.
        clients_converge(&race.heard, (SEATS - locked, locked)).await;
        nodes_agree(&fleet.addrs, 1, (SEATS - locked, locked)).await;
        drop(race.clients);
        drop(fleet);
    }
    let _ = std::fs::remove_file(catalog);
}

// ----- expiry --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_holds_expiring_together_are_released_and_announced_once() {
    let _one = SERIAL.lock().await;
    if !shared_redis_or_skip() || !haproxy_or_skip() {
        return;
    }
    const HOLDS: usize = 500;
    const TOTAL: u32 = 1000;
    let catalog = catalog_file("expiry", 1, TOTAL);
    let prefix = format!("sbtest:expiry:{:016x}:", rand::random::<u64>());
    let fleet = Fleet::start(SHARED_REDIS, &prefix, &catalog, &[("hold_ttl_secs", "4")]).await;
    // Every buyer connects first; then all ask at once (outside the room, so that no
    // announcement slows the grants: the deadlines fall within one second), then all join
    // the room (its snapshot says 500 held) before the first deadline.
    let gate = Arc::new(tokio::sync::Semaphore::new(250));
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..HOLDS {
        let (gate, lb) = (gate.clone(), fleet.lb.addr);
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await;
            connect(lb, &format!("x{i}")).await.expect("connect")
        });
    }
    let mut buyers = Vec::new();
    while let Some(b) = connecting.join_next().await {
        buyers.push(b.expect("buyer"));
    }
    let mut locking = tokio::task::JoinSet::new();
    for mut ws in buyers {
        locking.spawn(async move {
            let heard = Arc::new(Heard::default());
            let data = json!({"eventId": 1, "categoryId": 1, "quantity": 1});
            let answer = call(&mut ws, &heard, "lock-tickets", data, 2)
                .await
                .expect("answer");
            assert_eq!(answer["success"], true, "{answer}");
            (ws, heard, answer["expiresAt"].as_i64().expect("expiresAt"))
        });
    }
    let mut locked = Vec::new();
    while let Some(done) = locking.join_next().await {
        locked.push(done.expect("lock"));
    }
    let first = locked.iter().map(|l| l.2).min().expect("some");
    let spread = locked.iter().map(|l| l.2).max().expect("some") - first;
    eprintln!("{HOLDS} holds, deadlines within {spread} ms");
    assert!(
        spread < 1000,
        "the deadlines fall within one second: {spread} ms"
    );
    let mut joining = tokio::task::JoinSet::new();
    for (mut ws, heard, _) in locked {
        joining.spawn(async move {
            let joined = call(&mut ws, &heard, "join-event-room", json!({"eventId": 1}), 1)
                .await
                .expect("join");
            assert_eq!(joined["success"], true);
            heard.joined.store(true, Ordering::Relaxed);
            (ws, heard)
        });
    }
    let mut clients = Kept::default();
    let mut heard_all = Vec::new();
    while let Some(done) = joining.join_next().await {
        let (ws, heard) = done.expect("join");
        clients.keep(ws, heard.clone());
        heard_all.push(heard);
    }
    assert!(
        switchboard::tickets::now_ms() < first,
        "every buyer joined before the first deadline"
    );
    // Released once: every node's count of the fleet's expired holds is 500, and the
    // holds each node claimed add up to 500.
    let deadline = Instant::now() + Duration::from_secs(20);
    let per_node = loop {
        let mut expired = Vec::new();
        let mut claimed = Vec::new();
        for a in fleet.addrs {
            let st = stats(a).await;
            expired.push(
                st["ticketLocks"]["locksByStatus"]["expired"]
                    .as_u64()
                    .expect("n"),
            );
            claimed.push(st["ticketLocks"]["expiredByThisNode"].as_u64().expect("n"));
        }
        if expired.iter().all(|&n| n == HOLDS as u64) && claimed.iter().sum::<u64>() == HOLDS as u64
        {
            break claimed;
        }
        assert!(
            Instant::now() < deadline,
            "expired {expired:?}, claimed per node {claimed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("claimed per node: {per_node:?}");
    // Announced once: every buyer hears the count go from 500 to 0 with no number twice
    // and never back up (each release is in exactly one announcement).
    clients_converge(&heard_all, (TOTAL, 0)).await;
    let mut announcements = Vec::new();
    for h in &heard_all {
        let updates = h.updates.lock().clone();
        let top = updates
            .iter()
            .rposition(|u| u.1 == HOLDS as u32)
            .expect("heard 500 held");
        let after: Vec<u32> = updates[top..].iter().map(|u| u.1).collect();
        assert!(
            after.windows(2).all(|w| w[1] < w[0]),
            "a release announced twice or out of order: {after:?}"
        );
        announcements.push(after.len() - 1);
    }
    eprintln!(
        "expiry announcements heard per client: min {:?}, max {:?}",
        announcements.iter().min(),
        announcements.iter().max()
    );
    assert!(live_holds(&fleet.checker, 1).await.is_empty());
    drop(clients);
    drop(fleet);
    let _ = fleet_cleanup(SHARED_REDIS, &prefix).await;
    let _ = std::fs::remove_file(catalog);
}

// ----- RabbitMQ on every node ----------------------------------------------------------------

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn broker_or_skip() -> Option<lapin::Connection> {
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        lapin::Connection::connect(BROKER, lapin::ConnectionProperties::default()),
    )
    .await;
    match conn {
        Ok(Ok(c)) => Some(c),
        _ => {
            common::skipped("no RabbitMQ on 127.0.0.1:5672");
            None
        }
    }
}

/// Two nodes consume the same queue (competing consumers). The orders-service sends the
/// same `order-completed` several times (a retry, a redelivery): the copies reach both
/// nodes, and the order has one effect: sold once, one `order-completed` to the buyer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_delivered_to_two_nodes_has_one_effect() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
    let _one = SERIAL.lock().await;
    if !shared_redis_or_skip() {
        return;
    }
    let Some(conn) = broker_or_skip().await else {
        return;
    };
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = format!("sb_test_cluster_orders_{:08x}", rand::random::<u32>());
    let catalog = catalog_file("orders", 1, 10);
    let prefix = format!("sbtest:orders:{:016x}:", rand::random::<u64>());
    let extra = [
        ("amqp_url", BROKER),
        ("amqp_queue", queue.as_str()),
        ("amqp_reconnect_max_ms", "500"),
    ];
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|id| Node::start_with(SHARED_REDIS, &prefix, id, &catalog, &extra))
        .collect();
    for n in &nodes {
        ready(n.addr).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats(n.addr).await["amqp"]["state"] != "connected" {
            assert!(Instant::now() < deadline, "{} never consumed", n.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The buyer holds 3 seats on node a; the order confirms the hold, then completes.
    let heard = Heard::default();
    let mut buyer = connect(nodes[0].addr, "u7").await.expect("buyer");
    let joined = call(
        &mut buyer,
        &heard,
        "join-event-room",
        json!({"eventId": 1}),
        1,
    )
    .await
    .expect("join");
    assert_eq!(joined["success"], true);
    let hold = call(
        &mut buyer,
        &heard,
        "lock-tickets",
        json!({"eventId": 1, "categoryId": 1, "quantity": 3}),
        2,
    )
    .await
    .expect("lock");
    assert_eq!(hold["success"], true, "{hold}");
    let emit = |pattern: &str, data: Value| {
        let body = json!({"pattern": pattern, "data": data}).to_string();
        let ch = ch.clone();
        let queue = queue.clone();
        async move {
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed by the broker");
        }
    };
    emit("confirm-ticket-lock", json!({"lockId": hold["lockId"]})).await;
    const COPIES: u64 = 10;
    let order = json!({"orderId": "order-77", "eventId": 1, "categoryId": 1, "quantity": 3, "userId": "u7"});
    for _ in 0..COPIES {
        emit("order-completed", order.clone()).await;
    }
    // Every copy acked somewhere; both nodes took some; one effect in all.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (consumed, duplicates) = loop {
        let mut consumed = Vec::new();
        let mut duplicates = 0;
        let mut acked = 0;
        for n in &nodes {
            let a = stats(n.addr).await["amqp"].clone();
            consumed.push(a["consumed"].as_u64().expect("n"));
            duplicates += a["duplicates"].as_u64().expect("n");
            acked += a["acked"].as_u64().expect("n");
        }
        if acked == COPIES + 1 {
            break (consumed, duplicates);
        }
        assert!(Instant::now() < deadline, "acked {acked} of {}", COPIES + 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("consumed per node {consumed:?}, {duplicates} duplicates");
    assert!(
        consumed.iter().all(|&c| c > 0),
        "both nodes consumed: {consumed:?}"
    );
    assert_eq!(
        duplicates,
        COPIES - 1,
        "one copy applied, the others recognized"
    );
    for n in &nodes {
        let st = stats(n.addr).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut st = st;
        while st["ticketLocks"]["locksByStatus"]["completed"] != 1 {
            assert!(Instant::now() < deadline, "{st}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            st = stats(n.addr).await;
        }
        assert_eq!(view(n.addr, 1).await, (7, 0), "sold once");
    }
    // The buyer hears the outcome once.
    let mut outcomes = 0;
    let quiet = Instant::now() + Duration::from_millis(500);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(quiet, buyer.next()).await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["event"] == "order-completed" {
                outcomes += 1;
            }
        }
    }
    assert_eq!(outcomes, 1, "one order-completed to the buyer");
    drop(nodes);
    for q in [queue.clone(), format!("{queue}.dlq")] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = ch
        .exchange_delete(
            format!("{queue}.dlq.x").as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await;
    let _ = fleet_cleanup(SHARED_REDIS, &prefix).await;
    let _ = std::fs::remove_file(catalog);
}

//! The storm run: one observer per event room on every node checks every update it sees;
//! buyers race (spread over the nodes); then a fresh checker joins each room on every node
//! and compares the server's held seats with what the buyers were granted, and the
//! observers' last updates with that final view.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::StormConfig;
use super::report::{CategoryCheck, StormReport};
use crate::crowd::{self, CrowdSpec};
use crate::realtime::{self, Update};
use crate::report::{Latency, Meta};
use crate::sio::{Client, Namespace, SioError, Target, TargetError};
use crate::sys::{self, CpuMeter, Proc};

#[derive(Debug, thiserror::Error)]
pub enum StormError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{need} clients need more open files than the limit {have}: raise `ulimit -n`")]
    FdLimit { need: u64, have: u64 },
    #[error("observing event {event} on node {node}: {source}")]
    Observer {
        event: i64,
        node: usize,
        source: SioError,
    },
    #[error("event {0} has no categories")]
    EmptyEvent(i64),
}

/// A category raced for, with the seats the buyers were granted and still hold.
struct Category {
    event_id: i64,
    category_id: i64,
    total: i64,
    /// Seats held when the run started (0 on a fresh server).
    baseline_locked: i64,
    granted: AtomicI64,
}

#[derive(Default)]
struct Counters {
    locks_ok: AtomicU64,
    locks_refused: AtomicU64,
    unlocks_ok: AtomicU64,
    unlocks_refused: AtomicU64,
}

/// A small deterministic generator (xorshift64*): each buyer's choices repeat run to run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub async fn run(
    config: &StormConfig,
    shutdown: CancellationToken,
) -> Result<StormReport, StormError> {
    let targets = Target::resolve_all(&config.url).await?;
    let nodes = targets.len();
    let need = (config.buyers + 2 * config.events.len() * nodes) as u64 + 40;
    if let Some(have) = sys::open_files_limit().filter(|&h| h < need) {
        return Err(StormError::FdLimit { need, have });
    }
    let mut meta = Meta::new(
        &config.server,
        config
            .label
            .clone()
            .unwrap_or_else(|| format!("storm-{}", config.buyers)),
    );
    let nsp = Namespace::new(realtime::NAMESPACE);
    let stop = shutdown.child_token();

    // Observers first: their join on the first node tells the categories and their capacity.
    let mut categories = Vec::new();
    let mut observers = JoinSet::new();
    let mut last_seen: Vec<LastSeen> = Vec::new();
    for (node, target) in targets.iter().enumerate() {
        for &event in &config.events {
            let observed = async {
                let user = format!("storm-observer-{event}-{node}");
                let mut c = realtime::connect(target, &nsp, &user).await?;
                let initial =
                    realtime::join_event(&mut c, event, realtime::DEMO_CATEGORIES_PER_EVENT)
                        .await?;
                Ok::<_, SioError>((c, initial))
            };
            let (client, initial) = observed.await.map_err(|source| StormError::Observer {
                event,
                node,
                source,
            })?;
            if initial.is_empty() {
                return Err(StormError::EmptyEvent(event));
            }
            if node == 0 {
                for u in &initial {
                    categories.push(Category {
                        event_id: u.event_id,
                        category_id: u.category_id,
                        total: u.total_tickets,
                        baseline_locked: u.locked_tickets,
                        granted: AtomicI64::new(0),
                    });
                }
            }
            let seen: LastSeen = Arc::new(Mutex::new(
                initial
                    .iter()
                    .map(|u| ((u.event_id, u.category_id), *u))
                    .collect(),
            ));
            last_seen.push(seen.clone());
            observers.spawn(observe(client, seen, stop.clone()));
        }
    }
    let categories = Arc::new(categories);

    let crowd = crowd::open(
        &targets,
        &CrowdSpec {
            clients: config.buyers,
            user_prefix: "storm".into(),
            event: None,
            concurrency: config.concurrency,
            timeout: config.connect_timeout,
        },
    )
    .await;
    let connect_failures = crowd.failures.clone();
    let racing = crowd.clients.len();

    let counters = Arc::new(Counters::default());
    let generator_cpu = CpuMeter::start(Proc::This);
    let server_cpu = CpuMeter::start_pids(&config.server_pids);
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut buyers = JoinSet::new();
    for (i, client) in crowd.clients.into_iter().enumerate() {
        buyers.spawn(buy(
            client,
            Rng::new(i as u64 + 1),
            categories.clone(),
            counters.clone(),
            config.max_quantity,
            deadline,
            stop.clone(),
        ));
    }
    // Buyers hand their clients back, still connected (a disconnect releases holds).
    let mut clients = Vec::with_capacity(racing);
    let mut buyer_errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut latencies: Vec<u32> = Vec::new();
    while let Some(done) = buyers.join_next().await {
        match done {
            Ok(b) => {
                if let Some(kind) = b.error {
                    *buyer_errors.entry(kind).or_insert(0) += 1;
                }
                latencies.extend(b.latencies_us);
                clients.extend(b.client);
            }
            Err(_) => *buyer_errors.entry("panic").or_insert(0) += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    meta.generator_cpu_pct = generator_cpu.and_then(|m| m.percent());
    meta.server_cpu_pct = server_cpu.as_ref().and_then(CpuMeter::percent);
    let server_cpu_window = server_cpu.as_ref().map(CpuMeter::elapsed_secs);

    // What each node says now, through a fresh join of each room.
    let mut server_views: Vec<Vec<Update>> = vec![Vec::new(); nodes];
    let mut checker_error = None;
    for (node, target) in targets.iter().enumerate() {
        for &event in &config.events {
            let checked = async {
                let user = format!("storm-checker-{event}-{node}");
                let mut c = realtime::connect(target, &nsp, &user).await?;
                let v =
                    realtime::join_event(&mut c, event, realtime::DEMO_CATEGORIES_PER_EVENT).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
                v
            };
            match tokio::time::timeout(Duration::from_secs(10), checked).await {
                Ok(Ok(v)) => server_views[node].extend(v),
                Ok(Err(e)) => checker_error = Some(e.kind()),
                Err(_) => checker_error = Some("timeout"),
            }
        }
    }
    // Updates may still be on their way to the observers: wait (boundedly) until every
    // observer's last update of each category is the final view of its node.
    let finals: Vec<BTreeMap<(i64, i64), Update>> = server_views
        .iter()
        .map(|v| {
            v.iter()
                .map(|u| ((u.event_id, u.category_id), *u))
                .collect()
        })
        .collect();
    let per_node = config.events.len();
    let stale = || {
        last_seen
            .iter()
            .enumerate()
            .map(|(i, seen)| {
                let want = &finals[i / per_node];
                let seen = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                seen.iter()
                    .filter(|(k, u)| want.get(k).is_some_and(|w| !same_numbers(w, u)))
                    .count()
            })
            .sum::<usize>()
    };
    let settle_until = Instant::now() + SETTLE;
    while stale() > 0 && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stale_views = stale();
    stop.cancel();
    let mut observed = Observed::default();
    while let Some(done) = observers.join_next().await {
        if let Ok(o) = done {
            observed.updates += o.updates;
            observed.inconsistent += o.inconsistent;
            observed.error = observed.error.or(o.error);
        }
    }
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
    }

    let checks: Vec<CategoryCheck> = categories
        .iter()
        .map(|c| {
            let views: Vec<Option<&Update>> = server_views
                .iter()
                .map(|v| {
                    v.iter()
                        .find(|u| u.event_id == c.event_id && u.category_id == c.category_id)
                })
                .collect();
            let granted = c.granted.load(Ordering::Relaxed);
            let locked_by_node: Vec<Option<i64>> = views
                .iter()
                .map(|u| u.map(|u| u.locked_tickets - c.baseline_locked))
                .collect();
            let server = views.first().copied().flatten();
            CategoryCheck {
                event_id: c.event_id,
                category_id: c.category_id,
                total: c.total,
                granted_held: granted,
                server_locked: server.map(|u| u.locked_tickets - c.baseline_locked),
                server_available: server.map(|u| u.available_tickets),
                nodes_agree: locked_by_node.iter().all(|l| *l == locked_by_node[0]),
                oversold: granted + c.baseline_locked > c.total
                    || views.iter().flatten().any(|u| !u.consistent()),
            }
        })
        .collect();
    let oversold = checks.iter().filter(|c| c.oversold).count() + observed.inconsistent as usize;
    let mismatched = checks
        .iter()
        .filter(|c| c.server_locked != Some(c.granted_held) || !c.nodes_agree)
        .count();
    let locks_ok = counters.locks_ok.load(Ordering::Relaxed);
    let locks_refused = counters.locks_refused.load(Ordering::Relaxed);
    let unlocks_ok = counters.unlocks_ok.load(Ordering::Relaxed);
    let unlocks_refused = counters.unlocks_refused.load(Ordering::Relaxed);
    let per_sec = |n: u64| {
        if elapsed > 0.0 {
            n as f64 / elapsed
        } else {
            0.0
        }
    };
    let failures = connect_failures.values().sum::<u64>() as usize;
    meta.ok = oversold == 0
        && mismatched == 0
        && failures == 0
        && buyer_errors.is_empty()
        && checker_error.is_none()
        && unlocks_refused == 0
        && locks_ok > 0;
    meta.headline
        .insert("holds_per_sec".into(), per_sec(locks_ok));
    let requests = locks_ok + locks_refused + unlocks_ok + unlocks_refused;
    meta.headline
        .insert("ops_per_sec".into(), per_sec(requests));
    // CPU per request does not depend on how much of the machine others left over.
    let server_cpu_us_per_request = match (meta.server_cpu_pct, server_cpu_window) {
        (Some(pct), Some(secs)) if requests > 0 => Some(pct / 100.0 * secs * 1e6 / requests as f64),
        _ => None,
    };
    if let Some(us) = server_cpu_us_per_request {
        meta.headline.insert("server_cpu_us_per_request".into(), us);
    }
    meta.finish();
    Ok(StormReport {
        scenario: "storm",
        meta,
        url: config.url.clone(),
        nodes,
        buyers: config.buyers,
        racing,
        connect_failures,
        buyer_errors,
        elapsed_secs: elapsed,
        locks_ok,
        locks_refused,
        unlocks_ok,
        unlocks_refused,
        holds_per_sec: per_sec(locks_ok),
        ops_per_sec: per_sec(requests),
        server_cpu_us_per_request,
        answer_latency_ms: Latency::from_micros(&mut latencies),
        observed_updates: observed.updates,
        inconsistent_updates: observed.inconsistent,
        observer_error: observed.error,
        checker_error,
        oversold_categories: oversold,
        mismatched_categories: mismatched,
        stale_views,
        categories: checks,
    })
}

struct Bought {
    client: Option<Client>,
    error: Option<&'static str>,
    latencies_us: Vec<u32>,
}

/// One buyer: rounds of "hold a random quantity in every category, then release all",
/// until the deadline; the holds of the last round stay.
async fn buy(
    mut client: Client,
    mut rng: Rng,
    categories: Arc<Vec<Category>>,
    counters: Arc<Counters>,
    max_quantity: u32,
    deadline: Instant,
    stop: CancellationToken,
) -> Bought {
    let mut latencies_us = Vec::new();
    let mut order: Vec<usize> = (0..categories.len()).collect();
    let mut held: Vec<(usize, u32)> = Vec::with_capacity(order.len());
    let timed = |began: Instant, lat: &mut Vec<u32>| {
        lat.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
    };
    let error = 'rounds: loop {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for &i in &order {
            let c = &categories[i];
            let quantity = 1 + rng.below(max_quantity as usize) as u32;
            let began = Instant::now();
            match realtime::lock(&mut client, c.event_id, c.category_id, quantity).await {
                Ok(true) => {
                    c.granted.fetch_add(i64::from(quantity), Ordering::Relaxed);
                    counters.locks_ok.fetch_add(1, Ordering::Relaxed);
                    held.push((i, quantity));
                }
                Ok(false) => {
                    counters.locks_refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => break 'rounds Some(e.kind()),
            }
            timed(began, &mut latencies_us);
        }
        if Instant::now() >= deadline || stop.is_cancelled() {
            break None;
        }
        for (i, quantity) in held.drain(..) {
            let c = &categories[i];
            let began = Instant::now();
            match realtime::unlock(&mut client, c.event_id, c.category_id).await {
                Ok(true) => {
                    c.granted.fetch_sub(i64::from(quantity), Ordering::Relaxed);
                    counters.unlocks_ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    counters.unlocks_refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => break 'rounds Some(e.kind()),
            }
            timed(began, &mut latencies_us);
        }
    };
    Bought {
        client: error.is_none().then_some(client),
        error,
        latencies_us,
    }
}

#[derive(Default)]
struct Observed {
    updates: u64,
    inconsistent: u64,
    error: Option<&'static str>,
}

/// The last update an observer read of each category, by `(event, category)`.
type LastSeen = Arc<Mutex<BTreeMap<(i64, i64), Update>>>;

/// How long the observers may take to read the last updates once the buyers are done.
const SETTLE: Duration = Duration::from_secs(3);

/// Whether two updates carry the same numbers (timestamps aside).
fn same_numbers(a: &Update, b: &Update) -> bool {
    (a.available_tickets, a.locked_tickets, a.total_tickets)
        == (b.available_tickets, b.locked_tickets, b.total_tickets)
}

/// Reads one room's updates until `stop`, counting impossible ones and keeping the last
/// of each category in `seen`.
async fn observe(mut client: Client, seen: LastSeen, stop: CancellationToken) -> Observed {
    let mut o = Observed::default();
    loop {
        let p = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            p = client.recv_packet() => p,
        };
        match p {
            Ok(p) => {
                if let Some(u) = realtime::parse_update(&p) {
                    o.updates += 1;
                    if !u.consistent() {
                        o.inconsistent += 1;
                    }
                    seen.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert((u.event_id, u.category_id), u);
                }
            }
            Err(e) => {
                o.error = Some(e.kind());
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
    o
}

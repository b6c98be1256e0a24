//! The fan-out run: join the receivers, then one buyer task alternates `lock-tickets`
//! and `unlock-tickets` (each answered operation yields exactly one availability update
//! to the room), while one task per receiver counts and times what arrives.
//!
//! Update `k` (0-based, after the join's initial ones) of a receiver answers operation
//! `k`: a room's messages arrive in order, and the buyer sends operation `k + 1` only
//! after operation `k` was answered (its broadcast was queued before its answer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::{FanoutConfig, Mode};
use super::report::FanoutReport;
use crate::crowd::{self, CrowdSpec};
use crate::realtime;
use crate::report::{Latency, Meta};
use crate::sio::{Client, Namespace, Target, TargetError};
use crate::sys::{self, CpuMeter, Proc};

/// Operations one run may time; the buyer stops there (a closed loop against a tiny
/// room can otherwise run far ahead of what any report needs).
const MAX_OPS: usize = 1 << 20;
/// How long the closed-loop buyer sleeps while the slowest receiver catches up.
const WINDOW_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{need} clients need more open files than the limit {have}: raise `ulimit -n`")]
    FdLimit { need: u64, have: u64 },
    #[error("the buyer could not connect: {0}")]
    Buyer(String),
}

/// What the buyer and the receivers share.
struct Shared {
    epoch: Instant,
    /// When operation `k` was sent, in nanoseconds since `epoch`.
    sent_at: Vec<AtomicU64>,
    /// Updates each receiver has counted since its join.
    received: Vec<AtomicU64>,
    /// Receivers that lost their connection (they no longer hold the window back).
    dead: Vec<AtomicBool>,
    /// Latest receipt of any update, in nanoseconds since `epoch`.
    last_rx: AtomicU64,
    stop: CancellationToken,
}

impl Shared {
    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The count of the slowest live receiver (`u64::MAX` when none is alive).
    fn slowest(&self) -> u64 {
        self.received
            .iter()
            .zip(&self.dead)
            .filter(|(_, d)| !d.load(Ordering::Relaxed))
            .map(|(r, _)| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// What the buyer did.
struct BuyerOutcome {
    /// Answered operations that changed availability (each one broadcast).
    ops: u64,
    /// Operations the server refused (no broadcast).
    refused: u64,
    error: Option<&'static str>,
    first_op: Option<Instant>,
    last_answer: Option<Instant>,
    /// Microseconds from sending each operation to reading its answer.
    answers_us: Vec<u32>,
}

pub async fn run(
    config: &FanoutConfig,
    shutdown: CancellationToken,
) -> Result<FanoutReport, FanoutError> {
    let targets = Target::resolve_all(&config.url).await?;
    let need = config.clients as u64 + 40;
    if let Some(have) = sys::open_files_limit().filter(|&h| h < need) {
        return Err(FanoutError::FdLimit { need, have });
    }
    let label = match config.mode {
        Mode::Closed { .. } => format!("fanout-closed-{}", config.clients),
        Mode::Paced { rate } => format!("fanout-paced-{rate}ops-{}", config.clients),
    };
    let mut meta = Meta::new(&config.server, config.label.clone().unwrap_or(label));
    let crowd = crowd::open(
        &targets,
        &CrowdSpec {
            clients: config.clients,
            user_prefix: "fan".into(),
            event: Some(config.event),
            concurrency: config.concurrency,
            timeout: config.connect_timeout,
        },
    )
    .await;
    let connect_failures = crowd.failures.clone();
    let joined = crowd.clients.len();
    let receiver_nodes = crowd.nodes.clone();
    // The buyer gets a thread and an I/O driver of its own: it stands for a client on
    // another machine, so its answers must not wait behind the receivers' reads.
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<Arc<Shared>>();
    let buyer_config = config.clone();
    // The buyer publishes through the first node; the others learn it from the fabric.
    let buyer_target = targets[0].clone();
    let buyer_thread = std::thread::Builder::new()
        .name("fanout-buyer".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| FanoutError::Buyer(e.to_string()))?;
            rt.block_on(async move {
                let ns = Namespace::new(realtime::NAMESPACE);
                let client = match realtime::connect(&buyer_target, &ns, "fanout-buyer").await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = connected_tx.send(Err(e.to_string()));
                        return Err(FanoutError::Buyer(e.to_string()));
                    }
                };
                let _ = connected_tx.send(Ok(()));
                let Ok(shared) = start_rx.await else {
                    return Err(FanoutError::Buyer("not started".into()));
                };
                Ok(buy(client, &buyer_config, &shared).await)
            })
        })
        .map_err(|e| FanoutError::Buyer(e.to_string()))?;
    match connected_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(FanoutError::Buyer(e)),
        Err(_) => return Err(FanoutError::Buyer("buyer thread ended".into())),
    }

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent_at: (0..MAX_OPS).map(|_| AtomicU64::new(0)).collect(),
        received: (0..joined).map(|_| AtomicU64::new(0)).collect(),
        dead: (0..joined).map(|_| AtomicBool::new(false)).collect(),
        last_rx: AtomicU64::new(0),
        stop: shutdown.child_token(),
    });
    let mut receivers = JoinSet::new();
    for (i, client) in crowd.clients.into_iter().enumerate() {
        receivers.spawn(receive(i, client, shared.clone()));
    }

    let generator_cpu = CpuMeter::start(Proc::This);
    let server_cpu = CpuMeter::start_pids(&config.server_pids);
    let _ = start_tx.send(shared.clone());
    let mut outcome = tokio::task::spawn_blocking(move || buyer_thread.join())
        .await
        .map_err(|e| FanoutError::Buyer(e.to_string()))?
        .map_err(|_| FanoutError::Buyer("buyer thread panicked".into()))??;
    let expected = outcome.ops;
    // Every live receiver catches up, or the drain time runs out.
    let drain_deadline = Instant::now() + config.drain;
    while shared.slowest() < expected && Instant::now() < drain_deadline && !shutdown.is_cancelled()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    meta.generator_cpu_pct = generator_cpu.and_then(|m| m.percent());
    meta.server_cpu_pct = server_cpu.as_ref().and_then(CpuMeter::percent);
    let server_cpu_window = server_cpu.as_ref().map(CpuMeter::elapsed_secs);
    shared.stop.cancel();

    let mut latencies: Vec<u32> = Vec::new();
    let nodes = targets.len();
    let mut by_node: Vec<Vec<u32>> = vec![Vec::new(); nodes];
    let mut dropped: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut delivered = 0u64;
    let mut lost = 0u64;
    let mut extra = 0u64;
    while let Some(done) = receivers.join_next().await {
        let Ok(r) = done else {
            *dropped.entry("panic").or_insert(0) += 1;
            lost += expected;
            continue;
        };
        if let Some(kind) = r.error {
            *dropped.entry(kind).or_insert(0) += 1;
        }
        delivered += r.count.min(expected);
        lost += expected.saturating_sub(r.count);
        extra += r.count.saturating_sub(expected);
        if nodes > 1 {
            by_node[receiver_nodes[r.index]].extend_from_slice(&r.latencies_us);
        }
        latencies.extend(r.latencies_us);
    }
    let first = outcome.first_op.map(|t| t.duration_since(shared.epoch));
    let last_rx = Duration::from_nanos(shared.last_rx.load(Ordering::Relaxed));
    let delivery_secs = first.map_or(0.0, |f| last_rx.saturating_sub(f).as_secs_f64());
    let op_secs = match (outcome.first_op, outcome.last_answer) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let per_sec = |n: f64, secs: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let deliveries_per_sec = per_sec(delivered as f64, delivery_secs);
    let latency = Latency::from_micros(&mut latencies);
    let failures = connect_failures.values().sum::<u64>() as usize;
    meta.ok = failures == 0
        && lost == 0
        && extra == 0
        && dropped.is_empty()
        && outcome.error.is_none()
        && expected > 0;
    // CPU per delivery does not depend on how much of the machine others left over.
    let server_cpu_us_per_delivery = match (meta.server_cpu_pct, server_cpu_window) {
        (Some(pct), Some(secs)) if delivered > 0 => {
            Some(pct / 100.0 * secs * 1e6 / delivered as f64)
        }
        _ => None,
    };
    match config.mode {
        Mode::Closed { .. } => {
            meta.headline
                .insert("deliveries_per_sec".into(), deliveries_per_sec);
            if let Some(us) = server_cpu_us_per_delivery {
                meta.headline
                    .insert("server_cpu_us_per_delivery".into(), us);
            }
        }
        Mode::Paced { .. } => {
            meta.headline.insert("latency_p50_ms".into(), latency.p50);
            meta.headline.insert("latency_p99_ms".into(), latency.p99);
            meta.headline.insert("latency_max_ms".into(), latency.max);
        }
    }
    meta.finish();
    Ok(FanoutReport {
        scenario: match config.mode {
            Mode::Closed { .. } => "fanout-closed",
            Mode::Paced { .. } => "fanout-paced",
        },
        meta,
        url: config.url.clone(),
        nodes,
        clients: config.clients,
        joined,
        joined_per_node: (0..nodes)
            .map(|n| receiver_nodes.iter().filter(|&&m| m == n).count())
            .collect(),
        latency_by_node_ms: by_node
            .iter_mut()
            .filter(|_| nodes > 1)
            .map(|v| Latency::from_micros(v))
            .collect(),
        connect_failures,
        window: match config.mode {
            Mode::Closed { window } => Some(window),
            Mode::Paced { .. } => None,
        },
        rate: match config.mode {
            Mode::Paced { rate } => Some(rate),
            Mode::Closed { .. } => None,
        },
        ops: expected,
        refused_ops: outcome.refused,
        buyer_error: outcome.error,
        ops_per_sec: per_sec(expected as f64, op_secs),
        expected_per_client: expected,
        delivered,
        lost,
        extra,
        dropped_receivers: dropped,
        delivery_secs,
        deliveries_per_sec,
        server_cpu_us_per_delivery,
        latency_ms: latency,
        answer_ms: Latency::from_micros(&mut outcome.answers_us),
    })
}

/// The buyer: hold one seat, release it, again, until the duration ends.
async fn buy(mut client: Client, config: &FanoutConfig, shared: &Shared) -> BuyerOutcome {
    let mut out = BuyerOutcome {
        ops: 0,
        refused: 0,
        error: None,
        first_op: None,
        last_answer: None,
        answers_us: Vec::new(),
    };
    let mut holding = false;
    let mut ticker = match config.mode {
        Mode::Paced { rate } => {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            Some(t)
        }
        Mode::Closed { .. } => None,
    };
    let deadline = Instant::now() + config.duration;
    while Instant::now() < deadline && (out.ops as usize) < MAX_OPS && !shared.stop.is_cancelled() {
        match (&mut ticker, config.mode) {
            (Some(t), _) => {
                t.tick().await;
            }
            (None, Mode::Closed { window }) => {
                while shared.slowest().saturating_add(window) <= out.ops {
                    if Instant::now() >= deadline || shared.stop.is_cancelled() {
                        return out;
                    }
                    tokio::time::sleep(WINDOW_POLL).await;
                }
            }
            (None, Mode::Paced { .. }) => {}
        }
        let k = out.ops as usize;
        shared.sent_at[k].store(shared.nanos(), Ordering::Release);
        let sent = Instant::now();
        out.first_op.get_or_insert(sent);
        let answered = if holding {
            realtime::unlock(&mut client, config.event, config.category).await
        } else {
            realtime::lock(&mut client, config.event, config.category, 1).await
        };
        let now = Instant::now();
        out.last_answer = Some(now);
        let us = now.duration_since(sent).as_micros();
        out.answers_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        match answered {
            Ok(true) => {
                holding = !holding;
                out.ops += 1;
            }
            Ok(false) => out.refused += 1,
            Err(e) => {
                out.error = Some(e.kind());
                return out;
            }
        }
    }
    if holding && out.error.is_none() {
        // Leave the seat free; that release broadcasts too, so receivers expect it.
        shared.sent_at[(out.ops as usize).min(MAX_OPS - 1)]
            .store(shared.nanos(), Ordering::Release);
        if let Ok(true) = realtime::unlock(&mut client, config.event, config.category).await {
            out.ops += 1;
        }
    }
    out
}

struct Received {
    /// The receiver's index (its node is `Crowd::nodes[index]`).
    index: usize,
    count: u64,
    latencies_us: Vec<u32>,
    error: Option<&'static str>,
}

/// One receiver: counts availability updates and times each against its operation.
async fn receive(i: usize, mut client: Client, shared: Arc<Shared>) -> Received {
    let mut r = Received {
        index: i,
        count: 0,
        latencies_us: Vec::new(),
        error: None,
    };
    loop {
        let p = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            p = client.recv_packet() => p,
        };
        match p {
            Ok(p) if realtime::is_availability(&p) => {
                let now = shared.nanos();
                if let Some(sent) = shared.sent_at.get(r.count as usize) {
                    let sent = sent.load(Ordering::Acquire);
                    let us = now.saturating_sub(sent) / 1000;
                    r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                r.count += 1;
                shared.received[i].store(r.count, Ordering::Release);
                shared.last_rx.fetch_max(now, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                r.error = Some(e.kind());
                shared.dead[i].store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
    r
}

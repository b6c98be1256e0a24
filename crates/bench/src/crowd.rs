//! Opening many `/realtime` clients at once: at most `concurrency` handshakes in flight,
//! each connect + join bounded by a timeout, spread round-robin over the targets (the
//! nodes of a cluster). Shared by the scenarios that need a room full of joined clients
//! before they measure anything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::realtime;
use crate::sio::{Client, Namespace, Target};

/// Who to open and where.
#[derive(Debug, Clone)]
pub struct CrowdSpec {
    pub clients: usize,
    /// Users are `{user_prefix}{i}`.
    pub user_prefix: String,
    /// The event room every client joins (`None`: connect only).
    pub event: Option<i64>,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// The clients that connected and joined, in no particular order, and what happened.
pub struct Crowd {
    pub clients: Vec<Client>,
    /// For each client of `clients`, the index of the target it connected to.
    pub nodes: Vec<usize>,
    /// Failures by cause (`timeout`, `tcp`, `connect_error`, ...).
    pub failures: BTreeMap<&'static str, u64>,
    /// From the first connect attempt to the last join.
    pub elapsed: Duration,
    /// One client's connect + join, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Crowd {
    pub fn failed(&self) -> usize {
        self.failures.values().sum::<u64>() as usize
    }

    pub fn rate_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.clients.len() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Opens the crowd, client `i` on `targets[i % targets.len()]`; returns when every
/// client joined, failed or timed out. No targets: no clients.
pub async fn open(targets: &[Target], spec: &CrowdSpec) -> Crowd {
    let nsp = Namespace::new(realtime::NAMESPACE);
    let slots = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let targets: Vec<Arc<Target>> = targets.iter().cloned().map(Arc::new).collect();
    let clients = if targets.is_empty() { 0 } else { spec.clients };
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let node = i % targets.len();
        let (slots, target, nsp) = (slots.clone(), targets[node].clone(), nsp.clone());
        let user = format!("{}{i}", spec.user_prefix);
        let (event, timeout) = (spec.event, spec.timeout);
        tasks.spawn(async move {
            let _permit = slots.acquire_owned().await.ok();
            let began = Instant::now();
            let joined = tokio::time::timeout(timeout, async {
                let mut c = realtime::connect(&target, &nsp, &user).await?;
                if let Some(event) = event {
                    realtime::join_event(&mut c, event, realtime::DEMO_CATEGORIES_PER_EVENT)
                        .await?;
                }
                Ok::<_, crate::sio::SioError>(c)
            })
            .await;
            match joined {
                Ok(Ok(c)) => Ok((c, node, began.elapsed(), Instant::now())),
                Ok(Err(e)) => Err(e.kind()),
                Err(_) => Err("timeout"),
            }
        });
    }
    let mut crowd = Crowd {
        clients: Vec::with_capacity(spec.clients),
        nodes: Vec::with_capacity(spec.clients),
        failures: BTreeMap::new(),
        elapsed: Duration::ZERO,
        latencies_us: Vec::with_capacity(spec.clients),
    };
    let mut last = started;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok((c, node, latency, at))) => {
                crowd.clients.push(c);
                crowd.nodes.push(node);
                crowd
                    .latencies_us
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                last = last.max(at);
            }
            Ok(Err(kind)) => *crowd.failures.entry(kind).or_insert(0) += 1,
            Err(_) => *crowd.failures.entry("panic").or_insert(0) += 1,
        }
    }
    crowd.elapsed = last.duration_since(started);
    crowd
}

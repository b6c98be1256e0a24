//! The idle run: open N clients (bounded handshakes in flight), let them join a room,
//! measure the server's memory per idle client, hold, close. One task per client; the
//! run ends by itself after `connect_timeout`-bounded handshakes, settle and hold.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::IdleConfig;
use super::paced::{self, PacedSpec};
use super::report::{IdleReport, Percentiles};
use crate::realtime;
use crate::report::Meta;
use crate::sio::wire::Conn;
use crate::sio::{Client, Namespace, SioError, Sources, SourcesError, Target, TargetError};
use crate::sys::{self, CpuMeter, Proc};

/// How long closing all clients may take before the run returns anyway.
const DRAIN: Duration = Duration::from_secs(10);
/// File descriptors the generator needs besides its clients (stdio, runtime, /proc).
const SPARE_FDS: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum IdleError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Sources(#[from] SourcesError),
    #[error("cannot read the RSS of server pid {pid}: {source}")]
    ServerRss { pid: u32, source: std::io::Error },
    #[error(
        "{clients} clients need {need} open files but the limit is {have} (hard limit {hard}, which only a process with CAP_SYS_RESOURCE may raise): raise `ulimit -Hn` or run fewer clients"
    )]
    FdLimit {
        clients: usize,
        need: u64,
        have: u64,
        hard: u64,
    },
    #[error("cannot start the paced client's thread: {0}")]
    PacedThread(std::io::Error),
}

/// What every client task shares; built once per run.
struct Shared {
    target: Target,
    sources: Sources,
    nsp: Arc<Namespace>,
    auth: Option<String>,
    /// The room as a JSON string argument, encoded once.
    join: Option<String>,
    event: Option<i64>,
    /// Pusher clients: the app key and the channel.
    pusher: Option<(String, String)>,
    handshakes: Semaphore,
    connect_timeout: Duration,
    stop: CancellationToken,
    /// Why joined clients lost their session while idle, by [`SioError::kind`].
    dropped: Mutex<BTreeMap<&'static str, u64>>,
    pongs: AtomicU64,
    /// Socket.IO clients offer permessage-deflate.
    compress: bool,
    /// Bytes the Socket.IO clients read (not reported: the counter of a measured client).
    read: Arc<AtomicU64>,
}

/// An idle client of either protocol.
enum IdleClient {
    Sio(Client<Conn>),
    Pusher(super::pusher::PusherClient),
}

impl IdleClient {
    /// Waits for the next message (heartbeats answered); an error is why it dropped.
    async fn recv(&mut self) -> Result<(), &'static str> {
        match self {
            IdleClient::Sio(c) => c.recv_packet().await.map(drop).map_err(|e| e.kind()),
            IdleClient::Pusher(c) => c.recv().await.map(drop).map_err(|e| e.kind()),
        }
    }

    fn pongs(&self) -> u64 {
        match self {
            IdleClient::Sio(c) => c.pongs,
            IdleClient::Pusher(c) => c.pongs,
        }
    }

    async fn close(self) {
        match self {
            IdleClient::Sio(c) => c.close().await,
            IdleClient::Pusher(c) => c.close().await,
        }
    }
}

/// One client's connect + join: its latency and when it finished, or why it failed.
type Outcome = Result<(Duration, Instant), &'static str>;

/// Runs the scenario. `shutdown` ends it early (the report then shows the clients that
/// did not finish as `cancelled` failures).
pub async fn run(
    config: &IdleConfig,
    shutdown: CancellationToken,
) -> Result<IdleReport, IdleError> {
    let target = Target::resolve(&config.url).await?;
    let sources = Sources::new(config.sources, config.clients)?.check(&target)?;
    let open_files = raise_fd_limit(config.clients)?;
    let server_rss = |pid: u32| {
        sys::rss_bytes(Proc::Pid(pid)).map_err(|source| IdleError::ServerRss { pid, source })
    };
    let server_before = config.server_pid.map(server_rss).transpose()?;
    let generator_before = sys::rss_bytes(Proc::This).ok();
    let label = config
        .label
        .clone()
        .unwrap_or_else(|| match (config.event, &config.pusher_key) {
            (Some(_), _) if config.compress => format!("idle-deflate-{}", config.clients),
            (Some(_), _) => format!("idle-{}", config.clients),
            (None, Some(_)) => format!("idle-pusher-{}", config.clients),
            (None, None) => format!(
                "idle-{}-{}",
                config.namespace.trim_start_matches('/'),
                config.clients
            ),
        });
    let mut meta = Meta::new(&config.server, label);
    let generator_cpu = CpuMeter::start(Proc::This);
    let server_cpu = config
        .server_pid
        .and_then(|p| CpuMeter::start(Proc::Pid(p)));

    let shared = Arc::new(Shared {
        target,
        sources,
        nsp: Namespace::new(&config.namespace),
        auth: config.auth.clone(),
        join: config
            .join
            .as_ref()
            .map(|room| serde_json::Value::from(room.as_str()).to_string()),
        event: config.event,
        pusher: config
            .pusher_key
            .clone()
            .map(|k| (k, config.join.clone().unwrap_or_else(|| "idle".into()))),
        handshakes: Semaphore::new(config.concurrency),
        connect_timeout: config.connect_timeout,
        stop: shutdown.child_token(),
        dropped: Mutex::default(),
        pongs: AtomicU64::new(0),
        compress: config.compress,
        read: Arc::new(AtomicU64::new(0)),
    });
    let tracker = TaskTracker::new();
    let (tx, mut rx) = mpsc::channel::<Outcome>(1024);
    let started = Instant::now();
    for i in 0..config.clients {
        tracker.spawn(client_task(i, Arc::clone(&shared), tx.clone()));
    }
    tracker.close();
    drop(tx);

    // Every task sends exactly one outcome, then drops its sender: this ends.
    let mut latencies_us = Vec::with_capacity(config.clients);
    let mut failure_kinds = BTreeMap::new();
    let mut last_ack = started;
    while let Some(outcome) = rx.recv().await {
        match outcome {
            Ok((latency, at)) => {
                latencies_us.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                last_ack = last_ack.max(at);
            }
            Err(kind) => *failure_kinds.entry(kind).or_insert(0) += 1,
        }
    }
    let joined = latencies_us.len();
    let connect_join_secs = last_ack.duration_since(started).as_secs_f64();
    meta.generator_cpu_pct = generator_cpu.and_then(|m| m.percent());
    meta.server_cpu_pct = server_cpu.as_ref().and_then(CpuMeter::percent);
    // The server's own CPU time for the connect + join phase (issue 18's connect cost):
    // the generator's share does not count.
    let server_cpu_us_per_connect = server_cpu
        .as_ref()
        .and_then(CpuMeter::used_secs)
        .filter(|_| joined > 0)
        .map(|s| s * 1e6 / joined as f64);

    pause(config.settle, &shutdown).await;
    let server_after = config.server_pid.map(server_rss).transpose()?;
    let generator_after = sys::rss_bytes(Proc::This).ok();
    // The paced operations run while every client is held (and its heartbeats answered).
    let paced = match config.event.filter(|_| config.paced_rate > 0.0) {
        None => None,
        Some(_) => Some(
            paced::start(
                shared.target.clone(),
                PacedSpec {
                    rate: config.paced_rate,
                    event: config.paced_event,
                    category: config.paced_category,
                    duration: config.hold,
                    connect_timeout: config.connect_timeout,
                },
                shutdown.child_token(),
            )
            .map_err(IdleError::PacedThread)?,
        ),
    };
    pause(config.hold, &shutdown).await;
    let paced = match paced {
        None => None,
        Some(thread) => Some(
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_else(|| paced::PacedReport {
                    error: Some("panic"),
                    ..paced::PacedReport::default()
                }),
        ),
    };
    let dropped_kinds = lock(&shared.dropped).clone();

    shared.stop.cancel();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
    let pings_answered = shared.pongs.load(Ordering::Relaxed);

    let per_client = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if joined > 0 => Some((a as f64 - b as f64) / joined as f64),
        _ => None,
    };
    let server_bytes_per_client = per_client(server_before, server_after);
    let connect_join_rate_per_sec = if connect_join_secs > 0.0 {
        joined as f64 / connect_join_secs
    } else {
        0.0
    };
    let dropped_while_idle: u64 = dropped_kinds.values().sum();
    meta.ok = joined == config.clients
        && dropped_while_idle == 0
        && paced.as_ref().is_none_or(paced::PacedReport::ok);
    meta.headline.insert("joined".into(), joined as f64);
    if let Some(p) = paced.as_ref().filter(|p| p.answered > 0) {
        meta.headline.insert("paced_p99_ms".into(), p.answer_ms.p99);
    }
    meta.headline
        .insert("connect_join_per_sec".into(), connect_join_rate_per_sec);
    if let Some(b) = server_bytes_per_client {
        meta.headline.insert("bytes_per_client".into(), b);
    }
    if let Some(us) = server_cpu_us_per_connect {
        meta.headline.insert("server_cpu_us_per_connect".into(), us);
    }
    meta.finish();
    Ok(IdleReport {
        scenario: "idle",
        meta,
        url: config.url.clone(),
        namespace: config.namespace.clone(),
        room: config.join.clone(),
        compress: config.compress,
        clients: config.clients,
        concurrency: config.concurrency,
        joined,
        failures: config.clients - joined,
        failure_kinds,
        dropped_while_idle,
        dropped_kinds,
        pings_answered,
        connect_join_secs,
        connect_join_rate_per_sec,
        server_cpu_us_per_connect,
        latency_ms: Percentiles::from_micros(&mut latencies_us),
        server_rss_before_bytes: server_before,
        server_rss_after_bytes: server_after,
        server_bytes_per_client,
        generator_rss_bytes: generator_after,
        generator_bytes_per_client: per_client(generator_before, generator_after),
        cpus: sys::cpus(),
        settle_secs: config.settle.as_secs_f64(),
        hold_secs: config.hold.as_secs_f64(),
        sources: sources.count(),
        open_files,
        paced,
    })
}

/// Raises this process's open-files limit to what `clients` need (above the hard
/// limit too when the process may), or says why the run cannot start.
fn raise_fd_limit(clients: usize) -> Result<sys::OpenFiles, IdleError> {
    let need = clients as u64 + SPARE_FDS;
    let open_files = sys::raise_open_files(need);
    if open_files.soft < need {
        return Err(IdleError::FdLimit {
            clients,
            need,
            have: open_files.soft,
            hard: open_files.hard,
        });
    }
    Ok(open_files)
}

/// A poisoned counter map still holds valid counts.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn pause(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = shutdown.cancelled() => {}
    }
}

async fn client_task(i: usize, shared: Arc<Shared>, tx: mpsc::Sender<Outcome>) {
    let (outcome, client) = tokio::select! {
        biased;
        () = shared.stop.cancelled() => (Err("cancelled"), None),
        r = handshake(i, &shared) => r,
    };
    let _ = tx.send(outcome).await;
    drop(tx);
    let Some(mut client) = client else {
        return;
    };
    // Idle: read only to answer heartbeats; anything else the server sends is ignored.
    let dropped = loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break None,
            r = client.recv() => {
                if let Err(kind) = r {
                    break Some(kind);
                }
            }
        }
    };
    shared.pongs.fetch_add(client.pongs(), Ordering::Relaxed);
    match dropped {
        Some(kind) => *lock(&shared.dropped).entry(kind).or_insert(0) += 1,
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
        }
    }
}

/// Waits for a handshake slot, then connects and joins under `connect_timeout`.
async fn handshake(i: usize, shared: &Shared) -> (Outcome, Option<IdleClient>) {
    let Ok(_permit) = shared.handshakes.acquire().await else {
        return (Err("cancelled"), None);
    };
    let began = Instant::now();
    match tokio::time::timeout(shared.connect_timeout, connect_and_join(i, shared)).await {
        Ok(Ok(client)) => (Ok((began.elapsed(), Instant::now())), Some(client)),
        Ok(Err(kind)) => (Err(kind), None),
        Err(_) => (Err("timeout"), None),
    }
}

async fn connect_and_join(i: usize, shared: &Shared) -> Result<IdleClient, &'static str> {
    if let Some((key, channel)) = &shared.pusher {
        return super::pusher::PusherClient::connect(
            &shared.target,
            shared.sources.of(i),
            key,
            channel,
        )
        .await
        .map(IdleClient::Pusher)
        .map_err(|e| e.kind());
    }
    connect_and_join_sio(i, shared)
        .await
        .map(IdleClient::Sio)
        .map_err(|e| e.kind())
}

async fn connect_and_join_sio(i: usize, shared: &Shared) -> Result<Client<Conn>, SioError> {
    let measured = || (shared.compress, shared.read.clone());
    if let Some(event) = shared.event {
        let query = format!("userId=idle{i}");
        let source = shared.sources.of(i);
        let mut client = Client::connect_measured_from(
            &shared.target,
            source,
            &query,
            &shared.nsp,
            None,
            measured(),
        )
        .await?;
        realtime::wait_connected(&mut client).await?;
        realtime::join_event(&mut client, event, realtime::DEMO_CATEGORIES_PER_EVENT).await?;
        return Ok(client);
    }
    let auth = shared.auth.as_deref();
    let mut client = Client::connect_measured_from(
        &shared.target,
        shared.sources.of(i),
        "",
        &shared.nsp,
        auth,
        measured(),
    )
    .await?;
    if let Some(room) = &shared.join {
        let id = client.emit_with_ack("join", &[room]).await?;
        client.wait_ack(id).await?;
    }
    Ok(client)
}

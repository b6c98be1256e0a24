//! The publish run: open the members (Socket.IO, WebSocket, SSE), then publish
//! `{"seq": k}` over HTTP in a closed loop while one task per member counts and times
//! what arrives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::clients::{self, Member, MemberError, Publisher};
use super::config::PublishConfig;
use super::report::{PublishReport, TransportResult};
use crate::report::{Latency, Meta};
use crate::sio::{Target, TargetError};
use crate::sys::{self, CpuMeter, Proc};

const MAX_PUBLISHES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{need} clients need more open files than the limit {have}: raise `ulimit -n`")]
    FdLimit { need: u64, have: u64 },
    #[error("the publisher could not connect: {0}")]
    Publisher(MemberError),
}

struct Shared {
    epoch: Instant,
    sent_at: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    dead: Vec<AtomicBool>,
    last_rx: AtomicU64,
    stop: CancellationToken,
}

impl Shared {
    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

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

pub async fn run(
    config: &PublishConfig,
    shutdown: CancellationToken,
) -> Result<PublishReport, PublishError> {
    let target = Arc::new(Target::resolve(&config.url).await?);
    let need = config.members() as u64 + 40;
    if let Some(have) = sys::open_files_limit().filter(|&h| h < need) {
        return Err(PublishError::FdLimit { need, have });
    }
    let mut meta = Meta::new(
        &config.server,
        config
            .label
            .clone()
            .unwrap_or_else(|| format!("publish-{}", config.members())),
    );
    let room = format!("event_{}", config.event);
    let via = clients::Wire {
        deflate: config.compress,
        read: Arc::new(AtomicU64::new(0)),
    };
    let ws_via = clients::Wire {
        deflate: config.compress,
        read: Arc::new(AtomicU64::new(0)),
    };
    let extra = config.extra_fields();

    // Members of every kind, at most `concurrency` handshakes at once.
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut opening = JoinSet::new();
    let kinds = [("sio", config.sio), ("ws", config.ws), ("sse", config.sse)];
    for (kind, n) in kinds {
        for i in 0..n {
            let (slots, target, room) = (slots.clone(), target.clone(), room.clone());
            let (via, ws_via) = (via.clone(), ws_via.clone());
            let (event, timeout) = (config.event, config.connect_timeout);
            opening.spawn(async move {
                let _permit = slots.acquire_owned().await.ok();
                let user = format!("pub-{kind}{i}");
                let opened = tokio::time::timeout(timeout, async {
                    match kind {
                        "sio" => clients::sio(&target, &user, event, &via).await,
                        "ws" => clients::ws(&target, &user, &room, &ws_via).await,
                        _ => clients::sse(&target, &user, &room).await,
                    }
                })
                .await;
                (kind, opened)
            });
        }
    }
    let mut members = Vec::with_capacity(config.members());
    let mut connect_failures: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(done) = opening.join_next().await {
        match done {
            Ok((_, Ok(Ok(m)))) => members.push(m),
            Ok((kind, Ok(Err(e)))) => {
                *connect_failures
                    .entry(format!("{kind}: {}", e.kind()))
                    .or_insert(0) += 1;
            }
            Ok((kind, Err(_))) => {
                *connect_failures
                    .entry(format!("{kind}: timeout"))
                    .or_insert(0) += 1
            }
            Err(_) => *connect_failures.entry("panic".into()).or_insert(0) += 1,
        }
    }
    let mut publisher = Publisher::connect(&target, &config.api_key)
        .await
        .map_err(PublishError::Publisher)?;

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent_at: (0..MAX_PUBLISHES).map(|_| AtomicU64::new(0)).collect(),
        received: (0..members.len()).map(|_| AtomicU64::new(0)).collect(),
        dead: (0..members.len()).map(|_| AtomicBool::new(false)).collect(),
        last_rx: AtomicU64::new(0),
        stop: shutdown.child_token(),
    });
    let mut receivers = JoinSet::new();
    for (i, m) in members.into_iter().enumerate() {
        receivers.spawn(receive(i, m, shared.clone()));
    }

    let generator_cpu = CpuMeter::start(Proc::This);
    let server_cpu = CpuMeter::start_pids(&config.server_pids);
    let started = Instant::now();
    let read_before = [&via, &ws_via].map(|v| v.read.load(Ordering::Relaxed));
    let deadline = started + config.duration;
    let mut published = 0u64;
    let mut publish_error = None;
    'publishing: while Instant::now() < deadline && (published as usize) < MAX_PUBLISHES {
        while shared.slowest().saturating_add(config.window) <= published {
            if Instant::now() >= deadline || shared.stop.is_cancelled() {
                break 'publishing;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        shared.sent_at[published as usize].store(shared.nanos(), Ordering::Release);
        match publisher.publish(&room, published, &extra).await {
            Ok(()) => published += 1,
            Err(e) => {
                publish_error = Some(e.to_string());
                break;
            }
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let drain_deadline = Instant::now() + config.drain;
    while shared.slowest() < published && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wire_bytes = [&via, &ws_via]
        .map(|v| v.read.load(Ordering::Relaxed))
        .into_iter()
        .zip(read_before)
        .map(|(now, before)| now.saturating_sub(before));
    let wire_bytes: Vec<u64> = wire_bytes.collect();
    meta.generator_cpu_pct = generator_cpu.and_then(|m| m.percent());
    meta.server_cpu_pct = server_cpu.and_then(|m| m.percent());
    shared.stop.cancel();

    let mut by_transport: BTreeMap<&'static str, (TransportResult, Vec<u32>)> = BTreeMap::new();
    while let Some(done) = receivers.join_next().await {
        let Ok(r) = done else { continue };
        let (t, lat) = by_transport
            .entry(r.transport)
            .or_insert_with(|| (TransportResult::new(r.transport), Vec::new()));
        t.members += 1;
        t.delivered += r.count.min(published);
        t.lost += published.saturating_sub(r.count);
        t.out_of_order += r.out_of_order;
        if let Some(kind) = r.error {
            *t.dropped.entry(kind).or_insert(0) += 1;
        }
        lat.extend(r.latencies_us);
    }
    let last_rx = Duration::from_nanos(shared.last_rx.load(Ordering::Relaxed));
    let delivery_secs = last_rx
        .saturating_sub(started.duration_since(shared.epoch))
        .as_secs_f64();
    let transports: Vec<TransportResult> = by_transport
        .into_values()
        .map(|(mut t, mut lat)| {
            t.latency_ms = Latency::from_micros(&mut lat);
            // Bytes the members of a WebSocket transport read while messages flowed.
            t.wire_bytes = match t.transport {
                "socketio" => Some(wire_bytes[0]),
                "ws" => Some(wire_bytes[1]),
                _ => None,
            };
            t
        })
        .collect();
    let delivered: u64 = transports.iter().map(|t| t.delivered).sum();
    let lost: u64 = transports.iter().map(|t| t.lost).sum();
    let disorder: u64 = transports.iter().map(|t| t.out_of_order).sum();
    let dropped: u64 = transports
        .iter()
        .map(|t| t.dropped.values().sum::<u64>())
        .sum();
    let per_sec = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
    meta.ok = connect_failures.is_empty()
        && lost == 0
        && disorder == 0
        && dropped == 0
        && publish_error.is_none()
        && published > 0;
    let deliveries_per_sec = per_sec(delivered as f64, delivery_secs);
    meta.headline.insert(
        "publishes_per_sec".into(),
        per_sec(published as f64, publish_secs),
    );
    meta.headline
        .insert("deliveries_per_sec".into(), deliveries_per_sec);
    if let Some(b) = transports
        .iter()
        .find(|t| t.transport == "socketio")
        .and_then(TransportResult::bytes_per_delivery)
    {
        meta.headline
            .insert("sio_wire_bytes_per_delivery".into(), b);
    }
    meta.finish();
    Ok(PublishReport {
        scenario: "publish",
        meta,
        url: config.url.clone(),
        room,
        payload_bytes: config.payload_bytes,
        compress: config.compress,
        members: config.members(),
        connect_failures,
        window: config.window,
        published,
        publish_error,
        publishes_per_sec: per_sec(published as f64, publish_secs),
        delivered,
        lost,
        deliveries_per_sec,
        transports,
    })
}

struct Received {
    transport: &'static str,
    count: u64,
    out_of_order: u64,
    latencies_us: Vec<u32>,
    error: Option<&'static str>,
}

async fn receive(i: usize, mut member: Member, shared: Arc<Shared>) -> Received {
    let mut r = Received {
        transport: member.transport(),
        count: 0,
        out_of_order: 0,
        latencies_us: Vec::new(),
        error: None,
    };
    loop {
        let next = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            n = member.next_seq() => n,
        };
        match next {
            Ok(seq) => {
                let now = shared.nanos();
                if seq != r.count {
                    r.out_of_order += 1;
                }
                if let Some(sent) = shared.sent_at.get(seq as usize) {
                    let us = now.saturating_sub(sent.load(Ordering::Acquire)) / 1000;
                    r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                r.count += 1;
                shared.received[i].store(r.count, Ordering::Release);
                shared.last_rx.fetch_max(now, Ordering::Relaxed);
            }
            Err(e) => {
                r.error = Some(e.kind());
                shared.dead[i].store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), member.close()).await;
    r
}

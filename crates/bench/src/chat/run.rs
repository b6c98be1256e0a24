//! The chat run: a room of every client, receivers joined, then each sender sends in a
//! closed loop (the next message once the ack of the last is in) while one task per
//! receiver counts and times what arrives. The content carries its sender, number and
//! send time, so receipts are matched without shared state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::ChatConfig;
use super::report::ChatReport;
use crate::report::{Latency, Meta};
use crate::sio::{Client, Namespace, SioError, Target, TargetError};
use crate::sys::{self, CpuMeter, Proc};

/// Members one `room:create` may name.
const MAX_MEMBERS: usize = 999;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{need} clients need more open files than the limit {have}: raise `ulimit -n`")]
    FdLimit { need: u64, have: u64 },
    #[error("at most {MAX_MEMBERS} senders and receivers together (one room:create)")]
    TooMany,
    #[error("setting up the room failed: {0}")]
    Setup(String),
}

struct Shared {
    epoch: Instant,
    /// Unique messages each receiver has read.
    received: Vec<AtomicU64>,
    stop: CancellationToken,
}

impl Shared {
    fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

async fn connect(target: &Target, nsp: &Arc<Namespace>, user: &str) -> Result<Client, SioError> {
    Client::connect_with_query(target, &format!("userId={user}"), nsp, None).await
}

/// Emits with an ack and returns the ack's first argument.
async fn ask(client: &mut Client, event: &str, data: &Value) -> Result<Value, String> {
    let arg = data.to_string();
    let id = client
        .emit_with_ack(event, &[&arg])
        .await
        .map_err(|e| e.kind().to_owned())?;
    let ack = client.wait_ack(id).await.map_err(|e| e.kind().to_owned())?;
    let v: Value = serde_json::from_str(ack.data()).map_err(|_| "bad ack".to_owned())?;
    Ok(v.get(0).cloned().unwrap_or(Value::Null))
}

pub async fn run(
    config: &ChatConfig,
    shutdown: CancellationToken,
) -> Result<ChatReport, ChatError> {
    let target = Arc::new(Target::resolve(&config.url).await?);
    if config.senders + config.receivers > MAX_MEMBERS {
        return Err(ChatError::TooMany);
    }
    let need = (config.senders + config.receivers) as u64 + 40;
    if let Some(have) = sys::open_files_limit().filter(|&h| h < need) {
        return Err(ChatError::FdLimit { need, have });
    }
    let mut meta = Meta::new(
        &config.server,
        config
            .label
            .clone()
            .unwrap_or_else(|| format!("chat-{}x{}", config.senders, config.receivers)),
    );
    let nsp = Namespace::new("/chat");
    let room = format!(
        "chat-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    );
    let sender_ids: Vec<String> = (0..config.senders).map(|i| format!("cb-s{i}")).collect();
    let receiver_ids: Vec<String> = (0..config.receivers).map(|i| format!("cb-r{i}")).collect();
    let members: Vec<&String> = sender_ids.iter().chain(&receiver_ids).collect();

    let mut owner = connect(&target, &nsp, "cb-owner")
        .await
        .map_err(|e| ChatError::Setup(e.to_string()))?;
    let created = ask(
        &mut owner,
        "room:create",
        &json!({"roomId": room, "type": "group", "members": members}),
    )
    .await
    .map_err(ChatError::Setup)?;
    if created["success"] != true {
        return Err(ChatError::Setup(created.to_string()));
    }

    let mut connect_failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut opening = JoinSet::new();
    for (i, user) in receiver_ids.iter().enumerate() {
        let (target, nsp, user, room) = (target.clone(), nsp.clone(), user.clone(), room.clone());
        let timeout = config.connect_timeout;
        opening.spawn(async move {
            let opened = tokio::time::timeout(timeout, async {
                let mut c = connect(&target, &nsp, &user)
                    .await
                    .map_err(|e| e.kind().to_owned())?;
                let joined = ask(&mut c, "join", &json!({"roomId": room})).await?;
                if joined["success"] != true {
                    return Err("join refused".to_owned());
                }
                Ok(c)
            })
            .await
            .unwrap_or_else(|_| Err("timeout".to_owned()));
            (i, opened)
        });
    }
    let mut receivers = Vec::new();
    while let Some(done) = opening.join_next().await {
        match done {
            Ok((i, Ok(c))) => receivers.push((i, c)),
            Ok((_, Err(kind))) => {
                *connect_failures
                    .entry(format!("receiver: {kind}"))
                    .or_insert(0) += 1
            }
            Err(_) => *connect_failures.entry("panic".into()).or_insert(0) += 1,
        }
    }
    let mut senders = Vec::new();
    for user in &sender_ids {
        match connect(&target, &nsp, user).await {
            Ok(c) => senders.push(c),
            Err(e) => {
                *connect_failures
                    .entry(format!("sender: {}", e.kind()))
                    .or_insert(0) += 1
            }
        }
    }

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        received: (0..config.receivers).map(|_| AtomicU64::new(0)).collect(),
        stop: shutdown.child_token(),
    });
    let mut reading = JoinSet::new();
    for (i, c) in receivers {
        reading.spawn(receive(i, c, config.senders, shared.clone()));
    }

    let generator_cpu = CpuMeter::start(Proc::This);
    let server_cpu = CpuMeter::start_pids(&config.server_pids);
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut sending = JoinSet::new();
    for (s, mut c) in senders.into_iter().enumerate() {
        let (shared, room, size) = (shared.clone(), room.clone(), config.content_bytes);
        sending.spawn(async move {
            let mut acked = 0u64;
            let mut ack_us = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline && !shared.stop.is_cancelled() {
                let sent = shared.micros();
                let mut content = format!("{s}:{acked}:{sent}:");
                while content.len() < size {
                    content.push('x');
                }
                // Unique across runs: a sender's clientMsgId is remembered by a shared
                // store (PostgreSQL) from one run to the next.
                let id = format!("{room}-{s}-{acked}");
                let msg = json!({"roomId": room, "content": content, "clientMsgId": id});
                match ask(&mut c, "message", &msg).await {
                    Ok(a) if a["success"] == true && a["duplicate"] == false => {
                        ack_us.push(u32::try_from(shared.micros() - sent).unwrap_or(u32::MAX));
                        acked += 1;
                    }
                    Ok(a) => {
                        let why = a["error"].as_str().unwrap_or("refused").to_owned();
                        *errors.entry(why).or_insert(0) += 1;
                        break;
                    }
                    Err(kind) => {
                        *errors.entry(kind).or_insert(0) += 1;
                        break;
                    }
                }
            }
            c.close().await;
            (acked, ack_us, errors)
        });
    }
    let mut stored = 0u64;
    let mut ack_us = Vec::new();
    let mut send_errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(done) = sending.join_next().await {
        if let Ok((n, lat, errors)) = done {
            stored += n;
            ack_us.extend(lat);
            for (k, v) in errors {
                *send_errors.entry(k).or_insert(0) += v;
            }
        }
    }
    let send_secs = started.elapsed().as_secs_f64();
    let drain_deadline = Instant::now() + config.drain;
    let slowest = |s: &Shared| {
        s.received
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    };
    while slowest(&shared) < stored && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivery_secs = started.elapsed().as_secs_f64();
    meta.generator_cpu_pct = generator_cpu.and_then(|m| m.percent());
    meta.server_cpu_pct = server_cpu.and_then(|m| m.percent());
    shared.stop.cancel();

    let mut delivered = 0u64;
    let mut duplicates = 0u64;
    let mut delivery_us = Vec::new();
    while let Some(done) = reading.join_next().await {
        if let Ok(r) = done {
            delivered += r.unique;
            duplicates += r.duplicates;
            delivery_us.extend(r.latencies_us);
        }
    }
    let expected = stored * config.receivers as u64;
    let lost = expected.saturating_sub(delivered);
    let per_sec = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
    let stored_per_sec = per_sec(stored as f64, send_secs);
    let deliveries_per_sec = per_sec(delivered as f64, delivery_secs);
    meta.ok = connect_failures.is_empty()
        && send_errors.is_empty()
        && lost == 0
        && duplicates == 0
        && stored > 0;
    meta.headline
        .insert("stored_per_sec".into(), stored_per_sec);
    meta.headline
        .insert("deliveries_per_sec".into(), deliveries_per_sec);
    meta.finish();
    let ack_ms = Latency::from_micros(&mut ack_us);
    meta.headline.insert("ack_p99_ms".into(), ack_ms.p99);
    Ok(ChatReport {
        scenario: "chat",
        meta,
        url: config.url.clone(),
        room,
        senders: config.senders,
        receivers: config.receivers,
        connect_failures,
        stored,
        stored_per_sec,
        send_errors,
        delivered,
        lost,
        duplicates,
        deliveries_per_sec,
        ack_ms,
        delivery_ms: Latency::from_micros(&mut delivery_us),
    })
}

struct Received {
    unique: u64,
    duplicates: u64,
    latencies_us: Vec<u32>,
}

/// Counts one receiver's messages: each sender's arrive in its order, one at a time.
async fn receive(i: usize, mut client: Client, senders: usize, shared: Arc<Shared>) -> Received {
    let mut next = vec![0u64; senders];
    let mut r = Received {
        unique: 0,
        duplicates: 0,
        latencies_us: Vec::new(),
    };
    loop {
        let p = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            p = client.recv_packet() => p,
        };
        let Ok(p) = p else { break };
        let Ok(v) = serde_json::from_str::<Value>(p.data()) else {
            continue;
        };
        if v[0] != "message" {
            continue;
        }
        let Some(content) = v[1]["content"].as_str() else {
            continue;
        };
        let mut parts = content.split(':');
        let (Some(s), Some(n), Some(at)) = (
            parts.next().and_then(|x| x.parse::<usize>().ok()),
            parts.next().and_then(|x| x.parse::<u64>().ok()),
            parts.next().and_then(|x| x.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let Some(expected) = next.get_mut(s) else {
            continue;
        };
        if n < *expected {
            r.duplicates += 1;
            continue;
        }
        *expected = n + 1;
        r.unique += 1;
        r.latencies_us
            .push(u32::try_from(shared.micros().saturating_sub(at)).unwrap_or(u32::MAX));
        shared.received[i].store(r.unique, Ordering::Release);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
    r
}

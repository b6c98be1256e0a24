//! The soak run: churning Socket.IO clients, SSE readers, a paced publisher and the
//! sampler, until the time is up; then the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::config::SoakConfig;
use super::report::{Activity, Sample, SoakReport};
use crate::publish::clients::{Publisher, Sse};
use crate::realtime;
use crate::report::Meta;
use crate::sio::{Client, Namespace, PacketKind, SioError, Target, TargetError};
use crate::sys::{self, CpuMeter, Proc};

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{need} clients need more open files than the limit {have}: raise `ulimit -n`")]
    FdLimit { need: u64, have: u64 },
    #[error("cannot write {path}: {source}")]
    Csv {
        path: String,
        source: std::io::Error,
    },
}

/// Longest wait for one connect or one answer before it counts as a `timeout`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
    joins: AtomicU64,
    locks_ok: AtomicU64,
    locks_refused: AtomicU64,
    unlocks_ok: AtomicU64,
    final_disconnects: AtomicU64,
    drops: AtomicU64,
    events_received: AtomicU64,
    publishes: AtomicU64,
    publish_failures: AtomicU64,
    sse_connects: AtomicU64,
    sse_resumes: AtomicU64,
    sse_resets: AtomicU64,
    sse_messages: AtomicU64,
    online: AtomicU64,
    sse_online: AtomicU64,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    config: SoakConfig,
    target: Target,
    nsp: Arc<Namespace>,
    deadline: Instant,
    stop: CancellationToken,
    n: Counters,
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Shared {
    fn fail(&self, kind: &'static str) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(kind).or_default() += 1;
        }
    }

    fn over(&self) -> bool {
        self.stop.is_cancelled() || Instant::now() >= self.deadline
    }

    /// Sleeps until `at` (never past the deadline); false when the run is over.
    async fn sleep_until(&self, at: Instant) -> bool {
        tokio::select! {
            () = sleep_until(at.min(self.deadline)) => !self.over(),
            () = self.stop.cancelled() => false,
        }
    }
}

/// A small deterministic generator (xorshift64*): each client's choices repeat run to run.
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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration in `lo..=hi` seconds, with millisecond steps.
    fn secs(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(lo * 1000 + self.below((hi - lo) * 1000 + 1))
    }
}

/// The recovery offset a broadcast carries as its last argument (`[..., "123"]`).
fn trailing_offset(data: &str) -> Option<u64> {
    let body = data.strip_suffix("\"]")?;
    let start = body.rfind('"')?;
    if !body[..start].ends_with(',') {
        return None;
    }
    body[start + 1..].parse().ok()
}

/// The `pid` of a CONNECT answer (`{"sid":"..","pid":".."}`).
fn pid_of(connect_data: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        pid: Option<String>,
    }
    serde_json::from_str::<Answer>(connect_data).ok()?.pid
}

/// One connection's client and what it has seen.
struct Session {
    client: Client,
    last_offset: Option<u64>,
    events: u64,
}

impl Session {
    fn track(&mut self, kind: PacketKind, data: &str) {
        if kind == PacketKind::Event {
            self.events += 1;
            if let Some(o) = trailing_offset(data) {
                self.last_offset = Some(self.last_offset.map_or(o, |l| l.max(o)));
            }
        }
    }

    /// Reads (and tracks) until `until`.
    async fn read_until(&mut self, until: Instant) -> Result<(), SioError> {
        loop {
            match timeout_at(until, self.client.recv_packet()).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(p)) => self.track(p.kind, p.data()),
            }
        }
    }

    /// Emits `event` with an ack and reads until the ack; whether it said `success`.
    async fn call(&mut self, event: &str, arg: &str) -> Result<bool, &'static str> {
        let id = self
            .client
            .emit_with_ack(event, &[arg])
            .await
            .map_err(|e| e.kind())?;
        let until = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let p = match timeout_at(until, self.client.recv_packet()).await {
                Err(_) => return Err("timeout"),
                Ok(Err(e)) => return Err(e.kind()),
                Ok(Ok(p)) => p,
            };
            if p.kind == PacketKind::Ack && p.id == Some(id) {
                return Ok(p.data().contains("\"success\":true"));
            }
            self.track(p.kind, p.data());
        }
    }
}

/// One churning client: connect (recovering the last session when it has one), join an
/// event room when the session is new, hold and release seats, then drop the transport
/// (recoverable) or leave for good, stay offline a moment, and again.
async fn churn(sh: Arc<Shared>, i: usize, start_at: Instant) {
    let c = &sh.config;
    let mut rng = Rng::new(i as u64 + 1);
    if !sh.sleep_until(start_at).await {
        return;
    }
    let mut generation = 0u64;
    let mut resume: Option<(String, u64)> = None;
    let mut event = 1 + rng.below(c.events as u64) as i64;
    let mut categories: Vec<i64> = Vec::new();
    while !sh.over() {
        let user = format!("soak-{i}-{generation}");
        let auth = resume
            .as_ref()
            .map(|(pid, off)| format!("{{\"pid\":\"{pid}\",\"offset\":\"{off}\"}}"));
        let connected = timeout(
            ANSWER_TIMEOUT,
            Client::connect_with_query(
                &sh.target,
                &format!("userId={user}"),
                &sh.nsp,
                auth.as_deref(),
            ),
        )
        .await;
        let client = match connected {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                sh.fail(e.kind());
                resume = None;
                let _ = sh.sleep_until(Instant::now() + rng.secs((1, 3))).await;
                continue;
            }
            Err(_) => {
                sh.fail("timeout");
                resume = None;
                continue;
            }
        };
        bump(&sh.n.connects);
        let pid = pid_of(&client.connect_data);
        let recovered = matches!((&resume, &pid), (Some((asked, _)), Some(got)) if asked == got);
        if resume.is_some() {
            bump(if recovered {
                &sh.n.recovered
            } else {
                &sh.n.not_recovered
            });
        }
        let mut s = Session {
            client,
            last_offset: resume.as_ref().filter(|_| recovered).map(|r| r.1),
            events: 0,
        };
        sh.n.online.fetch_add(1, Ordering::Relaxed);
        let lived = live(
            &sh,
            &mut s,
            &mut rng,
            &mut event,
            &mut categories,
            recovered,
        )
        .await;
        sh.n.online.fetch_sub(1, Ordering::Relaxed);
        sh.n.events_received.fetch_add(s.events, Ordering::Relaxed);
        if let Err(kind) = lived {
            sh.fail(kind);
            resume = None;
            generation += 1;
            continue;
        }
        let Session {
            client,
            last_offset,
            ..
        } = s;
        if sh.over() {
            let _ = timeout(Duration::from_secs(2), client.close()).await;
            break;
        }
        if rng.below(c.final_every) == 0 {
            let _ = timeout(Duration::from_secs(2), client.disconnect()).await;
            bump(&sh.n.final_disconnects);
            resume = None;
            generation += 1;
            event = 1 + rng.below(c.events as u64) as i64;
            categories.clear();
        } else {
            // Dropping the TCP connection is a transport close: the server keeps the
            // session for its recovery window.
            drop(client);
            bump(&sh.n.drops);
            resume = pid.zip(last_offset);
        }
        if !sh
            .sleep_until(Instant::now() + rng.secs(c.offline_secs))
            .await
        {
            break;
        }
    }
}

/// One connection's life: join (unless recovered), then hold, wait, release, pause.
async fn live(
    sh: &Shared,
    s: &mut Session,
    rng: &mut Rng,
    event: &mut i64,
    categories: &mut Vec<i64>,
    recovered: bool,
) -> Result<(), &'static str> {
    let c = &sh.config;
    if !recovered || categories.is_empty() {
        let joined = timeout(
            ANSWER_TIMEOUT,
            realtime::join_event(&mut s.client, *event, realtime::DEMO_CATEGORIES_PER_EVENT),
        )
        .await
        .map_err(|_| "timeout")?
        .map_err(|e| e.kind())?;
        *categories = joined.iter().map(|u| u.category_id).collect();
        bump(&sh.n.joins);
    }
    let end = (Instant::now() + rng.secs(c.session_secs)).min(sh.deadline);
    while Instant::now() < end && !sh.stop.is_cancelled() {
        let category = categories[rng.below(categories.len() as u64) as usize];
        let arg = format!("{{\"eventId\":{event},\"categoryId\":{category},\"quantity\":1}}");
        let held = s.call("lock-tickets", &arg).await?;
        bump(if held {
            &sh.n.locks_ok
        } else {
            &sh.n.locks_refused
        });
        let until = (Instant::now() + rng.secs(c.hold_secs)).min(end);
        s.read_until(until).await.map_err(|e| e.kind())?;
        if held {
            let arg = format!("{{\"eventId\":{event},\"categoryId\":{category}}}");
            if s.call("unlock-tickets", &arg).await? {
                bump(&sh.n.unlocks_ok);
            }
        }
        let until = (Instant::now() + rng.secs(c.hold_secs)).min(end);
        s.read_until(until).await.map_err(|e| e.kind())?;
    }
    Ok(())
}

/// One SSE reader: reads an event room for a while, drops, and resumes from its last
/// event id; one session in `final_every` starts over in another room.
async fn read_sse(sh: Arc<Shared>, i: usize, start_at: Instant) {
    let c = &sh.config;
    let mut rng = Rng::new(1_000_003 + i as u64);
    if !sh.sleep_until(start_at).await {
        return;
    }
    let mut room = 1 + rng.below(c.events as u64);
    let mut last: Option<u64> = None;
    while !sh.over() {
        let query = format!("channels=event_{room}&userId=soak-sse-{i}");
        let mut sse = match timeout(ANSWER_TIMEOUT, Sse::open(&sh.target, &query, last)).await {
            Ok(Ok(sse)) => sse,
            Ok(Err(e)) => {
                sh.fail(e.kind());
                last = None;
                let _ = sh.sleep_until(Instant::now() + rng.secs((1, 3))).await;
                continue;
            }
            Err(_) => {
                sh.fail("timeout");
                last = None;
                continue;
            }
        };
        bump(&sh.n.sse_connects);
        if last.is_some() {
            bump(&sh.n.sse_resumes);
        }
        sh.n.sse_online.fetch_add(1, Ordering::Relaxed);
        let end = (Instant::now() + rng.secs(c.session_secs)).min(sh.deadline);
        let mut failed = false;
        loop {
            match timeout_at(end, sse.next_event()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    sh.fail(e.kind());
                    failed = true;
                    break;
                }
                Ok(Ok((event, _))) => match event.as_str() {
                    "reset" => bump(&sh.n.sse_resets),
                    "connected" => {}
                    _ => bump(&sh.n.sse_messages),
                },
            }
        }
        sh.n.sse_online.fetch_sub(1, Ordering::Relaxed);
        last = if failed { None } else { sse.last_id };
        drop(sse);
        if rng.below(c.final_every) == 0 {
            room = 1 + rng.below(c.events as u64);
            last = None;
        }
        if !sh
            .sleep_until(Instant::now() + rng.secs(c.offline_secs))
            .await
        {
            break;
        }
    }
}

/// Paced publishes to random event rooms, one in ten to a user (whose room may be empty).
async fn publish(sh: Arc<Shared>) {
    let c = &sh.config;
    if c.publish_per_sec <= 0.0 {
        return;
    }
    let every = Duration::from_secs_f64(1.0 / c.publish_per_sec);
    let mut rng = Rng::new(7);
    let mut publisher: Option<Publisher> = None;
    let mut next = Instant::now();
    let mut seq = 0u64;
    loop {
        if !sh.sleep_until(next).await {
            return;
        }
        next += every;
        // Behind by more than a second (a slow server): skip ahead rather than burst.
        let now = Instant::now();
        if next + Duration::from_secs(1) < now {
            next = now;
        }
        seq += 1;
        let body = if seq.is_multiple_of(10) {
            let user = rng.below(c.clients as u64);
            format!(
                "{{\"user\":\"soak-{user}-0\",\"event\":\"soak-publish\",\"data\":{{\"seq\":{seq}}}}}"
            )
        } else {
            let room = 1 + rng.below(c.events as u64);
            format!(
                "{{\"room\":\"event_{room}\",\"event\":\"soak-publish\",\"data\":{{\"seq\":{seq}}}}}"
            )
        };
        if publisher.is_none() {
            match timeout(ANSWER_TIMEOUT, Publisher::connect(&sh.target, &c.api_key)).await {
                Ok(Ok(p)) => publisher = Some(p),
                _ => {
                    bump(&sh.n.publish_failures);
                    continue;
                }
            }
        }
        let Some(p) = publisher.as_mut() else {
            continue;
        };
        match timeout(ANSWER_TIMEOUT, p.post(&body)).await {
            Ok(Ok(())) => bump(&sh.n.publishes),
            Ok(Err(e)) => {
                eprintln!("soak: publish failed: {e}");
                bump(&sh.n.publish_failures);
                publisher = None;
            }
            Err(_) => {
                bump(&sh.n.publish_failures);
                publisher = None;
            }
        }
    }
}

/// `Threads:` of `/proc/PID/status`.
fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// `GET /metrics` on a fresh connection; the body.
async fn scrape(target: &Target) -> Option<String> {
    let mut tcp = TcpStream::connect(target.addr).await.ok()?;
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.addr
    );
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of the sample line `series` (a name, with its labels if any).
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

async fn sample(sh: &Shared, started: Instant) -> Sample {
    let pid = sh.config.server_pid;
    // A loaded server may answer late; a sample a little late beats a missing one.
    let patience = sh.config.sample_every.max(Duration::from_secs(2)) - Duration::from_secs(1);
    let metrics = timeout(patience, scrape(&sh.target))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let m = |series: &str| metric(&metrics, series);
    Sample {
        secs: started.elapsed().as_secs_f64(),
        rss_bytes: pid.and_then(|p| sys::rss_bytes(Proc::Pid(p)).ok()),
        fds: pid.and_then(fds),
        threads: pid.and_then(threads),
        tasks: m("switchboard_runtime_tasks"),
        rooms: m("switchboard_rooms"),
        hub_members: m("switchboard_hub_members"),
        history: m("switchboard_history_messages"),
        holds_active: m("switchboard_holds{status=\"active\"}"),
        clients_online: sh.n.online.load(Ordering::Relaxed),
        sse_online: sh.n.sse_online.load(Ordering::Relaxed),
    }
}

fn progress(x: &Sample) {
    let v = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    eprintln!(
        "soak {:>6.0}s rss {} MiB fds {} tasks {} rooms {} members {} holds {} online {}+{}",
        x.secs,
        x.rss_bytes
            .map_or_else(|| "-".into(), |b| (b >> 20).to_string()),
        v(x.fds),
        v(x.tasks),
        v(x.rooms),
        v(x.hub_members),
        v(x.holds_active),
        x.clients_online,
        x.sse_online
    );
}

pub async fn run(
    config: &SoakConfig,
    shutdown: CancellationToken,
) -> Result<SoakReport, SoakError> {
    let target = Target::resolve(&config.url).await?;
    let need = (config.clients + config.sse) as u64 + 64;
    if let Some(have) = sys::open_files_limit().filter(|&h| h < need) {
        return Err(SoakError::FdLimit { need, have });
    }
    let mut meta = Meta::new(&config.server, format!("soak-{}", config.clients));
    let started = Instant::now();
    let sh = Arc::new(Shared {
        config: config.clone(),
        target,
        nsp: Namespace::new(realtime::NAMESPACE),
        deadline: started + config.duration,
        stop: shutdown.child_token(),
        n: Counters::default(),
        failures: Mutex::default(),
    });
    let generator_cpu = CpuMeter::start(Proc::This);
    let server_cpu = config
        .server_pid
        .and_then(|p| CpuMeter::start(Proc::Pid(p)));

    let mut tasks = JoinSet::new();
    let spread = |i: usize, n: usize| started + config.ramp.mul_f64(i as f64 / n.max(1) as f64);
    for i in 0..config.clients {
        tasks.spawn(churn(sh.clone(), i, spread(i, config.clients)));
    }
    for i in 0..config.sse {
        tasks.spawn(read_sse(sh.clone(), i, spread(i, config.sse)));
    }
    tasks.spawn(publish(sh.clone()));

    let mut samples = Vec::new();
    let mut next = started;
    loop {
        let x = sample(&sh, started).await;
        progress(&x);
        samples.push(x);
        next += config.sample_every;
        if next > sh.deadline || !sh.sleep_until(next).await {
            break;
        }
    }
    let duration_secs = started.elapsed().as_secs_f64();
    meta.generator_cpu_pct = generator_cpu.and_then(|m| m.percent());
    meta.server_cpu_pct = server_cpu.and_then(|m| m.percent());
    sh.stop.cancel();
    // Every task ends at the deadline by itself; a stuck one is not waited for long.
    let _ = timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    meta.finish();

    let n = &sh.n;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let activity = Activity {
        connects: load(&n.connects),
        recovered: load(&n.recovered),
        not_recovered: load(&n.not_recovered),
        joins: load(&n.joins),
        locks_ok: load(&n.locks_ok),
        locks_refused: load(&n.locks_refused),
        unlocks_ok: load(&n.unlocks_ok),
        final_disconnects: load(&n.final_disconnects),
        drops: load(&n.drops),
        events_received: load(&n.events_received),
        publishes: load(&n.publishes),
        publish_failures: load(&n.publish_failures),
        sse_connects: load(&n.sse_connects),
        sse_resumes: load(&n.sse_resumes),
        sse_resets: load(&n.sse_resets),
        sse_messages: load(&n.sse_messages),
        failures: sh.failures.lock().map(|f| f.clone()).unwrap_or_default(),
    };
    // The warm-up: every client started and lived one full session, and at least a
    // sixth of the run; never more than half of it.
    let secs = config.duration.as_secs_f64();
    let warmup_secs = (config.ramp.as_secs_f64() + config.session_secs.1 as f64 + 60.0)
        .max(secs / 6.0)
        .min(secs / 2.0);
    let trends = SoakReport::judge(&samples, warmup_secs, duration_secs);
    meta.headline
        .insert("connects_total".into(), activity.connects as f64);
    let mut report = SoakReport {
        meta,
        clients: config.clients,
        sse: config.sse,
        duration_secs,
        warmup_secs,
        activity,
        samples,
        trends,
    };
    report.meta.ok = report.ok();
    if let Some(path) = &config.csv {
        std::fs::write(path, report.csv()).map_err(|source| SoakError::Csv {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offsets_pids_and_metrics() {
        assert_eq!(
            trailing_offset(r#"["availability-update",{"eventId":1},"1764500000000123"]"#),
            Some(1_764_500_000_000_123)
        );
        assert_eq!(trailing_offset(r#"["connected",{"a":1}]"#), None);
        assert_eq!(trailing_offset(r#"["x","abc"]"#), None);
        assert_eq!(
            trailing_offset(r#"["7"]"#),
            None,
            "a lone argument is no offset"
        );
        assert_eq!(pid_of(r#"{"sid":"a","pid":"b"}"#).as_deref(), Some("b"));
        assert_eq!(pid_of(r#"{"sid":"a"}"#), None);
        let text = "# HELP x\nswitchboard_rooms 12\nswitchboard_holds{status=\"active\"} 3\nswitchboard_rooms_x 9\n";
        assert_eq!(metric(text, "switchboard_rooms"), Some(12));
        assert_eq!(
            metric(text, "switchboard_holds{status=\"active\"}"),
            Some(3)
        );
        assert_eq!(metric(text, "switchboard_tasks"), None);
    }

    #[test]
    fn rng_durations_stay_in_range() {
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let d = r.secs((2, 5));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(5));
        }
        assert_eq!(r.secs((0, 0)), Duration::ZERO);
    }
}

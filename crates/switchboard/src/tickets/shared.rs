//! The node's side of the shared hold authority (Redis): what this node remembers about
//! its own sessions, whether Redis answers (`/ready`), the sweeper that claims due holds
//! at their deadlines, the catalog seed, the fleet's counters, and node liveness (the
//! release of a dead node's holds).
//!
//! Owns nothing the fleet must agree on: that is all in Redis (`redis_store.rs`). What is
//! here is either this node's own (its sessions, what it announced) or a cache that the
//! sweeper refreshes every second (counters, deadlines).
//!
//! # Expiry, exactly once
//! Every script first claims its event's due holds. The sweeper on every node wakes at
//! the earliest deadline it knows (each script answers its event's next deadline, and a
//! poll of every event each second learns the deadlines other nodes set) and runs the
//! sweep script on the due events. Whichever node runs first ends and announces a hold;
//! the others find it gone. A node that dies leaves its deadlines to the others' polls.
//!
//! # Dead nodes
//! [`NodeLiveness`] is what this needs from the cluster's node registry. Until the fabric
//! provides one, [`RedisLiveness`] keeps a heartbeat per node in a sorted set. A node whose
//! last beat is older than `node_timeout + recovery_window` is dead and its clients did not
//! come back in time: any node releases the active holds it granted (a script per event,
//! idempotent), then forgets it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tickets::{Availability, CategoryKey, Event, Hold, Stats};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::redis_store::{RedisHolds, RedisStoreError};
use super::service::{HoldService, ServiceError, now_ms};

/// How often every node polls every event (claims due holds it did not know about, sums
/// the counters, retries releases, seeds missing events).
const POLL: Duration = Duration::from_secs(1);

/// Timing of node liveness.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    /// A node that has not beaten for this long is dead.
    pub node_timeout: Duration,
    /// How long a dead node's clients may take to come back before its holds are released
    /// (the Socket.IO recovery window).
    pub recovery_window: Duration,
}

/// What the shared hold authority needs to know about other nodes. The cluster fabric's
/// node registry can implement it (and be handed to [`Shared`]); [`RedisLiveness`] is the
/// minimal one, kept beside the holds.
pub trait NodeLiveness: Send + Sync {
    /// Records that `node` is alive at `now_ms`.
    fn beat<'a>(&'a self, node: &'a str, now_ms: i64)
    -> BoxFuture<'a, Result<(), RedisStoreError>>;
    /// Nodes whose last beat is at or before `before_ms`.
    fn dead_before(&self, before_ms: i64) -> BoxFuture<'_, Result<Vec<String>, RedisStoreError>>;
    /// Forgets a dead node whose holds were released.
    fn forget<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), RedisStoreError>>;
}

/// Heartbeats in one sorted set, `<prefix>{nodes}:beat` (node -> last beat, unix ms).
#[derive(Debug, Clone)]
pub struct RedisLiveness {
    conn: redis::aio::ConnectionManager,
    key: String,
}

impl RedisLiveness {
    /// Liveness on the hold store's connection and prefix.
    pub fn new(store: &RedisHolds) -> Self {
        Self {
            conn: store.conn(),
            key: store.global_key("{nodes}:beat"),
        }
    }
}

impl NodeLiveness for RedisLiveness {
    fn beat<'a>(
        &'a self,
        node: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), RedisStoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("ZADD")
                .arg(&self.key)
                .arg(now_ms)
                .arg(node)
                .query_async::<()>(&mut conn)
                .await?;
            Ok(())
        })
    }

    fn dead_before(&self, before_ms: i64) -> BoxFuture<'_, Result<Vec<String>, RedisStoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            Ok(redis::cmd("ZRANGEBYSCORE")
                .arg(&self.key)
                .arg("-inf")
                .arg(before_ms)
                .query_async(&mut conn)
                .await?)
        })
    }

    fn forget<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), RedisStoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("ZREM")
                .arg(&self.key)
                .arg(node)
                .query_async::<()>(&mut conn)
                .await?;
            Ok(())
        })
    }
}

/// The node's state around the shared authority.
pub(crate) struct Shared {
    store: RedisHolds,
    liveness: Box<dyn NodeLiveness>,
    timing: LivenessConfig,
    /// Events in which each session of this node holds something (released on its end).
    sessions: Mutex<HashMap<String, BTreeSet<i64>>>,
    /// Releases that failed (Redis down): retried by the sweeper.
    retry: Mutex<BTreeSet<(String, i64)>>,
    /// Whether Redis answered the last command.
    up: AtomicBool,
    /// Each event's next deadline, as last reported.
    deadlines: Mutex<BTreeMap<i64, i64>>,
    /// The fleet's counters, as last summed.
    stats: Mutex<Stats>,
    /// The newest availability version this node announced, per category.
    published: Mutex<HashMap<CategoryKey, u64>>,
    /// Categories with a settle check scheduled.
    settling: Mutex<HashSet<CategoryKey>>,
    /// The configured catalog: events the fleet does not know yet are seeded from it.
    seed: Vec<Event>,
}

impl Shared {
    pub(crate) fn new(store: RedisHolds, seed: Vec<Event>, timing: LivenessConfig) -> Self {
        let liveness = Box::new(RedisLiveness::new(&store));
        Self {
            store,
            liveness,
            timing,
            sessions: Mutex::new(HashMap::new()),
            retry: Mutex::new(BTreeSet::new()),
            up: AtomicBool::new(false),
            deadlines: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(Stats::default()),
            published: Mutex::new(HashMap::new()),
            settling: Mutex::new(HashSet::new()),
            seed,
        }
    }

    pub(crate) fn store(&self) -> &RedisHolds {
        &self.store
    }

    /// Records whether Redis answered; logs the transitions once.
    pub(crate) fn answered(&self, ok: bool) {
        let was = self.up.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("hold store (Redis) answers again");
            } else {
                tracing::warn!(
                    "hold store (Redis) unreachable: holds are refused until it answers"
                );
            }
        }
    }

    pub(crate) fn readiness(&self) -> (bool, serde_json::Value) {
        let up = self.up.load(Ordering::Relaxed);
        (
            up,
            serde_json::json!({
                "kind": "redis",
                "state": if up { "up" } else { "unreachable" },
                "node": self.store.node(),
            }),
        )
    }

    pub(crate) fn held_by_session(&self, session: &str, event_id: i64) {
        self.sessions
            .lock()
            .entry(session.to_owned())
            .or_default()
            .insert(event_id);
    }

    /// The events a session held something in (forgotten: the session ended).
    pub(crate) fn session_events(&self, session: &str) -> Vec<i64> {
        self.sessions
            .lock()
            .remove(session)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    pub(crate) fn release_later(&self, session: &str, event_id: i64) {
        self.retry.lock().insert((session.to_owned(), event_id));
    }

    /// Records an event's next deadline; true if the sweeper must wake earlier.
    pub(crate) fn note_deadline(&self, event_id: i64, next: Option<i64>) -> bool {
        let mut d = self.deadlines.lock();
        let before = d.values().min().copied();
        match next {
            Some(at) => {
                d.insert(event_id, at);
            }
            None => {
                d.remove(&event_id);
            }
        }
        next.is_some_and(|at| before.is_none_or(|b| at < b))
    }

    pub(crate) fn settle_delay(&self, window: Duration) -> Duration {
        window.max(Duration::from_millis(50))
    }

    /// Whether `version` is newer than what this node announced; if so it is recorded.
    pub(crate) fn newer_than_published(&self, a: &Availability, version: u64) -> bool {
        let key = CategoryKey::new(a.event_id, a.category_id);
        let mut published = self.published.lock();
        let last = published.entry(key).or_insert(0);
        if version <= *last {
            return false;
        }
        *last = version;
        true
    }

    pub(crate) fn start_settling(&self, key: CategoryKey) -> bool {
        self.settling.lock().insert(key)
    }

    pub(crate) fn stop_settling(&self, key: CategoryKey) {
        self.settling.lock().remove(&key);
    }

    pub(crate) fn stats(&self) -> Stats {
        *self.stats.lock()
    }

    fn track<T>(&self, r: Result<T, RedisStoreError>) -> Result<T, ServiceError> {
        self.answered(r.is_ok());
        r.map_err(|e| ServiceError::Storage(e.to_string()))
    }

    /// An event with each category's availability and version.
    pub(crate) async fn event(
        &self,
        event_id: i64,
    ) -> Result<Option<(Event, Vec<(Availability, u64)>)>, ServiceError> {
        self.track(self.store.event(event_id, now_ms()).await)
    }

    pub(crate) async fn catalog(&self) -> Result<Vec<Event>, ServiceError> {
        let ids = self.track(self.store.event_ids().await)?;
        let mut events = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((e, _)) = self.event(id).await? {
                events.push(e);
            }
        }
        Ok(events)
    }

    pub(crate) async fn holds_of_user(&self, user: &str) -> Result<Vec<Hold>, ServiceError> {
        let ids = self.track(self.store.event_ids().await)?;
        let now = now_ms();
        let mut all = Vec::new();
        for id in ids {
            all.extend(self.track(self.store.holds_of_user(id, user, now).await)?);
        }
        all.sort_by(|a, b| (a.created_at, &a.lock_id).cmp(&(b.created_at, &b.lock_id)));
        Ok(all)
    }
}

/// The sweeper of this node: claims due holds at their deadlines, polls every event each
/// second, keeps the node's heartbeat and releases the holds of dead nodes.
pub(crate) async fn run(svc: Arc<HoldService>, stop: CancellationToken) {
    let Some(shared) = svc.shared() else {
        return;
    };
    let beat_every = (shared.timing.node_timeout / 3).max(Duration::from_millis(200));
    let mut next_poll = Instant::now();
    let mut next_beat = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_poll {
            poll(&svc, shared).await;
            next_poll = Instant::now() + POLL;
        }
        if now >= next_beat {
            liveness(&svc, shared).await;
            next_beat = Instant::now() + beat_every;
        }
        sweep_due(&svc, shared).await;
        let mut wake = next_poll.min(next_beat);
        if let Some(at) = shared.deadlines.lock().values().min().copied() {
            let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
            wake = wake.min(Instant::now() + wait);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = svc.timer().notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Sweeps the events whose known deadline has come.
async fn sweep_due(svc: &Arc<HoldService>, shared: &Shared) {
    let now = now_ms();
    let due: Vec<i64> = shared
        .deadlines
        .lock()
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(ev, _)| *ev)
        .collect();
    for ev in due {
        if !svc.sweep_event(ev).await {
            // Redis is down: forget the deadline; the next poll learns it again.
            shared.deadlines.lock().remove(&ev);
        }
    }
}

/// Every second: seed missing events, sweep every event, retry releases, sum counters.
async fn poll(svc: &Arc<HoldService>, shared: &Shared) {
    let ids = match shared.store.event_ids().await {
        Ok(ids) => {
            shared.answered(true);
            ids
        }
        Err(e) => {
            shared.answered(false);
            tracing::debug!(error = %e, "hold store poll failed");
            return;
        }
    };
    let known: BTreeSet<i64> = ids.iter().copied().collect();
    for event in shared.seed.iter().filter(|e| !known.contains(&e.id)) {
        match shared.store.upsert_event(event, true, now_ms()).await {
            Ok(done) if done.value == Ok(true) => {
                tracing::info!(event_id = event.id, "seeded the fleet's catalog");
            }
            Ok(_) => {}
            Err(e) => {
                shared.answered(false);
                tracing::debug!(error = %e, "catalog seed failed");
                return;
            }
        }
    }
    let mut total = Stats::default();
    for &ev in &known {
        if !svc.sweep_event(ev).await {
            return;
        }
        match shared.store.stats(ev, now_ms()).await {
            Ok(s) => add(&mut total, &s),
            Err(_) => return,
        }
    }
    *shared.stats.lock() = total;
    let retry: Vec<(String, i64)> = shared.retry.lock().iter().cloned().collect();
    for (session, ev) in retry {
        if svc.release_session_in(ev, &session).await {
            shared.retry.lock().remove(&(session, ev));
        }
    }
}

/// Users and categories are counted per event and summed (a user holding in two events
/// counts twice: the fleet has no cross-event user index).
fn add(total: &mut Stats, s: &Stats) {
    total.total_locks += s.total_locks;
    total.active_locks += s.active_locks;
    total.users_with_locks += s.users_with_locks;
    total.categories_with_locks += s.categories_with_locks;
    let (t, b) = (&mut total.locks_by_status, &s.locks_by_status);
    t.active += b.active;
    t.confirmed += b.confirmed;
    t.expired += b.expired;
    t.released += b.released;
    t.completed += b.completed;
}

/// Beats, and releases the holds of nodes dead for longer than the recovery window.
async fn liveness(svc: &Arc<HoldService>, shared: &Shared) {
    let me = shared.store.node().to_owned();
    let now = now_ms();
    if shared.liveness.beat(&me, now).await.is_err() {
        return;
    }
    let grace = shared.timing.node_timeout + shared.timing.recovery_window;
    let before = now - grace.as_millis() as i64;
    let Ok(dead) = shared.liveness.dead_before(before).await else {
        return;
    };
    for node in dead.into_iter().filter(|n| *n != me) {
        let Ok(ids) = shared.store.event_ids().await else {
            return;
        };
        let mut all = true;
        for ev in ids {
            all &= svc.release_node(ev, &node).await;
        }
        if all {
            let _ = shared.liveness.forget(&node).await;
        }
    }
}

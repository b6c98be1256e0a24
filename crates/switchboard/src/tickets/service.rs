use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::commit::{Durable, Inner, Local, Writes};
use super::shared::Shared;
use super::store::HoldStore;
use hub::{Hub, Payload, Publish};
use parking_lot::Mutex;
use tickets::{
    Availability, CatalogError, CategoryKey, ConfirmError, Event, Hold, HoldConfig, HoldRequest,
    LockError, OrderEffect, OrderError, OrderKind, OrderMessage, Outcome, State, Stats,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::coalesce::{Coalescer, Decision};

/// What a client hears when the hold authority cannot answer (nothing was granted).
pub const UNAVAILABLE: &str = "Hold service unavailable, try again";

/// Why an operation failed, as the caller should report it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The rules refused it; the message is fit for the client.
    #[error("{0}")]
    Refused(String),
    /// The store could not answer or make it durable; nothing changed. The cause is for
    /// logs; clients hear [`UNAVAILABLE`].
    #[error("Hold service unavailable, try again")]
    Storage(String),
}

/// Why a typed mutation failed: the rules refused it (their own error), or the store
/// could not make it durable (nothing changed).
#[derive(Debug)]
pub(crate) enum ApplyError<E> {
    Rules(E),
    Storage(String),
}

impl<E: std::fmt::Display> From<ApplyError<E>> for ServiceError {
    fn from(e: ApplyError<E>) -> ServiceError {
        match e {
            ApplyError::Rules(e) => ServiceError::Refused(e.to_string()),
            ApplyError::Storage(cause) => ServiceError::Storage(cause),
        }
    }
}

impl<E> ApplyError<E> {
    fn storage(e: ServiceError) -> Self {
        match e {
            ServiceError::Refused(m) | ServiceError::Storage(m) => ApplyError::Storage(m),
        }
    }
}

/// Who decides holds: this process (the pure `State` made durable by SQLite or kept in
/// memory), or Redis, shared by every node.
enum Authority {
    Local(Arc<Local>),
    Redis(Box<Shared>),
}

/// A local operation applied in memory whose answer waits until the state it produced
/// or read is durable ([`Pending::settled`]). From the Redis authority: already settled.
pub(crate) struct Pending<T, E> {
    service: Arc<HoldService>,
    result: Result<T, ApplyError<E>>,
    /// The batch the answer depends on (`None`: nothing to wait for).
    durable: Option<Durable>,
    started: Instant,
}

impl<T, E> Pending<T, E> {
    fn ready(service: &Arc<HoldService>, result: Result<T, ApplyError<E>>) -> Self {
        Pending {
            service: service.clone(),
            result,
            durable: None,
            started: Instant::now(),
        }
    }

    /// The answer, once it may be given: its batch is on disk and the availability it
    /// changed is published. If the batch failed, every operation in it fails
    /// ([`ApplyError::Storage`]) and nothing of it remains, in memory or on disk.
    pub(crate) async fn settled(self) -> Result<T, ApplyError<E>> {
        let Some(durable) = self.durable else {
            return self.result;
        };
        let written = durable.wait().await;
        self.service.latency.observe(self.started.elapsed());
        if let Err(cause) = written {
            return Err(ApplyError::Storage(cause.to_string()));
        }
        // The announcements of this batch go out before the caller answers.
        self.service.flush_pending();
        self.result
    }
}

thread_local! {
    /// Set while [`HoldService::deferring_flush`] runs: `Some(true)` once a flush is owed.
    static DEFERRED: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The hold service: the hold authority, the expiry timer and the broadcasts.
pub struct HoldService {
    authority: Authority,
    /// The rules' time (the wall clock, except in tests on a paused clock).
    clock: Clock,
    hub: Arc<Hub>,
    coalescer: Coalescer,
    /// Re-arms the expiry timer after a mutation.
    timer: Notify,
    /// The deadline the local expiry timer sleeps until (`i64::MAX`: none), written and
    /// read under the state lock.
    timer_deadline: AtomicI64,
    config: HoldConfig,
    /// Time of every operation, from taking the lock to durable (for `/metrics`).
    pub latency: primitives::Histogram,
    /// Holds this node ended at their deadline (with Redis: the ones it claimed).
    expired_here: std::sync::atomic::AtomicU64,
    /// Availability snapshots waiting for their broadcast, in the order of the states.
    pending: Mutex<Vec<Availability>>,
    /// Held for a whole flush (see `flush_pending`).
    flushing: Mutex<()>,
}

impl Drop for HoldService {
    fn drop(&mut self) {
        if let Authority::Local(local) = &self.authority {
            local.close();
        }
    }
}

impl std::fmt::Debug for HoldService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldService").finish()
    }
}

/// Unix milliseconds now (the system's wall clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where the hold rules' time (unix milliseconds: `createdAt`, `expiresAt`) comes from.
/// The timers that wait for it are always tokio's.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// The system's wall clock: what `expiresAt` means to clients, and the time every
    /// node of a fleet shares (the Redis authority always runs on it).
    #[default]
    Wall,
    /// The wall time when it was made, advanced by tokio's clock since: on a paused
    /// clock (`#[tokio::test(start_paused = true)]`), hold time moves only with
    /// `tokio::time::advance` or the runtime's auto-advance, so expiry is tested at exact
    /// instants without sleeping.
    Tokio { unix_ms: i64, at: Instant },
}

impl Clock {
    /// A clock that follows tokio's, starting at the wall time now.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            unix_ms: now_ms(),
            at: Instant::now(),
        }
    }

    /// Unix milliseconds now on this clock.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::Wall => now_ms(),
            Clock::Tokio { unix_ms, at } => unix_ms + at.elapsed().as_millis() as i64,
        }
    }
}

/// The event that announces a category's numbers.
const AVAILABILITY_UPDATE: &str = "availability-update";

/// The key and version of an `availability-update` published by the shared (Redis)
/// authority, which stamps each with the category's version (`"version"`, bumped by
/// every script that changed the category). The cluster fabric delivers only a newer
/// version than it last delivered (`cluster::Supersedes`), so announcements of two
/// nodes that crossed on their way, or one announced by two nodes, never reach a client
/// out of order or twice. Unversioned updates (one node, no Redis) are not latest-value.
pub fn announcement_version(p: &Publish) -> Option<(String, u64)> {
    if &*p.event != AVAILABILITY_UPDATE {
        return None;
    }
    if p.payload.arg_count != 1 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&p.payload.args).ok()?;
    let version = v.get("version")?.as_u64()?;
    let (event, category) = (v.get("eventId")?.as_i64()?, v.get("categoryId")?.as_i64()?);
    Some((announcement_key(event, category), version))
}

/// The latest-value key of a category's `availability-update`s.
fn announcement_key(event_id: i64, category_id: i64) -> String {
    format!("{event_id}:{category_id}")
}

/// The hub room of an event.
pub fn event_room(event_id: i64) -> String {
    format!("event_{event_id}")
}

impl HoldService {
    /// Restores the persisted state, or seeds the catalog on a first start.
    pub fn open(
        config: HoldConfig,
        catalog: Vec<Event>,
        store: Box<dyn HoldStore + Send>,
        hub: Arc<Hub>,
        coalesce_window: Duration,
    ) -> Result<Arc<HoldService>, ServiceError> {
        Self::open_on(Clock::Wall, config, catalog, store, hub, coalesce_window)
    }

    /// [`HoldService::open`] with the rules' time taken from `clock`.
    pub fn open_on(
        clock: Clock,
        config: HoldConfig,
        catalog: Vec<Event>,
        mut store: Box<dyn HoldStore + Send>,
        hub: Arc<Hub>,
        coalesce_window: Duration,
    ) -> Result<Arc<HoldService>, ServiceError> {
        let snapshot = store
            .load()
            .map_err(|e| ServiceError::Storage(e.to_string()))?;
        let state = match snapshot {
            Some(s) => State::restore(config.clone(), s)
                .map_err(|e| ServiceError::Storage(e.to_string()))?,
            None => {
                let mut state =
                    State::new(config.clone()).map_err(|e| ServiceError::Refused(e.to_string()))?;
                for event in catalog {
                    let out = state
                        .upsert_event(event)
                        .map_err(|e| ServiceError::Refused(e.to_string()))?;
                    store
                        .apply(&out.changes)
                        .map_err(|e| ServiceError::Storage(e.to_string()))?;
                }
                state
            }
        };
        let (local, committer) = Local::new(state, store);
        let service = Self::with_authority(
            Authority::Local(local.clone()),
            clock,
            config.clone(),
            hub,
            coalesce_window,
        );
        if let Some(store) = committer {
            local
                .spawn_committer(Arc::downgrade(&service), store, config)
                .map_err(|e| {
                    ServiceError::Storage(format!("cannot start the hold store writer: {e}"))
                })?;
        }
        Ok(service)
    }

    /// A service whose authority is Redis, shared by every node. Nothing is awaited
    /// here: the node starts while Redis is down (holds are refused until it answers),
    /// and [`HoldService::run_expiry`] seeds `catalog` (events the fleet does not know
    /// yet) once it does.
    pub fn open_shared(
        store: super::RedisHolds,
        catalog: Vec<Event>,
        hub: Arc<Hub>,
        coalesce_window: Duration,
        liveness: super::shared::LivenessConfig,
    ) -> Arc<HoldService> {
        let config = store.config().clone();
        Self::with_authority(
            Authority::Redis(Box::new(Shared::new(store, catalog, liveness))),
            Clock::Wall,
            config,
            hub,
            coalesce_window,
        )
    }

    fn with_authority(
        authority: Authority,
        clock: Clock,
        config: HoldConfig,
        hub: Arc<Hub>,
        coalesce_window: Duration,
    ) -> Arc<HoldService> {
        Arc::new(HoldService {
            authority,
            clock,
            hub,
            coalescer: Coalescer::new(coalesce_window),
            timer: Notify::new(),
            timer_deadline: AtomicI64::new(i64::MIN),
            config,
            latency: primitives::Histogram::default(),
            expired_here: std::sync::atomic::AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
            flushing: Mutex::new(()),
        })
    }

    /// The hold rules' limits.
    pub fn config(&self) -> &HoldConfig {
        &self.config
    }

    /// How many holds this node ended at their deadline (with Redis, each expired hold is
    /// claimed by exactly one node: the sum over the fleet is the number that expired).
    pub fn expired_by_this_node(&self) -> u64 {
        self.expired_here.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the hold authority answers (`/ready`), and what to report about it.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        match &self.authority {
            Authority::Local(_) => (true, serde_json::json!({"kind": "local", "state": "open"})),
            Authority::Redis(shared) => shared.readiness(),
        }
    }

    // ----- mutations -----------------------------------------------------------------

    /// Grants a hold.
    pub async fn lock(self: &Arc<Self>, req: HoldRequest) -> Result<Hold, ServiceError> {
        Ok(self.lock_counted(req).await.0?)
    }

    /// Grants a hold, and answers the category's availability right after the attempt
    /// (what the `lock-tickets` answer carries).
    pub(crate) async fn lock_counted(
        self: &Arc<Self>,
        req: HoldRequest,
    ) -> (Result<Hold, ApplyError<LockError>>, Option<Availability>) {
        let (ev, cat) = (req.event_id, req.category_id);
        match &self.authority {
            Authority::Local(_) => {
                // The availability is read in the same step, so it is durable with the
                // answer (a later read could show another operation's unwritten state).
                let result = self
                    .local(move |s, now| {
                        let locked = s.lock(req, now);
                        let after = s.availability(ev, cat);
                        Ok::<_, Infallible>(match locked {
                            Ok(out) => Outcome {
                                value: (Ok(out.value), after),
                                changes: out.changes,
                                touched: out.touched,
                            },
                            Err(e) => Outcome {
                                value: (Err(e), after),
                                changes: Vec::new(),
                                touched: Vec::new(),
                            },
                        })
                    })
                    .await;
                match result {
                    Ok((Ok(hold), after)) => (Ok(hold), after),
                    Ok((Err(e), after)) => (Err(ApplyError::Rules(e)), after),
                    Err(ApplyError::Storage(cause)) => (Err(ApplyError::Storage(cause)), None),
                    Err(ApplyError::Rules(never)) => match never {},
                }
            }
            Authority::Redis(shared) => {
                let session = req.session_id.clone();
                let (result, seen) = self
                    .shared_op(ev, |store, now| async move { store.lock(&req, now).await })
                    .await;
                if result.is_ok() {
                    shared.held_by_session(&session, ev);
                }
                let seen = seen.into_iter().find(|a| a.category_id == cat);
                let a = match seen {
                    Some(a) => Some(a),
                    None => self.availability(ev, cat).await.ok().flatten(),
                };
                (result, a)
            }
        }
    }

    /// Releases the user's active hold in a category.
    pub async fn unlock(
        self: &Arc<Self>,
        user: &str,
        event_id: i64,
        category_id: i64,
    ) -> Result<Hold, ServiceError> {
        let user = user.to_owned();
        match &self.authority {
            Authority::Local(_) => Ok(self
                .local(move |s, _| s.unlock(&user, event_id, category_id))
                .await?),
            Authority::Redis(_) => Ok(self
                .shared_op(event_id, |store, now| async move {
                    store.unlock(&user, event_id, category_id, now).await
                })
                .await
                .0?),
        }
    }

    /// Releases every active hold of a session that ended for good.
    pub async fn release_session(
        self: &Arc<Self>,
        session_id: &str,
    ) -> Result<Vec<Hold>, ServiceError> {
        let session = session_id.to_owned();
        match &self.authority {
            Authority::Local(_) => Ok(self
                .local(move |s, _| Ok::<_, Infallible>(s.release_session(&session)))
                .await?),
            Authority::Redis(shared) => {
                let mut released = Vec::new();
                for ev in shared.session_events(&session) {
                    let s = session.clone();
                    let (result, _) = self
                        .shared_op(ev, |store, now| async move {
                            store.release_session(ev, &s, now).await
                        })
                        .await;
                    match result {
                        Ok(holds) => released.extend(holds),
                        Err(e) => {
                            // Retried by the sweeper until Redis answers.
                            shared.release_later(&session, ev);
                            return Err(e.into());
                        }
                    }
                }
                Ok(released)
            }
        }
    }

    /// Confirms a hold for an order.
    pub async fn confirm(self: &Arc<Self>, lock_id: &str) -> Result<Hold, ServiceError> {
        Ok(self.confirm_typed(lock_id).await.settled().await?)
    }

    /// `order_completed`: the user's hold becomes sold seats (once per order id).
    pub async fn order_completed(
        self: &Arc<Self>,
        msg: &OrderMessage,
    ) -> Result<OrderEffect, ServiceError> {
        Ok(self
            .order_typed(OrderKind::Completed, msg.clone())
            .await
            .settled()
            .await?)
    }

    /// `order_cancelled`: the user's hold is released (once per order id).
    pub async fn order_cancelled(
        self: &Arc<Self>,
        msg: &OrderMessage,
    ) -> Result<OrderEffect, ServiceError> {
        Ok(self
            .order_typed(OrderKind::Cancelled, msg.clone())
            .await
            .settled()
            .await?)
    }

    /// `event_cancelled`: releases every live hold of the event.
    pub async fn event_cancelled(
        self: &Arc<Self>,
        event_id: i64,
    ) -> Result<Vec<Hold>, ServiceError> {
        Ok(self.event_cancelled_typed(event_id).await.settled().await?)
    }

    /// `event-capacity-changed`.
    pub async fn change_capacity(
        self: &Arc<Self>,
        event_id: i64,
        category_id: i64,
        total: u32,
        available: u32,
    ) -> Result<Availability, ServiceError> {
        Ok(self
            .change_capacity_typed(event_id, category_id, total, available)
            .await
            .settled()
            .await?)
    }

    /// [`HoldService::confirm`] with the rules' own error. Applied when this returns
    /// (in call order); the answer waits in [`Pending::settled`]. So do the other
    /// `_typed` operations, which the broker consumer pipelines.
    pub(crate) async fn confirm_typed(
        self: &Arc<Self>,
        lock_id: &str,
    ) -> Pending<Hold, ConfirmError> {
        let lock_id = lock_id.to_owned();
        match &self.authority {
            Authority::Local(_) => self.submit(move |s, now| s.confirm(&lock_id, now)),
            Authority::Redis(_) => {
                let Some(ev) = super::redis_store::event_of_lock(&lock_id) else {
                    return Pending::ready(
                        self,
                        Err(ApplyError::Rules(ConfirmError::UnknownLock(lock_id))),
                    );
                };
                let result = self
                    .shared_op(ev, |store, now| async move {
                        store.confirm(&lock_id, now).await
                    })
                    .await
                    .0;
                Pending::ready(self, result)
            }
        }
    }

    /// `order_completed` / `order_cancelled`: the effect and its dedupe record, at once.
    pub(crate) async fn order_typed(
        self: &Arc<Self>,
        kind: OrderKind,
        msg: OrderMessage,
    ) -> Pending<OrderEffect, OrderError> {
        match &self.authority {
            Authority::Local(_) => self.submit(move |s, _| match kind {
                OrderKind::Completed => s.order_completed(&msg),
                OrderKind::Cancelled => s.order_cancelled(&msg),
            }),
            Authority::Redis(_) => {
                let ev = msg.event_id;
                let result = self
                    .shared_op(ev, |store, now| async move {
                        store.order(kind, &msg, now).await
                    })
                    .await
                    .0;
                Pending::ready(self, result)
            }
        }
    }

    /// [`HoldService::event_cancelled`] with the rules' own error.
    pub(crate) async fn event_cancelled_typed(
        self: &Arc<Self>,
        event_id: i64,
    ) -> Pending<Vec<Hold>, Infallible> {
        match &self.authority {
            Authority::Local(_) => {
                self.submit(move |s, _| Ok::<_, Infallible>(s.event_cancelled(event_id)))
            }
            Authority::Redis(_) => {
                let result = self
                    .shared_op(event_id, |store, now| async move {
                        store.event_cancelled(event_id, now).await
                    })
                    .await
                    .0;
                Pending::ready(self, result)
            }
        }
    }

    /// [`HoldService::change_capacity`] with the rules' own error.
    pub(crate) async fn change_capacity_typed(
        self: &Arc<Self>,
        event_id: i64,
        category_id: i64,
        total: u32,
        available: u32,
    ) -> Pending<Availability, CatalogError> {
        match &self.authority {
            Authority::Local(_) => {
                self.submit(move |s, _| s.change_capacity(event_id, category_id, total, available))
            }
            Authority::Redis(_) => {
                let result = self
                    .shared_op(event_id, |store, now| async move {
                        store
                            .change_capacity(event_id, category_id, total, available, now)
                            .await
                    })
                    .await
                    .0;
                Pending::ready(self, result)
            }
        }
    }

    /// Adds or updates an event and the categories it lists.
    pub async fn upsert_event(self: &Arc<Self>, event: Event) -> Result<(), ServiceError> {
        match &self.authority {
            Authority::Local(_) => {
                let id = event.id;
                let cats: Vec<i64> = event.categories.iter().map(|c| c.id).collect();
                self.local(move |s, _| s.upsert_event(event)).await?;
                // A capacity change is news to everyone watching the event.
                for c in cats {
                    self.availability_changed(CategoryKey::new(id, c));
                }
                Ok(())
            }
            Authority::Redis(_) => {
                let ev = event.id;
                self.shared_op(ev, |store, now| async move {
                    store.upsert_event(&event, false, now).await
                })
                .await
                .0?;
                Ok(())
            }
        }
    }

    // ----- queries -------------------------------------------------------------------

    /// The whole catalog.
    pub async fn catalog(&self) -> Result<Vec<Event>, ServiceError> {
        match &self.authority {
            Authority::Local(_) => self.read(State::catalog).await,
            Authority::Redis(shared) => shared.catalog().await,
        }
    }

    /// One event, `None` if unknown.
    pub async fn event(&self, event_id: i64) -> Result<Option<Event>, ServiceError> {
        match &self.authority {
            Authority::Local(_) => self.read(|s| s.event(event_id)).await,
            Authority::Redis(shared) => Ok(shared.event(event_id).await?.map(|(e, _)| e)),
        }
    }

    /// Availability of every category of an event (`None` for an unknown event).
    pub async fn event_availability(
        &self,
        event_id: i64,
    ) -> Result<Option<Vec<Availability>>, ServiceError> {
        match &self.authority {
            Authority::Local(_) => self.read(|s| s.event_availability(event_id)).await,
            Authority::Redis(shared) => Ok(shared
                .event(event_id)
                .await?
                .map(|(_, a)| a.into_iter().map(|(a, _)| a).collect())),
        }
    }

    /// What a client joining an event's room is sent: every category's availability
    /// (`None` for an unknown event), with its version when the authority is shared.
    pub async fn join_snapshot(
        &self,
        event_id: i64,
    ) -> Result<Option<Vec<(Availability, Option<u64>)>>, ServiceError> {
        match &self.authority {
            Authority::Local(_) => {
                self.read(|s| {
                    s.event_availability(event_id)
                        .map(|all| all.into_iter().map(|a| (a, None)).collect())
                })
                .await
            }
            Authority::Redis(shared) => Ok(shared
                .event(event_id)
                .await?
                .map(|(_, a)| a.into_iter().map(|(a, v)| (a, Some(v))).collect())),
        }
    }

    /// Sends a joined client its snapshot, one `availability-update` per category. A
    /// versioned one goes out ordered with the cluster's deliveries of that category
    /// (`Hub::with_latest`): if this node already delivered a newer (or the same)
    /// version, the client gets that instead, so an update that reached the room before
    /// the client was in it, or a delivery racing this one, never leaves the client on
    /// an older state than the room's.
    pub fn send_snapshot(
        &self,
        snapshot: &[(Availability, Option<u64>)],
        emit: &mut dyn FnMut(&str, Payload),
    ) {
        for (a, version) in snapshot {
            let Some(version) = *version else {
                emit(AVAILABILITY_UPDATE, Self::update_payload(a));
                continue;
            };
            let key = announcement_key(a.event_id, a.category_id);
            self.hub.with_latest(&key, &mut |latest| match latest {
                Some((delivered, p)) if delivered >= version => {
                    emit(&p.event, p.payload.clone());
                }
                _ => {
                    let mut body = Self::update_json(a);
                    body.version = Some(version);
                    emit(AVAILABILITY_UPDATE, Payload::json(&body));
                }
            });
        }
    }

    /// Availability of one category (`None` if unknown).
    pub async fn availability(
        &self,
        event_id: i64,
        category_id: i64,
    ) -> Result<Option<Availability>, ServiceError> {
        Ok(self
            .event_availability(event_id)
            .await?
            .and_then(|all| all.into_iter().find(|a| a.category_id == category_id)))
    }

    /// The user's live holds, oldest first (on every node, with Redis).
    pub async fn holds_of_user(&self, user: &str) -> Result<Vec<Hold>, ServiceError> {
        match &self.authority {
            Authority::Local(_) => self.read(|s| s.holds_of_user(user)).await,
            Authority::Redis(shared) => shared.holds_of_user(user).await,
        }
    }

    /// Hold counts for `/stats` and `/metrics`. With Redis: the whole fleet's, as the
    /// sweeper last summed them (at most a second old).
    pub fn stats(&self) -> Stats {
        match &self.authority {
            Authority::Local(local) => local.inner.lock().state.stats(),
            Authority::Redis(shared) => shared.stats(),
        }
    }

    /// A read of the local state, answered once what it read is durable (a read never
    /// shows a state a failed write could take back).
    async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, ServiceError> {
        let Authority::Local(local) = &self.authority else {
            return Err(ServiceError::Storage("not a local hold store".into()));
        };
        let (value, durable) = {
            let inner = local.inner.lock();
            if let Some(cause) = inner.broken() {
                return Err(ServiceError::Storage(cause.to_string()));
            }
            (f(&inner.state), inner.latest())
        };
        if let Some(durable) = durable {
            durable
                .wait()
                .await
                .map_err(|cause| ServiceError::Storage(cause.to_string()))?;
        }
        Ok(value)
    }

    /// The `availability-update` payload of a category, stamped now.
    pub fn update_payload(a: &Availability) -> Payload {
        Payload::json(&Self::update_json(a))
    }

    fn update_json(a: &Availability) -> super::wire::AvailabilityUpdate {
        super::wire::AvailabilityUpdate {
            available_tickets: a.available_tickets,
            category_id: a.category_id,
            event_id: a.event_id,
            locked_tickets: a.locked_tickets,
            timestamp: now_ms(),
            total_tickets: a.total_tickets,
            version: None,
        }
    }

    // ----- the local authority ---------------------------------------------------------

    /// Runs a local mutation and answers once it is durable; the broadcasts it queued go
    /// out before this returns.
    async fn local<T, E>(
        self: &Arc<Self>,
        op: impl FnOnce(&mut State, i64) -> Result<Outcome<T>, E>,
    ) -> Result<T, ApplyError<E>> {
        self.submit(op).settled().await
    }

    /// Applies a local mutation now, in memory (callers apply in the order they call).
    /// With an in-memory store it is also written now (one transaction); with a file its
    /// changes join the open batch and the answer waits for the batch's commit.
    fn submit<T, E>(
        self: &Arc<Self>,
        op: impl FnOnce(&mut State, i64) -> Result<Outcome<T>, E>,
    ) -> Pending<T, E> {
        let started = Instant::now();
        let ((result, durable), flush) = Self::deferring_flush(|| self.apply(op));
        // What this change queued for now goes out before the caller answers (what waits
        // for a batch goes out in `settled`).
        if flush {
            self.flush_pending();
        }
        if durable.is_none() {
            self.latency.observe(started.elapsed());
        }
        Pending {
            service: self.clone(),
            result,
            durable,
            started,
        }
    }

    /// Runs one local mutation: sweep expired holds, apply, record the changes (written
    /// inline, or into the open batch), then queue the broadcasts. Answers the result and
    /// the batch it depends on. If an inline write fails, the state is rebuilt from the
    /// store: nothing changed.
    fn apply<T, E>(
        self: &Arc<Self>,
        op: impl FnOnce(&mut State, i64) -> Result<Outcome<T>, E>,
    ) -> (Result<T, ApplyError<E>>, Option<Durable>) {
        let Authority::Local(local) = &self.authority else {
            let e = ApplyError::Storage("not a local hold store".into());
            return (Err(e), None);
        };
        let now = self.clock.now_ms();
        let mut touched: Vec<CategoryKey> = Vec::new();
        let (result, queued, durable, rearm) = {
            let mut inner = local.inner.lock();
            if let Some(cause) = inner.broken() {
                return (Err(ApplyError::Storage(cause.to_string())), None);
            }
            let swept = inner.state.expire_due(now);
            if !swept.value.is_empty() {
                if !swept.changes.is_empty()
                    && let Err(e) = self.record(&mut inner, swept.changes, &swept.touched)
                {
                    return (Err(ApplyError::storage(e)), None);
                }
                self.expired_here.fetch_add(
                    swept.value.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                touched.extend(swept.touched);
            }
            let result = match op(&mut inner.state, now) {
                Ok(out) => {
                    if !out.changes.is_empty()
                        && let Err(e) = self.record(&mut inner, out.changes, &out.touched)
                    {
                        return (Err(ApplyError::storage(e)), None);
                    }
                    touched.extend(out.touched);
                    Ok(out.value)
                }
                Err(e) => Err(ApplyError::Rules(e)),
            };
            touched.sort();
            touched.dedup();
            // Queued under the state lock: the queue's order is the order of the states.
            let queued = self.queue_broadcasts(&mut inner, &touched);
            let durable = inner.latest();
            if durable.is_some() {
                local.notify();
            }
            // The expiry timer is woken only when it sleeps too long now (an earlier
            // deadline than the one it waits for): most operations grant a hold that
            // ends after the others, or end one, and leave it asleep.
            let rearm = (inner.state.next_deadline())
                .is_some_and(|d| d < self.timer_deadline.load(Ordering::Relaxed));
            (result, queued, durable, rearm)
        };
        if rearm {
            self.timer.notify_one();
        }
        if queued {
            self.schedule_flush();
        }
        (result, durable)
    }

    /// Makes one operation's changes durable: written now by an inline store (on failure
    /// the state is reloaded from it), or added to the open batch.
    fn record(
        &self,
        inner: &mut Inner,
        changes: Vec<tickets::Change>,
        touched: &[CategoryKey],
    ) -> Result<(), ServiceError> {
        let store = match &mut inner.writes {
            Writes::Inline(store) => store,
            Writes::Batched => {
                inner.record(changes, touched);
                return Ok(());
            }
            Writes::Nowhere => return Ok(()),
        };
        if let Err(e) = store.apply(&changes) {
            tracing::error!(error = %e, "hold store write failed; reloading state from the store");
            let reloaded = store
                .load()
                .ok()
                .flatten()
                .and_then(|s| State::restore(self.config.clone(), s).ok());
            if let Some(state) = reloaded {
                inner.state = state;
            }
            return Err(ServiceError::Storage(e.to_string()));
        }
        Ok(())
    }

    /// Decides, per changed category, to broadcast now (its availability is queued) or
    /// later (coalesced). Called under the state lock; true when the queue was empty.
    fn queue_broadcasts(self: &Arc<Self>, inner: &mut Inner, keys: &[CategoryKey]) -> bool {
        let mut first = false;
        for key in keys {
            match self.coalescer.touch(*key, Instant::now()) {
                Decision::SendNow => {
                    first |= self.announce(inner, *key);
                }
                Decision::Later {
                    delay,
                    schedule: true,
                } => {
                    let this = self.clone();
                    let key = *key;
                    match tokio::runtime::Handle::try_current() {
                        Ok(rt) => {
                            rt.spawn(async move {
                                tokio::time::sleep(delay).await;
                                this.coalescer.flushed(key, Instant::now());
                                this.broadcast(key);
                            });
                        }
                        Err(_) => first |= self.announce(inner, key),
                    }
                }
                Decision::Later {
                    schedule: false, ..
                } => {}
            }
        }
        first
    }

    /// Queues a category's current availability: in the open batch if some of the state
    /// it shows is not yet durable (the committer queues it after the commit), else for
    /// the next flush. True when the flush queue was empty.
    fn announce(&self, inner: &mut Inner, key: CategoryKey) -> bool {
        let Some(a) = inner.state.availability(key.event_id, key.category_id) else {
            return false;
        };
        if inner.announce_later(a) {
            return false;
        }
        let mut pending = self.pending.lock();
        let first = pending.is_empty();
        pending.push(a);
        first
    }

    /// Queues availabilities for the next flush, in order (the committer's: a batch is
    /// durable, or failed and these are the categories' states on disk).
    pub(super) fn queue_announcements(&self, items: impl Iterator<Item = Availability>) {
        self.pending.lock().extend(items);
    }

    /// Flushes on `runtime` (recipients are woken runtime-locally), or here without one.
    pub(super) fn flush_on(self: Arc<Self>, runtime: Option<&tokio::runtime::Handle>) {
        match runtime {
            Some(rt) => {
                rt.spawn(async move { self.flush_pending() });
            }
            None => self.flush_pending(),
        }
    }

    /// Queues the current availability of a category and sends it (once durable).
    fn broadcast(self: &Arc<Self>, key: CategoryKey) {
        let Authority::Local(local) = &self.authority else {
            return;
        };
        let now = {
            let mut inner = local.inner.lock();
            self.announce(&mut inner, key);
            inner.latest().is_none()
        };
        local.notify();
        if now {
            self.flush_pending();
        }
    }

    /// Fans out what a change with no waiting caller queued (a coalesced broadcast) on a
    /// runtime task, so recipients are woken runtime-locally; inside
    /// [`HoldService::deferring_flush`] the caller does it. Outside a runtime (tests,
    /// tools) it happens inline.
    fn schedule_flush(self: &Arc<Self>) {
        if DEFERRED.with(|d| d.get().is_some()) {
            DEFERRED.with(|d| d.set(Some(true)));
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let this = self.clone();
                rt.spawn(async move { this.flush_pending() });
            }
            Err(_) => self.flush_pending(),
        }
    }

    /// Runs `f` with the fan-out of the broadcasts it queues left
    /// to the caller: true when the caller must call [`HoldService::flush_pending`].
    fn deferring_flush<T>(f: impl FnOnce() -> T) -> (T, bool) {
        let before = DEFERRED.with(|d| d.replace(Some(false)));
        let out = f();
        let flush = DEFERRED.with(|d| d.replace(before)).unwrap_or(false);
        (out, flush)
    }

    /// Publishes every queued availability, in queue order; one flush at a time, so no
    /// later state can overtake an earlier one.
    fn flush_pending(&self) {
        let _one_at_a_time = self.flushing.lock();
        let items = std::mem::take(&mut *self.pending.lock());
        for a in items {
            self.publish_availability(&a);
        }
    }

    fn publish_availability(&self, a: &Availability) {
        self.publish_update(a, Self::update_payload(a));
    }

    fn publish_update(&self, a: &Availability, payload: Payload) {
        self.hub.publish(Publish {
            rooms: std::iter::once(event_room(a.event_id).into()).collect(),
            event: AVAILABILITY_UPDATE.into(),
            payload,
            persist: true,
            ..Publish::default()
        });
    }

    fn availability_changed(self: &Arc<Self>, key: CategoryKey) {
        let Authority::Local(local) = &self.authority else {
            return;
        };
        let queued = {
            let mut inner = local.inner.lock();
            self.queue_broadcasts(&mut inner, &[key])
        };
        local.notify();
        if queued {
            self.schedule_flush();
        }
    }

    // ----- the shared (Redis) authority -------------------------------------------------

    /// Runs one Redis script for an event and announces what it changed. Answers the
    /// rules' verdict (or [`ApplyError::Storage`]: Redis did not answer, nothing is
    /// assumed granted) and the availability the script reported.
    async fn shared_op<T, E, F, Fut>(
        self: &Arc<Self>,
        event_id: i64,
        op: F,
    ) -> (Result<T, ApplyError<E>>, Vec<Availability>)
    where
        F: FnOnce(super::RedisHolds, i64) -> Fut,
        Fut: std::future::Future<Output = super::redis_store::StoreResult<T, E>>,
    {
        let Authority::Redis(shared) = &self.authority else {
            return (
                Err(ApplyError::Storage("not a shared hold store".into())),
                Vec::new(),
            );
        };
        let started = Instant::now();
        let result = op(shared.store().clone(), self.clock.now_ms()).await;
        self.latency.observe(started.elapsed());
        match result {
            Ok(done) => {
                shared.answered(true);
                let effects = &done.effects;
                let seen: Vec<Availability> = (effects.availability.iter())
                    .chain(&effects.observed)
                    .map(|(a, _)| *a)
                    .collect();
                self.absorb(event_id, done.effects);
                (done.value.map_err(ApplyError::Rules), seen)
            }
            Err(e) => {
                shared.answered(false);
                tracing::debug!(error = %e, event_id, "hold store did not answer");
                (Err(ApplyError::Storage(e.to_string())), Vec::new())
            }
        }
    }

    /// What a script changed: its event's next deadline (for the sweeper) and the
    /// availability to announce (coalesced, never older than what this node announced).
    fn absorb(self: &Arc<Self>, event_id: i64, effects: super::redis_store::Effects) {
        let Authority::Redis(shared) = &self.authority else {
            return;
        };
        if shared.note_deadline(event_id, effects.next_deadline) {
            self.timer.notify_one();
        }
        if !effects.swept.is_empty() {
            self.expired_here.fetch_add(
                effects.swept.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            tracing::debug!(event_id, expired = effects.swept.len(), "holds expired");
        }
        let now = Instant::now();
        for (a, version) in effects.availability {
            let key = CategoryKey::new(a.event_id, a.category_id);
            match self.coalescer.touch(key, now) {
                Decision::SendNow => {
                    self.publish_newer(shared, a, version);
                    self.settle(key, shared.settle_delay(self.coalescer_window()), false);
                }
                Decision::Later {
                    delay,
                    schedule: true,
                } => self.settle(key, delay, true),
                Decision::Later {
                    schedule: false, ..
                } => {}
            }
        }
    }

    fn coalescer_window(&self) -> Duration {
        self.coalescer.window()
    }

    /// Publishes an availability unless this node already published a newer one. It
    /// carries its version, so every node delivers only newer ones
    /// ([`announcement_version`]).
    fn publish_newer(&self, shared: &Shared, a: Availability, version: u64) {
        let _one_at_a_time = self.flushing.lock();
        if shared.newer_than_published(&a, version) {
            let mut body = Self::update_json(&a);
            body.version = Some(version);
            self.publish_update(&a, Payload::json(&body));
        }
    }

    /// After `delay`, reads the category and announces it if it changed since this node
    /// last did (another node's announcement may have overtaken ours on the way, or
    /// changes were merged by the coalescer).
    fn settle(self: &Arc<Self>, key: CategoryKey, delay: Duration, coalesced: bool) {
        let Authority::Redis(shared) = &self.authority else {
            return;
        };
        if !coalesced && !shared.start_settling(key) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            let Authority::Redis(shared) = &this.authority else {
                return;
            };
            if coalesced {
                this.coalescer.flushed(key, Instant::now());
            } else {
                shared.stop_settling(key);
            }
            match shared.event(key.event_id).await {
                Ok(Some((_, all))) => {
                    if let Some((a, v)) = all
                        .into_iter()
                        .find(|(a, _)| a.category_id == key.category_id)
                    {
                        this.publish_newer(shared, a, v);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "availability not re-read"),
            }
        });
    }

    /// Sweeps one event (claims its due holds) and announces what expired.
    pub(crate) async fn sweep_event(self: &Arc<Self>, event_id: i64) -> bool {
        let (result, _) = self
            .shared_op(event_id, |store, now| async move {
                store.sweep(event_id, now).await
            })
            .await;
        result.is_ok()
    }

    /// Releases the active holds a dead node granted, in one event.
    pub(crate) async fn release_node(self: &Arc<Self>, event_id: i64, node: &str) -> bool {
        let owned = node.to_owned();
        let (result, _) = self
            .shared_op(event_id, |store, now| async move {
                store.release_node(event_id, &owned, now).await
            })
            .await;
        if let Ok(holds) = &result
            && !holds.is_empty()
        {
            tracing::info!(event_id, %node, released = holds.len(), "released a dead node's holds");
        }
        result.is_ok()
    }

    /// Retries the release of one session's holds in one event.
    pub(crate) async fn release_session_in(self: &Arc<Self>, event_id: i64, session: &str) -> bool {
        let session = session.to_owned();
        self.shared_op(event_id, |store, now| async move {
            store.release_session(event_id, &session, now).await
        })
        .await
        .0
        .is_ok()
    }

    pub(crate) fn timer(&self) -> &Notify {
        &self.timer
    }

    pub(crate) fn shared(&self) -> Option<&Shared> {
        match &self.authority {
            Authority::Redis(s) => Some(s),
            Authority::Local(_) => None,
        }
    }

    // ----- expiry ------------------------------------------------------------------------

    /// Expires holds at their own deadline (not on a sweep), until `stop` fires. With
    /// Redis: the fleet's sweeper on this node (see `shared.rs`).
    pub async fn run_expiry(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if let Authority::Redis(_) = &self.authority {
            return super::shared::run(self, stop).await;
        }
        let Authority::Local(local) = &self.authority else {
            return;
        };
        loop {
            let next = {
                let inner = local.inner.lock();
                let next = inner.state.next_deadline();
                // Under the state lock, so a mutation sees either the deadline this
                // sleep is for or the one before, and wakes it if it found an earlier one.
                (self.timer_deadline).store(next.unwrap_or(i64::MAX), Ordering::Relaxed);
                next
            };
            let wait = match next {
                Some(d) => Duration::from_millis((d - self.clock.now_ms()).clamp(0, 60_000) as u64),
                None => Duration::from_secs(60),
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.timer.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            // The sweep inside every mutation does the work; an empty one just sweeps.
            let due = next.is_some_and(|d| d <= self.clock.now_ms());
            if due {
                let swept = self
                    .local(|_, _| {
                        Ok::<_, Infallible>(Outcome {
                            value: (),
                            changes: Vec::new(),
                            touched: Vec::new(),
                        })
                    })
                    .await;
                if let Err(ApplyError::Storage(e)) = swept {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
            }
        }
    }
}

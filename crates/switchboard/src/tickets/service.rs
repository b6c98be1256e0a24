// std's Instant until the hold service moves to tokio's clock (the shared-holds work converts it).
#![allow(clippy::disallowed_types)]
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::store::HoldStore;
use hub::{Hub, Payload, Publish};
use parking_lot::Mutex;
use tickets::{
    Availability, CategoryKey, Event, Hold, HoldConfig, HoldRequest, OrderEffect, OrderMessage,
    Outcome, State, Stats,
};
use tokio::sync::Notify;

use super::coalesce::{Coalescer, Decision};

/// Why an operation failed, as the caller should report it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The rules refused it; the message is fit for the client.
    #[error("{0}")]
    Refused(String),
    /// The store could not make it durable; nothing changed.
    #[error("storage unavailable, nothing changed")]
    Storage(String),
}

/// Why a typed mutation failed: the rules refused it (their own error), or the store
/// could not make it durable (nothing changed).
#[derive(Debug)]
pub(crate) enum ApplyError<E> {
    Rules(E),
    Storage(String),
}

impl<E> ApplyError<E> {
    fn storage(e: ServiceError) -> Self {
        match e {
            ServiceError::Refused(m) | ServiceError::Storage(m) => ApplyError::Storage(m),
        }
    }
}

struct Inner {
    state: State,
    store: Box<dyn HoldStore + Send>,
}

thread_local! {
    /// Set while [`HoldService::deferring_flush`] runs: `Some(true)` once a flush is owed.
    static DEFERRED: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The hold service: one `State`, its store, the expiry timer and the broadcasts.
pub struct HoldService {
    inner: Mutex<Inner>,
    hub: Arc<Hub>,
    coalescer: Coalescer,
    /// Re-arms the expiry timer after a mutation.
    timer: Notify,
    config: HoldConfig,
    /// Time of every operation, from taking the lock to durable (for `/metrics`).
    pub latency: primitives::Histogram,
    /// Availability snapshots waiting for their broadcast, in the order of the states.
    pending: Mutex<Vec<Availability>>,
    /// The store never waits on a disk: mutations may run on the async runtime.
    inline: bool,
    /// Held for a whole flush (see `flush_pending`).
    flushing: Mutex<()>,
}

impl std::fmt::Debug for HoldService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldService").finish()
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
        Ok(Arc::new(HoldService {
            inline: !store.waits_on_disk(),
            inner: Mutex::new(Inner { state, store }),
            hub,
            coalescer: Coalescer::new(coalesce_window),
            timer: Notify::new(),
            config,
            latency: primitives::Histogram::default(),
            pending: Mutex::new(Vec::new()),
            flushing: Mutex::new(()),
        }))
    }

    /// Whether mutations may run on the async runtime (an in-memory store), instead of a
    /// blocking thread.
    pub fn runs_inline(&self) -> bool {
        self.inline
    }

    pub fn config(&self) -> &HoldConfig {
        &self.config
    }

    /// Runs one mutation: sweep expired holds, apply, make it durable, then broadcast.
    /// If the store fails, the state is rebuilt from the store: nothing changed.
    fn mutate<T, E: std::fmt::Display>(
        self: &Arc<Self>,
        op: impl FnOnce(&mut State, i64) -> Result<Outcome<T>, E>,
    ) -> Result<T, ServiceError> {
        self.apply(op).map_err(|e| match e {
            ApplyError::Rules(e) => ServiceError::Refused(e.to_string()),
            ApplyError::Storage(cause) => ServiceError::Storage(cause),
        })
    }

    /// [`HoldService::mutate`] keeping the rules' own error type, for callers that map
    /// refusals to more than a message (the broker consumer dead-letters by kind).
    pub(crate) fn apply<T, E>(
        self: &Arc<Self>,
        op: impl FnOnce(&mut State, i64) -> Result<Outcome<T>, E>,
    ) -> Result<T, ApplyError<E>> {
        let started = Instant::now();
        let result = self.apply_inner(op);
        self.latency.observe(started.elapsed());
        result
    }

    fn apply_inner<T, E>(
        self: &Arc<Self>,
        op: impl FnOnce(&mut State, i64) -> Result<Outcome<T>, E>,
    ) -> Result<T, ApplyError<E>> {
        let now = now_ms();
        let mut touched: Vec<CategoryKey> = Vec::new();
        let (result, queued) = {
            let mut inner = self.inner.lock();
            let swept = inner.state.expire_due(now);
            if !swept.changes.is_empty() {
                self.persist(&mut inner, &swept.changes)
                    .map_err(ApplyError::storage)?;
                touched.extend(swept.touched);
            }
            let result = match op(&mut inner.state, now) {
                Ok(out) => {
                    if !out.changes.is_empty() {
                        self.persist(&mut inner, &out.changes)
                            .map_err(ApplyError::storage)?;
                    }
                    touched.extend(out.touched);
                    Ok(out.value)
                }
                Err(e) => Err(ApplyError::Rules(e)),
            };
            touched.sort();
            touched.dedup();
            // Queued under the state lock: the queue's order is the order of the states.
            let queued = self.queue_broadcasts(&inner, &touched);
            (result, queued)
        };
        self.timer.notify_one();
        if queued {
            self.schedule_flush();
        }
        result
    }

    fn persist(&self, inner: &mut Inner, changes: &[tickets::Change]) -> Result<(), ServiceError> {
        if let Err(e) = inner.store.apply(changes) {
            tracing::error!(error = %e, "hold store write failed; reloading state from the store");
            let reloaded = inner
                .store
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

    pub fn lock(self: &Arc<Self>, req: HoldRequest) -> Result<Hold, ServiceError> {
        self.mutate(|s, now| s.lock(req, now))
    }

    pub fn unlock(
        self: &Arc<Self>,
        user: &str,
        event_id: i64,
        category_id: i64,
    ) -> Result<Hold, ServiceError> {
        self.mutate(|s, _| s.unlock(user, event_id, category_id))
    }

    /// Releases every active hold of a session that ended for good.
    pub fn release_session(self: &Arc<Self>, session_id: &str) -> Result<Vec<Hold>, ServiceError> {
        self.mutate(|s, _| Ok::<_, std::convert::Infallible>(s.release_session(session_id)))
    }

    pub fn confirm(self: &Arc<Self>, lock_id: &str) -> Result<Hold, ServiceError> {
        self.mutate(|s, now| s.confirm(lock_id, now))
    }

    pub fn order_completed(
        self: &Arc<Self>,
        msg: &OrderMessage,
    ) -> Result<OrderEffect, ServiceError> {
        self.mutate(|s, _| s.order_completed(msg))
    }

    pub fn order_cancelled(
        self: &Arc<Self>,
        msg: &OrderMessage,
    ) -> Result<OrderEffect, ServiceError> {
        self.mutate(|s, _| s.order_cancelled(msg))
    }

    pub fn event_cancelled(self: &Arc<Self>, event_id: i64) -> Result<Vec<Hold>, ServiceError> {
        self.mutate(|s, _| Ok::<_, std::convert::Infallible>(s.event_cancelled(event_id)))
    }

    pub fn upsert_event(self: &Arc<Self>, event: Event) -> Result<(), ServiceError> {
        let id = event.id;
        let cats: Vec<i64> = event.categories.iter().map(|c| c.id).collect();
        self.mutate(|s, _| s.upsert_event(event))?;
        // A capacity change is news to everyone watching the event.
        for c in cats {
            self.availability_changed(CategoryKey::new(id, c));
        }
        Ok(())
    }

    pub fn change_capacity(
        self: &Arc<Self>,
        event_id: i64,
        category_id: i64,
        total: u32,
        available: u32,
    ) -> Result<Availability, ServiceError> {
        self.mutate(|s, _| s.change_capacity(event_id, category_id, total, available))
    }

    pub fn catalog(&self) -> Vec<Event> {
        self.inner.lock().state.catalog()
    }

    pub fn event(&self, event_id: i64) -> Option<Event> {
        self.inner.lock().state.event(event_id)
    }

    /// Availability of every category of an event (`None` for an unknown event).
    pub fn event_availability(&self, event_id: i64) -> Option<Vec<Availability>> {
        self.inner.lock().state.event_availability(event_id)
    }

    pub fn availability(&self, event_id: i64, category_id: i64) -> Option<Availability> {
        self.inner.lock().state.availability(event_id, category_id)
    }

    pub fn holds_of_user(&self, user: &str) -> Vec<Hold> {
        self.inner.lock().state.holds_of_user(user)
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().state.stats()
    }

    /// The `availability-update` payload of a category, stamped now.
    pub fn update_payload(a: &Availability) -> Payload {
        Payload::json(&serde_json::json!({
            "eventId": a.event_id,
            "categoryId": a.category_id,
            "availableTickets": a.available_tickets,
            "lockedTickets": a.locked_tickets,
            "totalTickets": a.total_tickets,
            "timestamp": now_ms(),
        }))
    }

    /// Decides, per changed category, to broadcast now (its availability is queued) or
    /// later (coalesced). Called under the state lock; true when the queue was empty.
    fn queue_broadcasts(self: &Arc<Self>, inner: &Inner, keys: &[CategoryKey]) -> bool {
        let mut first = false;
        for key in keys {
            match self.coalescer.touch(*key, Instant::now()) {
                Decision::SendNow => {
                    if let Some(a) = inner.state.availability(key.event_id, key.category_id) {
                        let mut pending = self.pending.lock();
                        first |= pending.is_empty();
                        pending.push(a);
                    }
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
                        Err(_) => {
                            if let Some(a) = inner.state.availability(key.event_id, key.category_id)
                            {
                                let mut pending = self.pending.lock();
                                first |= pending.is_empty();
                                pending.push(a);
                            }
                        }
                    }
                }
                Decision::Later {
                    schedule: false, ..
                } => {}
            }
        }
        first
    }

    /// Queues the current availability of a category and sends it.
    fn broadcast(self: &Arc<Self>, key: CategoryKey) {
        {
            let inner = self.inner.lock();
            let Some(a) = inner.state.availability(key.event_id, key.category_id) else {
                return;
            };
            self.pending.lock().push(a);
        }
        self.flush_pending();
    }

    /// Mutations run on blocking threads (the store may fsync). Fanning out from there
    /// would wake every recipient's task from outside the runtime (a cross-thread wake
    /// per delivery); instead one task on the runtime does the fan-out, so recipients
    /// are woken runtime-locally. Outside a runtime (tests, tools) it happens inline.
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

    /// Runs `f` (on a blocking thread) with the fan-out of the broadcasts it queues left
    /// to the caller: true when the caller must call [`HoldService::flush_pending`].
    pub fn deferring_flush<T>(f: impl FnOnce() -> T) -> (T, bool) {
        let before = DEFERRED.with(|d| d.replace(Some(false)));
        let out = f();
        let flush = DEFERRED.with(|d| d.replace(before)).unwrap_or(false);
        (out, flush)
    }

    /// Publishes every queued availability, in queue order; one flush at a time, so no
    /// later state can overtake an earlier one.
    pub fn flush_pending(&self) {
        let _one_at_a_time = self.flushing.lock();
        let items = std::mem::take(&mut *self.pending.lock());
        for a in items {
            self.hub.publish(Publish {
                rooms: std::iter::once(event_room(a.event_id).into()).collect(),
                event: "availability-update".into(),
                payload: Self::update_payload(&a),
                persist: true,
                ..Publish::default()
            });
        }
    }

    fn availability_changed(self: &Arc<Self>, key: CategoryKey) {
        let queued = {
            let inner = self.inner.lock();
            self.queue_broadcasts(&inner, &[key])
        };
        if queued {
            self.schedule_flush();
        }
    }

    /// Expires holds at their own deadline (not on a sweep), until `stop` fires.
    pub async fn run_expiry(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            let next = self.inner.lock().state.next_deadline();
            let wait = match next {
                Some(d) => Duration::from_millis((d - now_ms()).clamp(0, 60_000) as u64),
                None => Duration::from_secs(60),
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.timer.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            // The sweep inside every mutation does the work; an empty one just sweeps.
            let due = next.is_some_and(|d| d <= now_ms());
            if due {
                let svc = self.clone();
                let swept = tokio::task::spawn_blocking(move || {
                    svc.mutate(|_, _| {
                        Ok::<_, std::convert::Infallible>(Outcome {
                            value: (),
                            changes: Vec::new(),
                            touched: Vec::new(),
                        })
                    })
                })
                .await;
                if let Ok(Err(e)) = swept {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
            }
        }
    }
}

//! Group commit for the local hold authority: operations change the pure `State` in
//! memory, in order, under one lock, and leave their change records in the open
//! [`Batch`]; one writer thread (the committer) writes each batch in one store
//! transaction, one fsync for every operation in it, while the next batch fills.
//!
//! Owns: the state's lock, the open batch and the committer thread.
//! Never: answers anyone. A caller holds a [`Durable`] of the batch its answer depends on
//! (the one its own changes went into, or, with none, the newest batch whose effects it
//! read) and answers only once that batch is on disk. A failed write fails that batch
//! and the open one (its operations saw the failed one's effects), and the state is
//! reloaded from the store, so memory is again what the disk says.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tickets::{Availability, CategoryKey, Change, HoldConfig, State};
use tokio::sync::watch;

use super::service::HoldService;
use super::store::HoldStore;

/// How a batch ended: durable, or the cause of its failure.
type Verdict = Option<Result<(), Arc<str>>>;

/// Change records applied in memory, waiting to be written together.
pub(super) struct Batch {
    changes: Vec<Change>,
    /// Availability to announce once the batch is durable, in the order of the states.
    announce: Vec<Availability>,
    /// Categories the batch's operations changed: re-announced if it fails.
    touched: Vec<CategoryKey>,
    done: watch::Sender<Verdict>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            changes: Vec::new(),
            announce: Vec::new(),
            touched: Vec::new(),
            done: watch::Sender::new(None),
        }
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.announce.is_empty()
    }

    fn durable(&self) -> Durable {
        Durable(self.done.subscribe())
    }

    fn finish(&self, verdict: Result<(), Arc<str>>) {
        self.done.send_replace(Some(verdict));
    }
}

/// The end of one batch, awaited by the operations that depend on it.
#[derive(Clone)]
pub(crate) struct Durable(watch::Receiver<Verdict>);

impl Durable {
    /// Waits until the batch is on disk; the cause if it is not and never will be.
    pub(crate) async fn wait(mut self) -> Result<(), Arc<str>> {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Ok(())),
            Err(_) => Err("the hold store writer stopped".into()),
        }
    }
}

/// The local authority: the state and how its changes reach the store.
pub(super) struct Local {
    pub(super) inner: Mutex<Inner>,
    /// Wakes the committer: a batch has something, or the service is going away.
    wake: Condvar,
}

/// Where an operation's change records go.
pub(super) enum Writes {
    /// A store that never waits on a disk (in-memory SQLite, in tests and failpoints):
    /// written inline under the state lock, one transaction per operation.
    Inline(Box<dyn HoldStore + Send>),
    /// Into the open batch: the committer owns the store.
    Batched,
    /// Nowhere (`data_dir = memory`): the state in memory is all there is.
    Nowhere,
}

pub(super) struct Inner {
    pub(super) state: State,
    pub(super) writes: Writes,
    open: Batch,
    /// The batch the committer is writing.
    writing: Option<Durable>,
    /// A write failed and reloading the store failed too: memory may differ from the
    /// disk, so every operation is refused until a reload succeeds.
    broken: Option<Arc<str>>,
    /// The service is gone: the committer writes what is open and stops.
    closing: bool,
    /// The runtime the operations run on, where the committer sends the fan-out.
    runtime: Option<tokio::runtime::Handle>,
}

impl Inner {
    /// Whether changes go through batches (the committer owns the store).
    pub(super) fn batched(&self) -> bool {
        matches!(self.writes, Writes::Batched)
    }

    /// Adds one operation's change records to the open batch.
    pub(super) fn record(&mut self, changes: Vec<Change>, touched: &[CategoryKey]) {
        if self.runtime.is_none() {
            self.runtime = tokio::runtime::Handle::try_current().ok();
        }
        self.open.changes.extend(changes);
        self.open.touched.extend_from_slice(touched);
    }

    /// Keeps an announcement for after the state it shows is durable: true when it was
    /// kept (something is not yet on disk), false when it may go out now.
    pub(super) fn announce_later(&mut self, a: Availability) -> bool {
        if !self.batched() || (self.open.is_empty() && self.writing.is_none()) {
            return false;
        }
        self.open.announce.push(a);
        true
    }

    /// The batch an answer read now depends on: the open one if it has anything, else
    /// the one being written; `None` when memory is what the disk says.
    pub(super) fn latest(&self) -> Option<Durable> {
        if !self.open.is_empty() {
            Some(self.open.durable())
        } else {
            self.writing.clone()
        }
    }

    /// Why operations are refused right now, if they are.
    pub(super) fn broken(&self) -> Option<Arc<str>> {
        self.broken.clone()
    }
}

impl Local {
    /// The authority over `state`. A store that keeps nothing is dropped (no writes at
    /// all); one that never waits on a disk is written under the lock; otherwise the
    /// store is returned for the committer.
    pub(super) fn new(
        mut state: State,
        store: Box<dyn HoldStore + Send>,
    ) -> (Arc<Local>, Option<Box<dyn HoldStore + Send>>) {
        let (writes, committer) = if store.keeps_nothing() {
            // Nothing reads change records: the rules need not copy holds into them.
            state.set_change_records(false);
            (Writes::Nowhere, None)
        } else if !store.waits_on_disk() {
            (Writes::Inline(store), None)
        } else {
            (Writes::Batched, Some(store))
        };
        let local = Arc::new(Local {
            inner: Mutex::new(Inner {
                state,
                writes,
                open: Batch::new(),
                writing: None,
                broken: None,
                closing: false,
                runtime: None,
            }),
            wake: Condvar::new(),
        });
        (local, committer)
    }

    /// Tells the committer the open batch has something.
    pub(super) fn notify(&self) {
        self.wake.notify_one();
    }

    /// The service is gone: the committer finishes what is open and stops.
    pub(super) fn close(&self) {
        self.inner.lock().closing = true;
        self.wake.notify_one();
    }

    /// Starts the committer thread, which owns `store` from now on.
    pub(super) fn spawn_committer(
        self: &Arc<Self>,
        service: Weak<HoldService>,
        store: Box<dyn HoldStore + Send>,
        config: HoldConfig,
    ) -> std::io::Result<()> {
        let local = self.clone();
        std::thread::Builder::new()
            .name("hold-commit".into())
            .spawn(move || {
                let _stopped = Stopped(local.clone());
                local.commit_loop(&service, store, &config);
            })
            .map(drop)
    }

    fn commit_loop(
        &self,
        service: &Weak<HoldService>,
        mut store: Box<dyn HoldStore + Send>,
        config: &HoldConfig,
    ) {
        loop {
            let (batch, runtime) = {
                let mut inner = self.inner.lock();
                loop {
                    if inner.broken.is_some() {
                        self.repair(&mut inner, store.as_mut(), config);
                        if inner.broken.is_some() {
                            if inner.closing {
                                return;
                            }
                            self.wake.wait_for(&mut inner, Duration::from_secs(1));
                            continue;
                        }
                    }
                    if !inner.open.is_empty() {
                        break;
                    }
                    if inner.closing {
                        return;
                    }
                    self.wake.wait(&mut inner);
                }
                let batch = std::mem::replace(&mut inner.open, Batch::new());
                inner.writing = Some(batch.durable());
                (batch, inner.runtime.clone())
            };
            let written = if batch.changes.is_empty() {
                Ok(())
            } else {
                store.apply(&batch.changes)
            };
            let service = service.upgrade();
            match written {
                Ok(()) => {
                    {
                        let mut inner = self.inner.lock();
                        // Under the lock: nothing announced directly can overtake these.
                        if let Some(s) = &service {
                            s.queue_announcements(batch.announce.iter().copied());
                        }
                        inner.writing = None;
                    }
                    batch.finish(Ok(()));
                }
                Err(e) => {
                    let cause: Arc<str> = format!("hold store write failed: {e}").into();
                    tracing::error!(error = %e, changes = batch.changes.len(), "hold store batch failed; reloading state from the store");
                    let open = {
                        let mut inner = self.inner.lock();
                        let open = std::mem::replace(&mut inner.open, Batch::new());
                        inner.writing = None;
                        inner.broken = Some(cause.clone());
                        self.repair(&mut inner, store.as_mut(), config);
                        if inner.broken.is_none()
                            && let Some(s) = &service
                        {
                            // Clients may have read a state that is gone: tell them the
                            // one on disk.
                            let mut keys: Vec<CategoryKey> =
                                batch.touched.iter().chain(&open.touched).copied().collect();
                            keys.sort();
                            keys.dedup();
                            s.queue_announcements(keys.iter().filter_map(|k| {
                                inner.state.availability(k.event_id, k.category_id)
                            }));
                        }
                        open
                    };
                    batch.finish(Err(cause.clone()));
                    open.finish(Err(cause));
                    if let Some(s) = &service {
                        s.timer().notify_one();
                    }
                }
            }
            if let Some(s) = service {
                s.flush_on(runtime.as_ref());
            }
        }
    }

    /// Makes memory what the disk says again (after a failed write).
    fn repair(&self, inner: &mut Inner, store: &mut dyn HoldStore, config: &HoldConfig) {
        let reloaded = store
            .load()
            .map_err(|e| e.to_string())
            .and_then(|s| s.ok_or_else(|| "the store is empty".to_owned()))
            .and_then(|s| State::restore(config.clone(), s).map_err(|e| e.to_string()));
        match reloaded {
            Ok(state) => {
                inner.state = state;
                inner.broken = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "hold store not reloaded; refusing hold operations until it is");
            }
        }
    }
}

/// Runs when the committer thread ends, however it ends: nobody may wait for it again.
struct Stopped(Arc<Local>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut inner = self.0.inner.lock();
        let cause: Arc<str> = "the hold store writer stopped".into();
        if !inner.closing {
            tracing::error!("the hold store writer stopped");
            inner.broken = Some(cause.clone());
        }
        let open = std::mem::replace(&mut inner.open, Batch::new());
        inner.writing = None;
        open.finish(Err(cause));
    }
}

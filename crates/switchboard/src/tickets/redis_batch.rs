//! One event's lock, unlock and release operations, batched: while a script for an event is in
//! flight, the operations that arrive for it wait, and go together in the next script
//! (`lua/ops.lua`: one EVALSHA, one claim of due holds, one version bump and so one
//! announcement per touched category). A lone operation goes at once: batches form only
//! under load, where one script per operation cost Redis most of its time.
//!
//! Owns: the queue of each event with a script in flight. Order: an event's operations
//! run in the order they were submitted (one script in flight per event, a batch keeps
//! its order). Never: decides anything (the scripts do) or drops a waiter: each gets its
//! answer or the batch's error.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use parking_lot::Mutex;
use redis::Value;
use tokio::sync::oneshot;

use super::redis_store::{Effects, RedisHolds, RedisStoreError};

/// Operations in one script, at most (Redis runs a script alone: a batch of this many
/// takes a few milliseconds of its time).
const MAX_BATCH: usize = 64;

/// A batched operation, as `lua/ops.lua` takes it.
#[derive(Debug)]
pub(crate) enum Op {
    /// `op_lock`'s eight arguments.
    Lock([String; 8]),
    /// User and category id.
    Unlock(String, String),
    /// `session` or `node`, and its id.
    Release(String, String),
}

/// One operation's answer: the script's code and value, the availability of its
/// category after the batch, and (for the first operation of a batch only, so they are
/// announced once) what the batch changed.
#[derive(Debug)]
pub(crate) struct OpReply {
    pub(crate) code: String,
    pub(crate) value: Vec<Value>,
    pub(crate) effects: Effects,
}

struct Waiting {
    op: Op,
    now: i64,
    answer: oneshot::Sender<Result<OpReply, RedisStoreError>>,
}

/// The events with a script in flight, and what waits for each.
#[derive(Default)]
pub(crate) struct Batches {
    queues: Mutex<HashMap<i64, Vec<Waiting>>>,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("events", &self.queues.lock().len())
            .finish()
    }
}

impl Batches {
    /// Runs `op` on `event_id` in the next batch of that event.
    pub(crate) async fn submit(
        &self,
        store: &RedisHolds,
        event_id: i64,
        op: Op,
        now: i64,
    ) -> Result<OpReply, RedisStoreError> {
        let (answer, reply) = oneshot::channel();
        let start = {
            let mut queues = self.queues.lock();
            let waiting = Waiting { op, now, answer };
            match queues.entry(event_id) {
                Entry::Occupied(mut e) => {
                    e.get_mut().push(waiting);
                    false
                }
                Entry::Vacant(e) => {
                    e.insert(vec![waiting]);
                    true
                }
            }
        };
        if start {
            // The runner owns the queue until it is empty: a caller that goes away (its
            // client disconnected) cannot leave the event stuck.
            tokio::spawn(drain(store.clone(), event_id));
        }
        reply
            .await
            .map_err(|_| RedisStoreError::Reply("the hold batch ended without an answer".into()))?
    }

    fn next_batch(&self, event_id: i64) -> Option<Vec<Waiting>> {
        let mut queues = self.queues.lock();
        let waiting = queues.get_mut(&event_id)?;
        if waiting.is_empty() {
            queues.remove(&event_id);
            return None;
        }
        let n = waiting.len().min(MAX_BATCH);
        Some(waiting.drain(..n).collect())
    }
}

/// Runs `event_id`'s batches until nothing waits.
async fn drain(store: RedisHolds, event_id: i64) {
    while let Some(batch) = store.batches().next_batch(event_id) {
        // One clock for the batch's claim of due holds: the latest of its callers'.
        let now = batch.iter().map(|w| w.now).max().unwrap_or_default();
        let (ops, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.op, w.answer)).unzip();
        match store.run_ops(event_id, now, &ops).await {
            Ok(replies) => {
                for (answer, reply) in answers.into_iter().zip(replies) {
                    let _ = answer.send(Ok(reply));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

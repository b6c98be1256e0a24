//! Group commit for the SQLite chat store's sends: messages that arrive while a commit
//! is on its way to the disk wait together and go in the next transaction, one `fsync`
//! for all of them, instead of one transaction (and one `fsync`) each.
//!
//! Owns: the queue of sends and the one blocking task that drains it.
//! Never: answers a send before the transaction that holds it is committed (the caller's
//! future completes with the commit's outcome); lets one send's failure change another's
//! (each runs in its own savepoint; a failed commit fails every send of its batch, and
//! none of them was written).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::model::NewMessage;
use super::sqlite::checked;
use super::store::{Checked, StoreError};

/// The most sends one transaction takes; the rest go in the next one.
const MAX_BATCH: usize = 256;

/// One send: the message, whether the sender must be a member, where its answer goes.
struct Send {
    msg: NewMessage,
    member_required: bool,
    reply: oneshot::Sender<Result<Checked, StoreError>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Send>,
    /// A blocking task is draining the queue: a new send only joins it.
    draining: bool,
}

/// The sends waiting for a commit on the store's connection, and how many commits they
/// took.
pub(super) struct Sends {
    conn: Arc<Mutex<Connection>>,
    queue: Mutex<Queue>,
    commits: AtomicU64,
}

impl Sends {
    pub(super) fn new(conn: Arc<Mutex<Connection>>) -> Sends {
        Sends {
            conn,
            queue: Mutex::default(),
            commits: AtomicU64::new(0),
        }
    }

    /// Queues a send; its answer comes once the transaction holding it is committed.
    pub(super) async fn submit(
        self: &Arc<Self>,
        msg: NewMessage,
        member_required: bool,
    ) -> Result<Checked, StoreError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock();
            q.pending.push(Send {
                msg,
                member_required,
                reply,
            });
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            let sends = self.clone();
            tokio::task::spawn_blocking(move || sends.drain());
        }
        answer
            .await
            .map_err(|_| StoreError::Task("the chat writer stopped".into()))?
    }

    /// Transactions committed for sends so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Commits batches until the queue is empty.
    fn drain(&self) {
        // A panic in here must not leave the queue marked as drained by nobody.
        let _reset = Reset(self);
        loop {
            let batch: Vec<Send> = {
                let mut q = self.queue.lock();
                if q.pending.is_empty() {
                    q.draining = false;
                    return;
                }
                let n = q.pending.len().min(MAX_BATCH);
                q.pending.drain(..n).collect()
            };
            let (ops, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|s| ((s.msg, s.member_required), s.reply))
                .unzip();
            let answers = commit(&mut self.conn.lock(), ops);
            self.commits.fetch_add(1, Ordering::Relaxed);
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }
}

/// If the drain ends by a panic: fails the sends still queued (their answers are dropped,
/// so they hear "the chat writer stopped") and lets the next send start a new drain.
struct Reset<'a>(&'a Sends);

impl Drop for Reset<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut q = self.0.queue.lock();
            q.draining = false;
            q.pending.clear();
        }
    }
}

/// One transaction for `ops`, each in its own savepoint: the answers in order, or, if
/// the transaction cannot begin or commit, the same failure for every one.
fn commit(c: &mut Connection, ops: Vec<(NewMessage, bool)>) -> Vec<Result<Checked, StoreError>> {
    let n = ops.len();
    let failed = |e: rusqlite::Error| -> Vec<Result<Checked, StoreError>> {
        (0..n)
            .map(|_| Err(StoreError::Task(format!("chat commit failed: {e}"))))
            .collect()
    };
    let mut tx = match c.transaction() {
        Ok(tx) => tx,
        Err(e) => return failed(e),
    };
    let mut answers = Vec::with_capacity(n);
    for (msg, member_required) in ops {
        let one = tx.savepoint().map_err(StoreError::from).and_then(|sp| {
            let answer = checked(&sp, msg, member_required)?;
            sp.commit()?;
            Ok(answer)
        });
        answers.push(one);
    }
    match tx.commit() {
        Ok(()) => answers,
        Err(e) => failed(e),
    }
}

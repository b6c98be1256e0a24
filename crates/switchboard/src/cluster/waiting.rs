//! Requests of this node waiting for other nodes' answers, by request id: one type for the
//! census (`census.rs`) and the Node adapter's requests (`ops.rs`).
//!
//! Owns: the id -> channel map and the rule that an id is forgotten when its waiter is
//! dropped, whatever way the request ended (all answers in, timeout, send failure).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Answers of type `T` waiting for their requester, by request id `K`.
pub(crate) struct Waiting<K, T> {
    map: Mutex<HashMap<K, mpsc::UnboundedSender<T>>>,
}

impl<K, T> Default for Waiting<K, T> {
    fn default() -> Self {
        Waiting {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, T> Waiting<K, T> {
    /// Starts waiting for answers to `id`, until the returned waiter is dropped.
    pub(crate) fn register(&self, id: K) -> Waiter<'_, K, T> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.map.lock().insert(id.clone(), tx);
        Waiter {
            waiting: self,
            id,
            rx,
        }
    }

    /// Hands an answer to its requester; false when nobody waits for it.
    pub(crate) fn deliver<Q>(&self, id: &Q, answer: T) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self.map.lock().get(id) {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }
}

/// One request's answers; dropping it forgets the request.
pub(crate) struct Waiter<'a, K: Eq + Hash, T> {
    waiting: &'a Waiting<K, T>,
    id: K,
    rx: mpsc::UnboundedReceiver<T>,
}

impl<K: Eq + Hash, T> Waiter<'_, K, T> {
    /// The next answer, or `None` once `deadline` has passed.
    pub(crate) async fn next(&mut self, deadline: tokio::time::Instant) -> Option<T> {
        tokio::time::timeout_at(deadline, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl<K: Eq + Hash, T> Drop for Waiter<'_, K, T> {
    fn drop(&mut self) {
        self.waiting.map.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_reach_the_waiter_until_it_is_dropped() {
        let waiting: Waiting<String, u32> = Waiting::default();
        assert!(!waiting.deliver("a", 1), "nobody waits yet");
        let mut w = waiting.register("a".to_owned());
        assert!(waiting.deliver("a", 2));
        assert!(!waiting.deliver("b", 3), "another id");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        assert_eq!(w.next(deadline).await, Some(2));
        assert_eq!(w.next(deadline).await, None, "times out");
        drop(w);
        assert!(!waiting.deliver("a", 4), "forgotten once dropped");
        assert!(waiting.map.lock().is_empty());
    }
}

//! The chat's counters for `/metrics`: messages stored, refusals by reason, typing
//! relayed or throttled, and how long storing a message takes.
//!
//! Never: rendering (`crate::metrics` writes the exposition).

use std::sync::atomic::{AtomicU64, Ordering};

use primitives::Histogram;

use super::error::ChatError;

/// Counted as the chat works; read by `/metrics`.
#[derive(Default)]
pub struct ChatMetrics {
    /// Messages stored (a repeated `clientMsgId` stores nothing and is not counted).
    pub stored: AtomicU64,
    /// Refusals, by [`ChatError::reason`] (in [`ChatError::REASONS`] order).
    refused: [AtomicU64; ChatError::REASONS.len()],
    /// Typing events relayed to a room.
    pub typing_relayed: AtomicU64,
    /// Typing events within the throttle window (refused, nothing relayed).
    pub typing_throttled: AtomicU64,
    /// Storing a message: the checked insert, durable before the ack.
    pub store_latency: Histogram,
    /// Cluster mode: fleet-wide typing or presence decisions this node made alone
    /// because Redis failed or was slow (`fleet_live::CALL_TIMEOUT`).
    pub fleet_fallback: std::sync::Arc<AtomicU64>,
}

impl ChatMetrics {
    /// The fallback counter, for a task that outlives the borrow.
    pub fn fleet_fallback_counter(&self) -> std::sync::Arc<AtomicU64> {
        self.fleet_fallback.clone()
    }

    pub fn refused(&self, e: &ChatError) {
        let i = ChatError::REASONS
            .iter()
            .position(|r| *r == e.reason())
            .unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(reason, count)` for every reason, zeros included.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ChatError::REASONS
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_reason() {
        let m = ChatMetrics::default();
        m.refused(&ChatError::EmptyContent);
        m.refused(&ChatError::TypingThrottled);
        m.refused(&ChatError::TypingThrottled);
        let got: Vec<_> = m.refusals().filter(|(_, n)| *n > 0).collect();
        assert_eq!(got, [("empty_content", 1), ("typing_throttled", 2)]);
        let mut reasons = ChatError::REASONS.to_vec();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), ChatError::REASONS.len(), "distinct");
    }
}

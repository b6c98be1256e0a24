//! Counters of an engine, read by the server's metrics endpoint. Plain atomics: the hot
//! path pays one relaxed add; rendering (Prometheus text) happens at scrape time elsewhere.

use std::sync::atomic::{AtomicU64, Ordering};

use primitives::Histogram;

use crate::kind::{CloseReason, TransportKind};

/// What an engine counts. Every counter only grows.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sessions opened, by their first transport (polling, websocket).
    pub opened: [AtomicU64; 2],
    /// Sessions closed, by reason (`CloseReason::ALL` order).
    pub closed: [AtomicU64; CloseReason::ALL.len()],
    /// Polling sessions that moved to WebSocket.
    pub upgrades: AtomicU64,
    /// Message packets from clients (text, binary).
    pub messages_in: [AtomicU64; 2],
    /// Frames written to clients.
    pub frames_out: AtomicU64,
    /// Volatile frames dropped because a client's outbox was full.
    pub dropped: AtomicU64,
    /// From a frame being queued to its batch being handed to the transport.
    pub delivery: Histogram,
}

impl EngineStats {
    pub(crate) fn opened(&self, kind: TransportKind) {
        let i = match kind {
            TransportKind::Polling => 0,
            TransportKind::WebSocket => 1,
        };
        self.opened[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        if let Some(i) = CloseReason::ALL.iter().position(|r| *r == reason) {
            self.closed[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl crate::outbox::OutboxCounters for EngineStats {
    fn taken(&self, frames: usize, waited: std::time::Duration) {
        self.delivery.observe(waited);
        self.frames_out.fetch_add(frames as u64, Ordering::Relaxed);
    }

    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

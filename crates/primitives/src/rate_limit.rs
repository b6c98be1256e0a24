//! A token bucket for per-connection rate limits (Socket.IO events, `/ws` frames).
//!
//! Time is tokio's clock, so a test on a paused clock controls the refill.

use std::sync::OnceLock;
use tokio::time::Instant;

/// Events per second allowed on one connection, with a burst. `per_sec == 0` is off
/// (the default).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_sec: f32,
    /// Tokens a full bucket holds (and a new one starts with).
    pub burst: f32,
}

impl RateLimit {
    /// Whether the limit applies at all.
    pub fn is_on(&self) -> bool {
        self.per_sec > 0.0
    }
}

/// One connection's bucket: 16 bytes, starts full.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f32,
    last_ms: u64,
}

/// The buckets' time origin, an hour before the first bucket: a bucket's time is an
/// offset from it, so it must precede every `now` a bucket can see. Under tokio's paused
/// clock `now` is a virtual time, which can be earlier than a real time another thread
/// read first; an origin an hour back keeps every such `now` after it (a bucket that
/// read 0 twice would never refill).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(std::time::Duration::from_secs(3600))
            .unwrap_or(now)
    })
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Bucket {
        Bucket {
            tokens: limit.burst,
            last_ms: epoch().elapsed().as_millis() as u64,
        }
    }

    /// Takes one token if there is one; `false` means refuse this event.
    pub fn take(&mut self, limit: RateLimit) -> bool {
        self.take_at(limit, epoch().elapsed().as_millis() as u64)
    }

    fn take_at(&mut self, limit: RateLimit, now_ms: u64) -> bool {
        if !limit.is_on() {
            return true;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms) as f32 / 1000.0;
        self.tokens = (self.tokens + elapsed * limit.per_sec).min(limit.burst);
        self.last_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let limit = RateLimit {
            per_sec: 10.0,
            burst: 3.0,
        };
        let mut b = Bucket {
            tokens: 3.0,
            last_ms: 0,
        };
        assert!((0..3).all(|_| b.take_at(limit, 0)));
        assert!(!b.take_at(limit, 0));
        assert!(!b.take_at(limit, 50));
        assert!(b.take_at(limit, 100));
        // Refills to the burst, never above.
        assert!((0..3).all(|_| b.take_at(limit, 10_000)));
        assert!(!b.take_at(limit, 10_000));
        let off = RateLimit {
            per_sec: 0.0,
            burst: 0.0,
        };
        assert!((0..1000).all(|_| b.take_at(off, 10_000)));
    }
}

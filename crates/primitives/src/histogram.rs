//! A latency histogram with fixed buckets, cheap to update from any thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency histogram with fixed buckets (seconds), cheap to update from any thread.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; Histogram::BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Upper bounds of the buckets, in seconds (then `+Inf`).
    pub const BOUNDS: [f64; 12] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];

    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = Self::BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(Self::BOUNDS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last one is `+Inf`, i.e. the total), and the sum
    /// in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut acc = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (
            cumulative,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let (c, sum) = h.snapshot();
        assert_eq!(c.len(), Histogram::BOUNDS.len() + 1);
        assert_eq!(c[0], 1); // <= 0.5 ms
        assert_eq!(c[3], 2); // <= 5 ms
        assert_eq!(c[Histogram::BOUNDS.len() - 1], 2); // <= 2.5 s
        assert_eq!(c[Histogram::BOUNDS.len()], 3); // +Inf
        assert!((sum - 10.0031).abs() < 1e-6, "{sum}");
    }
}

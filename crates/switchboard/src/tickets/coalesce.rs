//! Coalescing of availability updates per category: the first change goes out at once;
//! changes within the window after it are merged into one update sent when the window
//! ends, carrying the numbers of that moment. Every client ends with the true numbers.

//!
//! Time is tokio's (`tokio::time::Instant`), passed in, so the rules are tested at exact
//! instants and the service's timers run on a paused clock in tests.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;
use tickets::CategoryKey;

#[derive(Debug, Default)]
pub(super) struct Coalescer {
    window: Duration,
    slots: Mutex<HashMap<CategoryKey, Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    last_sent: Instant,
    pending: bool,
}

/// What to do about one touched category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    SendNow,
    /// Send after this delay (a flush is already scheduled if `schedule` is false).
    Later {
        delay: Duration,
        schedule: bool,
    },
}

impl Coalescer {
    pub(super) fn new(window: Duration) -> Coalescer {
        Coalescer {
            window,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn touch(&self, key: CategoryKey, now: Instant) -> Decision {
        if self.window.is_zero() {
            return Decision::SendNow;
        }
        let mut slots = self.slots.lock();
        // Forget slots idle for a long time so the map does not only grow.
        if slots.len() > 4096 {
            let window = self.window;
            slots.retain(|_, s| s.pending || now.duration_since(s.last_sent) < window * 4);
        }
        match slots.get_mut(&key) {
            Some(s) if now.duration_since(s.last_sent) < self.window => {
                let delay = self.window - now.duration_since(s.last_sent);
                let schedule = !s.pending;
                s.pending = true;
                Decision::Later { delay, schedule }
            }
            _ => {
                slots.insert(
                    key,
                    Slot {
                        last_sent: now,
                        pending: false,
                    },
                );
                Decision::SendNow
            }
        }
    }

    /// The merge window.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// A scheduled flush went out.
    pub(super) fn flushed(&self, key: CategoryKey, now: Instant) {
        self.slots.lock().insert(
            key,
            Slot {
                last_sent: now,
                pending: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_now_then_merged_until_the_window_ends() {
        let c = Coalescer::new(Duration::from_millis(100));
        let k = CategoryKey::new(1, 2);
        let t0 = Instant::now();
        assert_eq!(c.touch(k, t0), Decision::SendNow);
        assert_eq!(
            c.touch(k, t0 + Duration::from_millis(10)),
            Decision::Later {
                delay: Duration::from_millis(90),
                schedule: true
            }
        );
        assert_eq!(
            c.touch(k, t0 + Duration::from_millis(20)),
            Decision::Later {
                delay: Duration::from_millis(80),
                schedule: false
            }
        );
        c.flushed(k, t0 + Duration::from_millis(100));
        assert_eq!(
            c.touch(k, t0 + Duration::from_millis(250)),
            Decision::SendNow
        );
        assert_eq!(
            c.touch(CategoryKey::new(9, 9), t0),
            Decision::SendNow,
            "categories are independent"
        );
    }

    #[test]
    fn zero_window_sends_everything() {
        let c = Coalescer::new(Duration::ZERO);
        let k = CategoryKey::new(1, 1);
        let t = Instant::now();
        assert_eq!(c.touch(k, t), Decision::SendNow);
        assert_eq!(c.touch(k, t), Decision::SendNow);
    }
}

//! The heartbeat rules of one session: ping every interval, expect a pong within the
//! timeout. Pure: the caller passes the time and sleeps until [`Heartbeat::deadline`].

use std::time::Duration;

use tokio::time::Instant;

/// The heartbeat of one session: ping every interval, and expect a pong within the timeout.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    /// When the next ping is due, or when the awaited pong is overdue.
    deadline: Instant,
    awaiting_pong: bool,
}

pub(crate) enum Beat {
    SendPing,
    TimedOut,
}

impl Heartbeat {
    pub(crate) fn new(interval: Duration, timeout: Duration, now: Instant) -> Heartbeat {
        Heartbeat {
            interval,
            timeout,
            deadline: now + interval,
            awaiting_pong: false,
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Called when the deadline has passed.
    pub(crate) fn on_deadline(&mut self, now: Instant) -> Beat {
        if self.awaiting_pong {
            Beat::TimedOut
        } else {
            self.awaiting_pong = true;
            // From the scheduled time, not the (possibly late) wake-up: no drift.
            let _ = now;
            self.deadline += self.timeout;
            Beat::SendPing
        }
    }

    pub(crate) fn on_pong(&mut self, now: Instant) {
        if self.awaiting_pong {
            self.awaiting_pong = false;
            self.deadline = now + self.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_pings_then_times_out() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_millis(300), Duration::from_millis(200), t0);
        assert_eq!(hb.deadline(), t0 + Duration::from_millis(300));
        assert!(matches!(hb.on_deadline(hb.deadline()), Beat::SendPing));
        assert_eq!(hb.deadline(), t0 + Duration::from_millis(500));
        hb.on_pong(t0 + Duration::from_millis(350));
        assert_eq!(hb.deadline(), t0 + Duration::from_millis(650));
        assert!(matches!(hb.on_deadline(hb.deadline()), Beat::SendPing));
        assert!(matches!(hb.on_deadline(hb.deadline()), Beat::TimedOut));
    }
}

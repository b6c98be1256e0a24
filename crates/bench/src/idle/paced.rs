//! The paced operation of an idle run: while every idle client is connected, one more
//! `/realtime` client holds and releases a seat at a fixed rate and times each answer, so
//! the report says how a server that holds N connections answers an ordinary request.
//!
//! The seat is in a category of an event none of the idle clients joined: the operation
//! costs the server one request and one broadcast to an empty room, not a fan-out to the
//! crowd (100,000 receivers of ten updates a second would measure the fan-out instead).
//! Runs on a thread with an I/O driver of its own, like the fan-out's buyer: it stands for
//! a client on another machine, whose answers do not wait behind the generator's own
//! idle clients' heartbeats.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::report::Percentiles;
use crate::realtime;
use crate::sio::{Namespace, Target};

/// What the paced client does.
#[derive(Debug, Clone)]
pub(super) struct PacedSpec {
    /// Operations per second (a hold, then its release, alternately).
    pub(super) rate: f64,
    /// The event and category whose seat the client holds and releases.
    pub(super) event: i64,
    pub(super) category: i64,
    /// How long to keep going (the idle run's hold time).
    pub(super) duration: Duration,
    pub(super) connect_timeout: Duration,
}

/// What the paced client saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PacedReport {
    pub rate_per_sec: f64,
    pub event: i64,
    pub category: i64,
    /// Operations sent and answered (a refused hold is an answer too).
    pub sent: u64,
    pub answered: u64,
    /// Answers with `success: false` (a hold refused, a release of nothing).
    pub refused: u64,
    /// Ticks skipped because the previous answer had not come back yet.
    pub skipped_ticks: u64,
    /// From sending an operation to reading its answer.
    pub answer_ms: Percentiles,
    /// Why the client stopped early, if it did (`tcp`, `timeout`, `closed`, ...).
    pub error: Option<&'static str>,
}

impl PacedReport {
    /// Every operation answered with success (a hold, then its release) and the client
    /// never lost its connection.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.sent == self.answered && self.answered > 0 && self.refused == 0
    }
}

/// Starts the paced client on its own thread; the handle's result comes when
/// `spec.duration` is over or `stop` is cancelled.
pub(super) fn start(
    target: Target,
    spec: PacedSpec,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<PacedReport>> {
    std::thread::Builder::new()
        .name("paced-client".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => rt.block_on(run(&target, &spec, &stop)),
                Err(_) => PacedReport {
                    error: Some("runtime"),
                    ..PacedReport::default()
                },
            }
        })
}

async fn run(target: &Target, spec: &PacedSpec, stop: &CancellationToken) -> PacedReport {
    let mut report = PacedReport {
        rate_per_sec: spec.rate,
        event: spec.event,
        category: spec.category,
        ..PacedReport::default()
    };
    let nsp = Namespace::new(realtime::NAMESPACE);
    let connected = tokio::time::timeout(
        spec.connect_timeout,
        realtime::connect(target, &nsp, "idle-paced"),
    )
    .await;
    let mut client = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            report.error = Some(e.kind());
            return report;
        }
        Err(_) => {
            report.error = Some("timeout");
            return report;
        }
    };
    let period = Duration::from_secs_f64(1.0 / spec.rate);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = tokio::time::Instant::now() + spec.duration;
    let mut latencies_us = Vec::new();
    let mut last_tick: Option<tokio::time::Instant> = None;
    let mut holding = false;
    loop {
        let tick = tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(end) => break,
            t = ticks.tick() => t,
        };
        if let Some(last) = last_tick {
            let missed = (tick - last).as_secs_f64() / period.as_secs_f64();
            report.skipped_ticks += (missed.round() as u64).saturating_sub(1);
        }
        last_tick = Some(tick);
        let began = Instant::now();
        report.sent += 1;
        let answer = if holding {
            realtime::unlock(&mut client, spec.event, spec.category).await
        } else {
            realtime::lock(&mut client, spec.event, spec.category, 1).await
        };
        match answer {
            Ok(success) => {
                report.answered += 1;
                latencies_us.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
                if success {
                    holding = !holding;
                } else {
                    report.refused += 1;
                }
            }
            Err(e) => {
                report.error = Some(e.kind());
                break;
            }
        }
    }
    report.answer_ms = Percentiles::from_micros(&mut latencies_us);
    if report.error.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
    }
    report
}

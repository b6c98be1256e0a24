//! The soak's samples, the trend of each watched quantity after the warm-up, the
//! verdict, and the CSV the plot is drawn from.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{Meta, kinds};

/// One sample of the server (from `/proc` and `/metrics`) and of the generator.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub secs: f64,
    pub rss_bytes: Option<u64>,
    pub fds: Option<u64>,
    pub threads: Option<u64>,
    /// `switchboard_runtime_tasks`.
    pub tasks: Option<u64>,
    /// `switchboard_rooms`.
    pub rooms: Option<u64>,
    /// `switchboard_hub_members`.
    pub hub_members: Option<u64>,
    /// `switchboard_history_messages`.
    pub history: Option<u64>,
    /// `switchboard_holds{status="active"}`.
    pub holds_active: Option<u64>,
    /// Generator side: Socket.IO clients connected, SSE readers reading.
    pub clients_online: u64,
    pub sse_online: u64,
}

/// How one quantity moved after the warm-up.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    pub name: &'static str,
    /// Median of the first and of the last window after the warm-up.
    pub start: f64,
    pub end: f64,
    pub max: f64,
    /// Least-squares slope after the warm-up, per hour.
    pub slope_per_hour: f64,
    /// `end <= start * (1 + tolerance) + slack`.
    pub bounded: bool,
}

/// The quantities judged, with their tolerance (relative) and slack (absolute).
pub(super) const WATCHED: [(&str, f64, f64); 4] = [
    ("rss_mib", 0.10, 16.0),
    ("fds", 0.10, 64.0),
    ("tasks", 0.10, 128.0),
    ("rooms", 0.10, 64.0),
];

impl Sample {
    pub(super) fn value(&self, name: &str) -> Option<f64> {
        let v = match name {
            "rss_mib" => return self.rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
            "fds" => self.fds,
            "tasks" => self.tasks,
            "rooms" => self.rooms,
            _ => None,
        };
        v.map(|v| v as f64)
    }
}

/// Counts of what the clients did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Activity {
    pub connects: u64,
    /// Reconnects that asked to recover and did (`pid` answered unchanged).
    pub recovered: u64,
    /// Reconnects that asked to recover and got a fresh session.
    pub not_recovered: u64,
    pub joins: u64,
    pub locks_ok: u64,
    pub locks_refused: u64,
    pub unlocks_ok: u64,
    /// Connections ended with `socket.disconnect()` / by dropping the transport.
    pub final_disconnects: u64,
    pub drops: u64,
    pub events_received: u64,
    pub publishes: u64,
    pub publish_failures: u64,
    pub sse_connects: u64,
    pub sse_resumes: u64,
    /// `reset` events: a resume the history no longer covered.
    pub sse_resets: u64,
    pub sse_messages: u64,
    /// Client failures by cause (`timeout`, `tcp`, `http`, ...).
    pub failures: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub meta: Meta,
    pub clients: usize,
    pub sse: usize,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub activity: Activity,
    pub samples: Vec<Sample>,
    /// Empty when the run was too short to judge (under ten minutes).
    pub trends: Vec<Trend>,
}

/// Runs shorter than this are checked for correctness only (no trend verdict).
pub(super) const JUDGED_AFTER_SECS: f64 = 600.0;

impl SoakReport {
    /// Correct (few failed connects, every publish answered) and, for a long run, every
    /// watched quantity bounded.
    pub fn ok(&self) -> bool {
        let a = &self.activity;
        let failed: u64 = a.failures.values().sum();
        a.connects > 0
            && failed * 100 <= a.connects.max(1)
            && a.publish_failures == 0
            && self.trends.iter().all(|t| t.bounded)
    }

    /// The trends of the watched quantities after `warmup_secs`, or none for a short run.
    pub(super) fn judge(samples: &[Sample], warmup_secs: f64, duration_secs: f64) -> Vec<Trend> {
        if duration_secs < JUDGED_AFTER_SECS {
            return Vec::new();
        }
        let after: Vec<&Sample> = samples.iter().filter(|s| s.secs >= warmup_secs).collect();
        // Windows of a tenth of the judged time (at least 3 samples) at each end.
        let window = (after.len() / 10).max(3);
        if after.len() < 2 * window {
            return Vec::new();
        }
        WATCHED
            .iter()
            .filter_map(|&(name, tolerance, slack)| {
                let points: Vec<(f64, f64)> = after
                    .iter()
                    .filter_map(|s| Some((s.secs, s.value(name)?)))
                    .collect();
                if points.len() < 2 * window {
                    return None;
                }
                let start = median(points[..window].iter().map(|p| p.1));
                let end = median(points[points.len() - window..].iter().map(|p| p.1));
                let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
                Some(Trend {
                    name,
                    start,
                    end,
                    max,
                    slope_per_hour: slope(&points) * 3600.0,
                    bounded: end <= start * (1.0 + tolerance) + slack,
                })
            })
            .collect()
    }

    pub fn markdown(&self) -> String {
        let a = &self.activity;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### soak: {} Socket.IO clients + {} SSE readers, {:.0} s (warm-up {:.0} s)\n",
            self.clients, self.sse, self.duration_secs, self.warmup_secs
        );
        if self.trends.is_empty() {
            let _ = writeln!(
                s,
                "No trend verdict: runs under {JUDGED_AFTER_SECS:.0} s are checked for correctness only.\n"
            );
        } else {
            let _ = writeln!(
                s,
                "| quantity | after warm-up | at the end | max | slope per hour | bounded |\n|---|---|---|---|---|---|"
            );
            for t in &self.trends {
                let _ = writeln!(
                    s,
                    "| {} | {:.1} | {:.1} | {:.1} | {:+.1} | {} |",
                    t.name,
                    t.start,
                    t.end,
                    t.max,
                    t.slope_per_hour,
                    if t.bounded { "yes" } else { "**no**" }
                );
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "| connects | recovered | not recovered | final disconnects | drops | locks ok / refused | unlocks | events received |\n|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            a.connects,
            a.recovered,
            a.not_recovered,
            a.final_disconnects,
            a.drops,
            a.locks_ok,
            a.locks_refused,
            a.unlocks_ok,
            a.events_received
        );
        let _ = writeln!(
            s,
            "| publishes (failed) | SSE connects | SSE resumes | SSE resets | SSE messages | failures |\n|---|---|---|---|---|---|\n| {} ({}) | {} | {} | {} | {} | {} |\n",
            a.publishes,
            a.publish_failures,
            a.sse_connects,
            a.sse_resumes,
            a.sse_resets,
            a.sse_messages,
            kinds(&a.failures)
        );
        let _ = writeln!(s, "{}", self.meta.machine_line());
        let _ = writeln!(
            s,
            "verdict: {}",
            if self.ok() {
                "ok"
            } else {
                "FAILED (see the table above)"
            }
        );
        s
    }

    /// One header row, then one row per sample (empty cells where a value was not read).
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "secs,rss_mib,fds,threads,tasks,rooms,hub_members,history,holds_active,clients_online,sse_online\n",
        );
        let cell = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        for x in &self.samples {
            let _ = writeln!(
                out,
                "{:.1},{},{},{},{},{},{},{},{},{},{}",
                x.secs,
                x.rss_bytes
                    .map_or_else(String::new, |b| format!("{:.1}", b as f64 / 1048576.0)),
                cell(x.fds),
                cell(x.threads),
                cell(x.tasks),
                cell(x.rooms),
                cell(x.hub_members),
                cell(x.history),
                cell(x.holds_active),
                x.clients_online,
                x.sse_online
            );
        }
        out
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Least-squares slope of `(x, y)` points (per unit of x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: impl Fn(f64) -> f64) -> Vec<Sample> {
        (0..200)
            .map(|i| {
                let secs = f64::from(i) * 10.0;
                Sample {
                    secs,
                    rss_bytes: Some((rss(secs) * 1048576.0) as u64),
                    fds: Some(5000),
                    tasks: Some(10_000),
                    rooms: Some(400),
                    ..Sample::default()
                }
            })
            .collect()
    }

    #[test]
    fn flat_is_bounded_and_growth_is_not() {
        let flat = SoakReport::judge(&samples(|_| 300.0), 300.0, 2000.0);
        assert_eq!(flat.len(), 4);
        assert!(flat.iter().all(|t| t.bounded), "{flat:?}");
        // 300 MiB growing 0.1 MiB/s: +170 MiB after the warm-up.
        let leak = SoakReport::judge(&samples(|t| 300.0 + 0.1 * t), 300.0, 2000.0);
        let rss = leak.iter().find(|t| t.name == "rss_mib").expect("rss");
        assert!(!rss.bounded, "{rss:?}");
        assert!((rss.slope_per_hour - 360.0).abs() < 1.0, "{rss:?}");
        assert!(SoakReport::judge(&samples(|_| 1.0), 0.0, 60.0).is_empty());
    }

    #[test]
    fn median_and_slope() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), 2.0);
    }
}

//! The result of an idle run: serialized as JSON for `--json`, rendered as markdown.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::{Meta, Table, mb};

#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub scenario: &'static str,
    pub meta: Meta,
    pub url: String,
    pub namespace: String,
    pub room: Option<String>,
    /// Whether the clients offered permessage-deflate.
    pub compress: bool,
    pub clients: usize,
    pub concurrency: usize,
    /// Clients that connected (and joined, with `--join`).
    pub joined: usize,
    pub failures: usize,
    /// Failures by cause (`timeout`, `tcp`, `connect_error`, ...).
    pub failure_kinds: BTreeMap<&'static str, u64>,
    /// Joined clients that lost their session while idle (settle + hold).
    pub dropped_while_idle: u64,
    /// Those drops by cause (`closed`, `disconnected`, `websocket`, ...).
    pub dropped_kinds: BTreeMap<&'static str, u64>,
    /// Engine.IO heartbeats the clients answered, handshake to close.
    pub pings_answered: u64,
    /// From the first connect attempt to the last join ack.
    pub connect_join_secs: f64,
    pub connect_join_rate_per_sec: f64,
    /// Server CPU time (its own, from `/proc`) per connect + join during that phase.
    pub server_cpu_us_per_connect: Option<f64>,
    /// One client's connect + join, from its first byte to its ack.
    pub latency_ms: Percentiles,
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_bytes: Option<u64>,
    /// (after - before) / joined.
    pub server_bytes_per_client: Option<f64>,
    pub generator_rss_bytes: Option<u64>,
    pub generator_bytes_per_client: Option<f64>,
    pub cpus: usize,
    pub settle_secs: f64,
    pub hold_secs: f64,
    /// Loopback source addresses the clients connected from (127.0.0.1 to 127.0.0.N).
    pub sources: u8,
    /// The generator's open-files limits during the run, and the machine's.
    pub open_files: crate::sys::OpenFiles,
    /// The paced operation during the hold (`--paced-rate`).
    pub paced: Option<super::PacedReport>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From per-client samples in microseconds (sorted in place).
    pub fn from_micros(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() - 1) as f64 * q).round() as usize;
            f64::from(samples[i]) / 1000.0
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl IdleReport {
    /// Whether every client joined and stayed, and every paced operation was answered.
    pub fn ok(&self) -> bool {
        self.failures == 0
            && self.dropped_while_idle == 0
            && self.paced.as_ref().is_none_or(super::PacedReport::ok)
    }

    pub fn markdown(&self) -> String {
        let opt_mb = |b: Option<u64>| b.map_or_else(|| "-".into(), mb);
        let per_client = |b: Option<f64>| b.map_or_else(|| "-".into(), |b| format!("{b:.0}"));
        let mut main = Table::new(&[
            "scenario",
            "clients",
            "connect+join rate/s",
            "failures",
            "server RSS before MB",
            "server RSS after MB",
            "bytes per client",
        ]);
        main.row(vec![
            self.scenario.into(),
            self.clients.to_string(),
            format!("{:.0}", self.connect_join_rate_per_sec),
            self.failures.to_string(),
            opt_mb(self.server_rss_before_bytes),
            opt_mb(self.server_rss_after_bytes),
            per_client(self.server_bytes_per_client),
        ]);
        let mut detail = Table::new(&[
            "connect+join p50/p99/max ms",
            "dropped while idle",
            "pings answered",
            "failure kinds",
            "generator RSS MB",
            "generator bytes per client",
            "server CPU µs per connect+join",
            "CPUs",
        ]);
        let kinds = |m: &BTreeMap<&str, u64>| {
            if m.is_empty() {
                return "-".to_owned();
            }
            m.iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        detail.row(vec![
            format!(
                "{:.1} / {:.1} / {:.1}",
                self.latency_ms.p50, self.latency_ms.p99, self.latency_ms.max
            ),
            format!(
                "{} ({})",
                self.dropped_while_idle,
                kinds(&self.dropped_kinds)
            ),
            self.pings_answered.to_string(),
            kinds(&self.failure_kinds),
            opt_mb(self.generator_rss_bytes),
            per_client(self.generator_bytes_per_client),
            self.server_cpu_us_per_connect
                .map_or_else(|| "-".into(), |us| format!("{us:.1}")),
            self.cpus.to_string(),
        ]);
        let limits = format!(
            "sources: {} loopback address(es); open files: generator soft {} / hard {}, machine file-max {} / nr_open {}\n",
            self.sources,
            self.open_files.soft,
            self.open_files.hard,
            self.open_files
                .file_max
                .map_or_else(|| "-".into(), |n| n.to_string()),
            self.open_files
                .nr_open
                .map_or_else(|| "-".into(), |n| n.to_string()),
        );
        let paced = self.paced.as_ref().map_or_else(String::new, |p| {
            let mut t = Table::new(&[
                "paced ops/s",
                "event / category",
                "sent",
                "answered",
                "refused",
                "skipped ticks",
                "answer p50/p99/max ms",
                "error",
            ]);
            t.row(vec![
                format!("{}", p.rate_per_sec),
                format!("{} / {}", p.event, p.category),
                p.sent.to_string(),
                p.answered.to_string(),
                p.refused.to_string(),
                p.skipped_ticks.to_string(),
                format!(
                    "{:.2} / {:.2} / {:.2}",
                    p.answer_ms.p50, p.answer_ms.p99, p.answer_ms.max
                ),
                p.error.unwrap_or("-").to_owned(),
            ]);
            t.render() + "\n"
        });
        let compression = if self.compress {
            "clients offered permessage-deflate\n"
        } else {
            ""
        };
        format!(
            "{}\n{}\n{compression}{paced}{limits}{}\n",
            main.render(),
            detail.render(),
            self.meta.machine_line()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut s: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let p = Percentiles::from_micros(&mut s);
        assert_eq!((p.p50, p.p99, p.max), (51.0, 99.0, 100.0));
        assert_eq!(Percentiles::from_micros(&mut []).max, 0.0);
    }
}

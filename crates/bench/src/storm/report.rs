//! The result of a storm run: JSON for `--json`, markdown for people.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::{Latency, Meta, Table, kinds};

/// One category at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryCheck {
    pub event_id: i64,
    pub category_id: i64,
    pub total: i64,
    /// Seats the buyers were granted and still hold.
    pub granted_held: i64,
    /// Seats the server says are held (minus those held before the run).
    pub server_locked: Option<i64>,
    pub server_available: Option<i64>,
    /// Every node answered the same held seats (always true on one node).
    pub nodes_agree: bool,
    pub oversold: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub meta: Meta,
    pub url: String,
    /// Servers the buyers were spread over (an observer and a checker on each).
    pub nodes: usize,
    pub buyers: usize,
    /// Buyers that connected and raced.
    pub racing: usize,
    pub connect_failures: BTreeMap<&'static str, u64>,
    pub buyer_errors: BTreeMap<&'static str, u64>,
    pub elapsed_secs: f64,
    pub locks_ok: u64,
    pub locks_refused: u64,
    pub unlocks_ok: u64,
    /// Releases of a granted hold that the server refused (should be 0).
    pub unlocks_refused: u64,
    pub holds_per_sec: f64,
    /// Answered lock and unlock requests per second.
    pub ops_per_sec: f64,
    /// Server CPU time (user + system, every `--server-pid` summed) per answered request,
    /// in microseconds.
    pub server_cpu_us_per_request: Option<f64>,
    /// From a request to its answer.
    pub answer_latency_ms: Latency,
    pub observed_updates: u64,
    pub inconsistent_updates: u64,
    /// Why an observer stopped early (a server may drop it as a slow client: it reads
    /// every update of a busy room while sharing the machine). The final check, not the
    /// observers, decides "oversold", so this does not make a run incorrect.
    pub observer_error: Option<&'static str>,
    pub checker_error: Option<&'static str>,
    /// Categories over capacity (or updates showing that) — must be 0.
    pub oversold_categories: usize,
    /// Categories where a node's held seats differ from the buyers' grants.
    pub mismatched_categories: usize,
    /// Observer × category whose last update differs from its node's final view after
    /// the settle time (a client left with stale numbers). Reported, not a failure: an
    /// observer may also have been dropped as a slow client.
    pub stale_views: usize,
    pub categories: Vec<CategoryCheck>,
}

impl StormReport {
    pub fn ok(&self) -> bool {
        self.meta.ok
    }

    pub fn markdown(&self) -> String {
        let mut t = Table::new(&[
            "scenario",
            "buyers",
            "holds/s",
            "requests/s",
            "server CPU µs / request",
            "answer p50 / p99 / max ms",
            "granted / refused holds",
            "oversold",
            "mismatched",
            "stale views",
            "failures",
        ]);
        t.row(vec![
            self.scenario.into(),
            if self.nodes > 1 {
                format!("{} over {} nodes", self.buyers, self.nodes)
            } else {
                self.buyers.to_string()
            },
            format!("{:.0}", self.holds_per_sec),
            format!("{:.0}", self.ops_per_sec),
            self.server_cpu_us_per_request
                .map_or_else(|| "-".into(), |us| format!("{us:.0}")),
            self.answer_latency_ms.cell(),
            format!("{} / {}", self.locks_ok, self.locks_refused),
            self.oversold_categories.to_string(),
            self.mismatched_categories.to_string(),
            self.stale_views.to_string(),
            format!(
                "connect: {}; buyers: {}; checker: {}; observer: {}",
                kinds(&self.connect_failures),
                kinds(&self.buyer_errors),
                self.checker_error.unwrap_or("-"),
                self.observer_error.unwrap_or("-")
            ),
        ]);
        format!("{}\n{}\n", t.render(), self.meta.machine_line())
    }
}

//! The result of a fan-out run: JSON for `--json`, markdown for people.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::{Latency, Meta, Table, kinds};

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    pub meta: Meta,
    pub url: String,
    /// Servers the receivers were spread over (the buyer used the first).
    pub nodes: usize,
    pub clients: usize,
    /// Receivers that connected and joined.
    pub joined: usize,
    /// Receivers joined on each node, in `--url` order.
    pub joined_per_node: Vec<usize>,
    /// Delivery latency of the receivers of each node, in `--url` order (several nodes only).
    pub latency_by_node_ms: Vec<Latency>,
    pub connect_failures: BTreeMap<&'static str, u64>,
    pub window: Option<u64>,
    pub rate: Option<f64>,
    /// Answered operations that changed availability (one broadcast each).
    pub ops: u64,
    pub refused_ops: u64,
    pub buyer_error: Option<&'static str>,
    pub ops_per_sec: f64,
    /// Updates each receiver must get: one per operation.
    pub expected_per_client: u64,
    pub delivered: u64,
    /// Updates a receiver never got (counted per receiver).
    pub lost: u64,
    /// Updates beyond those expected (would mean a broadcast per refused operation).
    pub extra: u64,
    pub dropped_receivers: BTreeMap<&'static str, u64>,
    /// From the first operation to the last receipt.
    pub delivery_secs: f64,
    pub deliveries_per_sec: f64,
    /// Server CPU time (user + system) per delivery, from `/proc`, in microseconds.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// From sending an operation to a receiver reading its update.
    pub latency_ms: Latency,
    /// From sending an operation to the buyer reading its answer.
    pub answer_ms: Latency,
}

impl FanoutReport {
    pub fn ok(&self) -> bool {
        self.meta.ok
    }

    pub fn markdown(&self) -> String {
        let mut t = Table::new(&[
            "scenario",
            "clients",
            "ops",
            "ops/s",
            "deliveries/s",
            "latency p50 / p99 / max ms",
            "answer p50 / p99 / max ms",
            "lost",
            "failures",
        ]);
        let failures = self.clients - self.joined;
        t.row(vec![
            self.scenario.into(),
            if self.nodes > 1 {
                format!("{} over {} nodes", self.clients, self.nodes)
            } else {
                self.clients.to_string()
            },
            self.ops.to_string(),
            format!("{:.0}", self.ops_per_sec),
            format!("{:.0}", self.deliveries_per_sec),
            self.latency_ms.cell(),
            self.answer_ms.cell(),
            self.lost.to_string(),
            format!(
                "{failures} (connect: {}; dropped: {}; buyer: {})",
                kinds(&self.connect_failures),
                kinds(&self.dropped_receivers),
                self.buyer_error.unwrap_or("-")
            ),
        ]);
        let mut by_node = String::new();
        for (i, l) in self.latency_by_node_ms.iter().enumerate() {
            let joined = self.joined_per_node.get(i).copied().unwrap_or(0);
            by_node.push_str(&format!(
                "node {} ({joined} receivers{}): latency p50 / p99 / max {} ms\n",
                i + 1,
                if i == 0 { ", the buyer's" } else { "" },
                l.cell()
            ));
        }
        format!("{}\n{by_node}{}\n", t.render(), self.meta.machine_line())
    }
}

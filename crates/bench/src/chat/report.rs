//! The result of a chat run: JSON for `--json`, markdown for people.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::{Latency, Meta, Table};

#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    pub scenario: &'static str,
    pub meta: Meta,
    pub url: String,
    pub room: String,
    pub senders: usize,
    pub receivers: usize,
    pub connect_failures: BTreeMap<String, u64>,
    /// Messages acknowledged (stored).
    pub stored: u64,
    pub stored_per_sec: f64,
    /// Sends refused or failed (must be 0).
    pub send_errors: BTreeMap<String, u64>,
    pub delivered: u64,
    pub lost: u64,
    /// Receipts that came twice (must be 0).
    pub duplicates: u64,
    pub deliveries_per_sec: f64,
    /// From sending to the ack (the message is stored by then).
    pub ack_ms: Latency,
    /// From sending to a receiver reading the message.
    pub delivery_ms: Latency,
}

impl ChatReport {
    pub fn ok(&self) -> bool {
        self.meta.ok
    }

    pub fn markdown(&self) -> String {
        let mut t = Table::new(&[
            "scenario",
            "senders",
            "receivers",
            "stored/s",
            "deliveries/s",
            "ack p50 / p99 / max ms",
            "delivery p50 / p99 / max ms",
            "lost",
            "duplicates",
        ]);
        t.row(vec![
            self.scenario.into(),
            self.senders.to_string(),
            self.receivers.to_string(),
            format!("{:.0}", self.stored_per_sec),
            format!("{:.0}", self.deliveries_per_sec),
            self.ack_ms.cell(),
            self.delivery_ms.cell(),
            self.lost.to_string(),
            self.duplicates.to_string(),
        ]);
        let show = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "-".to_owned()
            } else {
                format!("{m:?}")
            }
        };
        format!(
            "{}\nconnect failures: {}; send errors: {}\n{}\n",
            t.render(),
            show(&self.connect_failures),
            show(&self.send_errors),
            self.meta.machine_line()
        )
    }
}

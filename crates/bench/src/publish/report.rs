//! The result of a publish run: JSON for `--json`, markdown for people.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::{Latency, Meta, Table, kinds};

/// What the members of one transport received.
#[derive(Debug, Clone, Serialize)]
pub struct TransportResult {
    pub transport: &'static str,
    pub members: usize,
    pub delivered: u64,
    pub lost: u64,
    /// Messages that arrived out of publish order (must be 0).
    pub out_of_order: u64,
    pub dropped: BTreeMap<&'static str, u64>,
    /// From sending the publish request to a member reading the message.
    pub latency_ms: Latency,
    /// Bytes this transport's members read while messages flowed (WebSocket members).
    pub wire_bytes: Option<u64>,
}

impl TransportResult {
    pub fn new(transport: &'static str) -> Self {
        Self {
            transport,
            members: 0,
            delivered: 0,
            lost: 0,
            out_of_order: 0,
            dropped: BTreeMap::new(),
            latency_ms: Latency::default(),
            wire_bytes: None,
        }
    }

    /// Wire bytes per message delivered (frames, headers and pings included).
    pub fn bytes_per_delivery(&self) -> Option<f64> {
        let bytes = self.wire_bytes?;
        (self.delivered > 0).then(|| bytes as f64 / self.delivered as f64)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    pub scenario: &'static str,
    pub meta: Meta,
    pub url: String,
    pub room: String,
    /// Approximate data size of each message (0: `{"seq": N}` only).
    pub payload_bytes: usize,
    /// Whether WebSocket members offered permessage-deflate.
    pub compress: bool,
    pub members: usize,
    pub connect_failures: BTreeMap<String, u64>,
    pub window: u64,
    pub published: u64,
    pub publish_error: Option<String>,
    pub publishes_per_sec: f64,
    pub delivered: u64,
    pub lost: u64,
    pub deliveries_per_sec: f64,
    pub transports: Vec<TransportResult>,
}

impl PublishReport {
    pub fn ok(&self) -> bool {
        self.meta.ok
    }

    pub fn markdown(&self) -> String {
        let mut t = Table::new(&[
            "scenario",
            "transport",
            "members",
            "publishes/s",
            "deliveries/s (all)",
            "latency p50 / p99 / max ms",
            "lost",
            "out of order",
            "dropped",
            "wire bytes/delivery",
        ]);
        for tr in &self.transports {
            t.row(vec![
                self.scenario.into(),
                tr.transport.into(),
                tr.members.to_string(),
                format!("{:.0}", self.publishes_per_sec),
                format!("{:.0}", self.deliveries_per_sec),
                tr.latency_ms.cell(),
                tr.lost.to_string(),
                tr.out_of_order.to_string(),
                kinds(&tr.dropped),
                tr.bytes_per_delivery()
                    .map_or_else(|| "-".to_owned(), |b| format!("{b:.0}")),
            ]);
        }
        let failures = if self.connect_failures.is_empty() {
            "-".to_owned()
        } else {
            format!("{:?}", self.connect_failures)
        };
        format!(
            "{}\npayload: {} bytes of data, compression {}; connect failures: {failures}; publisher: {}\n{}\n",
            t.render(),
            self.payload_bytes,
            if self.compress {
                "offered"
            } else {
                "not offered"
            },
            self.publish_error.as_deref().unwrap_or("ok"),
            self.meta.machine_line()
        )
    }
}

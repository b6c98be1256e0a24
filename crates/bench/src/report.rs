//! Output shared by the scenarios: markdown tables and the `--json` file. Each scenario
//! owns its report type; this module only formats.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::Serialize;

use crate::sys;

/// Flags every contract scenario shares: where the server is and what to call it.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Server base URL (loopback only). `fanout` and `storm` take a comma-separated list,
    /// the nodes of a cluster: clients are spread over them round-robin, and the first one
    /// takes the scenario's own client (the buyer; the publisher).
    #[arg(long, default_value = "http://127.0.0.1:8880")]
    pub url: String,
    /// Name of the server under test, carried into the report (`switchboard`, `node`, ...).
    #[arg(long, default_value = "switchboard")]
    pub server: String,
    /// Server processes whose CPU time is read and summed (comma-separated or repeated: a
    /// cluster's nodes and its Redis); skipped when absent.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// The report's comparison row (default: the scenario and its size, such as
    /// `fanout-closed-1000`); `bench/run` names its cluster rows this way.
    #[arg(long)]
    pub label: Option<String>,
}

/// What every report carries besides its own numbers: which server, how loaded the
/// machine was, and the few headline numbers `compare` puts side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub server: String,
    /// The comparison row, e.g. `fanout-closed-1000`.
    pub label: String,
    pub cpus: usize,
    /// 1/5/15-minute load averages when the run started and ended.
    pub load_before: Option<[f64; 3]>,
    pub load_after: Option<[f64; 3]>,
    /// Share of one core the generator and the server used while measuring.
    pub generator_cpu_pct: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    /// Headline numbers by name; the name says which way is better (see `compare`).
    pub headline: BTreeMap<String, f64>,
    /// Correctness: no oversold seat, no lost delivery, no failed client.
    pub ok: bool,
}

impl Meta {
    pub fn new(server: &str, label: String) -> Self {
        Self {
            server: server.to_owned(),
            label,
            cpus: sys::cpus(),
            load_before: sys::load_average(),
            load_after: None,
            generator_cpu_pct: None,
            server_cpu_pct: None,
            headline: BTreeMap::new(),
            ok: false,
        }
    }

    pub fn finish(&mut self) {
        self.load_after = sys::load_average();
    }

    /// One line: CPU use and load, for the markdown output.
    pub fn machine_line(&self) -> String {
        let pct = |p: Option<f64>| p.map_or_else(|| "-".into(), |p| format!("{p:.0}%"));
        let load = |l: Option<[f64; 3]>| {
            l.map_or_else(
                || "-".into(),
                |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]),
            )
        };
        format!(
            "server `{}`; CPU while measuring: generator {}, server {} (100% = one of {} cores); load average before {} / after {}",
            self.server,
            pct(self.generator_cpu_pct),
            pct(self.server_cpu_pct),
            self.cpus,
            load(self.load_before),
            load(self.load_after),
        )
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// From samples in microseconds (sorted in place).
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
            samples: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    pub fn cell(&self) -> String {
        format!("{:.2} / {:.2} / {:.2}", self.p50, self.p99, self.max)
    }
}

/// Failure counts as `kind: n, ...`, or `-`.
pub fn kinds(m: &BTreeMap<&'static str, u64>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A markdown table with a header row.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        out.push_str(&line(&vec!["---".to_owned(); self.header.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Bytes as megabytes (MiB), one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// Writes `report` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, report: &T) -> io::Result<()> {
    let text = serde_json::to_string_pretty(report).map_err(io::Error::other)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown() {
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["1".into(), "2".into()]);
        assert_eq!(t.render(), "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
        assert_eq!(mb(3 * 1024 * 1024 / 2), "1.5");
    }
}

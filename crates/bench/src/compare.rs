//! `compare`: reads the JSON reports a comparison run wrote (one per scenario, server and
//! round; see `bench/run`), and prints per scenario the median of each headline number
//! per server, the ratio of Switchboard's median to each peer's, and how loaded the
//! machine was. Reads files only; measures nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::report::Table;

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Directory holding the reports (`*.json`).
    pub dir: PathBuf,
    /// The servers the ratios are about (its median divided by each other server's), in
    /// order of preference: each table takes the first of them that it has.
    #[arg(long, default_value = DEFAULT_BASELINES)]
    pub baseline: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a report: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("no reports in {0}")]
    Empty(String),
}

#[derive(Debug, Clone, Deserialize)]
struct ReportMeta {
    server: String,
    label: String,
    cpus: usize,
    load_before: Option<[f64; 3]>,
    generator_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
    headline: BTreeMap<String, f64>,
    ok: bool,
}

#[derive(Debug, Deserialize)]
struct AnyReport {
    meta: ReportMeta,
}

/// Whether a smaller value of this headline number is the better one.
pub fn lower_is_better(metric: &str) -> bool {
    metric.ends_with("_ms")
        || metric == "bytes_per_client"
        || metric.contains("_per_delivery")
        || metric.contains("_per_request")
        || metric.contains("_per_connect")
}

/// The median of `v` (sorted in place); 0 for none.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn load(dir: &Path) -> Result<Vec<ReportMeta>, CompareError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|source| CompareError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let path = p.display().to_string();
        let text = std::fs::read_to_string(&p).map_err(|source| CompareError::Read {
            path: path.clone(),
            source,
        })?;
        let r: AnyReport =
            serde_json::from_str(&text).map_err(|source| CompareError::Parse { path, source })?;
        out.push(r.meta);
    }
    if out.is_empty() {
        return Err(CompareError::Empty(shown));
    }
    Ok(out)
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        let n = v.round() as i64;
        // Thousands separators keep 300000 and 30000 apart at a glance.
        let s = n.abs().to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else {
        format!("{v:.2}")
    }
}

/// The servers a ratio is about, in order of preference: in each group of rows the first
/// of these that ran is the baseline (`bench/run`'s cluster rows have their own).
pub const DEFAULT_BASELINES: &str = "switchboard-3nodes,switchboard-redis-3nodes,switchboard";

/// The comparison as markdown: one table of medians and ratios per group of rows that ran
/// against the same servers, then one table of run conditions.
pub fn render(args: &CompareArgs) -> Result<String, CompareError> {
    let reports = load(&args.dir)?;
    let baselines: Vec<&str> = args.baseline.split(',').map(str::trim).collect();

    // label -> metric -> server -> values
    let mut values: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, Vec<f64>>>> = BTreeMap::new();
    for r in &reports {
        for (metric, v) in &r.headline {
            values
                .entry(&r.label)
                .or_default()
                .entry(metric)
                .or_default()
                .entry(&r.server)
                .or_default()
                .push(*v);
        }
    }
    // Rows measured against the same servers share a table.
    let mut groups: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
    for (label, metrics) in &values {
        let mut servers: Vec<&str> = metrics.values().flat_map(|m| m.keys().copied()).collect();
        servers.sort_unstable();
        servers.dedup();
        match groups.iter_mut().find(|(s, _)| *s == servers) {
            Some((_, labels)) => labels.push(label),
            None => groups.push((servers, vec![label])),
        }
    }
    let mut tables = Vec::new();
    for (mut servers, labels) in groups {
        let baseline = baselines
            .iter()
            .find(|b| servers.contains(b))
            .copied()
            .unwrap_or(servers[0]);
        servers.retain(|s| *s != baseline);
        servers.insert(0, baseline);
        let peers = &servers[1..];
        let mut header: Vec<String> = vec!["scenario".into(), "metric".into()];
        header.extend(servers.iter().map(|s| format!("{s} (median)")));
        header.extend(peers.iter().map(|p| format!("{baseline} ÷ {p}")));
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = Table::new(&header_refs);
        for label in labels {
            for (metric, by_server) in &values[label] {
                let mut medians: BTreeMap<&str, f64> = BTreeMap::new();
                for (s, v) in by_server {
                    medians.insert(s, median(&mut v.clone()));
                }
                let better = if lower_is_better(metric) {
                    "lower"
                } else {
                    "higher"
                };
                let mut row = vec![label.to_owned(), format!("{metric} ({better} is better)")];
                for s in &servers {
                    row.push(medians.get(s).map_or_else(|| "-".into(), |m| fmt_num(*m)));
                }
                let base = medians.get(baseline).copied();
                for p in peers {
                    let cell = match (base, medians.get(p)) {
                        (Some(b), Some(&m)) if m != 0.0 => format!("{:.2}", b / m),
                        _ => "-".into(),
                    };
                    row.push(cell);
                }
                t.row(row);
            }
        }
        tables.push(t.render());
    }

    let mut conditions = Table::new(&[
        "scenario",
        "server",
        "runs",
        "correct runs",
        "load avg (1 min) at start, median",
        "generator CPU %, median",
        "server CPU %, median",
    ]);
    let mut by_run: BTreeMap<(&str, &str), Vec<&ReportMeta>> = BTreeMap::new();
    for r in &reports {
        by_run.entry((&r.label, &r.server)).or_default().push(r);
    }
    let opt = |v: Vec<f64>| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1}", median(&mut v.clone()))
        }
    };
    for ((label, server), rs) in &by_run {
        conditions.row(vec![
            (*label).to_owned(),
            (*server).to_owned(),
            rs.len().to_string(),
            rs.iter().filter(|r| r.ok).count().to_string(),
            opt(rs
                .iter()
                .filter_map(|r| r.load_before.map(|l| l[0]))
                .collect()),
            opt(rs.iter().filter_map(|r| r.generator_cpu_pct).collect()),
            opt(rs.iter().filter_map(|r| r.server_cpu_pct).collect()),
        ]);
    }
    let cpus = reports.first().map_or(0, |r| r.cpus);
    Ok(format!(
        "{}\nRatios are the first column's server ÷ each other, median of the runs; CPU % is of one core, summed over a cluster's processes (the machine has {cpus}; machine.txt says whether the server and the generator were pinned to one each or shared them all).\n\n{}",
        tables.join("\n"),
        conditions.render()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_directions() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        assert!(lower_is_better("latency_p99_ms"));
        assert!(lower_is_better("bytes_per_client"));
        assert!(lower_is_better("server_cpu_us_per_request"));
        assert!(!lower_is_better("deliveries_per_sec"));
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(12.345), "12.35");
    }

    #[test]
    fn compares_reports_in_a_directory() {
        let dir = std::env::temp_dir().join(format!("sb-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let report_as = |server: &str, label: &str, round: u32, v: f64| {
            let text = serde_json::json!({
                "scenario": "fanout-closed",
                "meta": {
                    "server": server, "label": label, "cpus": 2,
                    "load_before": [1.0, 1.0, 1.0], "load_after": null,
                    "generator_cpu_pct": 50.0, "server_cpu_pct": 40.0,
                    "headline": {"deliveries_per_sec": v}, "ok": true
                }
            });
            std::fs::write(
                dir.join(format!("{label}.{server}.{round}.json")),
                text.to_string(),
            )
            .expect("write");
        };
        let report = |server: &str, round: u32, v: f64| {
            report_as(server, "fanout-closed-10", round, v);
        };
        report("switchboard", 1, 300.0);
        report("switchboard", 2, 500.0);
        report("switchboard", 3, 400.0);
        report("node", 1, 100.0);
        // Cluster rows ran against other servers: a table of their own, with the first
        // baseline of the list that ran there.
        report_as("switchboard-3nodes", "cluster-30", 1, 90.0);
        report_as("switchboard-1node", "cluster-30", 1, 100.0);
        report_as("node-3nodes", "cluster-30", 1, 10.0);
        let out = render(&CompareArgs {
            dir: dir.clone(),
            baseline: DEFAULT_BASELINES.into(),
        })
        .expect("renders");
        assert!(
            out.contains(
                "| fanout-closed-10 | deliveries_per_sec (higher is better) | 400 | 100 | 4.00 |"
            ),
            "{out}"
        );
        assert!(
            out.contains("| scenario | metric | switchboard-3nodes (median) | node-3nodes (median) | switchboard-1node (median) | switchboard-3nodes ÷ node-3nodes | switchboard-3nodes ÷ switchboard-1node |"),
            "{out}"
        );
        assert!(
            out.contains(
                "| cluster-30 | deliveries_per_sec (higher is better) | 90.00 | 10.00 | 100 | 9.00 | 0.90 |"
            ),
            "{out}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! Printing and storing benchmark results: a table for people, the same numbers
//! as JSON for machines (an array of [`RunResult`] in one file, appended run by
//! run), and the side-by-side ratios against the baselines.

use std::path::Path;

use crate::load::{OpStats, RunResult, Workload};

/// Appends `result` to the JSON array in `path` (created if missing).
pub fn append(path: &Path, result: &RunResult) -> std::io::Result<()> {
    let mut all = load(path).unwrap_or_default();
    all.push(result.clone());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(&all).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Reads the results in `path`.
pub fn load(path: &Path) -> std::io::Result<Vec<RunResult>> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn op_cells(s: &OpStats) -> String {
    if s.count == 0 {
        return format!("{:>8} {:>7} {:>7} {:>7} {:>8}", "-", "-", "-", "-", "-");
    }
    format!(
        "{:>8} {:>7} {:>7} {:>7} {:>8}",
        s.count,
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us)
    )
}

/// One line per run and operation kind.
pub fn table(results: &[RunResult]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<34} {:>4} {:>9} {:>4} {:>8} {:>7} {:>7} {:>7} {:>8} {:>6}\n",
        "run", "op", "ops/s", "C", "count", "p50ms", "p99ms", "p999ms", "maxms", "errors"
    ));
    for r in results {
        let name = format!(
            "{} {}{}",
            r.spec.label,
            serde_json::to_value(r.spec.workload)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            if r.spec.rate.is_some() { " (open)" } else { "" }
        );
        let mixed = r.get.count > 0 && r.put.count > 0;
        for (op, s) in [("get", &r.get), ("put", &r.put), ("all", &r.all)] {
            if (s.count == 0 && s.errors == 0) || (op == "all" && !mixed) {
                continue;
            }
            out.push_str(&format!(
                "{:<34} {:>4} {:>9.0} {:>4} {} {:>6}\n",
                truncate(&name, 34),
                op,
                r.ops_per_s,
                r.spec.clients,
                op_cells(s),
                s.errors
            ));
        }
        if !r.rss_kib.is_empty() {
            let mib: Vec<String> = r
                .rss_kib
                .iter()
                .map(|k| format!("{:.0} MiB", *k as f64 / 1024.0))
                .collect();
            out.push_str(&format!(
                "{:<34} rss of each node: {}\n",
                "",
                mib.join(", ")
            ));
        }
        for e in &r.error_samples {
            out.push_str(&format!("{:<34} error: {}\n", "", e));
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Ratios of each run whose label starts with `label` against the runs of the
/// same workload, clients, value size, distribution and rate under the other
/// labels (throughput and p99), so a reader sees what replication costs.
pub fn ratios(results: &[RunResult], label: &str) -> String {
    let mut out = String::new();
    let ours = |r: &RunResult| r.spec.label.starts_with(label);
    for r in results
        .iter()
        .filter(|r| ours(r) && r.spec.workload != Workload::Load)
    {
        for other in results.iter().filter(|o| {
            !ours(o)
                && o.spec.workload == r.spec.workload
                && o.spec.distribution == r.spec.distribution
                && o.spec.clients == r.spec.clients
                && o.spec.value_size == r.spec.value_size
                && o.spec.rate == r.spec.rate
        }) {
            let p99 = |x: &RunResult| x.get.p99_us.max(x.put.p99_us) as f64;
            let p50 = |x: &RunResult| x.get.p50_us.max(x.put.p50_us) as f64;
            out.push_str(&format!(
                "{:?} C={}: {} does {:.2}x the ops/s of {} at {:.2}x its p50 and {:.2}x its p99\n",
                r.spec.workload,
                r.spec.clients,
                r.spec.label,
                r.ops_per_s / other.ops_per_s.max(1e-9),
                other.spec.label,
                p50(r) / p50(other).max(1.0),
                p99(r) / p99(other).max(1.0),
            ));
        }
    }
    out
}

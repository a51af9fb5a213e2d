//! The JSON report of one run, its text summary, the servers' CPU and memory
//! read from /proc, and the table that compares runs with the baseline
//! (medians per label).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::record::{Percentiles, SecondRow};
use crate::scenario::Scenario;
use crate::verify::Verification;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// What was measured, e.g. `baseline` or `gateway`.
    pub label: String,
    pub run_id: String,
    pub target: String,
    pub scenario: Scenario,
    pub started_unix: u64,
    /// From the start to the last reply.
    pub elapsed_secs: f64,
    pub sent: u64,
    /// Requests that got an HTTP reply, whatever its status.
    pub replies: u64,
    pub requests_per_sec: f64,
    /// From the due time (open loop) or the send time (closed loop).
    pub latency_ms: Percentiles,
    /// From the time the request was written: hides queueing in the generator.
    pub service_ms: Percentiles,
    pub outcomes: BTreeMap<String, u64>,
    /// Replies by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    pub servers: Vec<ServerStats>,
    /// The generator's own CPU time: near `elapsed_secs` means the generator,
    /// not the server, set the pace.
    #[serde(default)]
    pub generator_cpu_secs: f64,
    /// CPU seconds the machine spent on anything but the generator and the
    /// listed servers (other builds, kernel network work in interrupts): a
    /// large value means the numbers are not clean.
    #[serde(default)]
    pub other_cpu_secs: f64,
    pub verification: Option<Verification>,
    pub per_second: Vec<SecondRow>,
}

impl Report {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "{} {} ({:?}, {:?}, {} workers{}): {} replies in {:.1} s = {:.0} req/s",
            self.scenario.name,
            self.label,
            self.scenario.pacing,
            self.scenario.connections,
            self.scenario.concurrency,
            if self.scenario.pacing == crate::scenario::Pacing::Open {
                format!(", {:.0}/s due", self.scenario.rate)
            } else {
                String::new()
            },
            self.replies,
            self.elapsed_secs,
            self.requests_per_sec
        );
        let _ = writeln!(
            s,
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (service p99 {:.3})",
            l.p50, l.p90, l.p99, l.p999, l.max, self.service_ms.p99
        );
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            s,
            "  outcomes: {}  statuses: {}",
            outcomes.join(" "),
            statuses.join(" ")
        );
        if self.errors.is_empty() {
            let _ = writeln!(s, "  errors: none");
        } else {
            let e: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "  errors: {}", e.join(" "));
            for x in self.error_samples.iter().take(5) {
                let _ = writeln!(s, "    e.g. {x}");
            }
        }
        for p in &self.servers {
            let _ = writeln!(
                s,
                "  {} (pid {}): cpu {:.2} s = {:.1} µs/reply, rss {:.1} MiB (peak {:.1})",
                p.name, p.pid, p.cpu_secs, p.cpu_us_per_reply, p.rss_mib, p.peak_rss_mib
            );
        }
        let _ = writeln!(
            s,
            "  generator: cpu {:.2} s of {:.2} s ({:.0}% of its core), {:.1} µs/reply",
            self.generator_cpu_secs,
            self.elapsed_secs,
            100.0 * self.generator_cpu_secs / self.elapsed_secs.max(1e-9),
            self.generator_cpu_secs * 1e6 / self.replies.max(1) as f64
        );
        let _ = writeln!(
            s,
            "  everything else on the machine: cpu {:.2} s ({:.0}% of a core)",
            self.other_cpu_secs,
            100.0 * self.other_cpu_secs / self.elapsed_secs.max(1e-9)
        );
        if let Some(v) = &self.verification {
            let _ = writeln!(
                s,
                "  delivery: {} accepted, {} delivered once, {} lost, {} doubled, {} mismatched, {} unexpected, {} unanswered-but-delivered ({} messages read in {:.1} s): {}",
                v.accepted,
                v.delivered_once,
                v.lost,
                v.doubled,
                v.mismatched,
                v.unexpected,
                v.delivered_unanswered,
                v.messages_read,
                v.read_secs,
                if v.passed { "PASSED" } else { "FAILED" }
            );
            for x in v.samples.iter().take(5) {
                let _ = writeln!(s, "    e.g. {x}");
            }
        }
        s
    }
}

/// One server process, sampled from /proc around the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerStats {
    pub pid: u32,
    pub name: String,
    /// User plus system CPU time during the run.
    pub cpu_secs: f64,
    pub cpu_us_per_reply: f64,
    /// VmRSS after the run.
    pub rss_mib: f64,
    /// VmHWM: the largest resident set the process ever had.
    pub peak_rss_mib: f64,
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// Busy CPU seconds of the whole machine so far (every state but idle and iowait).
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?;
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: f64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy / 100.0)
}

/// A `/proc/PID/status` field in MiB (`VmRSS`, `VmHWM`).
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A Markdown table of medians per (scenario, label), each with its ratio to
/// the `baseline` label of the same scenario.
pub fn table(reports: &[Report]) -> String {
    let mut groups: BTreeMap<(String, String), Vec<&Report>> = BTreeMap::new();
    for r in reports {
        groups
            .entry((r.scenario.name.clone(), r.label.clone()))
            .or_default()
            .push(r);
    }
    let med =
        |rs: &[&Report], f: &dyn Fn(&Report) -> f64| median(rs.iter().map(|r| f(r)).collect());
    let mut s = String::new();
    s.push_str("| scenario | server | runs | req/s (median) | ratio | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | server CPU µs/req | generator CPU | other CPU | delivery |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for ((scenario, label), rs) in &groups {
        let rps = med(rs, &|r| r.requests_per_sec);
        let base = groups
            .get(&(scenario.clone(), "baseline".to_owned()))
            .map(|b| med(b, &|r| r.requests_per_sec));
        let ratio = match base {
            Some(b) if b > 0.0 => format!("{:.2}", rps / b),
            _ => "-".into(),
        };
        let cpu = med(rs, &|r| r.servers.iter().map(|p| p.cpu_us_per_reply).sum());
        let errors: u64 = rs.iter().map(|r| r.error_count()).sum();
        let delivery = if rs.iter().all(|r| r.verification.is_none()) {
            "-".to_owned()
        } else {
            let passed = rs
                .iter()
                .filter(|r| r.verification.as_ref().is_some_and(|v| v.passed))
                .count();
            let lost: u64 = rs
                .iter()
                .filter_map(|r| r.verification.as_ref())
                .map(|v| v.lost)
                .sum();
            let doubled: u64 = rs
                .iter()
                .filter_map(|r| r.verification.as_ref())
                .map(|v| v.doubled)
                .sum();
            format!(
                "{passed}/{} passed, {lost} lost, {doubled} doubled",
                rs.len()
            )
        };
        let _ = writeln!(
            s,
            "| {scenario} | {label} | {} | {:.0} | {ratio} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {errors} | {cpu:.1} | {:.0}% | {:.0}% | {delivery} |",
            rs.len(),
            rps,
            med(rs, &|r| r.latency_ms.p50),
            med(rs, &|r| r.latency_ms.p90),
            med(rs, &|r| r.latency_ms.p99),
            med(rs, &|r| r.latency_ms.p999),
            med(rs, &|r| r.latency_ms.max),
            med(rs, &|r| 100.0 * r.generator_cpu_secs / r.elapsed_secs.max(1e-9)),
            med(rs, &|r| 100.0 * r.other_cpu_secs / r.elapsed_secs.max(1e-9)),
        );
    }
    let runs: Vec<(&str, &str, f64)> = reports
        .iter()
        .map(|r| {
            (
                r.scenario.name.as_str(),
                r.label.as_str(),
                r.requests_per_sec,
            )
        })
        .collect();
    for (label, ratios) in pair_ratios(&runs) {
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let _ = writeln!(
            s,
            "\n{label} / the baseline run just before it, run by run: {} (median {:.2})",
            shown.join(", "),
            median(ratios),
        );
    }
    s
}

/// Each non-baseline run's throughput over that of the baseline run that
/// came just before it in the same scenario, by label, in run order. The
/// machine drifts between pairs more than within one, so these ratios are
/// steadier than the ratio of medians.
fn pair_ratios(runs: &[(&str, &str, f64)]) -> BTreeMap<String, Vec<f64>> {
    let mut last_base: BTreeMap<&str, f64> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for &(scenario, label, rps) in runs {
        if label == "baseline" {
            last_base.insert(scenario, rps);
        } else if let Some(&base) = last_base.get(scenario).filter(|&&b| b > 0.0) {
            out.entry(format!("{scenario} {label}"))
                .or_default()
                .push(rps / base);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_is_compared_with_the_baseline_run_before_it() {
        let runs = [
            ("ka", "gateway", 50.0), // no baseline yet: left out
            ("ka", "baseline", 100.0),
            ("ka", "gateway", 50.0),
            ("ka", "baseline", 200.0),
            ("ka", "gateway", 120.0),
            ("oh", "gateway", 10.0), // another scenario, no baseline of its own
        ];
        let pairs = pair_ratios(&runs);
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs["ka gateway"], vec![0.5, 0.6]);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_secs(pid).is_some());
        assert!(status_mib(pid, "VmRSS").unwrap() > 0.0);
    }
}

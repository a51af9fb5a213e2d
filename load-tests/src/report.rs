//! The JSON report of one run, its text summary, the servers' CPU and memory
//! read from /proc, and the tables that compare runs with the baseline
//! (medians per label): throughput and latency, then what the kernel did per
//! reply (context switches, system calls, page faults; see [`crate::counters`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::counters::{KernelCounters, Syscalls, ThreadGroup};
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
    /// The machine's CPU (`lscpu` "Model name"); empty in reports that
    /// predate it.
    #[serde(default)]
    pub cpu_model: String,
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
            "{} {} ({:?}, {:?}, {} workers{}) on {}: {} replies in {:.1} s = {:.0} req/s",
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
            cpu_name(&self.cpu_model),
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
            let per = |n: u64| n as f64 / self.replies.max(1) as f64;
            if let Some(k) = &p.kernel {
                let groups: Vec<String> = k
                    .threads
                    .iter()
                    .filter(|(_, g)| g.voluntary + g.involuntary > 0)
                    .map(|(name, g)| {
                        format!(
                            "{name}{} {} + {}",
                            if g.threads > 1 {
                                format!(" ×{}", g.threads)
                            } else {
                                String::new()
                            },
                            num(per(g.voluntary)),
                            num(per(g.involuntary))
                        )
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "    per reply: context switches {} voluntary + {} involuntary ({}); page faults {} minor, {} major",
                    num(per(k.voluntary_ctxt_switches)),
                    num(per(k.nonvoluntary_ctxt_switches)),
                    groups.join(", "),
                    num(per(k.minor_faults)),
                    num(per(k.major_faults)),
                );
                if k.threads_started + k.threads_exited > 0 {
                    let _ = writeln!(
                        s,
                        "    threads started during the run: {}, exited: {} (the switches of exited threads are missing)",
                        k.threads_started, k.threads_exited
                    );
                }
            }
            match &p.syscalls {
                Some(c) => {
                    let kinds: Vec<String> = top_kinds(&[c])
                        .into_iter()
                        .map(|k| format!("{k} {}", num(per(c.by_kind[&k]))))
                        .collect();
                    let _ = writeln!(
                        s,
                        "    per reply: syscalls {} ({}, other {})",
                        num(per(c.total)),
                        kinds.join(", "),
                        num(per(other_syscalls(c)))
                    );
                }
                None if p.syscalls_unavailable.is_some() && self.servers[0].pid == p.pid => {
                    let _ = writeln!(
                        s,
                        "    per reply: syscalls n/a ({})",
                        p.syscalls_unavailable.as_deref().unwrap_or("")
                    );
                }
                None => {}
            }
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
    /// Context switches by thread and page faults during the run.
    #[serde(default)]
    pub kernel: Option<KernelCounters>,
    /// System calls during the run (`perf stat`); `None` when not counted.
    #[serde(default)]
    pub syscalls: Option<Syscalls>,
    /// Why `syscalls` is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls_unavailable: Option<String>,
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
    let _ = writeln!(s, "CPU: {}\n", cpu_line(reports));
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
    let counted = reports
        .iter()
        .filter(|r| r.servers.first().is_some_and(|p| p.syscalls.is_some()))
        .count();
    if counted > 0 {
        let _ = writeln!(
            s,
            "\nSystem calls were counted (perf stat on the syscall tracepoints) in {counted} of {} runs: \
             that costs the server a fraction of a µs per call, so req/s and CPU above are somewhat \
             worse than without (SYSCALLS=0).",
            reports.len()
        );
    }
    let mut scenarios: Vec<&String> = groups.keys().map(|(sc, _)| sc).collect();
    scenarios.dedup();
    for scenario in scenarios {
        let mut labels: Vec<(&str, &[&Report])> = groups
            .iter()
            .filter(|((sc, _), _)| sc == scenario)
            .map(|((_, l), rs)| (l.as_str(), rs.as_slice()))
            .collect();
        // The baseline first, the ratios to it after every label.
        labels.sort_by_key(|(l, _)| (*l != "baseline", *l));
        kernel_table(&mut s, scenario, &labels);
    }
    s
}

/// The CPU the reports were measured on, or each of them with its runs.
fn cpu_line(reports: &[Report]) -> String {
    let mut models: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in reports {
        models
            .entry(r.cpu_model.as_str())
            .or_default()
            .push(format!("{} {}", r.scenario.name, r.label));
    }
    match models.len() {
        0 => "-".into(),
        1 => cpu_name(models.keys().next().unwrap()),
        _ => {
            let each: Vec<String> = models
                .iter()
                .map(|(m, runs)| {
                    format!("{} ({} runs: {})", cpu_name(m), runs.len(), runs.join(", "))
                })
                .collect();
            format!("not the same in every run: {}", each.join("; "))
        }
    }
}

fn cpu_name(model: &str) -> String {
    if model.is_empty() {
        "unknown (not in the report)".into()
    } else {
        model.to_owned()
    }
}

/// How many system calls the tables name one by one; the rest are summed.
const TOP_SYSCALLS: usize = 8;

/// A per-reply figure with enough digits to tell 0.002 from 0.0002.
fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else if a >= 0.0001 {
        format!("{v:.5}")
    } else {
        format!("{v:.1e}")
    }
}

fn ratio_text(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// Calls not counted one by one, or counted but not among the named ones.
fn other_syscalls(c: &Syscalls) -> u64 {
    c.total.saturating_sub(c.by_kind.values().sum())
}

/// The busiest system calls of these counts (largest first, none of zero).
fn top_kinds(counts: &[&Syscalls]) -> Vec<String> {
    let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
    for c in counts {
        for (k, v) in &c.by_kind {
            *sum.entry(k).or_default() += v;
        }
    }
    let mut kinds: Vec<(&str, u64)> = sum.into_iter().filter(|(_, v)| *v > 0).collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    kinds
        .into_iter()
        .take(TOP_SYSCALLS)
        .map(|(k, _)| k.to_owned())
        .collect()
}

/// One row of the kernel table: a figure per reply for every label.
type Cells = Vec<Option<f64>>;

/// The median over runs of `f` per reply, of the server under test (the
/// first `--pid`); `None` when no run has it.
fn per_reply(rs: &[&Report], f: &dyn Fn(&ServerStats) -> Option<u64>) -> Option<f64> {
    let xs: Vec<f64> = rs
        .iter()
        .filter_map(|r| {
            let p = r.servers.first()?;
            Some(f(p)? as f64 / r.replies.max(1) as f64)
        })
        .collect();
    (!xs.is_empty()).then(|| median(xs))
}

/// Context switches, system calls and page faults per reply of one
/// scenario's server under test, label by label, with each label's ratio to
/// the baseline where both have the figure.
fn kernel_table(s: &mut String, scenario: &str, labels: &[(&str, &[&Report])]) {
    let firsts = || {
        labels
            .iter()
            .flat_map(|(_, rs)| rs.iter().filter_map(|r| r.servers.first()))
    };
    if firsts().all(|p| p.kernel.is_none() && p.syscalls.is_none()) {
        let _ = writeln!(
            s,
            "\n{scenario}: no context switches, system calls or page faults in these reports"
        );
        return;
    }
    let base = labels.iter().position(|(l, _)| *l == "baseline");
    let mut head = format!("\n| {scenario}: per reply, server under test |");
    let mut rule = "|---|".to_owned();
    for (l, rs) in labels {
        let name = rs
            .iter()
            .find_map(|r| r.servers.first())
            .map(|p| p.name.as_str())
            .unwrap_or("?");
        let runs = if rs.len() == 1 {
            "1 run".to_owned()
        } else {
            format!("{} runs", rs.len())
        };
        if name == *l {
            let _ = write!(head, " {l} ({runs}) |");
        } else {
            let _ = write!(head, " {l} ({name}, {runs}) |");
        }
        rule.push_str("---|");
    }
    if let Some(b) = base {
        for (i, (l, _)) in labels.iter().enumerate() {
            if i != b {
                let _ = write!(head, " {l} / baseline |");
                rule.push_str("---|");
            }
        }
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let row = |s: &mut String, name: &str, cells: Cells| {
        let mut line = format!("| {name} |");
        for c in &cells {
            let _ = write!(line, " {} |", c.map_or("n/a".into(), num));
        }
        if let Some(b) = base {
            for (i, c) in cells.iter().enumerate() {
                if i == b {
                    continue;
                }
                let r = match (c, cells[b]) {
                    (Some(x), Some(y)) if y > 0.0 => ratio_text(x / y),
                    _ => "-".into(),
                };
                let _ = write!(line, " {r} |");
            }
        }
        let _ = writeln!(s, "{line}");
    };
    let each = |f: &dyn Fn(&ServerStats) -> Option<u64>| -> Cells {
        labels.iter().map(|(_, rs)| per_reply(rs, f)).collect()
    };

    let cpu: Cells = labels
        .iter()
        .map(|(_, rs)| {
            let xs: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.servers.first().map(|p| p.cpu_us_per_reply))
                .collect();
            (!xs.is_empty()).then(|| median(xs))
        })
        .collect();
    row(s, "CPU µs (this process)", cpu);

    let kernel = |f: fn(&KernelCounters) -> u64| each(&|p| p.kernel.as_ref().map(f));
    row(
        s,
        "context switches, voluntary",
        kernel(|k| k.voluntary_ctxt_switches),
    );
    row(
        s,
        "context switches, involuntary",
        kernel(|k| k.nonvoluntary_ctxt_switches),
    );
    let mut names: Vec<&str> = firsts()
        .filter_map(|p| p.kernel.as_ref())
        .flat_map(|k| k.threads.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        // Voluntary + involuntary; "-" for a label without such threads.
        let mut line = format!("| · {name} (voluntary + involuntary) |");
        let mut sums: Vec<Option<f64>> = Vec::new();
        for (_, rs) in labels {
            let threads = rs
                .iter()
                .filter_map(|r| r.servers.first()?.kernel.as_ref()?.threads.get(name))
                .map(|g| g.threads)
                .max();
            let group = |p: &ServerStats, f: &dyn Fn(&ThreadGroup) -> u64| {
                let k = p.kernel.as_ref()?;
                Some(k.threads.get(name).map_or(0, f))
            };
            let cell = match threads {
                Some(n) => {
                    let vol = per_reply(rs, &|p| group(p, &|g| g.voluntary)).unwrap_or(0.0);
                    let invol = per_reply(rs, &|p| group(p, &|g| g.involuntary)).unwrap_or(0.0);
                    sums.push(per_reply(rs, &|p| {
                        group(p, &|g| g.voluntary + g.involuntary)
                    }));
                    format!(
                        "{} + {}{}",
                        num(vol),
                        num(invol),
                        if n > 1 {
                            format!(" ({n} threads)")
                        } else {
                            String::new()
                        }
                    )
                }
                None => {
                    sums.push(None);
                    "-".into()
                }
            };
            let _ = write!(line, " {cell} |");
        }
        if let Some(b) = base {
            for (i, x) in sums.iter().enumerate() {
                if i != b {
                    let r = match (x, sums[b]) {
                        (Some(x), Some(y)) if y > 0.0 => ratio_text(x / y),
                        _ => "-".into(),
                    };
                    let _ = write!(line, " {r} |");
                }
            }
        }
        let _ = writeln!(s, "{line}");
    }

    row(
        s,
        "syscalls, all",
        each(&|p| p.syscalls.as_ref().map(|c| c.total)),
    );
    // The busiest calls by their figure per reply summed over the labels.
    let mut weight: BTreeMap<String, f64> = BTreeMap::new();
    let counted: Vec<&Syscalls> = firsts().filter_map(|p| p.syscalls.as_ref()).collect();
    for c in &counted {
        for k in c.by_kind.keys() {
            weight.entry(k.clone()).or_default();
        }
    }
    for (k, w) in weight.iter_mut() {
        *w = each(&|p| {
            p.syscalls
                .as_ref()
                .map(|c| c.by_kind.get(k).copied().unwrap_or(0))
        })
        .into_iter()
        .flatten()
        .sum();
    }
    let mut kinds: Vec<(&String, f64)> = weight
        .iter()
        .map(|(k, w)| (k, *w))
        .filter(|(_, w)| *w > 0.0)
        .collect();
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    kinds.truncate(TOP_SYSCALLS);
    for (k, _) in &kinds {
        row(
            s,
            &format!("· {k}"),
            each(&|p| {
                p.syscalls
                    .as_ref()
                    .map(|c| c.by_kind.get(*k).copied().unwrap_or(0))
            }),
        );
    }
    let shown: Vec<&String> = kinds.iter().map(|(k, _)| *k).collect();
    if !counted.is_empty() {
        row(
            s,
            "· everything else",
            each(&|p| {
                let c = p.syscalls.as_ref()?;
                let named: u64 = shown.iter().filter_map(|k| c.by_kind.get(*k)).sum();
                Some(c.total.saturating_sub(named))
            }),
        );
    }
    row(s, "page faults, minor", kernel(|k| k.minor_faults));
    row(s, "page faults, major", kernel(|k| k.major_faults));
    for (l, rs) in labels {
        let why: Vec<&str> = rs
            .iter()
            .filter_map(|r| r.servers.first())
            .filter(|p| p.syscalls.is_none())
            .filter_map(|p| p.syscalls_unavailable.as_deref())
            .collect();
        if let Some(w) = why.first() {
            let _ = writeln!(
                s,
                "\n{l}: system calls not counted in {} of {} runs: {w}",
                why.len(),
                rs.len()
            );
        }
    }
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

    /// A report as written before the kernel counters and the CPU model.
    fn old_report(label: &str, replies: u64) -> serde_json::Value {
        serde_json::json!({
            "label": label, "run_id": "lt1", "target": "127.0.0.1:1",
            "scenario": {
                "name": "ka", "pacing": "closed", "connections": "keep_alive",
                "concurrency": 2, "duration_secs": 1.0, "max_requests": 10,
                "mix": {"valid": 90, "repeat": 5, "malformed": 5},
                "methods": {"s2s_get": 70, "form_post": 15, "pixel": 15}
            },
            "started_unix": 0, "elapsed_secs": 1.0, "sent": replies, "replies": replies,
            "requests_per_sec": replies as f64,
            "latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0, "max": 1.0, "mean": 1.0},
            "service_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0, "max": 1.0, "mean": 1.0},
            "outcomes": {}, "statuses": {}, "errors": {}, "error_samples": [],
            "servers": [{"pid": 1, "name": label, "cpu_secs": 1.0, "cpu_us_per_reply": 10.0,
                         "rss_mib": 1.0, "peak_rss_mib": 1.0}],
            "verification": null, "per_second": []
        })
    }

    #[test]
    fn old_reports_still_make_a_table() {
        let r: Report = serde_json::from_value(old_report("baseline", 1000)).unwrap();
        assert!(r.cpu_model.is_empty() && r.servers[0].kernel.is_none());
        let t = table(&[r]);
        assert!(t.starts_with("CPU: unknown"));
        assert!(t.contains("ka: no context switches, system calls or page faults"));
    }

    #[test]
    fn kernel_figures_per_reply_side_by_side() {
        let mut base = old_report("baseline", 1000);
        base["cpu_model"] = "AMD EPYC".into();
        base["servers"][0]["kernel"] = serde_json::json!({
            "voluntary_ctxt_switches": 100, "nonvoluntary_ctxt_switches": 10,
            "threads": {"tokio-rt-worker": {"threads": 2, "voluntary": 100, "involuntary": 10}},
            "threads_exited": 0, "threads_started": 0, "minor_faults": 5, "major_faults": 0
        });
        base["servers"][0]["syscalls"] = serde_json::json!({
            "total": 2000, "by_kind": {"recvfrom": 1000, "writev": 1000, "futex": 0}, "csv": "x"
        });
        let mut gw = old_report("gateway", 500);
        gw["cpu_model"] = "AMD EPYC".into();
        gw["servers"][0]["name"] = "postback-gatewa".into();
        gw["servers"][0]["kernel"] = serde_json::json!({
            "voluntary_ctxt_switches": 250, "nonvoluntary_ctxt_switches": 50,
            "threads": {"tokio-rt-worker": {"threads": 1, "voluntary": 50, "involuntary": 50},
                        "rdk:broker": {"threads": 3, "voluntary": 200, "involuntary": 0}},
            "threads_exited": 0, "threads_started": 0, "minor_faults": 0, "major_faults": 1
        });
        gw["servers"][0]["syscalls_unavailable"] = "perf stat exited".into();
        let reports: Vec<Report> = [base, gw]
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        let t = table(&reports);
        assert!(t.starts_with("CPU: AMD EPYC\n"), "{t}");
        assert!(t.contains("| ka: per reply, server under test | baseline (1 run) | gateway (postback-gatewa, 1 run) | gateway / baseline |"), "{t}");
        assert!(
            t.contains("| context switches, voluntary | 0.100 | 0.500 | 5.00 |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| · rdk:broker (voluntary + involuntary) | - | 0.400 + 0 (3 threads) | - |"
            ),
            "{t}"
        );
        assert!(t.contains("| · tokio-rt-worker (voluntary + involuntary) | 0.100 + 0.010 (2 threads) | 0.100 + 0.100 | 1.82 |"), "{t}");
        assert!(t.contains("| syscalls, all | 2.00 | n/a | - |"), "{t}");
        assert!(t.contains("| · recvfrom | 1.00 | n/a | - |"), "{t}");
        assert!(!t.contains("futex"), "{t}");
        assert!(
            t.contains("| page faults, major | 0 | 0.00200 | - |"),
            "{t}"
        );
        assert!(
            t.contains("gateway: system calls not counted in 1 of 1 runs: perf stat exited"),
            "{t}"
        );
    }

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_secs(pid).is_some());
        assert!(status_mib(pid, "VmRSS").unwrap() > 0.0);
    }
}

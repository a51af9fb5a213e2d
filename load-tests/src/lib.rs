//! postback-load: a load generator for postback-gateway that also checks
//! delivery.
//!
//! A run sends a realistic mix of postbacks (new conversions, exact repeats,
//! malformed ones; S2S GET, form POST, pixels) in closed or open loop over
//! keep-alive or new connections ([`drive`]), checks every reply against
//! what it must be ([`record`]), then reads the topic back and holds each
//! `OK` to exactly one event ([`verify`]). Tokens start with a per-run id,
//! so a topic shared by many runs still gives an exact answer.

pub mod client;
pub mod counters;
pub mod drive;
pub mod mix;
pub mod plot;
pub mod record;
pub mod report;
pub mod scenario;
pub mod verify;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::drive::Shared;
use crate::mix::Generator;
use crate::record::{Percentiles, Recorder};
use crate::report::{Report, ServerStats};
use crate::scenario::{Pacing, Scenario};

pub use crate::scenario::{Connections, Mix};

/// Where a run reads the events back.
#[derive(Debug, Clone)]
pub struct Kafka {
    pub brokers: String,
    pub topic: String,
}

/// One run: a scenario against a target.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scenario: Scenario,
    pub target: SocketAddr,
    pub api_key: String,
    /// The key image pixels carry (a source's pixel key is never its api key).
    pub pixel_key: String,
    /// `baseline`, `gateway`, ...: the name in reports and tables.
    pub label: String,
    /// Whether replies are checked against what each postback must get; off
    /// for a server that answers everything alike (the baseline).
    pub check_replies: bool,
    /// Read the topic back and check delivery; `None` skips the check.
    pub kafka: Option<Kafka>,
    /// Server processes whose CPU time, memory, context switches and page
    /// faults the report includes; the first is the server under test.
    pub pids: Vec<u32>,
    /// Count the first server's system calls with `perf stat` during the
    /// run, writing its CSV here; `None` leaves them out.
    pub syscalls_csv: Option<PathBuf>,
    /// The prefix of every token; a fresh one when `None`.
    pub run_id: Option<String>,
}

/// A run id that no earlier run shares: `lt` and 12 hex digits of time and pid.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed =
        (nanos ^ u64::from(std::process::id()).rotate_left(40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("lt{:012x}", mixed >> 16)
}

/// Runs `settings` to the end, checks delivery when asked, and returns the
/// report. Blocking: it runs its own single-threaded runtime, so that the
/// generator stays on the one core it is pinned to.
pub fn run(settings: &Settings) -> anyhow::Result<Report> {
    settings.scenario.validate()?;
    let run_id = settings.run_id.clone().unwrap_or_else(new_run_id);
    let s = &settings.scenario;
    let host = settings.target.to_string();
    let seed = u64::from_str_radix(run_id.trim_start_matches("lt"), 16).unwrap_or(7);
    let generators: Vec<Generator> = (0..s.concurrency)
        .map(|w| {
            Generator::new(
                &run_id,
                (&settings.api_key, &settings.pixel_key),
                &host,
                w,
                s.new_connection_per_request(w),
                &s.mix,
                &s.methods,
                seed,
            )
        })
        .collect();
    let cpu_model = counters::cpu_model();
    // perf first: it takes a moment to attach, and the run must not start
    // before it has.
    let mut syscalls_unavailable = None;
    let syscall_counter = match (&settings.syscalls_csv, settings.pids.first()) {
        (Some(csv), Some(&pid)) => match counters::start_syscalls(pid, csv) {
            Ok(c) => Some(c),
            Err(e) => {
                syscalls_unavailable = Some(e);
                None
            }
        },
        (None, _) => {
            syscalls_unavailable = Some("not asked for (loadgen run --syscalls)".to_owned());
            None
        }
        _ => None,
    };
    let kernel_before: Vec<Option<counters::Snapshot>> = settings
        .pids
        .iter()
        .map(|&p| counters::snapshot(p))
        .collect();
    let cpu_before: Vec<Option<f64>> = settings.pids.iter().map(|&p| report::cpu_secs(p)).collect();
    let own_cpu_before = report::cpu_secs(std::process::id()).unwrap_or(0.0);
    let machine_before = report::machine_busy_secs().unwrap_or(0.0);
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let local = tokio::task::LocalSet::new();
    let shared = local.block_on(&rt, async {
        let conns = drive::preconnect(settings.target, s).await;
        let start = tokio::time::Instant::now();
        let shared = Rc::new(Shared {
            addr: settings.target,
            scenario: s.clone(),
            start,
            end: start + s.duration(),
            counter: Cell::new(match s.pacing {
                Pacing::Closed => s.max_requests,
                Pacing::Open => 0,
            }),
            record: RefCell::new(Recorder::new(
                settings.check_replies,
                s.expected_new_conversions(),
            )),
        });
        drive::run(shared.clone(), generators, conns).await;
        shared
    });
    drop(local);
    drop(rt);
    let mut record = Rc::try_unwrap(shared)
        .ok()
        .context("a worker outlived the run")?
        .record
        .into_inner();

    let elapsed = record.last_done.as_secs_f64().max(1e-9);
    let own_cpu = report::cpu_secs(std::process::id()).unwrap_or(0.0) - own_cpu_before;
    let machine = report::machine_busy_secs().unwrap_or(0.0) - machine_before;
    let mut servers: Vec<ServerStats> = settings
        .pids
        .iter()
        .zip(cpu_before)
        .zip(kernel_before)
        .map(|((&pid, before), kernel_before)| {
            let cpu = match (before, report::cpu_secs(pid)) {
                (Some(a), Some(b)) => b - a,
                _ => 0.0,
            };
            let kernel = match (kernel_before, counters::snapshot(pid)) {
                (Some(a), Some(b)) => Some(counters::diff(&a, &b)),
                _ => None,
            };
            ServerStats {
                pid,
                name: report::process_name(pid),
                cpu_secs: cpu,
                cpu_us_per_reply: cpu * 1e6 / (record.replies.max(1) as f64),
                rss_mib: report::status_mib(pid, "VmRSS").unwrap_or(0.0),
                peak_rss_mib: report::status_mib(pid, "VmHWM").unwrap_or(0.0),
                kernel,
                syscalls: None,
                syscalls_unavailable: Some("counted for the server under test only".to_owned()),
            }
        })
        .collect();
    if let Some(first) = servers.first_mut() {
        first.syscalls_unavailable = syscalls_unavailable;
        if let Some(counter) = syscall_counter {
            match counter.stop() {
                Ok(s) => first.syscalls = Some(s),
                Err(e) => first.syscalls_unavailable = Some(e),
            }
        }
    }

    let servers_cpu: f64 = servers.iter().map(|p| p.cpu_secs).sum();
    let verification = match &settings.kafka {
        None => None,
        Some(k) => {
            // Let deliveries of requests that timed out on our side settle, so
            // an event that should not exist has the chance to show up.
            if !record.unanswered.is_empty() || record.errors.contains_key("timeout") {
                std::thread::sleep(Duration::from_secs(3));
            }
            Some(verify::verify(
                &k.brokers,
                &k.topic,
                &run_id,
                &std::mem::take(&mut record.expected).into_iter().collect(),
                &record.unanswered,
            )?)
        }
    };

    Ok(Report {
        label: settings.label.clone(),
        run_id,
        target: host,
        scenario: s.clone(),
        started_unix,
        elapsed_secs: elapsed,
        sent: record.sent,
        replies: record.replies,
        requests_per_sec: record.replies as f64 / elapsed,
        latency_ms: Percentiles::of(&record.latency),
        service_ms: Percentiles::of(&record.service),
        // A last, partial second holds only the replies still in flight at
        // the end; it would show as a drop in throughput.
        per_second: record
            .per_second()
            .into_iter()
            .filter(|row| (row.second as f64) < s.duration_secs)
            .collect(),
        outcomes: record.outcomes,
        statuses: record.statuses,
        errors: record.errors,
        error_samples: record.samples,
        servers,
        cpu_model,
        generator_cpu_secs: own_cpu,
        other_cpu_secs: (machine - own_cpu - servers_cpu).max(0.0),
        verification,
    })
}

/// Writes `DIR/NAME.json` and `DIR/NAME.svg`.
pub fn write(report: &Report, dir: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(dir.join(format!("{name}.json")), json)?;
    std::fs::write(dir.join(format!("{name}.svg")), plot::svg(report))?;
    Ok(())
}

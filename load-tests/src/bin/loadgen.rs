//! `loadgen`: runs one scenario against a server and, for the gateway, checks
//! delivery in Kafka; or prints the comparison table of earlier reports.
//!
//! ```text
//! loadgen run --scenario FILE --target HOST:PORT [--api-key KEY] [--label NAME]
//!             [--baseline] [--brokers HOST:PORT --topic conversions]
//!             [--rate N] [--duration SECS] [--concurrency N] [--max-requests N]
//!             [--pid PID]... [--syscalls] [--out DIR] [--name FILE_STEM]
//! loadgen table [--max-other PERCENT] REPORT.json...
//! loadgen count BROKERS TOPIC
//! loadgen free-port
//! ```
//! `run` exits 1 when delivery failed or a reply was not what it must be.
//! `--pid` (repeatable; the first is the server under test) adds a server's
//! CPU, memory, context switches and page faults to the report; `--syscalls`
//! also counts the first one's system calls with `perf stat` during the run
//! (its CSV goes to `DIR/FILE_STEM.syscalls.csv`; "n/a" when perf cannot).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use postback_load::report::{self, Report};
use postback_load::scenario::Scenario;
use postback_load::{Kafka, Settings};

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> anyhow::Result<i32> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("run") => run(args.collect()),
        // Reads a whole topic and counts what is there: for looking into a failed check.
        Some("count") => {
            let a: Vec<String> = args.collect();
            let (brokers, topic) = match a.as_slice() {
                [b, t] => (b.as_str(), t.as_str()),
                _ => bail!("usage: loadgen count BROKERS TOPIC"),
            };
            let none = Default::default();
            let v = postback_load::verify::verify(brokers, topic, "-", &none, &Default::default())?;
            let _ = none;
            println!("{} messages", v.messages_read);
            Ok(0)
        }
        // A free loopback port, for scripts that start servers.
        Some("free-port") => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(0)
        }
        Some("table") => {
            let mut reports = Vec::new();
            let mut max_other = None;
            let mut args = args.peekable();
            if args.peek().map(String::as_str) == Some("--max-other") {
                args.next();
                let v = args.next().context("--max-other needs a percentage")?;
                max_other = Some(v.parse::<f64>().context("--max-other is a percentage")?);
            }
            for path in args {
                let text = std::fs::read(&path).with_context(|| format!("cannot read {path}"))?;
                let r: Report =
                    serde_json::from_slice(&text).with_context(|| format!("bad report {path}"))?;
                reports.push(r);
            }
            if let Some(max) = max_other {
                let before = reports.len();
                reports.retain(|r| 100.0 * r.other_cpu_secs / r.elapsed_secs.max(1e-9) <= max);
                if reports.len() < before {
                    println!(
                        "(left out {} of {before} runs during which the rest of the machine used more than {max}% of a core)",
                        before - reports.len()
                    );
                }
            }
            print!("{}", report::table(&reports));
            Ok(0)
        }
        _ => bail!("usage: loadgen run --scenario FILE --target HOST:PORT ... | loadgen table REPORT.json..."),
    }
}

fn run(args: Vec<String>) -> anyhow::Result<i32> {
    let mut scenario = None;
    let mut target = None;
    let mut api_key = std::env::var("API_KEY").unwrap_or_else(|_| "bench-key-0123456789".into());
    let mut pixel_key =
        std::env::var("PIXEL_KEY").unwrap_or_else(|_| "bench-pixel-key-0123456789".into());
    let mut label = "gateway".to_owned();
    let mut baseline = false;
    let mut brokers = None;
    let mut topic = "conversions".to_owned();
    let mut pids = Vec::new();
    let mut out = PathBuf::from("load-tests/out");
    let mut name = None;
    let mut syscalls = false;
    let (mut rate, mut duration, mut concurrency, mut max_requests) = (None, None, None, None);
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--scenario" => scenario = Some(Scenario::from_file(&PathBuf::from(value()?))?),
            "--target" => target = Some(value()?.parse().context("--target is HOST:PORT")?),
            "--api-key" => api_key = value()?,
            "--pixel-key" => pixel_key = value()?,
            "--label" => label = value()?,
            "--baseline" => baseline = true,
            "--brokers" => brokers = Some(value()?),
            "--topic" => topic = value()?,
            "--pid" => pids.push(value()?.parse().context("--pid is a number")?),
            "--syscalls" => syscalls = true,
            "--out" => out = PathBuf::from(value()?),
            "--name" => name = Some(value()?),
            "--rate" => rate = Some(value()?.parse::<f64>().context("--rate is a number")?),
            "--duration" => {
                duration = Some(value()?.parse::<f64>().context("--duration is seconds")?)
            }
            "--concurrency" => {
                concurrency = Some(
                    value()?
                        .parse::<usize>()
                        .context("--concurrency is a number")?,
                )
            }
            "--max-requests" => {
                max_requests = Some(
                    value()?
                        .parse::<u64>()
                        .context("--max-requests is a number")?,
                )
            }
            other => bail!("unknown option {other}"),
        }
    }
    let mut scenario = scenario.context("--scenario is required")?;
    if let Some(r) = rate {
        scenario.rate = r;
    }
    if let Some(d) = duration {
        scenario.duration_secs = d;
    }
    if let Some(c) = concurrency {
        scenario.concurrency = c;
    }
    if let Some(m) = max_requests {
        scenario.max_requests = m;
    }
    let stem = name.unwrap_or_else(|| format!("{}-{label}", scenario.name));
    let settings = Settings {
        scenario,
        target: target.context("--target is required")?,
        api_key,
        pixel_key,
        label,
        check_replies: !baseline,
        kafka: if baseline {
            None
        } else {
            brokers.map(|brokers| Kafka { brokers, topic })
        },
        pids,
        syscalls_csv: syscalls.then(|| out.join(format!("{stem}.syscalls.csv"))),
        run_id: None,
    };
    let report = postback_load::run(&settings)?;
    print!("{}", report.summary());
    postback_load::write(&report, &out, &stem)?;
    println!("  wrote {}/{stem}.json and .svg", out.display());
    let delivery_ok = report.verification.as_ref().is_none_or(|v| v.passed);
    let replies_ok = !report.errors.contains_key("unexpected_reply")
        && !report.errors.contains_key("pixel_not_gif");
    Ok(if delivery_ok && replies_ok { 0 } else { 1 })
}

//! The subcommands that do not run the gateway: `check-config`,
//! `postback-url`, `test-fire` and `events`, each printing its result and
//! returning the exit code.

use std::process::ExitCode;
use std::sync::Arc;

use super::gateway::runtime;
use super::{events as topic, testfire, EX_USAGE};
use crate::config::{kafka as kafka_config, Config, ProcessEnv};
use crate::source::url::{source_urls, UrlError};
use crate::source::{Source, Sources};

/// Exit code for a network whose values the source would refuse (EX_DATAERR).
const EX_DATAERR: u8 = 65;
/// Exit code for a failed `check-config --connect` (EX_UNAVAILABLE).
const EX_UNAVAILABLE: u8 = 69;

/// `check-config`: the warnings, the sources, the cluster and the effective
/// producer settings; with `connect`, the preflight against the cluster.
pub fn check_config(config: &Config, connect: bool) -> ExitCode {
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    if config.kafka.brokers.is_some() {
        if let Err(e) = kafka_config::check_client(&config.kafka) {
            eprintln!("The config has 1 problem(s):\n  - {e}");
            return ExitCode::from(EX_USAGE);
        }
    }
    match &config.sources {
        Some(s) => {
            let mut names: Vec<&str> = s.names().collect();
            names.sort_unstable();
            println!(
                "The config is valid: {} source(s): {}.",
                names.len(),
                names.join(", ")
            );
        }
        None => println!("The config is valid (no sources: the default source only)."),
    }
    match &config.kafka.brokers {
        Some(b) => println!(
            "Kafka: {} at {}; producer settings: {}",
            config.kafka.topic,
            b.escape_debug(),
            kafka_config::effective(&config.kafka)
        ),
        None => println!(
            "Kafka: the embedded in-memory cluster (KAFKA_BROKERS=embedded, or nothing \
             configured): events are lost at exit"
        ),
    }
    if connect {
        return preflight(config);
    }
    ExitCode::SUCCESS
}

/// Prints the URLs to hand to one sender: the postback URL on stdout's first
/// line, the pixel URL (if the source takes pixels) on the second.
pub fn postback_url(config: &Config, name: &str, base: &str, network: Option<&str>) -> ExitCode {
    let source = match find_source(config, name) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let name = &source.name;
    match source_urls(&source, base, network) {
        Ok(urls) => {
            println!("{}", urls.postback);
            let has_pixel = urls.pixel.is_some();
            if let Some(p) = urls.pixel {
                println!("{p}");
            }
            let network = network.or(source.url.network.as_deref());
            eprintln!(
                "Line 1 is the postback URL for source {name} (format {}{}){}.",
                source.platform,
                network.map_or(String::new(), |n| format!(", macros of {n}")),
                if has_pixel {
                    "; line 2 is its pixel URL"
                } else {
                    ""
                }
            );
            if !urls.placeholders.is_empty() {
                eprintln!(
                    "Replace {} with the macros of the network that fires into this source \
                     (drop a parameter it has no macro for, unless it is the click id), or name \
                     the network with --network ({}). Left as they are, the gateway refuses them.",
                    urls.placeholders.join(", "),
                    crate::source::presets::network_names().join(", ")
                );
            }
            for note in urls.notes {
                eprintln!("{note}");
            }
            ExitCode::SUCCESS
        }
        Err(UrlError::Usage(e)) => {
            eprintln!("{e}");
            ExitCode::from(EX_USAGE)
        }
        Err(UrlError::Mismatch(e)) => {
            eprintln!("{e}");
            ExitCode::from(EX_DATAERR)
        }
    }
}

/// The sources of `config`, or the default source when none are configured.
fn configured_sources(config: &Config) -> Result<Arc<Sources>, ExitCode> {
    config.serving().map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EX_USAGE)
    })
}

/// The source named by `--source`; a usage error names the ones there are.
fn find_source(config: &Config, name: &str) -> Result<Arc<Source>, ExitCode> {
    let sources = configured_sources(config)?;
    match sources.get(name) {
        Some(s) => Ok(s.clone()),
        None => {
            let mut names: Vec<&str> = sources.names().collect();
            names.sort_unstable();
            eprintln!("No source {name:?}; the sources are: {}.", names.join(", "));
            Err(ExitCode::from(EX_USAGE))
        }
    }
}

/// What `test-fire` was asked to fire, and where to read its event back.
pub struct Fire {
    /// The source, as named in the config.
    pub source: String,
    /// The gateway's URL.
    pub target: String,
    /// The network whose test conversion to send.
    pub network: Option<String>,
    /// What to trust for an `https://` target instead of the public roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// `--brokers` or `KAFKA_BROKERS`; else the config file's.
    pub brokers: Option<String>,
}

/// `test-fire`: one test conversion as the network would send it, its
/// verdict, and its event read back from Kafka.
pub fn test_fire(config: &Config, args: Fire) -> ExitCode {
    let source = match find_source(config, &args.source) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let shot = match testfire::shot(&source, args.network.as_deref(), &args.target) {
        Ok(s) => s,
        Err(UrlError::Usage(e)) => {
            eprintln!("{e}");
            return ExitCode::from(EX_USAGE);
        }
        Err(UrlError::Mismatch(e)) => {
            eprintln!("{e}");
            return ExitCode::from(EX_DATAERR);
        }
    };
    match &shot.body {
        Some(b) => println!("POST {}\n  body: {b}", shot.url),
        None => println!("GET {}", shot.url),
    }
    let timeout = std::time::Duration::from_secs(10);
    let reply = match testfire::fire(&shot, timeout, args.ca_file.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            println!("no reply: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("reply: {} {}", reply.status, reply.body);
    let accepted = reply.status == 200 && reply.body.starts_with("OK ");
    let Some(brokers) = args.brokers.or_else(|| config.kafka.brokers.clone()) else {
        println!("event: not read back (name the cluster with --brokers or KAFKA_BROKERS)");
        return if accepted {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    };
    if !accepted {
        return ExitCode::FAILURE;
    }
    match topic::find_event(
        &config.kafka,
        &brokers,
        &shot.token,
        std::time::Duration::from_secs(15),
    ) {
        Ok(Some(event)) => {
            println!("event: {event}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!(
                "event: none keyed {} in {} within 15 s",
                shot.token, config.kafka.topic
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("event: cannot read {}: {e:#}", config.kafka.topic);
            ExitCode::FAILURE
        }
    }
}

/// `check-config --connect`: one line per check, exit 0 when none failed.
fn preflight(config: &Config) -> ExitCode {
    let Some(brokers) = &config.kafka.brokers else {
        eprintln!(
            "--connect: the config names no cluster (the embedded one runs inside the gateway)"
        );
        return ExitCode::from(EX_USAGE);
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let checks = runtime.block_on(crate::preflight::run(
        &config.kafka,
        brokers,
        std::time::Duration::from_secs(10),
    ));
    for c in &checks {
        println!("{c}");
    }
    if checks
        .iter()
        .any(|c| c.verdict == crate::preflight::Verdict::Fail)
    {
        ExitCode::from(EX_UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    }
}

/// The process environment for the tools: `KAFKA_BROKERS` defaults to the
/// embedded cluster, so a deployment's config file without brokers still
/// names its sources (the brokers come with `--brokers` where needed).
pub struct ToolEnv;

impl crate::config::Env for ToolEnv {
    fn var(&self, name: &str) -> Option<String> {
        ProcessEnv
            .var(name)
            .or_else(|| (name == "KAFKA_BROKERS").then(|| crate::config::EMBEDDED.to_owned()))
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        ProcessEnv.with_prefix(prefix)
    }
}

/// `events`: prints the topic's events to stdout.
pub fn events(
    config: &Config,
    brokers: Option<String>,
    follow: bool,
    count: Option<u64>,
) -> ExitCode {
    let Some(brokers) = brokers.or_else(|| config.kafka.brokers.clone()) else {
        eprintln!("events: name the cluster with --brokers or KAFKA_BROKERS");
        return ExitCode::from(EX_USAGE);
    };
    let mut out = std::io::stdout().lock();
    match topic::print_events(&config.kafka, &brokers, follow, count, &mut out) {
        Ok(n) => {
            eprintln!("{n} event(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("events: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `postback-gateway` binary: parse the command line, load the config,
//! start the embedded cluster when no brokers are named, bind, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use postback_gateway::config::{Config, ProcessEnv};
use postback_gateway::sink::embedded::Embedded;
use postback_gateway::{run, Listeners};
use tracing::{info, warn};

const USAGE: &str = "usage:
  postback-gateway [--config PATH]               run the gateway
  postback-gateway check-config [--config PATH]  validate a config and print every problem (exit 64 on any)";

/// Exit code for a bad config or usage (sysexits' EX_USAGE).
const EX_USAGE: u8 = 64;

enum Command {
    Run,
    CheckConfig,
}

fn parse_args() -> Result<(Command, Option<PathBuf>), String> {
    let mut args = std::env::args().skip(1);
    let mut command = Command::Run;
    let mut config = std::env::var_os("POSTBACK_CONFIG").map(PathBuf::from);
    while let Some(a) = args.next() {
        match a.as_str() {
            "check-config" => command = Command::CheckConfig,
            "--config" => config = Some(args.next().ok_or("--config needs a path")?.into()),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((command, config))
}

fn main() -> ExitCode {
    let (command, path) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let config = match Config::load(path.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("The config has {} problem(s):", errors.0.len());
            for e in &errors.0 {
                eprintln!("  - {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Command::CheckConfig = command {
        println!("The config is valid.");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postback-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    // Held until the end of serve(): dropping it stops the cluster.
    let mut embedded = None;
    if config.kafka.brokers.is_none() {
        let e = Embedded::start(&config.kafka.topic, config.kafka.topic_partitions)
            .context("cannot start the embedded Kafka cluster")?;
        let bootstrap = e.bootstrap_servers();
        warn!(
            bootstrap = %bootstrap,
            "No KAFKA_BROKERS named: running on an EMBEDDED in-process Kafka cluster. \
             Events live in memory only and are lost when the gateway stops."
        );
        eprintln!("\n  EMBEDDED KAFKA (memory only, for trying things out): bootstrap {bootstrap}");
        eprintln!(
            "  read events with: kcat -b {bootstrap} -t {} -C -f '%k %s\\n'\n",
            config.kafka.topic
        );
        config.kafka.brokers = Some(bootstrap);
        embedded = Some(e);
    }
    if config.api_key.is_none() {
        let key = random_key();
        eprintln!("  api key of the default source (set POSTBACK_API_KEY to choose one): {key}\n");
        config.api_key = Some(key);
    }
    let listeners = Listeners::bind(&config).await?;
    info!(public = %listeners.public_addr(), admin = %listeners.admin_addr(), "Listening.");
    run(config, listeners, shutdown_signal()).await?;
    drop(embedded);
    Ok(())
}

fn random_key() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once
/// (what was acknowledged is already in Kafka or in the spool).
async fn shutdown_signal() {
    one_signal().await;
    tokio::spawn(async {
        one_signal().await;
        eprintln!("postback-gateway: second signal, exiting now");
        std::process::exit(130);
    });
}

async fn one_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

//! The `postback-gateway` binary's commands: its command line (here:
//! subcommands with their own flags, environment fallbacks declared on the
//! flags that have one, `--version` with the build's commit and librdkafka;
//! any usage error exits 64, EX_USAGE, like a bad config), the gateway run
//! ([`gateway`]), and the tools ([`tools`]) with the readers they use: the
//! `events` reader of the topic and `test-fire`'s shot. `main.rs` parses and
//! dispatches to them; nothing else in the library uses this module.
#![warn(missing_docs)]

use std::path::PathBuf;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

mod events;
pub mod gateway;
mod testfire;
pub mod tools;

/// Environment variables read by the gateway itself (listed in `--help`);
/// the flags' own fallbacks are shown beside each flag.
const ENVIRONMENT: &str = "\
Environment (the config file's settings, overridden):
  LISTEN_ADDR, ADMIN_ADDR, KAFKA_BROKERS, KAFKA_TOPIC, POSTBACK_API_KEY,
  POSTBACK_PIXEL_KEY, POSTBACK_ADMIN_TOKEN, SPOOL_DIR, RUST_LOG, LOG_FORMAT,
  KAFKA_PROPERTY_* (docs/configuration.md)

SIGHUP reloads the sources from the config file; a config with problems is refused.";

/// Takes in affiliate conversion postbacks over HTTP, drops exact repeats and
/// writes one event per conversion to Kafka. Without a subcommand, runs the gateway.
#[derive(Debug, Parser)]
#[command(name = "postback-gateway", after_help = ENVIRONMENT)]
pub struct Cli {
    /// The TOML config file.
    #[arg(long, global = true, value_name = "PATH", env = "POSTBACK_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do; `None` runs the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of running the gateway.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config and print every problem (exit 64 on any).
    CheckConfig {
        /// Also check the cluster, the topic and the gateway's rights on it (exit 69 on a failure).
        #[arg(long)]
        connect: bool,
    },
    /// Print the postback URL to hand to a sender, with the macros of the network that fires into it.
    PostbackUrl {
        /// The source, as named in the config (`default` without one).
        #[arg(long, value_name = "NAME")]
        source: String,
        /// Where senders reach the gateway, e.g. https://pb.example.com.
        #[arg(long, value_name = "URL")]
        base_url: String,
        /// The network whose macros fill the URL.
        #[arg(long, value_name = "NET")]
        network: Option<String>,
    },
    /// Fire a test conversion as a network would at a running gateway; print the verdict and the event.
    TestFire {
        /// The source, as named in the config (`default` without one).
        #[arg(long, value_name = "NAME")]
        source: String,
        /// The gateway's URL: its listener (http://HOST:PORT) or the address networks are given.
        #[arg(long, value_name = "URL")]
        target: String,
        /// The network whose test conversion to send.
        #[arg(long, value_name = "NET")]
        network: Option<String>,
        /// PEM certificates to trust for an https:// target (a private CA); else the public roots.
        #[arg(long, value_name = "PATH", env = "SSL_CERT_FILE")]
        ca_file: Option<PathBuf>,
        /// Where the event is read back from.
        #[command(flatten)]
        cluster: Cluster,
    },
    /// Print the topic's events, one `key value` line each.
    Events {
        /// Where the events are read from.
        #[command(flatten)]
        cluster: Cluster,
        /// Keep waiting for new events.
        #[arg(long)]
        follow: bool,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print a shell completion script (e.g. `completions bash > /etc/bash_completion.d/postback-gateway`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// The cluster a tool reads from.
#[derive(Debug, Args)]
pub struct Cluster {
    /// Bootstrap servers to read the topic from (else the config file's).
    #[arg(long, value_name = "HOST:PORT", env = "KAFKA_BROKERS")]
    brokers: Option<String>,
}

impl Cluster {
    /// The brokers named on the command line or in `KAFKA_BROKERS`; the
    /// embedded cluster lives inside a gateway, so naming it names none.
    pub fn brokers(&self) -> Option<String> {
        self.brokers
            .clone()
            .filter(|b| !b.trim().is_empty() && b.trim() != crate::config::EMBEDDED)
    }
}

/// Exit code for a bad config or usage (sysexits' EX_USAGE).
pub const EX_USAGE: u8 = 64;

/// The command line, or the exit code after printing help, the version or
/// the usage error.
pub fn parse() -> Result<Cli, u8> {
    let command = Cli::command().version(version());
    let parsed = command
        .try_get_matches()
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m));
    parsed.map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            EX_USAGE
        } else {
            0
        }
    })
}

/// Prints the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "postback-gateway",
        &mut std::io::stdout(),
    );
}

/// `0.1.0 (commit abc123)` and librdkafka's version and built-in features.
fn version() -> String {
    let (_, rdkafka) = rdkafka::util::get_rdkafka_version();
    let features = rdkafka::ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    format!(
        "{} (commit {})\nlibrdkafka {rdkafka} (features: {features})",
        env!("CARGO_PKG_VERSION"),
        env!("POSTBACK_GIT_COMMIT")
    )
}

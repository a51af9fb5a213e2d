//! Running the gateway (the binary without a subcommand): logs, the
//! process's limits, the embedded cluster when no brokers are named, a first
//! run's keys, the signals, then [`crate::run`].

use std::process::ExitCode;

use anyhow::Context as _;
use tracing::{info, warn};

use super::EX_USAGE;
use crate::config::{Config, LogFormat, DEFAULT_HASH_KEY, DEFAULT_LOG_FILTER};
use crate::sink::embedded::Embedded;
use crate::{run, Listeners};

/// Runs the gateway on `config` until SIGTERM or SIGINT, and returns the
/// process's exit code.
pub fn main(config: Config) -> ExitCode {
    // Only the embedded first run makes up a key for the default
    // source: a deployment's is chosen, never printed into its logs.
    if config.kafka.brokers.is_some() && config.sources.is_none() && config.api_key.is_none() {
        eprintln!(
            "The config has 1 problem(s):\n  - {}",
            crate::config::no_sources()
        );
        return ExitCode::from(EX_USAGE);
    }
    init_logs(&config);
    match crate::os::raise_open_files() {
        Ok((before, after)) => info!(before, after, "Open-file limit."),
        Err(e) => warn!(error = %e, "Cannot raise the open-file limit."),
    }
    if config.dedup.hash_key == DEFAULT_HASH_KEY {
        warn!(
            "[dedup] hash_key is the built-in default: set a secret one, the same on every \
             instance, so that nobody can compute dedup keys (and aim at them) from outside."
        );
    }
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut embedded = None;
    let result = runtime.block_on(serve(config, &mut embedded));
    // A reader of the topic (the warm-up, the drainer's look-back) may still
    // run on a blocking thread; it holds nothing that needs finishing.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    // The embedded cluster goes last: its clients are gone by now, so none
    // of them reports the brokers down on the way out.
    drop(embedded);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postback-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stdout: text for a person (the default), or one JSON object
/// per line for a log shipper.
fn init_logs(config: &Config) {
    let logs = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_new(&config.log_filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
    );
    match config.log_format {
        // The message and the fields at the top level, beside timestamp,
        // level and target: what Loki, Elasticsearch and Datadog index.
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colour codes only for a person at a terminal, not in collected logs.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
}

/// Runs the gateway; the embedded cluster, when one is started, is left in
/// `embedded` for the caller to stop after the runtime.
async fn serve(mut config: Config, embedded: &mut Option<Embedded>) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM during the start (the topic's warm-up can
    // take minutes) then stops the gateway in order instead of killing it.
    let shutdown = shutdown_signal();
    if config.kafka.brokers.is_none() {
        let e = Embedded::start(&config.kafka.topic, config.kafka.topic_partitions)
            .context("cannot start the embedded Kafka cluster")?;
        if !config.kafka.properties.is_empty() {
            warn!("The Kafka properties are not used on the embedded cluster (plain TCP, no authentication).");
            config.kafka.properties.clear();
        }
        config.kafka.embedded = true;
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
        *embedded = Some(e);
        // Trying things out: a console to look at. A deployment names its
        // own token; a generated one is never printed into its logs.
        if config.admin.token.is_none() {
            let token = random_key();
            eprintln!(
                "  admin console (set POSTBACK_ADMIN_TOKEN to choose its token): http://{}/#token={token}",
                config.admin_addr
            );
            config.admin.token = Some(token);
        }
    }
    if config.admin.token.is_none() {
        info!("The admin console is closed: set POSTBACK_ADMIN_TOKEN (or [admin] token_file) to open it.");
    }
    for w in &config.warnings {
        warn!("{}", w.escape_debug());
    }
    if config.sources.is_some() {
        if config.api_key.is_some() {
            warn!("POSTBACK_API_KEY is ignored: the config file names sources, each with its own keys.");
        }
    } else if config.api_key.is_none() {
        // Only for trying things out: a deployment's key is chosen, never
        // made up and printed into its logs.
        let key = random_key();
        eprintln!("  api key of the default source (set POSTBACK_API_KEY to choose one): {key}");
        let mut addr = config.listen_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        eprintln!("  try: curl 'http://{addr}/postback?api_key={key}&tracking=test-1&amount=1.00'");
        // Pixels too: their key is a separate one, since it sits in public pages.
        if config.pixel_key.is_none() {
            let pixel = random_key();
            eprintln!(
                "  pixel key of the default source (set POSTBACK_PIXEL_KEY to choose one): {pixel}"
            );
            eprintln!(
                "  try: curl -i 'http://{addr}/pixel?api_key={pixel}&tracking=test-2&amount=1.00'"
            );
            config.pixel_key = Some(pixel);
        }
        eprintln!();
        config.api_key = Some(key);
    }
    let listeners = Listeners::bind(&config).await?;
    info!(public = %listeners.public_addr(), admin = %listeners.admin_addr(), "Listening.");
    run(config, listeners, shutdown).await
}

/// The runtime `builder` makes, or the exit code after saying why not.
pub(crate) fn runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn random_key() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on the
/// first of them, and a second one exits at once (what was acknowledged is
/// already in Kafka or in the spool).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut signals = Signals::install();
    async move {
        signals.next().await;
        // Not one of `run`'s tasks: it must outlive the drain it cuts short,
        // and the process ends with it.
        tokio::spawn(async move {
            signals.next().await;
            eprintln!("postback-gateway: second signal, exiting now");
            std::process::exit(130);
        });
    }
}

/// SIGTERM and SIGINT, each as a stream.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate());
            let int = signal(SignalKind::interrupt());
            // SIGHUP's default is to end the process: installed now, a reload
            // signal sent while the gateway starts is ignored instead (the
            // reload listener takes over once the gateway serves). Tokio keeps
            // a handler installed for the life of the process.
            if let Err(e) = signal(SignalKind::hangup()) {
                warn!(error = %e, "Cannot install the SIGHUP handler.");
            }
            if let Err(e) = term.as_ref().and(int.as_ref()) {
                warn!(error = %e, "Cannot install a signal handler.");
            }
            Signals {
                term: term.ok(),
                int: int.ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn on(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = on(&mut self.term) => {}
                _ = on(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

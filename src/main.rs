//! The `postback-gateway` binary: parse the command line, load the config,
//! start the embedded cluster when no brokers are named, bind, run.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use postback_gateway::config::{kafka as kafka_config, Config, LogFormat, ProcessEnv};
use postback_gateway::sink::embedded::Embedded;
use postback_gateway::source::url::{source_urls, UrlError};
use postback_gateway::source::{Source, Sources};
use postback_gateway::testfire;
use postback_gateway::{run, Listeners};
use tracing::{info, warn};

use cli::{Command, EX_USAGE};

mod cli;

/// The request path makes many small, short-lived allocations; mimalloc serves
/// them from per-thread pages where glibc's malloc splits and consolidates chunks.
/// Its 2.x line (the crate's `v2` feature): 3.x spent about a tenth more CPU per
/// postback here, much of it handing pages back and forth with its arenas.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a network whose values the source would refuse (EX_DATAERR).
const EX_DATAERR: u8 = 65;
/// Exit code for a failed `check-config --connect` (EX_UNAVAILABLE).
const EX_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    postback_gateway::sink::native::no_transparent_huge_pages();
    let cli = match cli::parse() {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    if let Some(Command::Completions { shell }) = cli.command {
        cli::completions(shell);
        return ExitCode::SUCCESS;
    }
    // The tools that only read the sources (or name their own brokers) run
    // on a deployment's config file without its brokers.
    let tool_env = ToolEnv;
    let env: &dyn postback_gateway::config::Env = match cli.command {
        None | Some(Command::CheckConfig { .. }) => &ProcessEnv,
        _ => &tool_env,
    };
    let config = match Config::load(cli.config.as_deref(), env) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("The config has {} problem(s):", errors.0.len());
            for e in &errors.0 {
                eprintln!("  - {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli.command {
        Some(Command::CheckConfig { connect }) => {
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
                return preflight(&config);
            }
            return ExitCode::SUCCESS;
        }
        Some(Command::PostbackUrl {
            source,
            base_url,
            network,
        }) => return postback_url(&config, &source, &base_url, network.as_deref()),
        Some(Command::TestFire {
            source,
            target,
            network,
            ca_file,
            cluster,
        }) => {
            let fire = Fire {
                source,
                target,
                network,
                ca_file,
                brokers: cluster.brokers(),
            };
            return test_fire(&config, fire);
        }
        Some(Command::Events {
            cluster,
            follow,
            count,
        }) => return events(&config, cluster.brokers(), follow, count),
        Some(Command::Completions { .. }) => return ExitCode::SUCCESS,
        None => {
            // Only the embedded first run makes up a key for the default
            // source: a deployment's is chosen, never printed into its logs.
            if config.kafka.brokers.is_some()
                && config.sources.is_none()
                && config.api_key.is_none()
            {
                eprintln!(
                    "The config has 1 problem(s):\n  - no sources are configured and \
                     POSTBACK_API_KEY is not set: set the default source's key ({}) or \
                     configure [sources]",
                    postback_gateway::source::KEY_RULE
                );
                return ExitCode::from(EX_USAGE);
            }
        }
    }
    init_logs(&config);
    postback_gateway::sink::native::keep_c_heap();
    match postback_gateway::sink::native::raise_open_files() {
        Ok((before, after)) => info!(before, after, "Open-file limit."),
        Err(e) => warn!(error = %e, "Cannot raise the open-file limit."),
    }
    if config.dedup.hash_key == postback_gateway::config::DEFAULT_HASH_KEY {
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
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
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
        eprintln!("  api key of the default source (set POSTBACK_API_KEY to choose one): {key}\n");
        config.api_key = Some(key);
    }
    let listeners = Listeners::bind(&config).await?;
    info!(public = %listeners.public_addr(), admin = %listeners.admin_addr(), "Listening.");
    run(config, listeners, shutdown).await
}

/// Prints the URLs to hand to one sender: the postback URL on stdout's first
/// line, the pixel URL (if the source takes pixels) on the second.
fn postback_url(config: &Config, name: &str, base: &str, network: Option<&str>) -> ExitCode {
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
                    postback_gateway::source::presets::network_names().join(", ")
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
    match (&config.sources, &config.api_key) {
        (Some(s), _) => Ok(s.clone()),
        (None, Some(key)) => Ok(Arc::new(Sources::single_default(
            key.clone(),
            config.pixel_key.clone(),
        ))),
        (None, None) => {
            eprintln!(
                "No sources are configured and POSTBACK_API_KEY is not set, so the default \
                 source's key is random at each start; set POSTBACK_API_KEY first."
            );
            Err(ExitCode::from(EX_USAGE))
        }
    }
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
struct Fire {
    source: String,
    target: String,
    network: Option<String>,
    /// What to trust for an `https://` target instead of the public roots.
    ca_file: Option<std::path::PathBuf>,
    /// `--brokers` or `KAFKA_BROKERS`; else the config file's.
    brokers: Option<String>,
}

/// `test-fire`: one test conversion as the network would send it, its
/// verdict, and its event read back from Kafka.
fn test_fire(config: &Config, args: Fire) -> ExitCode {
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
    match postback_gateway::sink::tail::find_event(
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

/// The runtime `builder` makes, or the exit code after saying why not.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
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
    let checks = runtime.block_on(postback_gateway::preflight::run(
        &config.kafka,
        brokers,
        std::time::Duration::from_secs(10),
    ));
    for c in &checks {
        println!("{c}");
    }
    if checks
        .iter()
        .any(|c| c.verdict == postback_gateway::preflight::Verdict::Fail)
    {
        ExitCode::from(EX_UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    }
}

/// The process environment for the tools: `KAFKA_BROKERS` defaults to the
/// embedded cluster, so a deployment's config file without brokers still
/// names its sources (the brokers come with `--brokers` where needed).
struct ToolEnv;

impl postback_gateway::config::Env for ToolEnv {
    fn var(&self, name: &str) -> Option<String> {
        ProcessEnv.var(name).or_else(|| {
            (name == "KAFKA_BROKERS").then(|| postback_gateway::config::EMBEDDED.to_owned())
        })
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        ProcessEnv.with_prefix(prefix)
    }
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

/// `events`: prints the topic's events to stdout.
fn events(config: &Config, brokers: Option<String>, follow: bool, count: Option<u64>) -> ExitCode {
    let Some(brokers) = brokers.or_else(|| config.kafka.brokers.clone()) else {
        eprintln!("events: name the cluster with --brokers or KAFKA_BROKERS");
        return ExitCode::from(EX_USAGE);
    };
    let mut out = std::io::stdout().lock();
    match postback_gateway::sink::tail::print_events(
        &config.kafka,
        &brokers,
        follow,
        count,
        &mut out,
    ) {
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

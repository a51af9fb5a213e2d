//! Typed configuration: an optional TOML file, then the environment variables
//! on top (docs/configuration.md). Every problem is collected and reported
//! together, so an operator fixes a config in one pass; a config with problems never starts a server.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::source::Sources;

pub mod admin;
pub mod kafka;

/// Where settings come from besides the file. A trait, so tests pass a map
/// instead of mutating the process environment.
pub trait Env {
    /// The value of the variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;

    /// Every variable whose name starts with `prefix`, with its value.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    /// A variable set to the empty string is `Some("")`: the config decides
    /// what that means (unset for most; an error for `KAFKA_BROKERS`).
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The public listener (`LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// The metrics and health listener (`ADMIN_ADDR`).
    pub admin_addr: SocketAddr,
    /// The cluster, topic and producer settings.
    pub kafka: KafkaConfig,
    /// Key of the `default` source; `None` means a random one is made at start.
    pub api_key: Option<String>,
    /// Allowed but risky settings, said by `check-config` and logged at start.
    pub warnings: Vec<String>,
    /// Pixel key of the `default` source (`POSTBACK_PIXEL_KEY`); without one
    /// it takes no pixels, as its api key must never sit in a public page.
    pub pixel_key: Option<String>,
    /// Where the durable spool lives (`SPOOL_DIR`).
    pub spool_dir: PathBuf,
    /// The spool's bounds and write deadline.
    pub spool: SpoolConfig,
    /// The log filter (`RUST_LOG`).
    pub log_filter: String,
    /// How log lines are written (`LOG_FORMAT`, `[log] format`).
    pub log_format: LogFormat,
    /// Request size, time and rate limits.
    pub limits: Limits,
    /// The dedup window's length, bound and hash key.
    pub dedup: DedupConfig,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// The configured sources; `None` runs the single `default` source with `api_key`.
    pub sources: Option<Arc<Sources>>,
    /// The file this config came from, read again on SIGHUP.
    pub path: Option<PathBuf>,
    /// Requests the admin console keeps per source (`[console] recent_per_source`); 0 keeps none.
    pub console_recent: usize,
    /// Who may read the console (`POSTBACK_ADMIN_TOKEN`, `[admin]`).
    pub admin: crate::config::admin::AdminAccess,
    /// A listener of its own for `/metrics`, `/healthz` and `/readyz` only
    /// (`[admin] metrics_addr`), so that they can be exposed without the console.
    pub metrics_addr: Option<SocketAddr>,
}

// The defaults of `Config`, each with its reason; docs/configuration.md states
// them too (a test in tests/it/docs.rs holds the two together).

/// `LISTEN_ADDR`: every interface, as senders reach the gateway from elsewhere.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
/// `ADMIN_ADDR`: loopback, so that metrics and the console are never public
/// unless a deployment opens them.
pub const DEFAULT_ADMIN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
/// `SPOOL_DIR`: beside the working directory, for a first run; a deployment
/// names a volume of its own.
pub const DEFAULT_SPOOL_DIR: &str = "./spool";
/// `RUST_LOG`: one line per start, stop and problem, none per request.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// `shutdown_grace_ms`: time for open requests to get their acknowledgement;
/// deploy/k8s's `terminationGracePeriodSeconds` (45) covers it and the flush after it.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
/// Where events go and how the producer sends them (`[kafka]`).
pub struct KafkaConfig {
    /// Bootstrap servers; `None` starts the embedded cluster (nothing
    /// configured at all, or `KAFKA_BROKERS=embedded`).
    pub brokers: Option<String>,
    /// The topic for events (`KAFKA_TOPIC`), created at start when missing.
    pub topic: String,
    /// Kept small: the reply waits for the acknowledgement, so batching
    /// should come from concurrency, not from waiting.
    pub linger_ms: f64,
    /// Longest wait for a delivery acknowledgement before the request fails.
    pub delivery_wait: Duration,
    /// Partitions and replication factor used when the topic has to be created.
    pub topic_partitions: i32,
    /// Replication factor used when the topic has to be created; `None`
    /// is three, or fewer when the cluster has fewer brokers.
    pub topic_replication: Option<i32>,
    /// `min.insync.replicas` of a topic the gateway creates; `None` is two
    /// when the topic has three replicas or more, else the broker's default.
    pub topic_min_insync_replicas: Option<i32>,
    /// Whether `brokers` is the embedded in-memory cluster (set when it starts).
    pub embedded: bool,
    /// librdkafka properties (`security.protocol`, `sasl.*`, ...), from the
    /// file, secret files and `KAFKA_PROPERTY_*` (see [`kafka`]).
    pub properties: BTreeMap<String, String>,
}

/// `KAFKA_TOPIC`: what the events are.
pub const DEFAULT_TOPIC: &str = "conversions";
/// `[kafka] linger_ms`: a millisecond, as the reply waits for the
/// acknowledgement (see [`KafkaConfig::linger_ms`]).
pub const DEFAULT_LINGER_MS: f64 = 1.0;
/// `[kafka] delivery_wait_ms`: a sender waits this long at most before its
/// event goes to the spool instead.
pub const DEFAULT_DELIVERY_WAIT: Duration = Duration::from_secs(2);
/// `[kafka] topic_partitions`: used only when the gateway creates the topic
/// (a first run); a deployment sizes its own.
pub const DEFAULT_TOPIC_PARTITIONS: i32 = 3;

#[derive(Debug, Clone)]
/// What one request may cost (`[limits]`, docs/configuration.md).
pub struct Limits {
    /// Request line (path and query).
    pub max_uri_bytes: usize,
    /// The header block.
    pub max_header_bytes: usize,
    /// A POST body.
    pub max_body_bytes: usize,
    /// How long a client may take to send the request head.
    pub header_read_timeout: Duration,
    /// How long a whole request may take.
    pub request_timeout: Duration,
    /// Open connections at most (public listener); past it new ones get a 503 and are closed.
    pub max_connections: usize,
    /// Open connections one client address may hold (behind a balancer every
    /// connection comes from the balancer: raise it to `max_connections`).
    pub max_connections_per_client: usize,
    /// The leading bits of an IPv6 address that make one client, for the
    /// per-client rate and connection cap (64 by default).
    pub ipv6_client_prefix: u8,
    /// Postbacks per second per client address (after trusted proxies); `None` is unlimited.
    pub client_rate: Option<crate::ratelimit::Rate>,
}

/// `[limits] max_uri_bytes`: a postback URL with every parameter a network
/// sends, with room to spare.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// `[limits] max_header_bytes`: what browsers and proxies send, cookies included.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// `[limits] max_body_bytes`: a form or JSON postback is a few hundred bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
/// `[limits] header_read_timeout_ms`: a head that trickles in is cut here.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// `[limits] request_timeout_ms`: the body must have arrived by then (408).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// `[limits] max_connections`: bounds the memory and file descriptors that
/// open connections hold; past it a new one gets 503.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `[limits] max_connections_per_client`: a fifth of the connections, so one
/// client cannot hold them all (capped at `max_connections` when that is lower).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 2_000;

#[derive(Debug, Clone)]
/// The durable spool (`[spool]`).
pub struct SpoolConfig {
    /// Bound on the spool's size; past it postbacks get 503 and `/readyz` says not ready.
    pub max_bytes: u64,
    /// Size at which a segment file is sealed and a new one begun.
    pub segment_bytes: u64,
    /// How long a postback waits for the spool's sync before it is answered
    /// 503 (a stalled disk must not hold requests and their dedup keys).
    pub append_timeout: Duration,
}

/// `[spool] max_bytes`: 1 GiB, hours of postbacks at a busy instance's rate.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// `[spool] segment_bytes`: 64 MiB, so a drained part of the spool is freed
/// soon, in few files.
pub const DEFAULT_SPOOL_SEGMENT_BYTES: u64 = 64 << 20;
/// `[spool] append_timeout_ms`: a disk that has not synced by then is stalled,
/// and the sender is better told 503 than held.
pub const DEFAULT_SPOOL_APPEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
/// The dedup window (`[dedup]`).
pub struct DedupConfig {
    /// How long a key is kept (a repeat within it is a duplicate).
    pub window: Duration,
    /// Keys held at most, all pools together.
    pub max_keys: usize,
    /// The share of `max_keys` for keyless (pixel) sources.
    pub public_max_keys: usize,
    /// Key of the 128-bit dedup hash. Every instance behind one balancer and
    /// every restart must share it, so that `dedup_key` means the same everywhere.
    pub hash_key: [u8; 16],
    /// Longest time spent rebuilding the window from Kafka at start.
    pub warmup_limit: Duration,
}

/// `[dedup] window_secs`: a day, longer than networks keep retrying a postback.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// `[dedup] max_keys`: a day of postbacks at about 230 per second, in about
/// 0.8 GB of memory (docs/durability.md).
pub const DEFAULT_DEDUP_MAX_KEYS: usize = 20_000_000;
/// The built-in `[dedup] hash_key`: public, so a deployment should set its own.
pub const DEFAULT_HASH_KEY: [u8; 16] = *b"postback-gateway";
/// `[dedup] warmup_limit_secs`: five minutes of reading the topic back at
/// most, so a start during a slow read still serves (through the spool).
pub const DEFAULT_WARMUP_LIMIT: Duration = Duration::from_secs(300);

/// `[dedup] public_max_keys` when unset: a tenth of the bound for keyless
/// (pixel) sources, the keyed sources' room the rest.
pub const fn default_public_max_keys(max_keys: usize) -> usize {
    let tenth = max_keys / 10;
    if tenth > 0 {
        tenth
    } else {
        1
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: DEFAULT_LISTEN_ADDR,
            admin_addr: DEFAULT_ADMIN_ADDR,
            kafka: KafkaConfig {
                brokers: None,
                topic: DEFAULT_TOPIC.into(),
                linger_ms: DEFAULT_LINGER_MS,
                delivery_wait: DEFAULT_DELIVERY_WAIT,
                topic_partitions: DEFAULT_TOPIC_PARTITIONS,
                topic_replication: None,
                topic_min_insync_replicas: None,
                embedded: false,
                properties: BTreeMap::new(),
            },
            api_key: None,
            pixel_key: None,
            warnings: Vec::new(),
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool: SpoolConfig {
                max_bytes: DEFAULT_SPOOL_MAX_BYTES,
                segment_bytes: DEFAULT_SPOOL_SEGMENT_BYTES,
                append_timeout: DEFAULT_SPOOL_APPEND_TIMEOUT,
            },
            log_filter: DEFAULT_LOG_FILTER.into(),
            log_format: LogFormat::Text,
            limits: Limits {
                max_uri_bytes: DEFAULT_MAX_URI_BYTES,
                max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
                ipv6_client_prefix: crate::ratelimit::DEFAULT_IPV6_PREFIX,
                client_rate: None,
            },
            dedup: DedupConfig {
                window: DEFAULT_DEDUP_WINDOW,
                max_keys: DEFAULT_DEDUP_MAX_KEYS,
                public_max_keys: default_public_max_keys(DEFAULT_DEDUP_MAX_KEYS),
                hash_key: DEFAULT_HASH_KEY,
                warmup_limit: DEFAULT_WARMUP_LIMIT,
            },
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            sources: None,
            path: None,
            console_recent: DEFAULT_RECENT_PER_SOURCE,
            admin: Default::default(),
            metrics_addr: None,
        }
    }
}

/// The file's shape. Unknown keys are errors, so a typo never silently
/// falls back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen_addr: Option<String>,
    admin_addr: Option<String>,
    api_key: Option<String>,
    pixel_key: Option<String>,
    spool_dir: Option<PathBuf>,
    /// A table, or the older filter string: read in `parse`.
    log: Option<toml::Value>,
    shutdown_grace_ms: Option<u64>,
    #[serde(default)]
    kafka: FileKafka,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    dedup: FileDedup,
    #[serde(default)]
    spool: FileSpool,
    #[serde(default)]
    console: FileConsole,
    #[serde(default)]
    admin: FileAdmin,
    /// Checked one by one in `source::config`, so every source's problems are reported.
    #[serde(default)]
    sources: BTreeMap<String, toml::Value>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, for a person (the default).
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message`
    /// and the event's fields), for a log shipper.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format: text or json")),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
/// `[log]`; the older `log = "FILTER"` names the filter alone.
struct FileLogTable {
    filter: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    token: Option<String>,
    /// A file holding the token (a mounted secret).
    token_file: Option<PathBuf>,
    #[serde(default)]
    hosts: Vec<String>,
    metrics_addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConsole {
    recent_per_source: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpool {
    max_bytes: Option<u64>,
    segment_bytes: Option<u64>,
    append_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKafka {
    brokers: Option<String>,
    topic: Option<String>,
    linger_ms: Option<f64>,
    delivery_wait_ms: Option<u64>,
    topic_partitions: Option<i32>,
    topic_replication: Option<i32>,
    topic_min_insync_replicas: Option<i32>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    /// Properties whose values are read from files (mounted secrets).
    #[serde(default)]
    property_files: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_uri_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    ipv6_client_prefix: Option<u8>,
    client_rate_per_second: Option<f64>,
    client_burst: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDedup {
    window_secs: Option<u64>,
    max_keys: Option<usize>,
    public_max_keys: Option<usize>,
    hash_key: Option<String>,
    warmup_limit_secs: Option<u64>,
}

/// Every problem found in a config, each one a sentence.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// A TOML error without the values it quotes: toml's own text shows the
/// offending line, and serde's quotes a wrong value, either of which can be
/// an api key, the hash key or a password in `[kafka.properties]`. Says
/// where (line and column) and what, never the value.
pub(crate) fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = crate::source::config::redact_values(e.message().trim());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what,
    }
}

/// Requests the console keeps per source unless `[console]
/// recent_per_source` says otherwise: enough to see a sender's last test
/// fires, about 460 KiB per source at most.
pub const DEFAULT_RECENT_PER_SOURCE: usize = 200;

/// Why there are no sources to serve: none configured, and no key for the
/// default source.
pub fn no_sources() -> String {
    format!(
        "no sources are configured and POSTBACK_API_KEY is not set: set the default source's \
         key ({}) or configure [sources]",
        crate::source::KEY_RULE
    )
}

impl Config {
    /// The sources this config serves: those it names, else the single
    /// `default` source with `api_key` (and `pixel_key`, if any); `Err` (see
    /// [`no_sources`]) when it names none and has no api key. The one place
    /// the default source is made.
    pub fn serving(&self) -> Result<Arc<crate::source::Sources>, String> {
        match (&self.sources, &self.api_key) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(key)) => Ok(Arc::new(crate::source::Sources::single_default(
                key.clone(),
                self.pixel_key.clone(),
            ))),
            (None, None) => Err(no_sources()),
        }
    }

    /// Loads the file at `path` (if any), then applies `env` on top.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let Some(p) = path else {
            return Config::parse("", env, false);
        };
        let text = std::fs::read_to_string(p)
            .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", p.display())]))?;
        let mut c = Config::from_toml(&text, env)?;
        c.path = Some(p.to_path_buf());
        Ok(c)
    }

    /// Parses the text of a config file, then applies `env` on top, and
    /// validates the result. A file must name the brokers (or `embedded`),
    /// here or in `KAFKA_BROKERS`.
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Config, ConfigErrors> {
        Config::parse(text, env, true)
    }

    fn parse(text: &str, env: &dyn Env, from_file: bool) -> Result<Config, ConfigErrors> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_error(text, &e)]))?;
        let mut errors = Vec::new();
        let mut c = Config::default();
        let var = |name: &str| env.var(name).filter(|v| !v.is_empty());
        c.listen_addr = address(
            "LISTEN_ADDR",
            var("LISTEN_ADDR").or(file.listen_addr),
            c.listen_addr,
            &mut errors,
        );
        c.admin_addr = address(
            "ADMIN_ADDR",
            var("ADMIN_ADDR").or(file.admin_addr),
            c.admin_addr,
            &mut errors,
        );
        c.kafka.brokers = brokers(env, file.kafka.brokers.clone(), from_file, &mut errors);
        if let Some(t) = var("KAFKA_TOPIC").or(file.kafka.topic.clone()) {
            c.kafka.topic = t;
        }
        apply_kafka(&mut c.kafka, file.kafka, env, &mut errors, &mut c.warnings);

        if file.api_key.is_some() && !file.sources.is_empty() {
            errors.push(
                "api_key names the key of the default source when no [sources] are configured; \
                 with sources, give each one its api_keys"
                    .into(),
            );
        }
        c.api_key = var("POSTBACK_API_KEY").or(file.api_key);
        c.pixel_key = var("POSTBACK_PIXEL_KEY").or(file.pixel_key);
        if c.pixel_key.is_some() && c.pixel_key == c.api_key {
            errors.push(
                "POSTBACK_PIXEL_KEY must differ from POSTBACK_API_KEY: a pixel key is public"
                    .into(),
            );
        }
        c.sources = crate::source::config::build(file.sources, &mut errors, &mut c.warnings);
        // The default source's keys follow the rules every source's keys do
        // (ignored when the file names sources).
        for (name, key) in [
            ("POSTBACK_API_KEY (or api_key)", &c.api_key),
            ("POSTBACK_PIXEL_KEY (or pixel_key)", &c.pixel_key),
        ] {
            if c.sources.is_none()
                && key
                    .as_deref()
                    .is_some_and(|k| !crate::source::config::valid_key(k))
            {
                errors.push(format!("{name} must be {}", crate::source::KEY_RULE));
            }
        }
        if let Some(p) = var("SPOOL_DIR").or(file.spool_dir.map(|p| p.display().to_string())) {
            c.spool_dir = PathBuf::from(p);
        }
        let log = match file.log {
            None => FileLogTable::default(),
            Some(toml::Value::String(filter)) => FileLogTable {
                filter: Some(filter),
                format: None,
            },
            Some(table) => FileLogTable::deserialize(table).unwrap_or_else(|e| {
                errors.push(format!(
                    "[log]: {}",
                    crate::source::config::redact_values(e.message().trim())
                ));
                FileLogTable::default()
            }),
        };
        if let Some(l) = var("RUST_LOG").or(log.filter) {
            c.log_filter = l;
        }
        let (format_key, format) = match var("LOG_FORMAT") {
            Some(f) => ("LOG_FORMAT", Some(f)),
            None => ("log.format", log.format),
        };
        if let Some(f) = format {
            match f.parse() {
                Ok(f) => c.log_format = f,
                Err(e) => errors.push(format!("{format_key} = {e}")),
            }
        }
        if let Some(ms) = file.shutdown_grace_ms {
            c.shutdown_grace = Duration::from_millis(ms);
        }
        apply_limits(&mut c.limits, file.limits, &mut errors);
        let mut dedup = file.dedup;
        let hash_key = dedup.hash_key.take();
        apply_dedup(&mut c.dedup, dedup, &mut errors);
        apply_spool(&mut c.spool, file.spool, &mut errors);
        // After the spool's: problems are reported in the order they always were.
        apply_hash_key(&mut c.dedup, hash_key, &mut errors);
        check_dedup_shares(&c, &mut errors);
        if let Some(a) = &file.admin.metrics_addr {
            c.metrics_addr = Some(address(
                "admin.metrics_addr",
                Some(a.clone()),
                c.admin_addr,
                &mut errors,
            ));
        }
        apply_admin(
            &mut c.admin,
            file.admin,
            var("POSTBACK_ADMIN_TOKEN"),
            &mut errors,
        );
        match file.console.recent_per_source {
            Some(n) if n > 10_000 => errors.push(format!(
                "console.recent_per_source = {n}: at most 10000 (each keeps up to 2 KiB per request)"
            )),
            Some(n) => c.console_recent = n,
            None => {}
        }
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// `v` parsed as a socket address, else `default` (and an error for a bad one).
fn address(
    what: &str,
    v: Option<String>,
    default: SocketAddr,
    errors: &mut Vec<String>,
) -> SocketAddr {
    let Some(v) = v else { return default };
    v.parse().unwrap_or_else(|_| {
        errors.push(format!(
            "{what} = {v:?} is not an address like 0.0.0.0:8080"
        ));
        default
    })
}

/// The word that asks for the embedded, in-memory cluster by name.
pub const EMBEDDED: &str = "embedded";

/// `KAFKA_BROKERS`, else the file's; `None` is the embedded cluster. It runs
/// only when asked for by name or when nothing is configured at all: a
/// deployment (a config file) that names no brokers is refused, never
/// acknowledged into memory. Set but empty is a templating mistake too.
fn brokers(
    env: &dyn Env,
    file: Option<String>,
    from_file: bool,
    errors: &mut Vec<String>,
) -> Option<String> {
    let brokers = match env.var("KAFKA_BROKERS") {
        Some(b) if b.trim().is_empty() => {
            errors.push(format!(
                "KAFKA_BROKERS is set but empty: name the brokers (host:port,...), or set \
                 KAFKA_BROKERS={EMBEDDED} for the in-memory cluster (events are lost at exit)"
            ));
            return None;
        }
        Some(b) => Some(b),
        None => file,
    };
    match brokers {
        Some(b) if b.trim() == EMBEDDED => None,
        Some(b) if b.trim().is_empty() => {
            errors.push("kafka.brokers is empty: name the brokers (host:port,...)".into());
            None
        }
        Some(b) => Some(b),
        None if from_file => {
            errors.push(format!(
                "no Kafka brokers named: set KAFKA_BROKERS or [kafka] brokers (host:port,...); \
                 KAFKA_BROKERS={EMBEDDED} runs on an in-memory cluster whose events are lost \
                 at exit"
            ));
            None
        }
        None => None,
    }
}

/// The `[kafka]` table, but for the brokers and topic the environment may set.
fn apply_kafka(
    k: &mut KafkaConfig,
    f: FileKafka,
    env: &dyn Env,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    if k.topic.is_empty() || k.topic.len() > 249 {
        errors.push("kafka topic must be 1 to 249 characters".into());
    }
    if let Some(v) = f.linger_ms {
        k.linger_ms = v;
    }
    if let Some(ms) = f.delivery_wait_ms {
        k.delivery_wait = bounded_millis("kafka.delivery_wait_ms", ms, errors);
    }
    if let Some(v) = f.topic_partitions {
        k.topic_partitions = v;
    }
    if f.topic_partitions.is_some_and(|p| p < 1) {
        errors.push("kafka.topic_partitions must be at least 1".into());
    }
    match f.topic_replication {
        Some(r) if r < 1 => errors.push("kafka.topic_replication must be at least 1".into()),
        Some(1) if k.brokers.is_some() => warnings.push(
            "kafka.topic_replication = 1: a topic the gateway creates keeps one copy of each \
             event, so acks=all means one broker; leave it unset for three (or as many as \
             the cluster has)"
                .into(),
        ),
        _ => {}
    }
    k.topic_replication = f.topic_replication;
    match (f.topic_min_insync_replicas, f.topic_replication) {
        (Some(m), _) if m < 1 => {
            errors.push("kafka.topic_min_insync_replicas must be at least 1".into())
        }
        (Some(m), Some(r)) if m > r => errors.push(format!(
            "kafka.topic_min_insync_replicas = {m} is above kafka.topic_replication = {r}: \
             no write could ever succeed"
        )),
        _ => {}
    }
    k.topic_min_insync_replicas = f.topic_min_insync_replicas;
    kafka::resolve(k, f.properties, f.property_files, env, errors);
}

/// The `[limits]` table.
fn apply_limits(l: &mut Limits, f: FileLimits, errors: &mut Vec<String>) {
    l.max_uri_bytes = f.max_uri_bytes.unwrap_or(l.max_uri_bytes);
    l.max_header_bytes = f.max_header_bytes.unwrap_or(l.max_header_bytes);
    l.max_body_bytes = f.max_body_bytes.unwrap_or(l.max_body_bytes);
    if let Some(ms) = f.header_read_timeout_ms {
        l.header_read_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = f.request_timeout_ms {
        l.request_timeout = Duration::from_millis(ms);
    }
    l.max_connections = f.max_connections.unwrap_or(l.max_connections);
    l.max_connections_per_client = f
        .max_connections_per_client
        .unwrap_or(l.max_connections_per_client.min(l.max_connections));
    if l.max_connections_per_client == 0 {
        errors.push("limits.max_connections_per_client must be above 0".into());
    }
    l.ipv6_client_prefix = f.ipv6_client_prefix.unwrap_or(l.ipv6_client_prefix);
    if !(32..=128).contains(&l.ipv6_client_prefix) {
        errors.push("limits.ipv6_client_prefix must be 32 to 128".into());
    }
    if l.max_connections == 0 {
        errors.push("limits.max_connections must be above 0".into());
    }
    match (f.client_rate_per_second, f.client_burst) {
        (None, None) => {}
        (Some(r), b) => match crate::ratelimit::Rate::checked(r, b) {
            Ok(rate) => l.client_rate = Some(rate),
            Err(e) => errors.push(format!("limits.client_rate: {e}")),
        },
        (None, Some(_)) => {
            errors.push("limits.client_burst needs limits.client_rate_per_second".into())
        }
    }
    if l.max_uri_bytes < 256 || l.max_header_bytes < 1024 {
        errors.push(
            "limits.max_uri_bytes must be at least 256 and max_header_bytes at least 1024".into(),
        );
    }
}

/// The `[dedup]` table.
fn apply_dedup(d: &mut DedupConfig, f: FileDedup, errors: &mut Vec<String>) {
    if let Some(s) = f.window_secs {
        d.window = Duration::from_secs(s);
    }
    if let Some(n) = f.max_keys {
        if n < 2 {
            errors.push("dedup.max_keys must be at least 2".into());
        }
        d.max_keys = n;
    }
    d.public_max_keys = match f.public_max_keys {
        Some(n) if n == 0 || n >= d.max_keys => {
            errors.push("dedup.public_max_keys must be above 0 and below dedup.max_keys".into());
            n
        }
        Some(n) => n,
        None => default_public_max_keys(d.max_keys),
    };
    if let Some(s) = f.warmup_limit_secs {
        d.warmup_limit = Duration::from_secs(s);
    }
}

/// `[dedup] hash_key`.
fn apply_hash_key(d: &mut DedupConfig, hash_key: Option<String>, errors: &mut Vec<String>) {
    if let Some(h) = hash_key {
        match parse_hex16(&h) {
            Some(k) => d.hash_key = k,
            None => errors.push("dedup.hash_key must be 32 hex characters".into()),
        }
    }
}

/// The `[spool]` table.
fn apply_spool(s: &mut SpoolConfig, f: FileSpool, errors: &mut Vec<String>) {
    if let Some(b) = f.max_bytes {
        s.max_bytes = b;
    }
    if let Some(b) = f.segment_bytes {
        if b < 4096 {
            errors.push("spool.segment_bytes must be at least 4096".into());
        }
        s.segment_bytes = b;
    }
    if let Some(ms) = f.append_timeout_ms {
        s.append_timeout = bounded_millis("spool.append_timeout_ms", ms, errors);
    }
}

/// The console's token: `POSTBACK_ADMIN_TOKEN`, else `[admin] token`, else
/// the contents of `[admin] token_file`; 16 to 256 visible ASCII characters.
fn apply_admin(
    a: &mut crate::config::admin::AdminAccess,
    f: FileAdmin,
    env: Option<String>,
    errors: &mut Vec<String>,
) {
    if f.token.is_some() && f.token_file.is_some() {
        errors.push("admin.token and admin.token_file: give one".into());
    }
    let from_file = f
        .token_file
        .and_then(|p| match std::fs::read_to_string(&p) {
            Ok(t) => Some(t.trim_end_matches(['\r', '\n']).to_owned()),
            Err(e) => {
                errors.push(format!(
                    "admin.token_file: cannot read {}: {e}",
                    p.display()
                ));
                None
            }
        });
    let token = env.or(f.token).or(from_file);
    if let Some(t) = &token {
        if !(16..=256).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_graphic()) {
            errors.push(
                "the admin token (POSTBACK_ADMIN_TOKEN, admin.token or admin.token_file) must be \
                 16 to 256 visible ASCII characters"
                    .into(),
            );
        }
    }
    a.token = token;
    a.hosts = f.hosts;
}

/// `ms` milliseconds; a problem unless within 100..=60000.
fn bounded_millis(name: &str, ms: u64, errors: &mut Vec<String>) -> Duration {
    if !(100..=60_000).contains(&ms) {
        errors.push(format!("{name} = {ms} must be within 100..=60000"));
    }
    Duration::from_millis(ms)
}

/// The sources' own dedup shares and the keyless pool must leave the other
/// keyed sources part of the bound.
fn check_dedup_shares(c: &Config, errors: &mut Vec<String>) {
    let Some(sources) = &c.sources else { return };
    let own: usize = sources.all().filter_map(|s| s.dedup_max_keys).sum();
    if own > 0 && own + c.dedup.public_max_keys >= c.dedup.max_keys {
        errors.push(format!(
            "the sources' dedup_max_keys ({own}) and dedup.public_max_keys ({}) leave \
             nothing of dedup.max_keys ({}) for the other keyed sources",
            c.dedup.public_max_keys, c.dedup.max_keys
        ));
    }
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of exactly `pairs`.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(c.kafka.topic, "conversions");
        assert!(c.kafka.brokers.is_none());
        assert_eq!(c.spool_dir, PathBuf::from("./spool"));
        assert_eq!(c.limits.max_body_bytes, 16384);
        assert_eq!(c.dedup.max_keys, 20_000_000);
    }

    #[test]
    fn environment_overrides_the_file() {
        let toml = "listen_addr = \"127.0.0.1:1\"\n[kafka]\ntopic = \"file\"\n";
        let c = Config::from_toml(
            toml,
            &env(&[
                ("LISTEN_ADDR", "127.0.0.1:2"),
                ("KAFKA_TOPIC", "env"),
                ("KAFKA_BROKERS", "k:9092"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:2");
        assert_eq!(c.kafka.topic, "env");
        assert_eq!(c.kafka.brokers.as_deref(), Some("k:9092"));
    }

    #[test]
    fn the_log_format_is_text_unless_json_is_asked_for() {
        let b = ("KAFKA_BROKERS", "embedded");
        let c = Config::from_toml("", &env(&[b])).unwrap();
        assert_eq!(
            (c.log_format, c.log_filter.as_str()),
            (LogFormat::Text, "info")
        );
        // The older `log = "FILTER"` still names the filter.
        let c = Config::from_toml("log = \"debug\"\n", &env(&[b])).unwrap();
        assert_eq!(
            (c.log_format, c.log_filter.as_str()),
            (LogFormat::Text, "debug")
        );
        let table = "[log]\nformat = \"json\"\nfilter = \"warn\"\n";
        let c = Config::from_toml(table, &env(&[b])).unwrap();
        assert_eq!(
            (c.log_format, c.log_filter.as_str()),
            (LogFormat::Json, "warn")
        );
        let c = Config::from_toml(table, &env(&[b, ("LOG_FORMAT", "TEXT")])).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let c = Config::load(None, &env(&[("LOG_FORMAT", "json")])).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        for (toml, vars, says) in [
            ("", vec![b, ("LOG_FORMAT", "xml")], "LOG_FORMAT = \"xml\""),
            (
                "[log]\nformat = \"logfmt\"\n",
                vec![b],
                "log.format = \"logfmt\"",
            ),
            (
                "[log]\nfromat = \"json\"\n",
                vec![b],
                "[log]: unknown field `fromat`",
            ),
            ("log = 3\n", vec![b], "[log]: invalid type: an integer"),
        ] {
            let err = Config::from_toml(toml, &env(&vars))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{toml}: {err}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let toml = "[kafka]\ndelivery_wait_ms = 5\n[dedup]\nhash_key = \"xyz\"\nmax_keys = 0\n";
        let err = Config::from_toml(
            toml,
            &env(&[("ADMIN_ADDR", "nowhere"), ("KAFKA_BROKERS", "embedded")]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
    }

    #[test]
    fn a_config_file_without_brokers_is_refused_and_embedded_is_asked_for_by_name() {
        let err = Config::from_toml("[kafka]\ntopic = \"t\"\n", &env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no Kafka brokers named")
                && text.contains("KAFKA_BROKERS")
                && text.contains("KAFKA_BROKERS=embedded"),
            "{text}"
        );
        // An empty file is a file.
        assert!(Config::from_toml("", &env(&[])).is_err());
        for (file, vars) in [
            ("", vec![("KAFKA_BROKERS", "embedded")]),
            ("[kafka]\nbrokers = \"embedded\"\n", vec![]),
        ] {
            let c = Config::from_toml(file, &env(&vars)).unwrap();
            assert!(c.kafka.brokers.is_none(), "{file} {vars:?}");
        }
        // Nothing configured at all: the embedded cluster, as the first command runs it.
        assert!(Config::load(None, &env(&[]))
            .unwrap()
            .kafka
            .brokers
            .is_none());
        let c = Config::load(None, &env(&[("KAFKA_BROKERS", "k:9092")])).unwrap();
        assert_eq!(c.kafka.brokers.as_deref(), Some("k:9092"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_toml("listen_adr = \"x\"", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("listen_adr"), "{err}");
    }
}

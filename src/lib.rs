//! postback-gateway: conversion postbacks over HTTP in, one normalized event per
//! conversion out to Kafka.
//!
//! A request flows one way: `http` (listener, hyper to plain parts) →
//! `pipeline` (route, then `source`: who sent it, auth → `postback`: strict
//! parse, pure → `dedup` reserve → `sink`: Kafka acknowledgement → `dedup`
//! commit or release) → `http` reply, decided by a `rejection` when refused.
//! A 2xx is sent only after the event is durable.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod backoff;
mod census;
pub mod cli;
pub mod config;
pub mod console;
pub mod dedup;
pub mod event;
pub mod http;
pub mod metrics;
pub mod os;
pub mod pipeline;
pub mod postback;
pub mod preflight;
pub mod ratelimit;
pub mod rejection;
mod reload;
pub mod sink;
pub mod source;
pub(crate) mod spare;
pub(crate) mod sync;
pub(crate) mod tasks;
#[cfg(test)]
mod testing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use reload::reload;
pub use tasks::Tasks;

/// The two bound sockets: public postbacks and admin.
pub struct Listeners {
    /// Postbacks and pixels (`LISTEN_ADDR`).
    pub public: TcpListener,
    /// Metrics and health (`ADMIN_ADDR`), never on the public port.
    pub admin: TcpListener,
    /// Metrics and health only, without the console (`[admin] metrics_addr`).
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let public = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        let admin = TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.admin_addr))?;
        let metrics = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners {
            public,
            admin,
            metrics,
        })
    }

    /// The public listener's address (its port, when bound to port 0).
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }
}

/// Runs the gateway until `shutdown` resolves, then drains: `/readyz` turns 503,
/// the public listener closes, in-flight requests and deliveries finish within
/// the grace period, the producer is flushed, and every background task is
/// stopped and waited for (src/tasks.rs).
///
/// `config.kafka.brokers` must be set, and `config.api_key` too when no sources
/// are configured (the binary fills them in: the embedded cluster, a random key).
/// On SIGHUP the sources are read again from `config.path`; see [`reload`].
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with(config, listeners, Handles::default(), shutdown).await
}

/// What a gateway is handed besides its config: a caller keeps clones to
/// look at or steer that one gateway.
#[derive(Clone, Debug, Default)]
pub struct Handles {
    /// What the gateway records into, and its `/metrics` renders: a
    /// recorder of its own.
    pub metrics: metrics::Metrics,
    /// The faults a test injects (its spool writer, drainer and sweeper read
    /// them); a release build has none.
    pub faults: sink::faults::Faults,
}

/// [`run`] with the [`Handles`] the caller keeps clones of.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    handles: Handles,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let Handles { metrics, faults } = handles;
    let tasks = tasks::Tasks::with_metrics(metrics.clone());
    // However `run` ends (an error, or its future dropped), its tasks stop.
    let _stop_tasks = tasks.token().drop_guard();
    tasks.spawn(
        tasks::METRICS_UPKEEP,
        metrics::upkeep(metrics.handle(), tasks.token()),
    );
    let (brokers, sources) = brokers_and_sources(&config)?;
    metrics
        .gauge(metrics::KAFKA_EMBEDDED)
        .set(if config.kafka.embedded { 1.0 } else { 0.0 });
    info!(
        topic = %config.kafka.topic,
        settings = %config::kafka::effective(&config.kafka),
        "Kafka producer settings."
    );
    let clock = os::system_clock();
    let (spool, spooled) = open_spool(&config, metrics.clone(), faults.clone()).await?;
    let kafka = tokio::select! {
        k = sink::kafka::KafkaSink::connect(&config.kafka, &brokers, &tasks) => k?,
        _ = &mut shutdown => {
            info!("Stopped before the gateway started serving.");
            return Ok(());
        }
    };
    let durable =
        sink::durable::Durable::new(kafka, spool, clock.clone(), config.spool.append_timeout);
    let dedup = dedup_pools(&config, &sources, clock.clone(), &metrics);
    let app = new_app(&config, &sources, &dedup, &durable, &tasks);
    let listening = Listening::start(&tasks, listeners, &config, &app);
    let (a, c, stop) = (app.clone(), config.clone(), tasks.token());
    tasks.spawn(tasks::RELOADER, async move {
        stop.run_until_cancelled(reload::on_hangup(a, c)).await;
    });

    let stopped_early = tokio::select! {
        warm = warm_up(&config, &brokers, &dedup, &app, spooled, sink::Sink::ready(&*durable.kafka)) => {
            if !warm {
                durable.topic_not_warm();
            }
            false
        }
        _ = &mut shutdown => true,
    };
    app.warming.store(false, Ordering::Relaxed);
    // The drainer stops before the producer is flushed, the other tasks after.
    let stop_drain = tasks.token().child_token();
    let drainer = (!stopped_early).then(|| {
        let lookback = Arc::new(lookback(&config, &brokers, &dedup, &app));
        let (durable, stop) = (durable.clone(), stop_drain.clone());
        // A drainer that panicked is started again: a dead one would leave
        // every spooled event undelivered until a restart.
        tasks.spawn_restarting(tasks::SPOOL_DRAINER, stop.clone(), move || {
            sink::durable::drain(
                durable.clone(),
                clock.clone(),
                lookback.clone(),
                stop.clone(),
            )
        })
    });
    tasks.spawn(
        tasks::DEDUP_SWEEPER,
        sweep(app.clone(), dedup, faults, tasks.token()),
    );
    metrics.gauge(metrics::SOURCES).set(sources.len() as f64);
    drop(sources);
    if !stopped_early {
        info!("The gateway is serving.");
        shutdown.await;
    }
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    let running = Running {
        app,
        durable,
        listening,
        stop_drain,
        drainer,
        tasks,
    };
    running.stop(deadline).await;
    Ok(())
}

/// The bootstrap servers, and the sources to start with (the `default`
/// source alone when the config names none).
fn brokers_and_sources(config: &Config) -> anyhow::Result<(String, Arc<source::Sources>)> {
    let brokers = config
        .kafka
        .brokers
        .clone()
        .context("no Kafka brokers named")?;
    let sources = config.serving().map_err(anyhow::Error::msg)?;
    Ok((brokers, sources))
}

/// Opens the spool, with the records still waiting for Kafka. Recovery reads
/// every segment: off the runtime's threads.
async fn open_spool(
    config: &Config,
    metrics: metrics::Metrics,
    faults: sink::faults::Faults,
) -> anyhow::Result<(Arc<sink::spool::Spool>, Vec<sink::spool::Spooled>)> {
    let (dir, max, seg) = (
        config.spool_dir.clone(),
        config.spool.max_bytes,
        config.spool.segment_bytes,
    );
    tokio::task::spawn_blocking(move || {
        sink::spool::Spool::open_with(&dir, max, seg, metrics, faults)
    })
    .await
    .context("the spool recovery stopped")?
    .with_context(|| format!("cannot open the spool in {}", config.spool_dir.display()))
}

/// The dedup window's pools. Shares of their own are fixed at start (a
/// reload does not move keys).
fn dedup_pools(
    config: &Config,
    sources: &source::Sources,
    clock: os::Clock,
    metrics: &metrics::Metrics,
) -> Arc<dedup::Pools> {
    let own_shares: Vec<(String, usize)> = sources
        .all()
        .filter_map(|s| s.dedup_max_keys.map(|n| (s.name.to_string(), n)))
        .collect();
    dedup::Pools::new(
        config.dedup.window,
        config.dedup.max_keys,
        config.dedup.public_max_keys,
        &own_shares,
        config.dedup.hash_key,
        clock,
        metrics,
    )
}

/// What every request shares; warming up until [`warm_up`] is done.
fn new_app(
    config: &Config,
    sources: &Arc<source::Sources>,
    dedup: &Arc<dedup::Pools>,
    durable: &Arc<sink::durable::Durable>,
    tasks: &tasks::Tasks,
) -> Arc<pipeline::App> {
    Arc::new(pipeline::App {
        sources: source::SharedSources::new(sources.clone()),
        campaigns: Default::default(),
        dedup: dedup.clone(),
        sink: durable.clone(),
        limits: config.limits.clone(),
        delivery_wait: config.kafka.delivery_wait,
        shutting_down: Default::default(),
        warming: AtomicBool::new(true),
        per_client: config
            .limits
            .client_rate
            .map(|r| ratelimit::PerClient::new(r, 100_000, config.limits.ipv6_client_prefix)),
        refusals: Default::default(),
        console: Arc::new(console::Recent::new(config.console_recent)),
        admin: config.admin.clone(),
        tasks: tasks.clone(),
    })
}

/// How the drainer reads the topic back (and fills the dedup window when the
/// start could not).
fn lookback(
    config: &Config,
    brokers: &str,
    dedup: &Arc<dedup::Pools>,
    app: &Arc<pipeline::App>,
) -> sink::durable::Lookback {
    let a = app.clone();
    sink::durable::Lookback {
        kafka: config.kafka.clone(),
        brokers: brokers.to_owned(),
        seen: into_window(dedup, move |name| keyed(&a.sources.load(), name)),
        window: config.dedup.window,
        warmup_limit: config.dedup.warmup_limit,
    }
}

/// Puts each key read back from the topic into the dedup window, in the pool
/// `keyed` says its source's keys belong in.
fn into_window(
    dedup: &Arc<dedup::Pools>,
    keyed: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> sink::warmup::Seen {
    let d = dedup.clone();
    Arc::new(move |key, id, at, source, pixel| {
        d.store(source, keyed(source), pixel)
            .insert_committed(key, id, at);
    })
}

/// The two accept loops and what stops each.
struct Listening {
    public: tokio::task::JoinHandle<()>,
    admin: tokio::task::JoinHandle<()>,
    /// The metrics-only listener, when one is configured.
    metrics: Option<tokio::task::JoinHandle<()>>,
    stop_public: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
}

impl Listening {
    /// Serves the admin and the public listener, each in a task of `tasks`.
    fn start(
        tasks: &tasks::Tasks,
        listeners: Listeners,
        config: &Config,
        app: &Arc<pipeline::App>,
    ) -> Listening {
        let (stop_public, public_rx) = watch::channel(false);
        let (stop_admin, admin_rx) = watch::channel(false);
        let refused = || app.metrics().counter(metrics::CONNECTIONS_REFUSED);
        let a = app.clone();
        let admin = http::serve(
            listeners.admin,
            config.limits.clone(),
            move |req, _| http::admin::handle(a.clone(), req),
            admin_rx.clone(),
            Duration::from_secs(1),
            refused(),
        );
        let metrics = listeners.metrics.map(|listener| {
            let a = app.clone();
            let serve = http::serve(
                listener,
                config.limits.clone(),
                move |req, _| http::admin::handle_open(a.clone(), req),
                admin_rx.clone(),
                Duration::from_secs(1),
                refused(),
            );
            tasks.spawn(tasks::ADMIN_LISTENER, serve)
        });
        let a = app.clone();
        let public = http::serve(
            listeners.public,
            config.limits.clone(),
            move |req, peer| http::public::handle(a.clone(), req, peer),
            public_rx,
            config.shutdown_grace,
            refused(),
        );
        Listening {
            public: tasks.spawn(tasks::PUBLIC_LISTENER, public),
            admin: tasks.spawn(tasks::ADMIN_LISTENER, admin),
            metrics,
            stop_public,
            stop_admin,
        }
    }
}

/// A serving gateway, as [`Running::stop`] takes it apart.
struct Running {
    app: Arc<pipeline::App>,
    durable: Arc<sink::durable::Durable>,
    listening: Listening,
    stop_drain: CancellationToken,
    drainer: Option<tokio::task::JoinHandle<()>>,
    tasks: tasks::Tasks,
}

impl Running {
    /// Stops in order, every step bounded and all of them together by
    /// `deadline`: what was acknowledged is already in Kafka or in the spool,
    /// so nothing here is needed for durability, only to hand over tidily.
    async fn stop(self, deadline: tokio::time::Instant) {
        let (app, durable, listening) = (self.app, self.durable, self.listening);
        info!("Shutting down: no longer ready, draining open requests.");
        app.shutting_down.store(true, Ordering::Relaxed);
        let _ = listening.stop_public.send(true);
        let _ = listening.public.await;
        // A client that hung up leaves its delivery running; the spool must
        // stay open for it.
        if !durable.wait_for_deliveries(deadline).await {
            warn!("Deliveries were still running at the end of the grace period.");
        }
        self.stop_drain.cancel();
        if let Some(drainer) = self.drainer {
            if tokio::time::timeout_at(deadline, drainer).await.is_err() {
                warn!("The spool's drainer did not stop within the grace period.");
            }
        }
        // Messages still queued are either acknowledged in the spool already
        // or belong to requests that were not answered 200: flushing only
        // saves the next start some reading back.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = listening.stop_admin.send(true);
        let flush = app.sink.flush(left.max(Duration::from_millis(10)));
        let metrics = async {
            if let Some(m) = listening.metrics {
                let _ = m.await;
            }
        };
        let _ = tokio::join!(flush, listening.admin, metrics);
        // The sweeper, the reloader, metrics upkeep and the Kafka watcher stop
        // on the token; each producer's report task once nothing holds the sink.
        let spool = durable.spool.clone();
        drop((app, durable));
        let at_least = tokio::time::Instant::now() + Duration::from_millis(100);
        self.tasks.shutdown(deadline.max(at_least)).await;
        close_spool(spool, deadline).await;
        info!("Stopped.");
    }
}

/// Stops the spool's writer and lets go of its directory.
async fn close_spool(spool: Arc<sink::spool::Spool>, deadline: tokio::time::Instant) {
    let left = spool.backlog();
    if left > 0 {
        info!(
            events = left,
            "Spooled events stay on disk and drain at the next start."
        );
    }
    let closing = tokio::task::spawn_blocking(move || spool.close());
    // The writer's last group commit is one fdatasync: a moment, unless the
    // disk stalls, and then what it holds was never acknowledged anyway.
    let at_least = tokio::time::Instant::now() + Duration::from_millis(200);
    if tokio::time::timeout_at(deadline.max(at_least), closing)
        .await
        .is_err()
    {
        warn!("The spool's writer did not finish its last write within the grace period.");
    }
}

/// Once a second until `stop`: expires dedup keys, forgets per-client
/// buckets that refilled, and once a minute logs the refusals' summary.
async fn sweep(
    app: Arc<pipeline::App>,
    dedup: Arc<dedup::Pools>,
    faults: sink::faults::Faults,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seconds = 0u64;
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        if faults.sweeper_panics() {
            panic!("a sweeper panic injected by a test");
        }
        seconds += 1;
        if seconds.is_multiple_of(60) {
            app.refusals.log_summary();
        }
        dedup.sweep();
        if let Some(pc) = &app.per_client {
            pc.prune();
        }
    }
}

/// Whether the source called `name` has api keys, for the dedup pool its keys
/// belong in; a source no longer configured counts as keyed.
fn keyed(sources: &source::Sources, name: &str) -> bool {
    sources.get(name).is_none_or(|s| s.is_keyed())
}

/// Rebuilds the dedup window from the spool and, when Kafka is reachable,
/// from the topic, so that a retry arriving after a restart is still a
/// duplicate. Returns whether the topic's keys are in; if not (a start during
/// an outage, or a read of the topic that did not get to the end) the drainer
/// reads them back once Kafka is reachable.
async fn warm_up(
    config: &Config,
    brokers: &str,
    dedup: &Arc<dedup::Pools>,
    app: &Arc<pipeline::App>,
    spooled: Vec<sink::spool::Spooled>,
    kafka_reachable: bool,
) -> bool {
    let started = std::time::Instant::now();
    let current = app.sources.load();
    let now = u32::try_from(os::coarse_unix_seconds()).unwrap_or(u32::MAX);
    let census = Arc::new(census::Census::new(
        now,
        u32::try_from(config.dedup.window.as_secs()).unwrap_or(u32::MAX),
    ));
    // Each key, from the spool and then from the topic, is counted by
    // second, per pool.
    let (d, c, sources) = (dedup.clone(), census.clone(), current.clone());
    let seen: sink::warmup::Seen = Arc::new(move |key, id, at, source, pixel| {
        let pool = d.store(source, keyed(&sources, source), pixel);
        c.count(pool, at);
        pool.insert_committed(key, id, at);
    });
    for r in &spooled {
        seen(r.dedup_key, r.event_id, r.at, &r.source, r.pixel);
    }
    if !kafka_reachable {
        warn!(
            from_spool = spooled.len(),
            "Started without Kafka: the dedup window holds the spool's keys only. Postbacks \
             go to the spool; the topic's keys are read back when Kafka is reachable, and \
             spooled repeats of events already in the topic are dropped then."
        );
        return false;
    }
    // The whole window is read anyway: where the broker's time index does
    // not answer, its partitions are read from their earliest offsets, within
    // the same limit.
    let read = |seen: sink::warmup::Seen| async move {
        sink::warmup::read_window(
            &config.kafka,
            brokers,
            sink::warmup::millis_ago(config.dedup.window),
            config.dedup.warmup_limit,
            &seen,
        )
        .await
    };
    let mut replayed = read(seen).await;
    // A pool that met more keys than its bound kept them in the order they
    // were read, not committed (see `census`): it is emptied and read again,
    // keeping the newest keys only.
    let overflowing = match &replayed {
        Ok(sink::warmup::ReadBack {
            incomplete: None, ..
        }) => census.overflowing(),
        _ => Vec::new(),
    };
    if !overflowing.is_empty() {
        info!(
            pools = overflowing.len(),
            "The topic holds more keys than the dedup window's bound; reading it again to keep the newest."
        );
        for (pool, _) in &overflowing {
            pool.forget_committed();
        }
        let (d, sources) = (dedup.clone(), current.clone());
        let keep_newest: sink::warmup::Seen = Arc::new(move |key, id, at, source, pixel| {
            let pool = d.store(source, keyed(&sources, source), pixel);
            let rule = overflowing.iter().find(|(p, _)| Arc::ptr_eq(p, pool));
            if let Some((_, keep)) = rule {
                if keep.admits(at) {
                    pool.insert_committed(key, id, at);
                }
            }
        });
        for r in &spooled {
            keep_newest(r.dedup_key, r.event_id, r.at, &r.source, r.pixel);
        }
        replayed = read(keep_newest).await;
    }
    let took = started.elapsed();
    app.metrics()
        .gauge(metrics::WARMUP_SECONDS)
        .set(took.as_secs_f64());
    match replayed {
        Ok(sink::warmup::ReadBack {
            read,
            incomplete: None,
        }) => {
            info!(
                from_kafka = read,
                from_spool = spooled.len(),
                keys = dedup.len(),
                seconds = took.as_secs_f64(),
                "Rebuilt the dedup window."
            );
            true
        }
        // The keys it read stay in the window (they are in the topic), but
        // what it did not reach is unknown, and the newest events are the
        // likeliest to be among it: the topic counts as not read.
        Ok(sink::warmup::ReadBack {
            read,
            incomplete: Some(why),
        }) => {
            warn!(
                from_kafka = read,
                from_spool = spooled.len(),
                seconds = took.as_secs_f64(),
                reason = %why,
                "The dedup window was not rebuilt from Kafka: reading the topic back did not get \
                 to the end. Postbacks go to the spool until the drainer has read the topic back."
            );
            false
        }
        Err(e) => {
            warn!(error = %e, "The dedup warm-up failed; postbacks go to the spool until the drainer has read the topic back.");
            false
        }
    }
}

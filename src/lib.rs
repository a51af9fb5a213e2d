//! postback-gateway: conversion postbacks over HTTP in, one normalized event per
//! conversion out to Kafka.
//!
//! A request flows one way: `http` (listener, route) → `source` (who sent it,
//! auth) → `postback` (strict parse, pure) → `dedup` (reserve) → `sink`
//! (Kafka acknowledgement) → `dedup` commit or release → `http` reply.
//! A 2xx is sent only after the event is durable.
#![forbid(unsafe_code)]

pub mod config;
pub mod dedup;
pub mod event;
pub mod http;
pub mod metrics;
pub mod postback;
pub mod sink;
pub mod source;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

pub use config::Config;

/// The two bound sockets: public postbacks and admin.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
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
        Ok(Listeners { public, admin })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }
}

/// Runs the gateway until `shutdown` resolves, then drains: `/readyz` turns 503,
/// the public listener closes, in-flight requests finish within the grace
/// period, and the producer is flushed.
///
/// `config.kafka.brokers` and `config.api_key` must be set (the binary fills
/// them in: the embedded cluster, a random key).
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = metrics::install();
    let brokers = config
        .kafka
        .brokers
        .clone()
        .context("no Kafka brokers named")?;
    let api_key = config
        .api_key
        .clone()
        .context("no api key for the default source")?;
    let sink = sink::kafka::KafkaSink::connect(&config.kafka, &brokers).await?;
    let dedup = dedup::Dedup::new(
        config.dedup.window,
        config.dedup.max_keys,
        config.dedup.hash_key,
        dedup::system_clock(),
    );
    let app = Arc::new(http::App {
        sources: source::Sources::single_default(api_key),
        dedup: dedup.clone(),
        sink: sink.clone(),
        limits: config.limits.clone(),
        delivery_wait: config.kafka.delivery_wait,
        shutting_down: Default::default(),
        metrics,
    });

    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            dedup.sweep();
        }
    });

    let (stop_public, public_rx) = watch::channel(false);
    let (stop_admin, admin_rx) = watch::channel(false);
    let a = app.clone();
    let public = tokio::spawn(http::serve(
        listeners.public,
        config.limits.clone(),
        move |req, peer| http::routes::handle(a.clone(), req, peer),
        public_rx,
        config.shutdown_grace,
    ));
    let a = app.clone();
    let admin = tokio::spawn(http::serve(
        listeners.admin,
        config.limits.clone(),
        move |req, _| http::admin::handle(a.clone(), req),
        admin_rx,
        Duration::from_secs(1),
    ));
    info!("The gateway is serving.");

    shutdown.await;
    info!("Shutting down: no longer ready, draining open requests.");
    app.shutting_down.store(true, Ordering::Relaxed);
    let _ = stop_public.send(true);
    let _ = public.await;
    app.sink.flush(Duration::from_secs(10)).await;
    let _ = stop_admin.send(true);
    let _ = admin.await;
    sweeper.abort();
    info!("Stopped.");
    Ok(())
}

//! The Kafka sink: an idempotent rdkafka producer (acks=all, lz4, short linger).
//! A 2xx waits for the broker's acknowledgement; librdkafka's own
//! `message.timeout.ms` is set to the delivery wait, so a failed delivery is
//! final and a later retry cannot produce a second copy of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::native;
use super::reports::Reports;
use super::{BoxFuture, Sink, SinkError};
use crate::config::KafkaConfig;
use crate::event::{Event, SCHEMA};
use crate::metrics as m;

/// Hands each delivery verdict to the request waiting for it.
pub struct Verdicts;

impl ClientContext for Verdicts {}

impl ProducerContext for Verdicts {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        // The request may have given up waiting; its verdict is then moot.
        let _ = waiting.send(match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        });
    }
}

type KafkaProducer = BaseProducer<Verdicts>;

pub struct KafkaSink {
    producer: Arc<KafkaProducer>,
    topic: String,
    /// Upper bound on waiting for librdkafka's verdict; its own timeout
    /// normally answers first.
    verdict_wait: Duration,
    reachable: Arc<AtomicBool>,
    /// A client of its own for the reachability probe: a metadata request on
    /// the producer's handle stalls its sends (seen as a p99 spike once a second).
    prober: AdminClient<DefaultClientContext>,
    /// When the last acknowledgement arrived (ms since `started`): while
    /// acknowledgements flow, the cluster is reachable without asking.
    last_ack_ms: AtomicU64,
    started: Instant,
}

impl KafkaSink {
    /// Milliseconds from the sink's start to `at`.
    fn ms_at(&self, at: Instant) -> u64 {
        at.duration_since(self.started).as_millis() as u64
    }
}

fn client_config(cfg: &KafkaConfig, brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

impl KafkaSink {
    /// Connects to `brokers`, creating the topic when it is missing.
    pub async fn connect(cfg: &KafkaConfig, brokers: &str) -> anyhow::Result<Arc<KafkaSink>> {
        let wait_ms = cfg.delivery_wait.as_millis().to_string();
        let mut config = client_config(cfg, brokers);
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", cfg.linger_ms.to_string())
            .set("message.timeout.ms", &wait_ms)
            .set("request.timeout.ms", &wait_ms)
            .set("queue.buffering.max.messages", "200000");
        let producer: KafkaProducer =
            native::start_as_background(move || config.create_with_context(Verdicts))
                .context("cannot start the Kafka producer's threads")?
                .context("cannot create the Kafka producer")?;
        let producer = Arc::new(producer);
        let reports =
            Reports::new(producer.clone()).context("cannot watch the producer's reports")?;
        tokio::spawn(reports.serve());
        let prober = ensure_topic(cfg, brokers).await?;
        let sink = Arc::new(KafkaSink {
            producer,
            topic: cfg.topic.clone(),
            verdict_wait: cfg.delivery_wait * 3 + Duration::from_secs(2),
            reachable: Arc::new(AtomicBool::new(true)),
            prober,
            last_ack_ms: AtomicU64::new(0),
            started: Instant::now(),
        });
        tokio::spawn(probe(sink.clone()));
        Ok(sink)
    }
}

/// Checks the cluster once a second: feeds `/readyz` and the queue-depth gauge.
async fn probe(sink: Arc<KafkaSink>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        // Only this task and the sink hold it; when the gateway drops the sink, stop.
        if Arc::strong_count(&sink) == 1 {
            return;
        }
        // Acknowledgements within the last second answer the question; a
        // metadata request, even on its own client, costs the broker work.
        let recent = sink
            .ms_at(Instant::now())
            .saturating_sub(sink.last_ack_ms.load(Ordering::Relaxed))
            < 1000
            && sink.last_ack_ms.load(Ordering::Relaxed) > 0;
        let s = sink.clone();
        let ok = recent
            || tokio::task::spawn_blocking(move || {
                s.prober
                    .inner()
                    .fetch_metadata(Some(&s.topic), Duration::from_millis(800))
                    .map(|md| {
                        md.topics()
                            .iter()
                            .any(|t| t.error().is_none() && !t.partitions().is_empty())
                    })
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
        if ok != sink.reachable.swap(ok, Ordering::Relaxed) {
            if ok {
                info!(topic = %sink.topic, "Kafka is reachable again.");
            } else {
                warn!(topic = %sink.topic, "Kafka is not reachable; postbacks go to the spool until it is.");
            }
        }
        metrics::gauge!(m::KAFKA_UP).set(if ok { 1.0 } else { 0.0 });
        metrics::gauge!(m::KAFKA_QUEUE).set(f64::from(sink.producer.in_flight_count()));
    }
}

/// Creates the topic unless the cluster already has it; returns the admin
/// client, which goes on as the reachability probe.
async fn ensure_topic(
    cfg: &KafkaConfig,
    brokers: &str,
) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg, brokers)
        .create()
        .context("cannot create the Kafka admin client")?;
    let topic = cfg.topic.clone();
    let (admin, exists) = tokio::task::spawn_blocking(move || {
        let md = admin
            .inner()
            .fetch_metadata(Some(&topic), Duration::from_secs(10));
        let exists = md.map(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        });
        (admin, exists)
    })
    .await?;
    if exists.context("cannot read the cluster's metadata")? {
        return Ok(admin);
    }
    let new = NewTopic::new(
        &cfg.topic,
        cfg.topic_partitions,
        TopicReplication::Fixed(cfg.topic_replication),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .context("cannot create the topic")?;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, partitions = cfg.topic_partitions, "Created the topic."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(admin)
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: "source",
                    value: Some(event.source.as_bytes()),
                })
                .insert(Header {
                    key: "schema",
                    value: Some(SCHEMA),
                });
            let (verdict, waiting) = oneshot::channel();
            let record = BaseRecord::with_opaque_to(&self.topic, Box::new(verdict))
                .key(event.key.as_bytes())
                .payload(&event.payload)
                .headers(headers);
            let started = Instant::now();
            let result = match self.producer.send(record) {
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    Err(SinkError::QueueFull)
                }
                Err((e, _)) => Err(SinkError::Kafka(e.to_string())),
                Ok(()) => match tokio::time::timeout(self.verdict_wait, waiting).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(KafkaError::MessageProduction(
                        RDKafkaErrorCode::MessageTimedOut,
                    )))) => Err(SinkError::Timeout),
                    Ok(Ok(Err(e))) => Err(SinkError::Kafka(e.to_string())),
                    Ok(Err(_dropped)) => Err(SinkError::Closed),
                    Err(_) => Err(SinkError::Timeout),
                },
            };
            match &result {
                Ok(()) => {
                    let acked = Instant::now();
                    self.last_ack_ms
                        .store(self.ms_at(acked).max(1), Ordering::Relaxed);
                    m::hot()
                        .kafka_delivery_seconds
                        .record(acked.duration_since(started).as_secs_f64());
                }
                Err(e) => metrics::counter!(m::KAFKA_FAILURES, "cause" => e.cause()).increment(1),
            }
            result
        })
    }

    fn ready(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let producer = self.producer.clone();
            let done = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
            if !matches!(done, Ok(Ok(()))) {
                warn!(
                    in_flight = self.producer.in_flight_count(),
                    "The producer did not flush before the timeout."
                );
            }
        })
    }
}

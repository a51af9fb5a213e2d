//! The Kafka sink: an idempotent rdkafka producer (acks=all, lz4, short linger).
//! A 2xx waits for the broker's acknowledgement; librdkafka's own
//! `message.timeout.ms` is set to the delivery wait, so librdkafka gives up on
//! a message when the request does. A failed delivery is final for librdkafka
//! (it never sends that message again behind the caller's back), but not
//! necessarily for the broker: a message that failed late (timed out in
//! flight, purged) may still have been written. The durable sink therefore
//! spools it, and its drainer reads the topic back before sending it again.
//!
//! A fatal producer error, or a broker that stops taking the instance's
//! producer id (Tansu fences the epoch librdkafka bumps after messages time
//! out in flight), ends a producer instance for good: the watcher replaces it
//! with a new one, and what was in flight on the old one fails over to the spool.

use crate::sync::{LockAnyway, RwLockAnyway};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use tokio::sync::{oneshot, Notify};
use tracing::{error, info, warn, Level};

use super::logs::{self, Quiet};
use super::produce::Instance;
use super::reports::Reports;
use super::{BoxFuture, Sink, SinkError};
use crate::backoff::{jittered, Backoff};
use crate::config::kafka as kafka_config;
use crate::config::KafkaConfig;
use crate::event::{Event, SCHEMA};
use crate::metrics as m;
use crate::os as native;
use crate::tasks::{self, Tasks};

/// Hands each delivery verdict to the request waiting for it, and tells the
/// watcher when this producer instance can no longer deliver.
pub(crate) struct Verdicts {
    /// Woken when the instance breaks.
    wake: Arc<Notify>,
    /// Why this instance cannot deliver any more, once it cannot.
    broken: Mutex<Option<String>>,
    /// The gateway's metrics, which the statistics go to.
    metrics: m::Metrics,
}

impl Verdicts {
    fn broke(&self, why: String) {
        let mut broken = self.broken.lock_anyway();
        if broken.is_none() {
            *broken = Some(why);
            self.wake.notify_one();
        }
    }

    /// Why this instance cannot deliver any more: a fatal error, or the
    /// broker no longer taking its producer id (a broker that fences the
    /// epoch librdkafka bumps after messages time out in flight refuses every
    /// later message of the instance, without a fatal error).
    fn broken(&self) -> Option<String> {
        self.broken.lock_anyway().clone()
    }
}

/// Delivery errors after which the broker refuses every message of this
/// producer id: only a new instance (with a new id) delivers again.
fn ends_the_producer_id(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
            | RDKafkaErrorCode::Fatal
    )
}

/// Errors after which sending the same message again cannot succeed: it is
/// too large or invalid for the topic, or the gateway may not write there.
fn refused_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}

/// The sink's error for a librdkafka error.
fn sink_error(e: &KafkaError) -> SinkError {
    match e.rdkafka_error_code() {
        Some(code) if refused_for_good(code) => SinkError::Refused(e.to_string()),
        _ => SinkError::Kafka(e.to_string()),
    }
}

impl ClientContext for Verdicts {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        logs::librdkafka_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.broke(format!("fatal error: {reason}"));
        }
        logs::librdkafka_error(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        super::stats::record(&statistics, &self.metrics);
    }
}

impl ProducerContext for Verdicts {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            if e.rdkafka_error_code().is_some_and(ends_the_producer_id) {
                self.broke(e.to_string());
            }
        }
        // The request may have given up waiting; its verdict is then moot.
        let _ = waiting.send(match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        });
    }
}

type KafkaProducer = Instance<Verdicts>;

pub(crate) struct KafkaSink {
    /// The producer instance in use; replaced after a fatal error.
    producer: RwLock<Arc<KafkaProducer>>,
    /// How to make a new producer instance.
    producer_config: ClientConfig,
    /// Woken by a producer instance's context when it breaks.
    broken: Arc<Notify>,
    topic: String,
    /// Upper bound on waiting for librdkafka's verdict; its own timeout
    /// normally answers first.
    verdict_wait: Duration,
    reachable: Arc<AtomicBool>,
    /// Whether the topic is known to exist (made at start or later by the watcher).
    topic_ready: AtomicBool,
    topic_config: KafkaConfig,
    /// A client of its own for the reachability probe: a metadata request on
    /// the producer's handle stalls its sends (seen as a p99 spike once a second).
    prober: Arc<AdminClient<Quiet>>,
    /// When the last acknowledgement arrived (ms since `started`): while
    /// acknowledgements flow, the cluster is reachable without asking.
    last_ack_ms: AtomicU64,
    started: Instant,
    /// The owner of the watcher and of each producer instance's report task.
    tasks: Tasks,
}

impl KafkaSink {
    /// Milliseconds from the sink's start to `at`.
    fn ms_at(&self, at: Instant) -> u64 {
        at.duration_since(self.started).as_millis() as u64
    }

    /// The producer instance in use.
    fn producer(&self) -> Arc<KafkaProducer> {
        self.producer.read_anyway().clone()
    }
}

/// Starts a producer instance, with its delivery reports served on the
/// runtime by a task of `tasks` that ends once the instance is let go of.
fn start_producer(
    config: &ClientConfig,
    topic: &str,
    broken: &Arc<Notify>,
    tasks: &Tasks,
) -> anyhow::Result<Arc<KafkaProducer>> {
    let (config, broken) = (config.clone(), broken.clone());
    let metrics = tasks.metrics().clone();
    let producer: BaseProducer<Verdicts> = native::start_as_background(move || {
        config.create_with_context(Verdicts {
            wake: broken,
            broken: Mutex::new(None),
            metrics,
        })
    })
    .context("cannot start the Kafka producer's threads")?
    .context("cannot create the Kafka producer")?;
    let producer = Arc::new(producer);
    let reports = Reports::new(producer.clone()).context("cannot watch the producer's reports")?;
    tasks.spawn(tasks::KAFKA_REPORTS, reports.serve());
    Ok(Arc::new(Instance::new(producer, topic)?))
}

impl KafkaSink {
    /// Connects to `brokers`, creating the topic when it is missing. The
    /// producer's watcher and report tasks belong to `tasks`: the watcher
    /// stops with its token, a report task once the sink is dropped.
    pub(crate) async fn connect(
        cfg: &KafkaConfig,
        brokers: &str,
        tasks: &Tasks,
    ) -> anyhow::Result<Arc<KafkaSink>> {
        let config = kafka_config::producer_config(cfg, Some(brokers));
        let broken = Arc::new(Notify::new());
        let producer = start_producer(&config, &cfg.topic, &broken, tasks)?;
        let prober: Arc<AdminClient<Quiet>> = Arc::new(
            kafka_config::client_config(cfg, Some(brokers))
                .create_with_context(Quiet)
                .context("cannot create the Kafka admin client")?,
        );
        // The topic is made now when the cluster answers; otherwise the
        // watcher makes it once it does (events go to the spool until then).
        let topic_ready =
            ensure_topic(&prober, cfg, Duration::from_secs(5), tasks.metrics()).await?;
        if !topic_ready {
            warn!(
                brokers = %brokers.escape_debug(),
                "Kafka is not reachable at start; postbacks go to the spool until it is."
            );
        }
        let sink = Arc::new(KafkaSink {
            producer: RwLock::new(producer),
            producer_config: config,
            broken,
            topic: cfg.topic.clone(),
            verdict_wait: cfg.delivery_wait * 3 + Duration::from_secs(2),
            reachable: Arc::new(AtomicBool::new(topic_ready)),
            topic_ready: AtomicBool::new(topic_ready),
            topic_config: cfg.clone(),
            prober,
            last_ack_ms: AtomicU64::new(0),
            started: Instant::now(),
            tasks: tasks.clone(),
        });
        tasks.spawn(tasks::KAFKA_WATCHER, watch(sink.clone(), tasks.token()));
        Ok(sink)
    }

    /// Why the producer instance in use cannot deliver any more, if it cannot.
    fn broken(&self) -> Option<String> {
        let producer = self.producer();
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Some(format!("fatal error {code:?}: {reason}"));
        }
        producer.context().broken()
    }

    /// Replaces a producer instance that cannot deliver any more with a new
    /// one. What was queued or in flight on the old one is purged: each of
    /// those requests gets a failed verdict and goes to the spool.
    async fn replace_producer(&self, why: &str) {
        error!(
            cause = %why.escape_debug(),
            "The Kafka producer cannot deliver any more; starting a new producer. \
             Events in flight on the old one go to the spool and drain from there."
        );
        self.tasks
            .metrics()
            .counter(m::KAFKA_PRODUCER_RESTARTS)
            .increment(1);
        let new = loop {
            // Starting a producer joins a thread: off the runtime's workers.
            let (config, topic, broken, tasks) = (
                self.producer_config.clone(),
                self.topic.clone(),
                self.broken.clone(),
                self.tasks.clone(),
            );
            let started = tokio::task::spawn_blocking(move || {
                start_producer(&config, &topic, &broken, &tasks)
            })
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the producer's start stopped: {e}")));
            match started {
                Ok(p) => break p,
                Err(e) => {
                    warn!(error = %e, "Cannot start a new Kafka producer; trying again in a second.");
                    tokio::time::sleep(jittered(Duration::from_secs(1))).await;
                }
            }
        };
        let old = std::mem::replace(&mut *self.producer.write_anyway(), new);
        // Without waiting for librdkafka's threads: the purged messages'
        // verdicts still arrive, through the old instance's report task.
        old.purge(PurgeConfig::default().queue().inflight().non_blocking());
        // The old instance's report task holds the last reference and lets go
        // of it once the purged messages' verdicts are served.
        drop(old);
    }
}

/// The producer's watcher, once a second and whenever an instance breaks:
/// replaces a producer instance that cannot deliver any more, checks the cluster (feeds `/readyz` and
/// the queue-depth gauge), and writes held-back log lines. Runs until `stop`.
async fn watch(sink: Arc<KafkaSink>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Replacements in a row back off, up to half a minute apart: a broker that
    // fences every new producer at once must not get a new one each second;
    // jittered, so that a fleet fenced together does not come back together.
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut last_restart: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sink.broken.notified() => {}
            _ = stop.cancelled() => return,
        }
        logs::LOG.flush();
        if !sink.topic_ready.load(Ordering::Relaxed) {
            match ensure_topic(
                &sink.prober,
                &sink.topic_config,
                Duration::from_millis(800),
                sink.tasks.metrics(),
            )
            .await
            {
                Ok(ready) => sink.topic_ready.store(ready, Ordering::Relaxed),
                Err(e) => {
                    logs::LOG.say("ensure-topic", Level::ERROR, || {
                        format!("Cannot create the topic; postbacks stay in the spool: {e:#}")
                    });
                }
            }
        }
        if let Some(why) = sink.broken() {
            // The first replacement in a minute goes at once.
            let wait = match last_restart {
                Some(at) if at.elapsed() < Duration::from_secs(60) => backoff.next_pause(),
                _ => {
                    backoff.reset();
                    Duration::ZERO
                }
            };
            let replaced = stop
                .run_until_cancelled(async {
                    tokio::time::sleep(wait).await;
                    sink.replace_producer(&why).await;
                })
                .await;
            if replaced.is_none() {
                return;
            }
            last_restart = Some(Instant::now());
        }
        probe(&sink).await;
    }
}

/// Checks whether the cluster is reachable.
async fn probe(sink: &Arc<KafkaSink>) {
    // Acknowledgements within the last second answer the question; a
    // metadata request, even on its own client, costs the broker work.
    let recent = sink
        .ms_at(Instant::now())
        .saturating_sub(sink.last_ack_ms.load(Ordering::Relaxed))
        < 1000
        && sink.last_ack_ms.load(Ordering::Relaxed) > 0;
    let s = sink.clone();
    let ok = recent
        || sink.topic_ready.load(Ordering::Relaxed)
            && match tokio::task::spawn_blocking(move || {
                s.prober
                    .inner()
                    .fetch_metadata(Some(&s.topic), Duration::from_millis(800))
                    .map(|md| {
                        md.topics()
                            .iter()
                            .any(|t| t.error().is_none() && !t.partitions().is_empty())
                    })
            })
            .await
            {
                Ok(Ok(true)) => true,
                // The cluster answered, without the topic: deleted while the
                // gateway ran. The watcher creates it again (or says why not).
                Ok(Ok(false)) => {
                    sink.topic_ready.store(false, Ordering::Relaxed);
                    sink.tasks.metrics().gauge(m::KAFKA_TOPIC_MISSING).set(1.0);
                    logs::LOG.say("topic-gone", Level::ERROR, || {
                        format!(
                            "The topic {} is gone from the cluster; postbacks go to the spool \
                             while it is created again.",
                            sink.topic
                        )
                    });
                    false
                }
                _ => false,
            };
    if ok {
        logs::accepted();
    }
    if ok != sink.reachable.swap(ok, Ordering::Relaxed) {
        if ok {
            info!(topic = %sink.topic, "Kafka is reachable again.");
        } else {
            warn!(topic = %sink.topic, "Kafka is not reachable; postbacks go to the spool until it is.");
        }
    }
    sink.tasks
        .metrics()
        .gauge(m::KAFKA_UP)
        .set(if ok { 1.0 } else { 0.0 });
    sink.tasks
        .metrics()
        .gauge(m::KAFKA_QUEUE)
        .set(f64::from(sink.producer().in_flight_count()));
}

/// Creates the topic unless the cluster already has it. `Ok(false)` when the
/// cluster cannot be asked now; an error only for a refusal that will not go
/// away by itself (such as no right to create topics).
async fn ensure_topic(
    admin: &Arc<AdminClient<Quiet>>,
    cfg: &KafkaConfig,
    timeout: Duration,
    metrics: &m::Metrics,
) -> anyhow::Result<bool> {
    let (asker, topic) = (admin.clone(), cfg.topic.clone());
    let found = tokio::task::spawn_blocking(move || {
        asker
            .inner()
            .fetch_metadata(Some(&topic), timeout)
            .map(|md| {
                let exists = md.topics().iter().any(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                });
                (exists, md.brokers().len())
            })
    })
    .await;
    let brokers = match found {
        Ok(Ok((true, _))) => {
            metrics.gauge(m::KAFKA_TOPIC_MISSING).set(0.0);
            return Ok(true);
        }
        Ok(Ok((false, brokers))) => brokers,
        _ => return Ok(false),
    };
    let (replication, min_insync) = replication_for(cfg, brokers);
    let mut new = NewTopic::new(
        &cfg.topic,
        cfg.topic_partitions,
        TopicReplication::Fixed(replication),
    );
    let min_insync_text = min_insync.map(|m| m.to_string());
    if let Some(m) = &min_insync_text {
        new = new.set("min.insync.replicas", m);
    }
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let Ok(results) = admin.create_topics([&new], &opts).await else {
        return Ok(false);
    };
    for r in results {
        match r {
            Ok(t) => info!(
                topic = %t,
                partitions = cfg.topic_partitions,
                replication,
                min_insync_replicas = min_insync_text.as_deref().unwrap_or("the broker's default"),
                "Created the topic."
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((
                _,
                RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::BrokerTransportFailure,
            )) => return Ok(false),
            Err((t, e)) => {
                metrics.gauge(m::KAFKA_TOPIC_MISSING).set(1.0);
                anyhow::bail!("cannot create topic {t}: {e}")
            }
        }
    }
    metrics.gauge(m::KAFKA_TOPIC_MISSING).set(0.0);
    Ok(true)
}

/// Replication and `min.insync.replicas` of a topic the gateway creates on
/// a cluster of `brokers` brokers: as configured, else three copies (fewer
/// on a smaller cluster) and two in sync when there are three or more, so
/// that acks=all means two brokers have each event.
pub(crate) fn replication_for(cfg: &KafkaConfig, brokers: usize) -> (i32, Option<i32>) {
    let brokers = i32::try_from(brokers).unwrap_or(i32::MAX).max(1);
    let replication = cfg.topic_replication.unwrap_or(brokers.min(3));
    let min_insync = cfg
        .topic_min_insync_replicas
        .or((replication >= 3).then_some(2));
    (replication, min_insync)
}

impl KafkaSink {
    /// Sends `event` and waits for the broker's verdict. The sink on the
    /// request path calls this directly: through [`Sink::deliver`] each
    /// event's wait would be boxed once more.
    pub(crate) async fn send_event(&self, event: &Event) -> Result<(), SinkError> {
        let (verdict, waiting) = oneshot::channel();
        let headers: [(&str, &[u8]); 2] = [
            ("source", event.source.as_bytes()),
            ("schema", SCHEMA.as_bytes()),
        ];
        let started = Instant::now();
        let sent = self.producer().send(
            event.key.as_bytes(),
            &event.payload,
            &headers,
            Box::new(verdict),
        );
        let result = match sent {
            Err((RDKafkaErrorCode::QueueFull, _)) => Err(SinkError::QueueFull),
            Err((code, _)) => Err(sink_error(&KafkaError::MessageProduction(code))),
            // The deadline from the clock read already made (one read less
            // per postback than `timeout`).
            Ok(()) => match tokio::time::timeout_at(
                tokio::time::Instant::from_std(started) + self.verdict_wait,
                waiting,
            )
            .await
            {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)))) => {
                    Err(SinkError::Timeout)
                }
                Ok(Ok(Err(e))) => Err(sink_error(&e)),
                // The producer instance went away without a verdict (replaced):
                // whether the broker wrote it is unknown.
                Ok(Err(_dropped)) => Err(SinkError::Kafka(
                    "no verdict from a replaced producer".into(),
                )),
                Err(_) => Err(SinkError::Timeout),
            },
        };
        match &result {
            Ok(()) => {
                let acked = Instant::now();
                self.last_ack_ms
                    .store(self.ms_at(acked).max(1), Ordering::Relaxed);
                self.tasks
                    .metrics()
                    .hot()
                    .kafka_delivery_seconds
                    .record(acked.duration_since(started).as_secs_f64());
            }
            Err(e) => {
                self.tasks
                    .metrics()
                    .counter_with(m::KAFKA_FAILURES, &[("cause", e.cause())])
                    .increment(1);
                // Refused for good, the postback is answered 503 (the direct
                // path) or dead-lettered (the drainer); anything else waits
                // in the spool.
                let refused = matches!(e, SinkError::Refused(_));
                let level = if refused { Level::ERROR } else { Level::WARN };
                logs::LOG.say(e.cause(), level, || {
                    if refused {
                        format!("{e} (check the gateway's ACLs on the topic, the topic's policy and max.message.bytes).")
                    } else {
                        format!("A Kafka delivery failed ({e}); the event is kept in the spool until Kafka takes it.")
                    }
                });
            }
        }
        result
    }
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.send_event(event))
    }

    fn ready(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn problem(&self) -> Option<String> {
        if self.reachable.load(Ordering::Relaxed) {
            return None;
        }
        Some(logs::refusal().unwrap_or_else(|| {
            if self.topic_ready.load(Ordering::Relaxed) {
                "Kafka is not reachable".into()
            } else {
                format!("the topic {} is not there yet", self.topic)
            }
        }))
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let producer = self.producer();
            let done = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
            if !matches!(done, Ok(Ok(()))) {
                warn!(
                    in_flight = self.producer().in_flight_count(),
                    "The producer did not flush before the timeout."
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_created_topic_has_three_replicas_and_two_in_sync_unless_told_otherwise() {
        let k = Config::default().kafka;
        assert_eq!(replication_for(&k, 1), (1, None));
        assert_eq!(replication_for(&k, 2), (2, None));
        assert_eq!(replication_for(&k, 3), (3, Some(2)));
        assert_eq!(replication_for(&k, 9), (3, Some(2)));
        let mut k = k;
        k.topic_replication = Some(5);
        assert_eq!(replication_for(&k, 9), (5, Some(2)));
        k.topic_min_insync_replicas = Some(3);
        assert_eq!(replication_for(&k, 9), (5, Some(3)));
        k.topic_replication = Some(2);
        k.topic_min_insync_replicas = None;
        assert_eq!(replication_for(&k, 9), (2, None));
    }
}

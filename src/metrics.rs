//! Every metric name, in one place, with its help text. Label values are bounded:
//! endpoints, outcomes and reasons are fixed sets, sources come from config.
#![warn(missing_docs)]

use std::sync::{Arc, OnceLock};

use metrics::{
    describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Key, Label,
    Level, Metadata, Recorder,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::event::Kind;
use crate::rejection::{Counted, Rejection};

pub(crate) const REQUESTS: &str = "postback_requests_total";
pub(crate) const REJECTIONS: &str = "postback_rejections_total";
pub(crate) const ACCEPTED: &str = "postback_accepted_total";
pub(crate) const DUPLICATES: &str = "postback_duplicates_total";
pub(crate) const REQUEST_SECONDS: &str = "postback_request_duration_seconds";
pub(crate) const KAFKA_DELIVERY_SECONDS: &str = "postback_kafka_delivery_duration_seconds";
pub(crate) const KAFKA_FAILURES: &str = "postback_kafka_delivery_failures_total";
pub(crate) const KAFKA_QUEUE: &str = "postback_kafka_queue_depth";
pub(crate) const KAFKA_UP: &str = "postback_kafka_reachable";
pub(crate) const KAFKA_QUEUE_MESSAGES: &str = "postback_kafka_producer_queue_messages";
pub(crate) const KAFKA_QUEUE_BYTES: &str = "postback_kafka_producer_queue_bytes";
pub(crate) const KAFKA_QUEUE_MAX_MESSAGES: &str = "postback_kafka_producer_queue_max_messages";
pub(crate) const KAFKA_QUEUE_MAX_BYTES: &str = "postback_kafka_producer_queue_max_bytes";
pub(crate) const KAFKA_BROKER_UP: &str = "postback_kafka_broker_up";
pub(crate) const KAFKA_BROKER_RTT: &str = "postback_kafka_broker_rtt_seconds";
pub(crate) const KAFKA_BROKER_IN_FLIGHT: &str = "postback_kafka_broker_requests_in_flight";
pub(crate) const KAFKA_BROKER_QUEUED: &str = "postback_kafka_broker_requests_queued";
pub(crate) const KAFKA_EMBEDDED: &str = "postback_kafka_embedded";
pub(crate) const KAFKA_TOPIC_MISSING: &str = "postback_kafka_topic_missing";
pub(crate) const KAFKA_PRODUCER_RESTARTS: &str = "postback_kafka_producer_restarts_total";
pub(crate) const DEDUP_KEYS: &str = "postback_dedup_keys";
pub(crate) const DEDUP_EVICTIONS: &str = "postback_dedup_evictions_total";
pub(crate) const DEDUP_EXPIRED: &str = "postback_dedup_expired_total";
pub(crate) const READY: &str = "postback_ready";
pub(crate) const CONNECTIONS_REFUSED: &str = "postback_connections_refused_total";
pub(crate) const SPOOL_BYTES: &str = "postback_spool_bytes";
pub(crate) const SPOOL_EVENTS: &str = "postback_spool_events";
pub(crate) const SPOOL_OLDEST_AGE: &str = "postback_spool_oldest_age_seconds";
pub(crate) const SPOOLED: &str = "postback_spooled_total";
pub(crate) const SPOOL_DRAINED: &str = "postback_spool_drained_total";
pub(crate) const SPOOL_SYNCS: &str = "postback_spool_syncs_total";
pub(crate) const SPOOL_SKIPPED: &str = "postback_spool_skipped_total";
pub(crate) const SPOOL_TIMEOUTS: &str = "postback_spool_timeouts_total";
pub(crate) const SPOOL_CORRUPT: &str = "postback_spool_corrupt_ranges_total";
pub(crate) const SPOOL_DEAD_LETTERS: &str = "postback_spool_dead_letters_total";
pub(crate) const SPOOL_WRITABLE: &str = "postback_spool_writable";
pub(crate) const WARMUP_SECONDS: &str = "postback_dedup_warmup_seconds";
pub(crate) const BUILD_INFO: &str = "postback_build_info";
pub(crate) const CAMPAIGN_CONFLICTS: &str = "postback_campaign_conflicts_total";
pub(crate) const UNREAD: &str = "postback_unread_values_total";
pub(crate) const IGNORED: &str = "postback_ignored_total";
pub(crate) const CONFIG_RELOADS: &str = "postback_config_reloads_total";
pub(crate) const SOURCES: &str = "postback_sources";
pub(crate) const CONSOLE_BYTES: &str = "postback_console_bytes";
pub(crate) const TASK_PANICS: &str = "postback_task_panics_total";
pub(crate) const TASK_RESTARTS: &str = "postback_task_restarts_total";
pub(crate) const BACKGROUND_TASKS: &str = "postback_background_tasks";

/// The series every request touches, registered once per gateway: `counter!`
/// with labels hashes and looks up its key on each call, which showed in the
/// profile.
pub struct Hot {
    /// By endpoint (`Kind` order: s2s, pixel) and outcome ([`Counted::ALL`] order).
    requests: [[Counter; 5]; 2],
    /// By [`Rejection::slot`].
    rejections: Vec<Counter>,
    request_seconds: [Histogram; 2],
    /// Enqueue to the broker's acknowledgement.
    pub kafka_delivery_seconds: Histogram,
}

const ENDPOINTS: [Kind; 2] = [Kind::S2s, Kind::Pixel];

impl Hot {
    /// Registers the per-request series with the recorder of `m`.
    fn register(m: &Metrics) -> Hot {
        Hot {
            requests: ENDPOINTS.map(|k| {
                Counted::ALL.map(|o| {
                    m.counter_with(
                        REQUESTS,
                        &[("endpoint", k.as_str()), ("outcome", o.label())],
                    )
                })
            }),
            rejections: Rejection::counted()
                .map(|r| m.counter_with(REJECTIONS, &[("reason", r.code().unwrap_or_default())]))
                .collect(),
            request_seconds: ENDPOINTS
                .map(|k| m.histogram_with(REQUEST_SECONDS, &[("endpoint", k.as_str())])),
            kafka_delivery_seconds: m.histogram(KAFKA_DELIVERY_SECONDS),
        }
    }

    fn endpoint(kind: Kind) -> usize {
        match kind {
            Kind::S2s => 0,
            Kind::Pixel => 1,
        }
    }

    /// Counts one request.
    pub fn request(&self, kind: Kind, outcome: Counted, seconds: f64) {
        let e = Self::endpoint(kind);
        self.requests[e][outcome as usize].increment(1);
        self.request_seconds[e].record(seconds);
    }

    /// Counts a rejection by its [`Rejection::slot`].
    pub(crate) fn rejection(&self, slot: usize) {
        if let Some(c) = self.rejections.get(slot) {
            c.increment(1);
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where the gateway's series are registered from (the exporter ignores it).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One gateway's metrics: a Prometheus recorder of its own, which everything
/// the gateway records goes to and its `/metrics` renders. Clones share it;
/// two gateways in one process count apart. Nothing is recorded through the
/// `metrics` crate's global recorder.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    hot: OnceLock<Hot>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A recorder with every series described, the unlabelled counters at
    /// zero, the build's info and the per-request series registered (the
    /// task series come with the gateway's `Tasks`). Run [`upkeep`] beside it.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        let m = Metrics(Arc::new(Inner {
            recorder,
            handle,
            hot: OnceLock::new(),
        }));
        m.scope(|| {
            describe();
            process_collector().describe();
        });
        let _ = m.0.hot.set(Hot::register(&m));
        // Unlabelled counters exist from the start, so rate() and alerts
        // see a zero instead of a missing series.
        for c in [
            DEDUP_EVICTIONS,
            DEDUP_EXPIRED,
            SPOOLED,
            SPOOL_DRAINED,
            SPOOL_SKIPPED,
            SPOOL_CORRUPT,
            SPOOL_TIMEOUTS,
            SPOOL_DEAD_LETTERS,
            SPOOL_SYNCS,
            CONNECTIONS_REFUSED,
            KAFKA_PRODUCER_RESTARTS,
        ] {
            m.counter(c).increment(0);
        }
        m.gauge_with(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        m
    }

    /// Runs `f` with this recorder as the thread's: for the recordings of
    /// code that knows only the `metrics` crate's macros. `f` must not hand
    /// work to other threads or tasks.
    fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.0.recorder, f)
    }

    /// The per-request handles.
    pub fn hot(&self) -> &Hot {
        self.0.hot.get().expect("registered in Metrics::new")
    }

    /// The unlabelled counter `name`.
    pub fn counter(&self, name: &'static str) -> Counter {
        self.counter_with(name, &[])
    }

    /// The counter `name` with `labels`.
    pub fn counter_with(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.0
            .recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// The unlabelled gauge `name`.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        self.gauge_with(name, &[])
    }

    /// The gauge `name` with `labels`.
    pub fn gauge_with(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.0
            .recorder
            .register_gauge(&key(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str) -> Histogram {
        self.histogram_with(name, &[])
    }

    fn histogram_with(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.0
            .recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// Whether `self` and `other` are the same recorder.
    pub(crate) fn same(&self, other: &Metrics) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The Prometheus text of every series, the `process_*` ones read just now.
    pub fn render(&self) -> String {
        self.scope(|| process_collector().collect());
        self.0.handle.render()
    }

    /// The exporter's handle, for [`upkeep`].
    pub(crate) fn handle(&self) -> PrometheusHandle {
        self.0.handle.clone()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect::<Vec<_>>(),
    )
}

/// The `process_*` series (resident and virtual memory, CPU seconds, open
/// and maximum file descriptors, threads, start time), read from `/proc`:
/// figures of the process, which every gateway in it shows.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Folds histogram samples into their buckets once a second until `stop`:
/// samples wait in lock-free buckets until upkeep folds them in; without it
/// they grow until the next scrape, which then pays for all of them at once.
pub(crate) async fn upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        handle.run_upkeep();
    }
}

fn describe() {
    describe_counter!(REQUESTS, "Requests by endpoint (s2s, pixel) and outcome (accepted, duplicate, ignored, rejected, unavailable).");
    describe_counter!(
        IGNORED,
        "Postbacks answered as a success that filed nothing, by source: a status its ignore_list parameter names (Keitaro's ignore_status=ping,test)."
    );
    describe_counter!(REJECTIONS, "Refused postbacks by reason code.");
    describe_counter!(ACCEPTED, "Postbacks made durable, by source.");
    describe_counter!(DUPLICATES, "Exact repeats answered DUPLICATE, by source.");
    describe_histogram!(
        REQUEST_SECONDS,
        "Time from request head to reply, by endpoint."
    );
    describe_histogram!(
        KAFKA_DELIVERY_SECONDS,
        "Time from enqueue to the broker's acknowledgement."
    );
    describe_counter!(
        KAFKA_FAILURES,
        "Events Kafka did not acknowledge, by cause."
    );
    describe_gauge!(
        KAFKA_QUEUE,
        "Messages in the producer queue, not yet acknowledged."
    );
    describe_gauge!(
        KAFKA_QUEUE_MESSAGES,
        "Messages in librdkafka's producer queue (its statistics' msg_cnt), refreshed every statistics.interval.ms."
    );
    describe_gauge!(
        KAFKA_QUEUE_BYTES,
        "Bytes of the messages in librdkafka's producer queue (msg_size)."
    );
    describe_gauge!(
        KAFKA_QUEUE_MAX_MESSAGES,
        "The producer queue's bound in messages (queue.buffering.max.messages); past it postbacks go to the spool."
    );
    describe_gauge!(
        KAFKA_QUEUE_MAX_BYTES,
        "The producer queue's bound in bytes (queue.buffering.max.kbytes)."
    );
    describe_gauge!(
        KAFKA_BROKER_UP,
        "1 while the producer is connected to the broker (librdkafka state UP), by broker node id."
    );
    describe_gauge!(
        KAFKA_BROKER_RTT,
        "Round trip of the producer's requests to the broker over the last statistics interval, by broker and quantile (0.5, 0.99)."
    );
    describe_gauge!(
        KAFKA_BROKER_IN_FLIGHT,
        "Requests sent to the broker and waiting for its response, by broker."
    );
    describe_gauge!(
        KAFKA_BROKER_QUEUED,
        "Requests waiting to be sent to the broker, by broker."
    );
    describe_counter!(
        KAFKA_PRODUCER_RESTARTS,
        "Kafka producer instances replaced after a fatal error (such as a broker fencing the idempotent producer)."
    );
    describe_gauge!(
        KAFKA_UP,
        "1 while the last metadata request to the cluster succeeded."
    );
    describe_gauge!(
        KAFKA_EMBEDDED,
        "1 when events go to the embedded in-memory cluster (lost at exit): never in production."
    );
    describe_gauge!(
        KAFKA_TOPIC_MISSING,
        "1 while the topic does not exist on the cluster and the gateway cannot create it."
    );
    describe_gauge!(
        DEDUP_KEYS,
        "Keys held in the dedup window (committed and in flight)."
    );
    describe_counter!(
        DEDUP_EVICTIONS,
        "Dedup keys dropped before their window ended because the map was full."
    );
    describe_counter!(
        DEDUP_EXPIRED,
        "Dedup keys dropped because their window ended."
    );
    describe_gauge!(READY, "1 while /readyz answers 200.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections answered 503 and closed because the connection cap was reached."
    );
    describe_gauge!(SPOOL_BYTES, "Bytes in the on-disk spool.");
    describe_gauge!(
        SPOOL_EVENTS,
        "Spooled events not yet acknowledged by Kafka."
    );
    describe_gauge!(
        SPOOL_OLDEST_AGE,
        "Age in seconds of the oldest spooled event still waiting for Kafka."
    );
    describe_counter!(
        SPOOLED,
        "Events accepted into the spool because Kafka could not take them in time."
    );
    describe_counter!(
        SPOOL_DRAINED,
        "Spooled events acknowledged by Kafka (its rate is the drain rate)."
    );
    describe_counter!(
        SPOOL_SKIPPED,
        "Spooled events not sent because the topic already had them."
    );
    describe_counter!(
        SPOOL_TIMEOUTS,
        "Postbacks answered 503 because the spool did not confirm their write in time (a stalled disk)."
    );
    describe_counter!(
        SPOOL_CORRUPT,
        "Corrupt byte ranges skipped in spool segments at start (the events in them are lost)."
    );
    describe_counter!(
        SPOOL_DEAD_LETTERS,
        "Spooled events Kafka refused for good, moved to the spool's dead-letter file."
    );
    describe_counter!(SPOOL_SYNCS, "Group commits (fdatasync calls) of the spool.");
    describe_gauge!(
        SPOOL_WRITABLE,
        "1 while the spool takes writes; 0 from a failed write or sync until a write succeeds, and once its writer has stopped."
    );
    describe_gauge!(
        WARMUP_SECONDS,
        "How long rebuilding the dedup window took at start."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the build.");
    describe_counter!(
        CAMPAIGN_CONFLICTS,
        "Postbacks whose campaign_id another source of the same platform claimed first."
    );
    describe_counter!(
        UNREAD,
        "Postbacks the parser passed with a value kept as sent instead of read, by source and role: an amount the source keeps with amount.unreadable = \"keep\"; a click time that is not unix seconds or milliseconds, RFC 3339, or a zone-less time of a source with click_time_zone (a placeholder is dropped, not kept)."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Config reloads on SIGHUP, by result (applied, refused)."
    );
    describe_gauge!(SOURCES, "Sources in the running config.");
    describe_gauge!(
        CONSOLE_BYTES,
        "Bytes held by the console's log of recent postbacks (bounded by console.recent_per_source)."
    );
    describe_counter!(
        TASK_PANICS,
        "Background tasks that panicked, by task (the spool's drainer is started again; the others stop: restart the instance)."
    );
    describe_counter!(
        TASK_RESTARTS,
        "Background tasks started again after a panic, by task (the spool's drainer)."
    );
    describe_gauge!(
        BACKGROUND_TASKS,
        "Background tasks running, by task (0 after a task panicked, and after shutdown)."
    );
}

//! Reads back what is already in the topic: at start to rebuild the dedup
//! window (from now minus the window), and before draining the spool to skip
//! events that a timed-out attempt delivered after all. Reading starts at the
//! broker's time index (see [`Since`] for a broker whose index does not
//! answer) and goes to the end of each partition: to an empty fetch, or to an
//! event written after reading began, whichever comes first.
//!
//! A read says whether it got to the end of every partition, and if not, why
//! and how far. What it did not reach is unknown, and the newest events are
//! the likeliest to be among it: a caller never takes an incomplete read for
//! the topic's contents, or an event the broker has would be sent again.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use tracing::Level;
use uuid::Uuid;

use super::logs::{Quiet, LOG};
use crate::config::KafkaConfig;

#[derive(Deserialize)]
struct Keys<'a> {
    #[serde(borrow)]
    dedup_key: &'a str,
    #[serde(borrow)]
    event_id: &'a str,
    #[serde(borrow, default)]
    source: &'a str,
    #[serde(borrow, default)]
    kind: &'a str,
}

/// How much later than the start of a read an event must be stamped to count
/// as written after it began (clocks of several hosts are a little apart).
const WRITTEN_AFTER_MS: i64 = 2_000;

/// Milliseconds since the unix epoch of `now - back`.
pub(crate) fn millis_ago(back: Duration) -> i64 {
    SystemTime::now()
        .checked_sub(back)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// A consumer that reads partitions it is assigned, without committing
/// offsets, and reports the end of each partition. The end of a partition is
/// where a fetch comes back empty: a broker's reported high watermark may lag
/// what it serves. `extra` settings come after the config's own properties,
/// and win over them.
pub(crate) fn reader(
    cfg: &KafkaConfig,
    brokers: &str,
    group: &str,
    extra: &[(&str, &str)],
) -> KafkaResult<BaseConsumer<Quiet>> {
    let mut c = crate::config::kafka::client_config(cfg, Some(brokers));
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(Quiet)
}

/// The partition ids of `topic`, as the cluster reports them.
pub(crate) fn partitions(
    consumer: &BaseConsumer<Quiet>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Where a read starts, and what to do when the broker cannot say where that is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Since {
    /// Events from this time on (milliseconds since the unix epoch) are wanted.
    pub ms: i64,
    /// When the broker's time index does not answer for a partition (the
    /// request fails, or it names no offset): `true` reads that partition
    /// from its earliest retained offset instead, `false` gives the read up
    /// as incomplete. A read from the earliest offset can be long; it is for
    /// callers that read the whole window anyway (the start's warm-up, and
    /// the drainer's after a start without it), and
    /// it is held to the same time limit, so a read that does not get to the
    /// end in time says so instead of leaving the newest events out. A
    /// caller that reads a short span (the drainer) would rather try again
    /// than read the whole retained topic on a passing error.
    pub or_earliest: bool,
}

/// How a read of the topic ended.
#[derive(Debug)]
#[must_use]
pub(crate) struct ReadBack {
    /// Events handed to `found`.
    pub read: u64,
    /// `None` when every partition was read to its end; else why not. An
    /// incomplete read says nothing of the events it did not reach, and the
    /// newest are the likeliest to be missing: never take it for the topic.
    pub incomplete: Option<Incomplete>,
}

impl ReadBack {
    fn stopped(read: u64, why: Incomplete) -> ReadBack {
        ReadBack {
            read,
            incomplete: Some(why),
        }
    }
}

/// Why a read did not reach the end of every partition.
#[derive(Debug)]
pub(crate) enum Incomplete {
    /// The read could not begin: no consumer, no metadata, no watermarks.
    NotStarted(String),
    /// The broker's time index did not answer, and the caller does not read
    /// from the earliest offset instead.
    NoTimeIndex(String),
    /// The time limit passed before these partitions reached their end.
    Deadline {
        limit: Duration,
        behind: Vec<Behind>,
    },
    /// A fetch failed (an error other than a partition's end): what it
    /// would have returned is unknown, and an offset that is gone must not
    /// turn into a jump to the end.
    Poll(String),
    /// `found` asked to stop (the caller's cap).
    Stopped,
}

/// A partition a read did not finish: the offset it would have read next,
/// and the partition's end (its high watermark) when reading began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Behind {
    pub partition: i32,
    pub at: i64,
    pub end: i64,
}

/// Partitions named one by one in a message at most; the rest are counted.
const NAMED: usize = 8;

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incomplete::NotStarted(e) => write!(f, "cannot start reading: {e}"),
            Incomplete::NoTimeIndex(e) => write!(f, "the broker's time index did not answer: {e}"),
            Incomplete::Deadline { limit, behind } => {
                let short: i64 = behind.iter().map(|b| (b.end - b.at).max(0)).sum();
                write!(
                    f,
                    "out of time after {:.1} s, {short} offsets short of where {} partitions \
                     ended when reading began (",
                    limit.as_secs_f64(),
                    behind.len()
                )?;
                for (i, b) in behind.iter().take(NAMED).enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{} at offset {} of {}", b.partition, b.at, b.end)?;
                }
                if behind.len() > NAMED {
                    write!(f, ", and {} more", behind.len() - NAMED)?;
                }
                f.write_str(")")
            }
            Incomplete::Poll(e) => write!(f, "a fetch failed: {e}"),
            Incomplete::Stopped => f.write_str("stopped by the reader"),
        }
    }
}

/// The consumer group of the read-back (offsets are never committed).
const GROUP: &str = "postback-gateway-warmup";

/// Settings of the read-back's consumers. An offset that is gone by the
/// time it is fetched (retention deleted it, a new leader has less) fails
/// the read instead of moving it to the end (librdkafka's default), which
/// would skip everything in between and still end in a partition's end.
const SETTINGS: &[(&str, &str)] = &[
    ("fetch.max.bytes", "52428800"),
    ("auto.offset.reset", "error"),
];

/// Told of every event read back into the dedup window: its dedup key,
/// event id, time (unix seconds), source, and whether it came as a pixel.
/// The owner of the window hands it in: `sink/` reports keys, it does not
/// hold them.
pub(crate) type Seen = std::sync::Arc<dyn Fn(u128, Uuid, u32, &str, bool) + Send + Sync>;

/// Reads the dedup window back from the topic: every event from `since_ms`
/// on (a partition the broker's time index does not answer for, from its
/// earliest offset), within `limit`, each one told to `seen`; the keys of a
/// read that stopped short too, as they are in the topic all the same. Runs
/// off the runtime's threads; the start-up warm-up and the drainer's read of
/// the window (after a start without Kafka) both read it here.
pub(crate) async fn read_window(
    cfg: &KafkaConfig,
    brokers: &str,
    since_ms: i64,
    limit: Duration,
    seen: &Seen,
) -> Result<ReadBack, tokio::task::JoinError> {
    let (cfg, brokers, seen) = (cfg.clone(), brokers.to_owned(), seen.clone());
    let since = Since {
        ms: since_ms,
        or_earliest: true,
    };
    tokio::task::spawn_blocking(move || {
        replay_topic(
            &cfg,
            &brokers,
            since,
            limit,
            |key, id, at, source, pixel| {
                seen(key, id, at, source, pixel);
                true
            },
        )
    })
    .await
}

/// Calls `found(dedup_key, event_id, unix_seconds, source, pixel)` for every event in the
/// topic from `since` on, until it returns false or `limit` passes, and says
/// whether the read got to the end of every partition. Blocking.
pub(crate) fn replay_topic(
    cfg: &KafkaConfig,
    brokers: &str,
    since: Since,
    limit: Duration,
    found: impl FnMut(u128, Uuid, u32, &str, bool) -> bool,
) -> ReadBack {
    let consumer = match reader(cfg, brokers, GROUP, SETTINGS) {
        Ok(c) => c,
        Err(e) => {
            return ReadBack::stopped(
                0,
                Incomplete::NotStarted(format!("cannot create the consumer: {e}")),
            )
        }
    };
    let parts = match start_offsets(&consumer, cfg, brokers, since) {
        Ok(parts) => parts,
        Err(why) => return ReadBack::stopped(0, why),
    };
    if parts.is_empty() {
        return ReadBack {
            read: 0,
            incomplete: None,
        };
    }
    let mut assign = TopicPartitionList::new();
    for p in &parts {
        if let Err(e) = assign.add_partition_offset(&cfg.topic, p.id, Offset::Offset(p.next)) {
            return ReadBack::stopped(0, Incomplete::NotStarted(e.to_string()));
        }
    }
    if let Err(e) = consumer.assign(&assign) {
        return ReadBack::stopped(
            0,
            Incomplete::NotStarted(format!("cannot assign the partitions: {e}")),
        );
    }
    read_to_end(&consumer, parts, limit, found)
}

/// A partition being read: the offset to read next, and its end (high
/// watermark) when reading began, for saying how far a read got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    id: i32,
    next: i64,
    end: i64,
    done: bool,
}

impl Part {
    fn new(id: i32, next: i64, end: i64) -> Part {
        Part {
            id,
            next,
            end,
            done: false,
        }
    }
}

/// A partition's earliest retained offset and its end, as the broker
/// reported them before the time index was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    id: i32,
    low: i64,
    high: i64,
}

/// Where to read each partition of the topic for events from `since` on:
/// the broker's time index; where it does not answer, the earliest retained
/// offset or an incomplete read (as `since` says); where it says that
/// nothing is that recent, a look at the partition's last event to check it.
fn start_offsets(
    consumer: &BaseConsumer<Quiet>,
    cfg: &KafkaConfig,
    brokers: &str,
    since: Since,
) -> Result<Vec<Part>, Incomplete> {
    let topic = cfg.topic.as_str();
    let timeout = Duration::from_secs(10);
    let not_started = |what: String, e: KafkaError| Incomplete::NotStarted(format!("{what}: {e}"));
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| not_started("cannot read the topic's metadata".into(), e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(Incomplete::NotStarted(
            "the broker's metadata does not name the topic".into(),
        ));
    };
    match t.error() {
        None => {}
        // Nothing to read in a topic that does not exist (the gateway
        // creates it); any other error may hide partitions with events.
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Ok(Vec::new()),
        Some(e) => {
            return Err(Incomplete::NotStarted(format!(
                "the topic's metadata says {}",
                RDKafkaErrorCode::from(e)
            )))
        }
    }
    let mut bounds = Vec::new();
    let mut by_time = TopicPartitionList::new();
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(|e| not_started(format!("cannot read partition {}'s offsets", p.id()), e))?;
        bounds.push(Bounds {
            id: p.id(),
            low,
            high,
        });
        by_time
            .add_partition_offset(topic, p.id(), Offset::Offset(since.ms))
            .map_err(|e| not_started("cannot ask the time index".into(), e))?;
    }
    let answer = consumer.offsets_for_times(by_time, timeout);
    let (mut parts, to_check) = plan(topic, &bounds, &answer, since)?;
    if !to_check.is_empty() {
        let last = last_stamps(cfg, brokers, &to_check, timeout)?;
        // The index said nothing is as recent as `since`, and the partition's
        // last event is: the index is wrong (librdkafka's mock cluster answers
        // so for every time). Asking again gets the same answer, so read
        // the partition from its earliest offset, for every caller.
        let wrong: Vec<&Bounds> = to_check
            .iter()
            .filter(|b| last.get(&b.id).is_some_and(|&at| at >= since.ms))
            .collect();
        if !wrong.is_empty() {
            LOG.say("readback/time-index-wrong", Level::WARN, || {
                format!(
                    "The broker's time index says that partitions {} of {topic} hold nothing \
                     from {} s ago on, yet their last events are that recent: reading them from \
                     their earliest retained offsets.",
                    named(wrong.iter().map(|b| b.id)),
                    (millis_ago(Duration::ZERO) - since.ms) / 1000
                )
            });
        }
        parts.extend(wrong.into_iter().map(|b| Part::new(b.id, b.low, b.high)));
    }
    Ok(parts)
}

/// The partitions to read and where from, by the time index's `answer`;
/// and the partitions (with events) that the index says hold nothing from
/// `since` on, to be checked.
fn plan(
    topic: &str,
    bounds: &[Bounds],
    answer: &KafkaResult<TopicPartitionList>,
    since: Since,
) -> Result<(Vec<Part>, Vec<Bounds>), Incomplete> {
    let mut parts = Vec::new();
    let mut to_check = Vec::new();
    let mut unanswered = Vec::new();
    for b in bounds {
        let start = match answer {
            Err(e) => Err(e.to_string()),
            Ok(list) => match list.find_partition(topic, b.id) {
                None => Err(format!("no answer for partition {}", b.id)),
                Some(e) => match (e.error(), e.offset()) {
                    (Err(err), _) => Err(format!("partition {}: {err}", b.id)),
                    (Ok(()), Offset::Offset(o)) => Ok(Some(o)),
                    (Ok(()), Offset::End) => Ok(None),
                    (Ok(()), other) => Err(format!("partition {}: {other:?}", b.id)),
                },
            },
        };
        match start {
            Ok(Some(o)) => parts.push(Part::new(b.id, o.max(b.low), b.high)),
            // Nothing from `since` on by the index; only a partition that has
            // events can contradict it.
            Ok(None) if b.high > b.low => to_check.push(*b),
            Ok(None) => {}
            Err(why) => unanswered.push((*b, why)),
        }
    }
    if let Some((_, why)) = unanswered.first() {
        if !since.or_earliest {
            return Err(Incomplete::NoTimeIndex(why.clone()));
        }
        LOG.say("readback/time-index", Level::WARN, || {
            format!(
                "The broker's time index did not answer for partitions {} of {topic} ({why}): \
                 reading them from their earliest retained offsets.",
                named(unanswered.iter().map(|(b, _)| b.id))
            )
        });
        parts.extend(
            unanswered
                .iter()
                .map(|(b, _)| Part::new(b.id, b.low, b.high)),
        );
    }
    Ok((parts, to_check))
}

/// Partition ids for a message: the first few, and how many more.
fn named(ids: impl ExactSizeIterator<Item = i32>) -> String {
    let more = ids.len().saturating_sub(NAMED);
    let mut out = ids
        .take(NAMED)
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// The timestamp of the last event of each of `parts`, read with a consumer
/// of its own (a message without one counts as new); a partition whose last
/// offset holds no event (a transaction's marker) is left out.
fn last_stamps(
    cfg: &KafkaConfig,
    brokers: &str,
    parts: &[Bounds],
    timeout: Duration,
) -> Result<HashMap<i32, i64>, Incomplete> {
    let checking = |e: KafkaError| {
        Incomplete::NotStarted(format!("cannot check the broker's time index: {e}"))
    };
    let consumer = reader(cfg, brokers, GROUP, SETTINGS).map_err(checking)?;
    let mut assign = TopicPartitionList::new();
    for b in parts {
        assign
            .add_partition_offset(&cfg.topic, b.id, Offset::Offset(b.high - 1))
            .map_err(checking)?;
    }
    consumer.assign(&assign).map_err(checking)?;
    let mut pending: Vec<i32> = parts.iter().map(|b| b.id).collect();
    let mut last = HashMap::new();
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            return Err(Incomplete::NotStarted(format!(
                "checking the broker's time index took over {} s",
                timeout.as_secs()
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) if pending.contains(&m.partition()) => {
                let at = m.timestamp().to_millis().filter(|&ms| ms > 0);
                last.insert(m.partition(), at.unwrap_or(i64::MAX));
                pending.retain(|&p| p != m.partition());
            }
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(p))) => pending.retain(|&q| q != p),
            Some(Err(e)) => return Err(Incomplete::Poll(e.to_string())),
        }
    }
    Ok(last)
}

/// Reads the assigned partitions to their end (an empty fetch, or an event
/// written after reading began), calling `found` for every event, until it
/// returns false or `limit` passes; says whether every partition got to its
/// end, and if not, how far each got.
fn read_to_end(
    consumer: &BaseConsumer<Quiet>,
    mut parts: Vec<Part>,
    limit: Duration,
    mut found: impl FnMut(u128, Uuid, u32, &str, bool) -> bool,
) -> ReadBack {
    let deadline = Instant::now() + limit;
    let began = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let now = (began / 1000) as u32;
    let mut n = 0u64;
    while parts.iter().any(|p| !p.done) {
        if Instant::now() >= deadline {
            let behind = parts
                .iter()
                .filter(|p| !p.done)
                .map(|p| Behind {
                    partition: p.id,
                    at: p.next,
                    end: p.end,
                })
                .collect();
            return ReadBack::stopped(n, Incomplete::Deadline { limit, behind });
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                if let Some(part) = parts.iter_mut().find(|part| part.id == p) {
                    part.done = true;
                }
                continue;
            }
            Err(e) => return ReadBack::stopped(n, Incomplete::Poll(e.to_string())),
        };
        if let Some(part) = parts.iter_mut().find(|p| p.id == msg.partition()) {
            part.next = msg.offset() + 1;
            // A partition's end is where a fetch comes back empty; while
            // events are written as fast as they are read back there is none.
            // An event stamped after reading began (with room for clocks a
            // little apart) was appended after it, so everything appended
            // before is read.
            if msg.timestamp().to_millis().unwrap_or(0) > began + WRITTEN_AFTER_MS {
                part.done = true;
            }
        }
        // A message without a usable timestamp counts as new: keeping a key
        // too long is safe, dropping it early is not.
        let at = match msg.timestamp().to_millis() {
            Some(ms) if ms > 0 => ((ms / 1000) as u32).min(now),
            _ => now,
        };
        if let Some((k, id, source, pixel)) = keys_of(msg.payload()) {
            n += 1;
            if !found(k, id, at, source, pixel) {
                return ReadBack::stopped(n, Incomplete::Stopped);
            }
        }
    }
    ReadBack {
        read: n,
        incomplete: None,
    }
}

/// The dedup key, event id and source of an event's payload, and whether it
/// is a pixel's (pixels keep their keys in the public pool); `None` for a
/// message that is not an event.
fn keys_of(payload: Option<&[u8]>) -> Option<(u128, Uuid, &str, bool)> {
    let keys = serde_json::from_slice::<Keys>(payload?).ok()?;
    let k = u128::from_str_radix(keys.dedup_key, 16).ok()?;
    let id = Uuid::parse_str(keys.event_id).ok()?;
    Some((k, id, keys.source, keys.kind == "pixel"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::ClientConfig;

    const TOPIC: &str = "readback";

    type Cluster = MockCluster<'static, DefaultProducerContext>;

    /// A one-broker mock cluster whose topic holds `events` events spread
    /// over `partitions`, and a config that reads it.
    fn cluster_with(partitions: i32, events: usize) -> (Cluster, KafkaConfig) {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic(TOPIC, partitions, 1).expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        for i in 0..events {
            let payload = format!(
                r#"{{"dedup_key":"{:032x}","event_id":"{}","source":"default"}}"#,
                i + 1,
                Uuid::now_v7()
            );
            let key = format!("token-{i}");
            let mut record = BaseRecord::to(TOPIC).key(&key).payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => panic!("cannot produce: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        let mut cfg = crate::Config::default().kafka;
        cfg.topic = TOPIC.into();
        (cluster, cfg)
    }

    fn an_hour_ago(or_earliest: bool) -> Since {
        Since {
            ms: millis_ago(Duration::from_secs(3600)),
            or_earliest,
        }
    }

    /// Reads the topic back; returns the outcome and how many events `found` saw.
    fn replay(
        cluster: &Cluster,
        cfg: &KafkaConfig,
        since: Since,
        limit: Duration,
    ) -> (ReadBack, u64) {
        let mut seen = 0;
        let r = replay_topic(
            cfg,
            &cluster.bootstrap_servers(),
            since,
            limit,
            |_, _, _, _, _| {
                seen += 1;
                true
            },
        );
        (r, seen)
    }

    #[test]
    fn a_read_that_gets_to_the_end_of_every_partition_is_complete() {
        let (cluster, cfg) = cluster_with(3, 300);
        // The mock cluster's time index says no partition holds anything
        // from an hour ago on: the check of its last events finds it wrong,
        // and the partitions are read from their earliest offsets.
        let (r, seen) = replay(&cluster, &cfg, an_hour_ago(false), Duration::from_secs(20));
        assert!(r.incomplete.is_none(), "{r:?}");
        assert_eq!((r.read, seen), (300, 300));
    }

    #[test]
    fn a_failed_fetch_makes_the_read_incomplete_not_an_empty_complete_one() {
        let (cluster, cfg) = cluster_with(1, 50);
        let brokers = cluster.bootstrap_servers();
        // An offset gone by the time it is fetched: librdkafka's default
        // would move the read to the partition's end, which then looks like
        // a read that got there.
        cluster.request_errors(
            RDKafkaApiKey::Fetch,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE; 5],
        );
        let consumer = reader(&cfg, &brokers, GROUP, SETTINGS).unwrap();
        let mut assign = TopicPartitionList::new();
        assign
            .add_partition_offset(TOPIC, 0, Offset::Offset(0))
            .unwrap();
        consumer.assign(&assign).unwrap();
        let r = read_to_end(
            &consumer,
            vec![Part::new(0, 0, 50)],
            Duration::from_secs(20),
            |_, _, _, _, _| true,
        );
        assert!(matches!(r.incomplete, Some(Incomplete::Poll(_))), "{r:?}");
        assert!(r.read < 50, "{r:?}");
        drop(consumer);

        // Any other fetch error too, through the whole read.
        cluster.clear_request_errors(RDKafkaApiKey::Fetch);
        cluster.request_errors(
            RDKafkaApiKey::Fetch,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 5],
        );
        let (r, _) = replay(&cluster, &cfg, an_hour_ago(true), Duration::from_secs(20));
        assert!(r.incomplete.is_some(), "{r:?}");

        // Once the broker serves again, the same read is complete.
        cluster.clear_request_errors(RDKafkaApiKey::Fetch);
        let (r, seen) = replay(&cluster, &cfg, an_hour_ago(true), Duration::from_secs(20));
        assert!(r.incomplete.is_none(), "{r:?}");
        assert_eq!(seen, 50);
    }

    #[test]
    fn running_out_of_time_is_incomplete_and_says_how_far_each_partition_got() {
        let total = 2000;
        let (cluster, cfg) = cluster_with(2, total);
        let mut seen = 0u64;
        let r = replay_topic(
            &cfg,
            &cluster.bootstrap_servers(),
            an_hour_ago(true),
            Duration::from_millis(300),
            |_, _, _, _, _| {
                seen += 1;
                // A slow reader: the limit passes long before the end.
                std::thread::sleep(Duration::from_millis(1));
                true
            },
        );
        let Some(Incomplete::Deadline { limit, behind }) = &r.incomplete else {
            panic!("not out of time: {r:?}");
        };
        assert_eq!(*limit, Duration::from_millis(300));
        assert!(r.read > 0 && r.read < total as u64, "{r:?}");
        assert_eq!(r.read, seen);
        assert!(
            !behind.is_empty() && behind.iter().all(|b| b.at < b.end),
            "{behind:?}"
        );
        // What was read and what each partition still had to go make up the topic.
        let short: i64 = behind.iter().map(|b| b.end - b.at).sum();
        assert_eq!(r.read as i64 + short, total as i64, "{behind:?}");
        let said = r.incomplete.as_ref().unwrap().to_string();
        assert!(
            said.contains("out of time") && said.contains("at offset"),
            "{said}"
        );
    }

    #[test]
    fn the_readers_cap_makes_the_read_incomplete() {
        let (cluster, cfg) = cluster_with(1, 50);
        let mut seen = 0;
        let r = replay_topic(
            &cfg,
            &cluster.bootstrap_servers(),
            an_hour_ago(true),
            Duration::from_secs(20),
            |_, _, _, _, _| {
                seen += 1;
                seen < 10
            },
        );
        assert!(matches!(r.incomplete, Some(Incomplete::Stopped)), "{r:?}");
        assert_eq!(r.read, 10);
    }

    #[test]
    fn a_time_index_that_does_not_answer_fails_a_short_read_and_starts_a_full_one_at_the_earliest()
    {
        let bounds = [
            Bounds {
                id: 0,
                low: 5,
                high: 100,
            },
            Bounds {
                id: 1,
                low: 0,
                high: 0,
            },
        ];
        let failed: KafkaResult<TopicPartitionList> =
            Err(KafkaError::OffsetFetch(RDKafkaErrorCode::RequestTimedOut));
        let since = |or_earliest| Since { ms: 1, or_earliest };
        let short = plan(TOPIC, &bounds, &failed, since(false));
        assert!(
            matches!(short, Err(Incomplete::NoTimeIndex(_))),
            "{short:?}"
        );
        let (parts, to_check) = plan(TOPIC, &bounds, &failed, since(true)).unwrap();
        assert_eq!(parts, [Part::new(0, 5, 100), Part::new(1, 0, 0)]);
        assert!(to_check.is_empty());

        // An answer without an offset for a partition is no answer for it.
        let mut answer = TopicPartitionList::new();
        answer
            .add_partition_offset(TOPIC, 0, Offset::Invalid)
            .unwrap();
        answer.add_partition_offset(TOPIC, 1, Offset::End).unwrap();
        let answer = Ok(answer);
        assert!(matches!(
            plan(TOPIC, &bounds, &answer, since(false)),
            Err(Incomplete::NoTimeIndex(_))
        ));
        let (parts, to_check) = plan(TOPIC, &bounds, &answer, since(true)).unwrap();
        assert_eq!(parts, [Part::new(0, 5, 100)]);
        assert!(
            to_check.is_empty(),
            "an empty partition has nothing to check"
        );
    }

    #[test]
    fn the_time_index_is_followed_where_it_answers_and_checked_where_it_says_nothing_is_recent() {
        let bounds = [
            Bounds {
                id: 0,
                low: 5,
                high: 100,
            },
            Bounds {
                id: 1,
                low: 10,
                high: 20,
            },
            Bounds {
                id: 2,
                low: 0,
                high: 40,
            },
        ];
        let mut answer = TopicPartitionList::new();
        answer
            .add_partition_offset(TOPIC, 0, Offset::Offset(60))
            .unwrap();
        // Below the earliest retained offset: from the earliest one.
        answer
            .add_partition_offset(TOPIC, 1, Offset::Offset(3))
            .unwrap();
        answer.add_partition_offset(TOPIC, 2, Offset::End).unwrap();
        let since = Since {
            ms: 1,
            or_earliest: false,
        };
        let (parts, to_check) = plan(TOPIC, &bounds, &Ok(answer), since).unwrap();
        assert_eq!(parts, [Part::new(0, 60, 100), Part::new(1, 10, 20)]);
        assert_eq!(to_check, [bounds[2]]);
    }

    #[test]
    fn a_time_index_request_that_fails_is_an_incomplete_short_read() {
        let (cluster, cfg) = cluster_with(1, 20);
        // The two requests of the watermarks pass; the time index's fails.
        cluster.request_errors(
            RDKafkaApiKey::ListOffsets,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN,
            ],
        );
        let (r, seen) = replay(&cluster, &cfg, an_hour_ago(false), Duration::from_secs(20));
        assert!(
            matches!(r.incomplete, Some(Incomplete::NoTimeIndex(_))),
            "{r:?}"
        );
        assert_eq!(seen, 0);

        cluster.request_errors(
            RDKafkaApiKey::ListOffsets,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN,
            ],
        );
        let (r, seen) = replay(&cluster, &cfg, an_hour_ago(true), Duration::from_secs(20));
        assert!(r.incomplete.is_none(), "{r:?}");
        assert_eq!(seen, 20, "read from the earliest offset");
    }
}

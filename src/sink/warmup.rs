//! Reads back what is already in the topic: at start to rebuild the dedup
//! window (from now minus the window), and before draining the spool to skip
//! events that a timed-out attempt delivered after all. Reading starts at the
//! broker's time index where it answers, else at the earliest retained
//! offset, and goes to the end of each partition: to an empty fetch, or to an
//! event written after reading began, whichever comes first.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use tracing::warn;
use uuid::Uuid;

use super::logs::Quiet;
use crate::config::KafkaConfig;

#[derive(Deserialize)]
struct Keys<'a> {
    #[serde(borrow)]
    dedup_key: &'a str,
    #[serde(borrow)]
    event_id: &'a str,
    #[serde(borrow, default)]
    source: &'a str,
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
/// what it serves. `extra` settings come before the config's own properties.
pub(super) fn reader(
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
pub(super) fn partitions(
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

/// Calls `found(dedup_key, event_id, unix_seconds, source)` for every event in the
/// topic from `since_ms` on, until it returns false or `limit` passes;
/// returns how many were read. Blocking.
pub(crate) fn replay_topic(
    cfg: &KafkaConfig,
    brokers: &str,
    since_ms: i64,
    limit: Duration,
    found: impl FnMut(u128, Uuid, u32, &str) -> bool,
) -> anyhow::Result<u64> {
    let consumer = reader(
        cfg,
        brokers,
        "postback-gateway-warmup",
        &[("fetch.max.bytes", "52428800")],
    )
    .context("cannot create the warm-up consumer")?;
    let (assign, remaining) = start_offsets(&consumer, &cfg.topic, since_ms)?;
    if remaining.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assign)?;
    Ok(read_to_end(
        &consumer,
        remaining,
        Instant::now() + limit,
        found,
    ))
}

/// Where to start reading each partition of `topic` for events from
/// `since_ms` on: the broker's time index where it answers, else the earliest
/// retained offset. Returns the assignment and the partitions in it
/// (a partition with nothing after `since_ms` is left out).
fn start_offsets(
    consumer: &BaseConsumer<Quiet>,
    topic: &str,
    since_ms: i64,
) -> anyhow::Result<(TopicPartitionList, Vec<i32>)> {
    let timeout = Duration::from_secs(10);
    let partitions =
        partitions(consumer, topic, timeout).context("cannot read the topic's metadata")?;
    let mut by_time = TopicPartitionList::new();
    let mut lows = Vec::new();
    for &p in &partitions {
        let (low, _) = consumer.fetch_watermarks(topic, p, timeout)?;
        lows.push((p, low));
        by_time.add_partition_offset(topic, p, Offset::Offset(since_ms))?;
    }
    let starts = consumer.offsets_for_times(by_time, timeout).ok();
    let mut assign = TopicPartitionList::new();
    let mut remaining = Vec::new();
    for &(p, low) in &lows {
        let start = match starts
            .as_ref()
            .and_then(|s| s.find_partition(topic, p))
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => Offset::Offset(o.max(low)),
            // No event after the window's start, by the time index.
            Some(Offset::End) => continue,
            _ => Offset::Beginning,
        };
        assign.add_partition_offset(topic, p, start)?;
        remaining.push(p);
    }
    Ok((assign, remaining))
}

/// Reads the assigned partitions to their end (an empty fetch, or an event
/// written after reading began), calling `found` for every event, until it
/// returns false or `deadline` passes; returns how many were read.
fn read_to_end(
    consumer: &BaseConsumer<Quiet>,
    mut remaining: Vec<i32>,
    deadline: Instant,
    mut found: impl FnMut(u128, Uuid, u32, &str) -> bool,
) -> u64 {
    let began = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let now = (began / 1000) as u32;
    let mut n = 0u64;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            warn!(
                read = n,
                "Reading the topic back ran out of time; the rest is not taken into account."
            );
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                remaining.retain(|&rp| rp != p);
                continue;
            }
            Err(e) => {
                warn!(error = %e, "Warm-up read error.");
                continue;
            }
        };
        // A partition's end is where a fetch comes back empty; while events
        // are written as fast as they are read back there is none. An event
        // stamped after reading began (with room for clocks a little apart)
        // was appended after it, so everything appended before is read.
        if msg.timestamp().to_millis().unwrap_or(0) > began + WRITTEN_AFTER_MS {
            remaining.retain(|&rp| rp != msg.partition());
        }
        // A message without a usable timestamp counts as new: keeping a key
        // too long is safe, dropping it early is not.
        let at = match msg.timestamp().to_millis() {
            Some(ms) if ms > 0 => ((ms / 1000) as u32).min(now),
            _ => now,
        };
        if let Some((k, id, source)) = keys_of(msg.payload()) {
            n += 1;
            if !found(k, id, at, source) {
                break;
            }
        }
    }
    n
}

/// The dedup key, event id and source of an event's payload; `None` for a
/// message that is not an event.
fn keys_of(payload: Option<&[u8]>) -> Option<(u128, Uuid, &str)> {
    let keys = serde_json::from_slice::<Keys>(payload?).ok()?;
    let k = u128::from_str_radix(keys.dedup_key, 16).ok()?;
    let id = Uuid::parse_str(keys.event_id).ok()?;
    Some((k, id, keys.source))
}

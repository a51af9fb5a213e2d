//! The delivery check: reads the whole topic back (every partition assigned
//! from the beginning, no consumer group) up to the high watermarks taken
//! after the run, and holds this run's events (their tokens start with the
//! run id) to the replies: every `OK` exactly once with its token, amount,
//! event id and kind; nothing for a `DUPLICATE`, an `ERROR` or a 5xx.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::record::ExpectedEvent;

/// How long the topic may stay quiet while acknowledged events are still
/// missing before they count as lost.
const SETTLE: Duration = Duration::from_secs(5);
/// How long to keep reading for events that should not be there once every
/// acknowledged one has been found.
const QUIET: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Verification {
    /// Postbacks answered `OK`.
    pub accepted: u64,
    /// Of those, found exactly once with the right fields.
    pub delivered_once: u64,
    /// Answered `OK`, not in the topic.
    pub lost: u64,
    /// Answered `OK`, in the topic more than once.
    pub doubled: u64,
    /// In the topic once, but with another event id, amount, kind or key.
    pub mismatched: u64,
    /// This run's events that no `OK` accounts for: a duplicate, a refused or
    /// a 5xx postback that reached Kafka anyway.
    pub unexpected: u64,
    /// Events of postbacks that got no reply (timeout, reset): allowed either way.
    pub delivered_unanswered: u64,
    /// Events of other runs in the same topic, ignored.
    pub other_runs: u64,
    pub messages_read: u64,
    /// Messages found past the high watermark read after the run.
    pub past_watermark: u64,
    pub read_secs: f64,
    /// A few examples of each failure.
    pub samples: Vec<String>,
    pub passed: bool,
}

/// The subset of the event the check reads.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event_id: &'a str,
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
    amount: Option<&'a str>,
    kind: &'a str,
    schema: &'a str,
}

pub fn verify(
    brokers: &str,
    topic: &str,
    run_id: &str,
    expected: &HashMap<String, ExpectedEvent>,
    unanswered: &HashSet<String>,
) -> anyhow::Result<Verification> {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("postback-load-{run_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.max.bytes", "52428800")
        .create()
        .context("cannot create the Kafka consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("cannot read the topic's metadata")?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if partitions == 0 {
        bail!("topic {topic} has no partitions");
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer
        .assign(&tpl)
        .context("cannot assign the partitions")?;

    let mut v = Verification::default();
    let prefix = format!("{run_id}-");
    // Token → (times seen, every copy right).
    let mut seen: HashMap<&str, (u32, bool)> = HashMap::with_capacity(expected.len());
    let deadline = Instant::now() + Duration::from_secs(60 + expected.len() as u64 / 5_000);
    let mut high = HashMap::new();
    for p in 0..partitions {
        let (_, hi) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("cannot read the watermarks of {topic}/{p}"))?;
        if hi > 0 {
            high.insert(p, hi);
        }
    }
    let watermarks = high.clone();
    // Read to the high watermarks, then on until the topic has been quiet for
    // a while: Tansu 0.6 sometimes reports a high watermark one batch short of
    // what it has acknowledged and serves.
    let mut last_new = Instant::now();
    loop {
        if Instant::now() > deadline {
            bail!("the topic was not read to its end within the deadline");
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            Some(Err(e)) => bail!("cannot read the topic: {e}"),
            Some(Ok(m)) => m,
            None => {
                let quiet = last_new.elapsed();
                if high.is_empty()
                    && ((seen.len() == expected.len() && quiet > QUIET) || quiet > SETTLE)
                {
                    break;
                }
                continue;
            }
        };
        last_new = Instant::now();
        if high
            .get(&m.partition())
            .is_some_and(|&hi| m.offset() + 1 >= hi)
        {
            high.remove(&m.partition());
        }
        if m.offset() >= watermarks.get(&m.partition()).copied().unwrap_or(0) {
            v.past_watermark += 1;
        }
        v.messages_read += 1;
        let payload = m.payload().unwrap_or_default();
        let Ok(ev) = serde_json::from_slice::<Event>(payload) else {
            v.other_runs += 1;
            continue;
        };
        if !ev.token.starts_with(&prefix) {
            v.other_runs += 1;
            continue;
        }
        let key = m.key().unwrap_or_default();
        match expected.get_key_value(ev.token.as_ref()) {
            Some((token, want)) => {
                let right = ev.event_id == want.event_id
                    && ev.amount == Some(want.amount.as_str())
                    && ev.kind == want.kind
                    && ev.schema == "conversion.v1"
                    && key == token.as_bytes();
                let entry = seen.entry(token.as_str()).or_insert((0, true));
                entry.0 += 1;
                entry.1 &= right;
                if !right {
                    v.mismatched += 1;
                    sample(&mut v.samples, || {
                        format!("mismatch: {} {want:?}", String::from_utf8_lossy(payload))
                    });
                }
            }
            None if unanswered.contains(ev.token.as_ref()) => v.delivered_unanswered += 1,
            None => {
                v.unexpected += 1;
                sample(&mut v.samples, || {
                    format!("unexpected: {}", String::from_utf8_lossy(payload))
                });
            }
        }
    }
    v.accepted = expected.len() as u64;
    for (token, _) in expected.iter() {
        match seen.get(token.as_str()) {
            None => {
                v.lost += 1;
                sample(&mut v.samples, || format!("lost: {token}"));
            }
            Some((1, true)) => v.delivered_once += 1,
            Some((1, false)) => {}
            Some(_) => {
                v.doubled += 1;
                sample(&mut v.samples, || format!("doubled: {token}"));
            }
        }
    }
    v.read_secs = started.elapsed().as_secs_f64();
    // A run in which nothing was accepted proves nothing about delivery.
    v.passed =
        v.accepted > 0 && v.lost == 0 && v.doubled == 0 && v.mismatched == 0 && v.unexpected == 0;
    Ok(v)
}

fn sample(samples: &mut Vec<String>, text: impl FnOnce() -> String) {
    if samples.len() < 20 {
        samples.push(text());
    }
}

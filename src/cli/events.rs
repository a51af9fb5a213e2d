//! `postback-gateway events`: prints the topic's events, one `key value` line
//! each, from the beginning; the reader to check a deployment with when no
//! other Kafka client is at hand (Debian's kcat is too old for some brokers).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::sink::warmup::{partitions, reader};

/// Writes every event to `out` until the end of each partition (or, with
/// `follow`, until `count` events or forever). Returns how many were written.
pub fn print_events(
    cfg: &KafkaConfig,
    brokers: &str,
    follow: bool,
    count: Option<u64>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut n = 0u64;
    let mut failed = None;
    scan(cfg, brokers, follow.then_some(None), |key, value| {
        if count.is_some_and(|c| n >= c) {
            return false;
        }
        if let Err(e) = writeln!(out, "{key} {value}") {
            failed = Some(e);
            return false;
        }
        n += 1;
        count.is_none_or(|c| n < c)
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    out.flush()?;
    Ok(n)
}

/// The value of the first event keyed `key`, read from the beginning and
/// then as events arrive, until `wait` has passed.
pub fn find_event(
    cfg: &KafkaConfig,
    brokers: &str,
    key: &str,
    wait: Duration,
) -> anyhow::Result<Option<String>> {
    let mut found = None;
    scan(cfg, brokers, Some(Some(Instant::now() + wait)), |k, v| {
        if k == key {
            found = Some(v.to_owned());
            return false;
        }
        true
    })?;
    Ok(found)
}

/// Reads every partition of the topic from the beginning, handing each
/// event to `visit` until it says stop. `follow`: `None` stops at the end of
/// every partition; `Some(None)` goes on for ever; `Some(Some(t))` until `t`.
fn scan(
    cfg: &KafkaConfig,
    brokers: &str,
    follow: Option<Option<Instant>>,
    mut visit: impl FnMut(&str, &str) -> bool,
) -> anyhow::Result<()> {
    let consumer =
        reader(cfg, brokers, "postback-gateway-events", &[]).context("cannot create a consumer")?;
    let partitions = partitions(&consumer, &cfg.topic, Duration::from_secs(10))
        .with_context(|| format!("cannot reach {brokers}"))?;
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {} has no partitions",
        cfg.topic
    );
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(&cfg.topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut open = partitions.len();
    loop {
        match follow {
            None if open == 0 => return Ok(()),
            Some(Some(until)) if Instant::now() >= until => return Ok(()),
            _ => {}
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default());
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                if !visit(&key, &value) {
                    return Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open = open.saturating_sub(1),
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
}

//! `postback-gateway events`: prints the topic's events, one `key value` line
//! each, from the beginning; the reader to check a deployment with when no
//! other Kafka client is at hand (Debian's kcat is too old for some brokers).

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::warmup::{partitions, reader};
use crate::config::KafkaConfig;

/// Writes every event to `out` until the end of each partition (or, with
/// `follow`, until `count` events or forever). Returns how many were written.
pub fn print_events(
    cfg: &KafkaConfig,
    brokers: &str,
    follow: bool,
    count: Option<u64>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
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
    let mut n = 0u64;
    while follow || open > 0 {
        if count.is_some_and(|c| n >= c) {
            break;
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default());
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                writeln!(out, "{key} {value}")?;
                n += 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open = open.saturating_sub(1),
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    out.flush()?;
    Ok(n)
}

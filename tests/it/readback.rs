//! Reading the topic back when the read cannot get to the end, against the
//! mock cluster with fetch errors injected: a spooled event whose attempt the
//! broker wrote after all is not sent a second time, however many reads fail
//! first, and a start whose read of the topic fails serves from the spool
//! until a read gets to the end.
use crate::common;
use std::time::Duration;

use crate::common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

/// Fetches fail with an offset that is gone: with librdkafka's defaults a
/// reader jumps to the partition's end and takes that for the end of its read.
fn fail_fetches(
    kafka: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) {
    kafka.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE; 10_000],
    );
}

/// The gateway's log on the test's output (shown when a test fails), and
/// kept, so that a test can wait for what the gateway says.
fn log() -> Log {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let kept = Log::default();
    let to = kept.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(tracing_subscriber::fmt::TestWriter::default().and(move || to.clone()))
        .try_init();
    kept
}

/// What the gateway logged so far.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Waits until the log holds `text`.
    async fn says(&self, text: &str) {
        wait_until(text, async || {
            String::from_utf8_lossy(&self.0.lock().unwrap()).contains(text)
        })
        .await;
    }
}

/// What a delivery attempt that timed out in the gateway and that the broker
/// wrote later leaves behind: the event in the spool, and the same event in
/// the topic. Returns its event id.
async fn spooled_and_written(dir: &std::path::Path, brokers: &str, token: &str) -> uuid::Uuid {
    use postback_gateway::sink::spool::{Record, Spool};
    let id = uuid::Uuid::now_v7();
    let dedup_key = 0x5eed_u128;
    let payload = serde_json::json!({
        "schema": "conversion.v1", "event_id": id.to_string(),
        "dedup_key": format!("{dedup_key:032x}"), "source": "default", "kind": "s2s",
        "token": token, "amount": "1.00",
    })
    .to_string();
    let (spool, _) = Spool::open(dir, 1 << 20, 1 << 20).unwrap();
    spool
        .append(&Record {
            event_id: id,
            dedup_key,
            at: (postback_gateway::dedup::system_clock())(),
            source: "default".into(),
            key: token.into(),
            payload: payload.clone().into_bytes(),
        })
        .await
        .unwrap();
    spool.close();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    producer
        .send(BaseRecord::to(TOPIC).key(token).payload(&payload))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_event_the_broker_wrote_is_not_sent_again_when_the_first_reads_fail() {
    let log = log();
    let kafka = mock_cluster();
    let brokers = kafka.bootstrap_servers();
    let dir = common::tempdir().unwrap();
    let id = spooled_and_written(dir.path(), &brokers, "written-late").await;
    let path = dir.path().to_owned();
    let gw = Gateway::start(&brokers, |c| c.spool_dir = path).await;
    // Before the drainer reads the topic back (it first waits until Kafka
    // has been reachable for twice the delivery wait, 3 s).
    fail_fetches(&kafka);
    log.says("Reading the topic back before sending spooled events did not get to the end")
        .await;
    assert_eq!(
        series(&gw, "postback_spool_events").await,
        1.0,
        "held in the spool while the topic cannot be read to the end"
    );
    kafka.clear_request_errors(RDKafkaApiKey::Fetch);
    wait_until("the spool is drained", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    let records = read_topic(&brokers, TOPIC, 1, Duration::from_secs(2));
    let found = with_token(&records, "written-late");
    assert_eq!(found.len(), 1, "in Kafka once: {records:?}");
    assert_eq!(found[0].value["event_id"], id.to_string().as_str());
    assert_eq!(series(&gw, "postback_spool_skipped_total").await, 1.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_read_of_the_topic_fails_serves_from_the_spool_until_a_read_gets_to_the_end()
{
    let log = log();
    let kafka = mock_cluster();
    let brokers = kafka.bootstrap_servers();
    let gw = Gateway::start(&brokers, |_| {}).await;
    let (status, body) = reply(reqwest::get(gw.url(&query("known", "4.00"))).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let original = ok_id(&body);
    gw.stop().await;

    // The next start cannot read the topic back: it does not say it rebuilt
    // the window, and does not take the topic's keys for known.
    fail_fetches(&kafka);
    let gw = Gateway::start(&brokers, |_| {}).await;
    assert_eq!(status_of(&gw.admin_url("/readyz")).await, 200);
    // A repeat the window cannot know yet, and a new conversion: both go to
    // the spool, not to Kafka.
    let (status, repeat) =
        reply(reqwest::get(gw.url(&query("known", "4.00"))).await.unwrap()).await;
    assert_eq!(status, 200, "{repeat}");
    let (status, body) = reply(reqwest::get(gw.url(&query("new", "4.00"))).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let new = ok_id(&body);
    assert_eq!(series(&gw, "postback_spooled_total").await, 2.0);
    // The drainer has tried to read the window back, and could not.
    log.says("Reading the dedup window back from Kafka did not get to the end")
        .await;
    assert_eq!(
        series(&gw, "postback_spool_events").await,
        2.0,
        "nothing is sent while the topic cannot be read to the end"
    );

    kafka.clear_request_errors(RDKafkaApiKey::Fetch);
    wait_until("the spool is drained", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    let records = read_topic(&brokers, TOPIC, 2, Duration::from_secs(2));
    let known = with_token(&records, "known");
    assert_eq!(known.len(), 1, "the repeat was dropped: {records:?}");
    assert_eq!(known[0].value["event_id"], original.as_str());
    let found = with_token(&records, "new");
    assert_eq!(found.len(), 1, "{records:?}");
    assert_eq!(found[0].value["event_id"], new.as_str());
    assert_eq!(records.len(), 2, "{records:?}");
    // The window holds the topic's keys now, and postbacks go to Kafka again.
    let (_, again) = reply(reqwest::get(gw.url(&query("known", "4.00"))).await.unwrap()).await;
    assert!(again.starts_with("DUPLICATE "), "{again}");
    let spooled = series(&gw, "postback_spooled_total").await;
    let (status, body) = reply(reqwest::get(gw.url(&query("after", "4.00"))).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        series(&gw, "postback_spooled_total").await,
        spooled,
        "sent to Kafka directly"
    );
    gw.stop().await;
}

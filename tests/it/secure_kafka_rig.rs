//! The secured broker rig itself (Tansu behind stunnel, see
//! `common/secure.rs`), checked with a plain rdkafka client: it takes the
//! clients it should and refuses the ones it should, for the right reason.
//! Tests of the gateway against it rely on both.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::secure::{read_topic_with, SecureKafka};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{
    BaseProducer, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
};
use rdkafka::ClientConfig;

const SETTLE: Duration = Duration::from_millis(500);
/// How long a client that is let in may take to fetch the metadata.
const ADMITTED: Duration = Duration::from_secs(8);
/// How long a refused client tries: the refusal comes within milliseconds of
/// the first connection.
const REFUSED: Duration = Duration::from_secs(3);

fn config(brokers: &str, props: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in props {
        c.set(k, v);
    }
    c
}

/// `props` with `key` set to `value`, or without `key` when `value` is `None`.
fn with(props: &[(String, String)], key: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<_> = props.iter().filter(|(k, _)| k != key).cloned().collect();
    if let Some(v) = value {
        out.push((key.to_owned(), v.to_owned()));
    }
    out
}

async fn create_topic(brokers: &str, props: &[(String, String)], topic: &str) {
    let admin: AdminClient<DefaultClientContext> =
        config(brokers, props).create().expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = tokio::time::timeout(
        Duration::from_secs(15),
        admin.create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &opts,
        ),
    )
    .await
    .expect("create_topics timed out")
    .expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, code)| panic!("creating {t}: {code:?}"));
    }
}

async fn produce(brokers: &str, props: &[(String, String)], topic: &str, key: &str, value: &str) {
    let producer: FutureProducer = config(brokers, props)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
}

/// Creates `topic`, produces one record and reads it back, all with `props`.
async fn round_trip(kafka: &SecureKafka, props: &[(String, String)], topic: &str) {
    let brokers = kafka.bootstrap();
    create_topic(&brokers, props, topic).await;
    let value = format!(r#"{{"topic":"{topic}","n":1}}"#);
    produce(&brokers, props, topic, "key-1", &value).await;
    let records = read_topic_with(&brokers, props, topic, 1, SETTLE);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].key, "key-1");
    assert_eq!(records[0].value["topic"], topic);
    assert_eq!(records[0].value["n"], 1);
}

/// Collects what librdkafka reports about a client's connections, which says
/// why it cannot connect (a failed fetch only says that it failed).
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<String>>>);

impl Reports {
    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("log {level:?} {fac}: {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("error {error}: {reason}"));
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Fetches the cluster's metadata with `props`, trying for up to `limit`; the
/// number of brokers, or the fetch's error and what librdkafka reported.
fn fetch_metadata(
    brokers: &str,
    props: &[(String, String)],
    limit: Duration,
) -> Result<usize, String> {
    let reports = Reports::default();
    // A producer, for its `poll` serves the queue that carries the client's
    // errors and logs to the context.
    let producer: BaseProducer<Reports> = config(brokers, props)
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(reports.clone())
        .expect("client");
    let result = producer.client().fetch_metadata(None, limit);
    for _ in 0..5 {
        producer.poll(Duration::from_millis(100));
    }
    match result {
        Ok(md) => Ok(md.brokers().len()),
        Err(e) => Err(format!("{e}\n{}", reports.all())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_with_the_right_password_creates_produces_and_reads_back() {
    let kafka = SecureKafka::start_sasl_ssl();
    let props = kafka.client_properties();
    round_trip(&kafka, &props, "secure-sasl").await;
}

#[test]
fn sasl_ssl_with_a_wrong_password_is_refused() {
    let kafka = SecureKafka::start_sasl_ssl();
    let props = kafka.client_properties();
    // The same broker takes the right password: a refusal below is the
    // password's doing, not a broker that is down.
    assert_eq!(fetch_metadata(&kafka.bootstrap(), &props, ADMITTED), Ok(1));

    let wrong = with(&props, "sasl.password", Some("not-the-password"));
    let err =
        fetch_metadata(&kafka.bootstrap(), &wrong, REFUSED).expect_err("a wrong password worked");
    assert!(
        err.contains("SASL SCRAM authentication failed"),
        "refused for another reason than the password:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_with_a_client_certificate_creates_produces_and_reads_back() {
    let kafka = SecureKafka::start_mtls();
    let props = kafka.client_properties();
    round_trip(&kafka, &props, "secure-mtls").await;
}

#[test]
fn mtls_without_a_client_certificate_is_refused() {
    let kafka = SecureKafka::start_mtls();
    let props = kafka.client_properties();
    let anonymous = with(
        &with(&props, "ssl.certificate.location", None),
        "ssl.key.location",
        None,
    );
    let err = fetch_metadata(&kafka.bootstrap(), &anonymous, REFUSED)
        .expect_err("a client without a certificate was let in");
    // TLS 1.3: the handshake completes on the client's side, and stunnel's
    // alert arrives with the first read.
    assert!(err.contains("certificate required"), "{err}");
    assert!(
        kafka
            .stunnel_log()
            .contains("peer did not return a certificate"),
        "stunnel refused for another reason:\n{}",
        kafka.stunnel_log()
    );
}

#[test]
fn a_server_certificate_from_another_ca_is_not_trusted() {
    let kafka = SecureKafka::start_mtls();
    let other = kafka.other_ca_pem();
    let props = with(
        &kafka.client_properties(),
        "ssl.ca.location",
        Some(other.to_str().unwrap()),
    );
    let err = fetch_metadata(&kafka.bootstrap(), &props, REFUSED)
        .expect_err("a server certificate from an untrusted CA was accepted");
    assert!(err.contains("certificate verify failed"), "{err}");
}

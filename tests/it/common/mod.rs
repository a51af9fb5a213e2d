//! Shared parts of the black-box tests: a gateway on a real socket, a Kafka
//! consumer that reads back what arrived, and process guards that clean up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use postback_gateway::config::Config;
use postback_gateway::sink::faults::Faults;
use postback_gateway::{run_with, Handles, Listeners};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

pub mod browser;
pub mod process;
pub mod secure;

pub const API_KEY: &str = "test-key-0123456789";
/// The admin console's token of the gateways the tests start.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The default source's pixel key: public by nature, never valid for S2S.
pub const PIXEL_KEY: &str = "test-pixel-key-0123456789";
pub const TOPIC: &str = "conversions";

/// An in-process one-broker Kafka cluster holding the topic (3 partitions).
pub fn mock_cluster(
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    c.create_topic(TOPIC, 3, 1).expect("topic");
    c
}

/// The status of a GET of `url`.
pub async fn status_of(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

/// The gateway's `/metrics` text.
pub async fn metrics_text(gw: &Gateway) -> String {
    reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one series (`name`, or `name{labels}` exactly as exported)
/// in a Prometheus text exposition.
fn value_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The value of a series on the gateway's `/metrics` (0 when absent).
pub async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = metrics_text(gw).await;
    value_in(&text, name).unwrap_or(0.0)
}

/// The value of one series (`name`, or `name{labels}` exactly as exported)
/// on the `/metrics` at `metrics_url`; a series that is not there fails the test.
pub async fn series_at(metrics_url: &str, name: &str) -> f64 {
    value_at(metrics_url, name)
        .await
        .unwrap_or_else(|| panic!("no series {name} on /metrics"))
}

/// Like [`series_at`], `None` for a series that is not there (yet).
pub async fn value_at(metrics_url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    value_in(&text, name)
}

/// [`series_at`] of an in-process gateway.
pub async fn series(gw: &Gateway, name: &str) -> f64 {
    series_at(&gw.admin_url("/metrics"), name).await
}

/// Polls `f` every 100 ms until it is true; fails the test after 30 s.
pub async fn wait_until(what: &str, f: impl AsyncFnMut() -> bool) {
    wait_within(what, Duration::from_secs(30), f).await
}

/// Polls `f` every 100 ms until it is true; fails the test after `limit`.
pub async fn wait_within(what: &str, limit: Duration, f: impl AsyncFnMut() -> bool) {
    wait_every(what, limit, Duration::from_millis(100), f).await
}

/// Polls `f` every `every` until it is true; fails the test after `limit`.
pub async fn wait_every(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(every).await;
    }
    panic!("timed out after {limit:?} waiting until {what}");
}

/// One message read back from the topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub value: serde_json::Value,
    pub headers: BTreeMap<String, String>,
}

/// A gateway running in this process on 127.0.0.1, stopped when dropped.
pub struct Gateway {
    /// The spool directory, kept until the gateway is dropped, then removed.
    _spool: tempfile::TempDir,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// What the test hands the gateway: its metrics and fault switches.
    handles: Handles,
}

impl Gateway {
    /// Starts the gateway against `brokers` with test settings. Its
    /// counters are its own: other gateways of the process (the same test's,
    /// or another's under `cargo test`) count apart.
    pub async fn start(brokers: &str, tweak: impl FnOnce(&mut Config)) -> Gateway {
        Gateway::start_with(brokers, Handles::default(), tweak).await
    }

    /// [`Gateway::start`] with `handles` (faults set before the start, say).
    #[allow(clippy::field_reassign_with_default)]
    pub async fn start_with(
        brokers: &str,
        handles: Handles,
        tweak: impl FnOnce(&mut Config),
    ) -> Gateway {
        let mut config = Config {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        let spool = self::tempdir().unwrap();
        config.spool_dir = spool.path().to_owned();
        config.kafka.brokers = Some(brokers.to_owned());
        config.kafka.delivery_wait = Duration::from_millis(1500);
        config.api_key = Some(API_KEY.to_owned());
        config.pixel_key = Some(PIXEL_KEY.to_owned());
        config.admin.token = Some(ADMIN_TOKEN.to_owned());
        config.shutdown_grace = Duration::from_secs(5);
        tweak(&mut config);
        let listeners = Listeners::bind(&config).await.unwrap();
        let (public, admin) = (listeners.public_addr(), listeners.admin_addr());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(run_with(config, listeners, handles.clone(), async {
            let _ = rx.await;
        }));
        let mut gw = Gateway {
            _spool: spool,
            public,
            admin,
            stop: Some(tx),
            task: Some(task),
            handles,
        };
        gw.wait_ready().await;
        gw
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.public, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// This gateway's fault switches.
    pub fn faults(&self) -> &Faults {
        &self.handles.faults
    }

    /// This gateway's metrics, readable also after it stopped.
    pub fn metrics(&self) -> &postback_gateway::metrics::Metrics {
        &self.handles.metrics
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                let result = self.task.take().expect("checked").await;
                panic!("the gateway stopped before it was ready: {result:?}");
            }
            if let Ok(r) = client.get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not become ready");
    }

    /// Stops the gateway and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The postback query for `token` with the test key.
pub fn query(token_encoded: &str, amount: &str) -> String {
    format!("/postback?api_key={API_KEY}&tracking={token_encoded}&amount={amount}")
}

/// Reads every message of `topic` from the beginning. Keeps reading until
/// at least `expect` arrived and then `settle` passed with nothing new, or
/// until `deadline`; so a test also sees messages that should not be there.
pub fn read_topic(brokers: &str, topic: &str, expect: usize, settle: Duration) -> Vec<Record> {
    read_topic_configured(brokers, &[], topic, expect, settle)
}

/// [`read_topic`] with the extra client properties `props` (a secured
/// broker's, say).
fn read_topic_configured(
    brokers: &str,
    props: &[(String, String)],
    topic: &str,
    expect: usize,
    settle: Duration,
) -> Vec<Record> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "postback-gateway-tests")
        .set("enable.auto.commit", "false");
    for (k, v) in props {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut last_new = Instant::now();
    while Instant::now() < deadline {
        if out.len() >= expect && last_new.elapsed() >= settle {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for hd in h.iter() {
                        let v = hd
                            .value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default();
                        headers.insert(hd.key.to_owned(), v);
                    }
                }
                out.push(Record {
                    key: String::from_utf8(m.key().unwrap_or_default().to_vec())
                        .expect("utf-8 key"),
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .expect("JSON payload"),
                    headers,
                });
                last_new = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

/// Events in `records` whose token is `token`.
pub fn with_token<'a>(records: &'a [Record], token: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.value["token"] == token)
        .collect()
}

/// How many events in `records` have the event id `id`.
pub fn count_of(records: &[Record], id: &str) -> usize {
    records.iter().filter(|r| r.value["event_id"] == id).count()
}

/// Checks the parts of an event every conversion has.
pub fn assert_event(r: &Record, event_id: &str, token: &str, amount: &str, kind: &str) {
    assert_eq!(r.value["schema"], "conversion.v1");
    assert_eq!(r.value["event_id"], event_id);
    assert_eq!(r.value["token"], token);
    assert_eq!(r.key, token, "the message key is the token");
    assert_eq!(r.value["amount"], amount);
    assert_eq!(r.value["kind"], kind);
    assert_eq!(r.value["source"], "default");
    assert_eq!(r.headers.get("source").map(String::as_str), Some("default"));
    assert_eq!(
        r.headers.get("schema").map(String::as_str),
        Some("conversion.v1")
    );
    let dedup = r.value["dedup_key"].as_str().unwrap();
    assert_eq!(dedup.len(), 32);
    assert!(dedup.bytes().all(|b| b.is_ascii_hexdigit()));
}

/// The event id of an `OK <id>` reply.
pub fn ok_id(body: &str) -> String {
    body.strip_prefix("OK ")
        .unwrap_or_else(|| panic!("expected OK, got {body:?}"))
        .trim()
        .to_owned()
}

/// Percent-encodes every byte outside the unreserved set, as a careful sender would.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The sources of a config file's text, for `Gateway::start`'s tweak.
pub fn sources_from(toml: &str) -> Option<std::sync::Arc<postback_gateway::source::Sources>> {
    Config::from_toml(
        toml,
        &BTreeMap::from([("KAFKA_BROKERS".to_owned(), "embedded".to_owned())]),
    )
    .unwrap_or_else(|e| panic!("bad test config: {e}"))
    .sources
}

/// A client whose connections come from 127.0.0.`last_octet` (the whole
/// loopback /8 is local), for tests of allowed networks.
pub fn client_from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, last_octet]))
        .build()
        .expect("client")
}

/// Status and body (or, for a pixel, the `X-Postback-Result` header) of a reply.
pub async fn reply(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let result = r
        .headers()
        .get("x-postback-result")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.text().await.unwrap();
    (status, result.unwrap_or(body))
}

/// Leaves in the spool directory `dir` what a gateway that answered these
/// postbacks from its spool leaves there: one record per `(token,
/// dedup_key)`, each with an event id of its own; returns the event ids.
pub async fn spool_records(dir: &std::path::Path, records: &[(&str, u128)]) -> Vec<uuid::Uuid> {
    use postback_gateway::sink::spool::{Record as Spooled, Spool};
    let (spool, _) = Spool::open(dir, 1 << 20, 1 << 20).unwrap();
    let mut ids = Vec::new();
    for &(token, dedup_key) in records {
        let id = uuid::Uuid::now_v7();
        let payload = serde_json::json!({
            "schema": "conversion.v1", "event_id": id.to_string(),
            "dedup_key": format!("{dedup_key:032x}"), "source": "default", "kind": "s2s",
            "token": token, "amount": "1.00",
        });
        let record = Spooled {
            event_id: id,
            dedup_key,
            at: (postback_gateway::dedup::system_clock())(),
            source: "default".into(),
            key: token.into(),
            payload: payload.to_string().into_bytes(),
        };
        spool.append(&record).await.unwrap();
        ids.push(id);
    }
    spool.close();
    ids
}

/// A temporary directory its owner's alone (0700), as the gateway requires
/// of an existing spool directory (tempfile's own follow the umask).
pub fn tempdir() -> std::io::Result<tempfile::TempDir> {
    tempdir_in(std::env::temp_dir())
}

/// [`tempdir`] inside `dir`.
pub fn tempdir_in(dir: impl AsRef<std::path::Path>) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
}

//! Configured sources through a real socket: selection by host name, pixels
//! per source, campaign claims across sources of one platform, and the
//! per-source rules (conversion at click time, fixed currency, `+` as space).
use std::time::Duration;

use crate::common::*;
use rdkafka::mocking::MockCluster;

const KA: &str = "routing-key-a-0123456789";
const KD: &str = "routing-key-d-0123456789";

const CONFIG: &str = r#"
[sources.default]
api_keys = ["routing-key-d-0123456789"]

[sources.a]
api_keys = ["routing-key-a-0123456789"]
hosts = ["track.a.example"]
conversion_time = "click"
currency = "EUR"
plus_as_space = true

[sources.v]
preset = "voluum"
api_keys = []

[sources.k]
preset = "kintura"
api_keys = []

[sources.t1]
preset = "tune"
api_keys = []
s2s_without_key = true
[sources.t2]
preset = "tune"
api_keys = []
s2s_without_key = true
[sources.c]
preset = "cake"
api_keys = []
s2s_without_key = true
"#;

async fn start() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Gateway,
) {
    let kafka = MockCluster::new(1).expect("mock cluster");
    kafka.create_topic(TOPIC, 3, 1).unwrap();
    let sources = sources_from(CONFIG);
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.sources = sources).await;
    (kafka, gw)
}

async fn get(url: String, host: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    reply(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_select_sources_and_source_rules_apply() {
    let (kafka, gw) = start().await;
    let q = |key: &str, t: &str| {
        gw.url(&format!(
            "/postback?api_key={key}&tracking={t}&amount=1.00&click_time=1700000000"
        ))
    };
    // Source a's domain: its key, its rules (`+` is a space, EUR fixed).
    let (s, body) = get(q(KA, "by+host"), Some("Track.A.example:8080")).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = get(
        format!("{}&currency=USD", q(KA, "x")),
        Some("track.a.example"),
    )
    .await;
    assert_eq!((s, body.trim()), (400, "ERROR currency_mismatch"));
    // Any other host: the default source, whose key is another.
    let (s, body) = get(q(KA, "x"), None).await;
    assert_eq!((s, body.trim()), (403, "ERROR bad_api_key"));
    let (s, body) = get(q(KD, "plain+default"), Some("other.example")).await;
    assert_eq!(s, 200, "{body}");

    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        2,
        Duration::from_millis(700),
    );
    assert_eq!(records.len(), 2, "{records:#?}");
    let a = &with_token(&records, "by host")[0].value;
    assert_eq!(a["source"], "a");
    assert_eq!(a["currency"], "EUR");
    assert_eq!(
        a["conversion_time"], "2023-11-14T22:13:20.000Z",
        "click time"
    );
    let d = &with_token(&records, "plain+default")[0].value;
    assert_eq!(d["source"], "default");
    assert_eq!(d["currency"], serde_json::Value::Null);
    assert_eq!(d["conversion_time"], d["received_at"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixels_are_taken_only_by_sources_that_take_pixels() {
    let (kafka, gw) = start().await;
    let (s, result) = get(gw.url("/pixel/v?cid=pix-1&payout=1.00"), None).await;
    assert_eq!(s, 200);
    let id = ok_id(&result);
    let (s, result) = get(gw.url("/pixel/k?cid=pix-2&payout=1.00"), None).await;
    assert_eq!((s, result.as_str()), (200, "ERROR no_pixels"));
    let (s, result) = get(gw.url("/pixel/nope?cid=pix-3&payout=1.00"), None).await;
    assert_eq!((s, result.as_str()), (200, "ERROR unknown_source"));
    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        1,
        Duration::from_millis(700),
    );
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].value["event_id"], id.as_str());
    assert_eq!(records[0].value["kind"], "pixel");
    assert_eq!(records[0].value["source"], "v");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_campaign_through_two_sources_of_one_platform_is_counted() {
    let (_kafka, gw) = start().await;
    let tune = |src: &str, t: &str| {
        gw.url(&format!(
            "/postback/{src}?transaction_id={t}&amount=1.00&offer_id=99"
        ))
    };
    for url in [
        tune("t1", "c-1"),
        tune("t1", "c-2"),
        tune("t2", "c-3"),
        gw.url("/postback/c?r=c-4&p=1.00&o=99"),
    ] {
        let (s, body) = get(url, None).await;
        assert_eq!(s, 200, "conflicts are accepted: {body}");
    }
    assert_eq!(
        series(&gw, "postback_campaign_conflicts_total{platform=\"tune\"}").await,
        1.0
    );
    assert_eq!(
        metric(&gw, "postback_campaign_conflicts_total{platform=\"cake\"}").await,
        0.0
    );
    gw.stop().await;
}

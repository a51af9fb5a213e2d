//! Hostile senders, against the binary and Tansu: what one sender must not be
//! able to do to another. Requests that fail authentication never spend a
//! source's rate limit; a keyless (pixel) source takes no S2S postbacks; a
//! keyed source takes pixels only with its own pixel keys, never its api key.

mod common;

use common::process::{GatewayProcess, Tansu};
use common::*;

const KEY: &str = "hostile-acme-key-0123456789";
const PIXEL: &str = "hostile-acme-pixel-0123456789";

const CONFIG: &str = r#"
[sources.acme]
preset = "tune"
api_keys = ["hostile-acme-key-0123456789"]
rate_limit = { per_second = 0.5, burst = 3 }

[sources.shop]
api_keys = ["hostile-shop-key-0123456789"]
pixel_keys = ["hostile-acme-pixel-0123456789"]

[sources.lp]
api_keys = []
pixels = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_sender_cannot_spend_forge_or_open_what_belongs_to_a_source() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let gw = GatewayProcess::start(
        Some(&tansu.brokers),
        &[("POSTBACK_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let client = reqwest::Client::new();
    let get = |path: String| {
        let (c, url) = (client.clone(), gw.url(&path));
        async move { reply(c.get(url).send().await.unwrap()).await }
    };

    // 40 requests without the key, and 10 with a wrong one: each refused for
    // its key, none of them charged to the source's bucket (burst 3).
    for i in 0..40 {
        let (status, body) = get(format!(
            "/postback/acme?transaction_id=spam-{i}&amount=1.00"
        ))
        .await;
        assert_eq!((status, body.as_str()), (401, "ERROR missing_api_key"));
    }
    for i in 0..10 {
        let (status, _) = get(format!(
            "/postback/acme?transaction_id=spam-w{i}&amount=1.00&security_token=wrong-key-0123456789"
        ))
        .await;
        assert_eq!(status, 403);
    }
    // The network's real postbacks still have the whole burst.
    for i in 0..3 {
        let (status, body) = get(format!(
            "/postback/acme?transaction_id=real-{i}&amount=1.00&security_token={KEY}"
        ))
        .await;
        assert_eq!(status, 200, "the real postback {i}: {body}");
    }
    // Its own fourth in a row is over its limit.
    let (status, body) = get(format!(
        "/postback/acme?transaction_id=real-4&amount=1.00&security_token={KEY}"
    ))
    .await;
    assert_eq!((status, body.as_str()), (429, "ERROR rate_limited"));

    // A keyless source takes pixels, and no S2S postbacks.
    let (status, body) = get("/postback/lp?tracking=forged&amount=1.00".into()).await;
    assert_eq!((status, body.as_str()), (403, "ERROR pixel_only"));
    let r = client
        .get(gw.url("/pixel/lp?tracking=lp-click&amount=1.00"))
        .send()
        .await
        .unwrap();
    let lp_id = ok_id(r.headers()["x-postback-result"].to_str().unwrap());

    // A keyed source: its pixel key opens pixels only; its api key opens no pixel.
    let pixel = |key: &str| {
        gw.url(&format!(
            "/pixel/shop?api_key={key}&tracking=shop-click&amount=2.00"
        ))
    };
    let r = client
        .get(pixel("hostile-shop-key-0123456789"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-postback-result"], "ERROR bad_api_key");
    let r = client.get(pixel(PIXEL)).send().await.unwrap();
    let shop_id = ok_id(r.headers()["x-postback-result"].to_str().unwrap());
    let (status, _) = get(format!(
        "/postback/shop?api_key={PIXEL}&tracking=forged-s2s&amount=2.00"
    ))
    .await;
    assert_eq!(status, 403, "a pixel key never opens the S2S endpoint");
    // A keyed reference source has no pixels without pixel keys.
    let r = client
        .get(gw.url(&format!(
            "/pixel/acme?security_token={KEY}&transaction_id=px&amount=1.00"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-postback-result"], "ERROR unknown_source");

    // Only the legitimate events are in the topic.
    let records = read_topic(&tansu.brokers, TOPIC, 5, std::time::Duration::from_secs(2));
    let mut tokens: Vec<&str> = records
        .iter()
        .map(|r| r.value["token"].as_str().unwrap())
        .collect();
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        ["lp-click", "real-0", "real-1", "real-2", "shop-click"]
    );
    assert_eq!(
        with_token(&records, "lp-click")[0].value["event_id"],
        lp_id.as_str()
    );
    assert_eq!(
        with_token(&records, "shop-click")[0].value["event_id"],
        shop_id.as_str()
    );
}

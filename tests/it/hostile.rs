//! Hostile senders, against the binary and Tansu: what one sender must not be
//! able to do to another. Requests that fail authentication never spend a
//! source's rate limit; a keyless (pixel) source takes no S2S postbacks; a
//! keyed source takes pixels only with its own pixel keys, never its api key.
use crate::common;
use crate::common::process::{GatewayProcess, Tansu};
use crate::common::*;

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
    let (_dir, config) = common::process::config_file(CONFIG);
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[("POSTBACK_CONFIG", &config)]).await;
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
    assert_eq!(r.headers()["x-postback-result"], "ERROR no_pixels");

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

const FLOOD_CONFIG: &str = r#"
[dedup]
max_keys = 1000

[sources.acme]
preset = "tune"
api_keys = ["hostile-acme-key-0123456789"]
pixel_keys = ["hostile-acme-pixel-key-0123456789"]
pixels = true

[sources.lp]
api_keys = []
pixels = true
"#;

/// A flood of unique pixels, through a keyless source and with a keyed
/// source's own (public) pixel key, pushes out old pixel keys only: a keyed source's repeat stays a `DUPLICATE`, and the keys
/// held never exceed `max_keys`, during the flood or after a restart that
/// reads more keys back than the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pixel_flood_cannot_empty_the_dedup_window_of_a_keyed_source() {
    let tansu = Tansu::start();
    let (_dir, config) = common::process::config_file(FLOOD_CONFIG);
    let env = [("POSTBACK_CONFIG", config.as_str())];
    let gw = GatewayProcess::start(Some(&tansu.brokers), &env).await;
    let client = reqwest::Client::new();
    let keyed = gw.url(&format!(
        "/postback/acme?transaction_id=the-real-click&amount=5.00&security_token={KEY}"
    ));
    let (status, body) = reply(client.get(&keyed).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let id = ok_id(&body);

    async fn held(gw: &GatewayProcess) -> f64 {
        series_at(&gw.admin_url("/metrics"), "postback_dedup_keys").await
    }
    let mut flood = Vec::new();
    // Half through the keyless source, half with the keyed source's own
    // (public) pixel key: pixels of either keep their keys in the public pool.
    for w in 0..16 {
        let c = client.clone();
        let base = if w % 2 == 0 {
            gw.url("/pixel/lp?tracking=")
        } else {
            gw.url("/pixel/acme?security_token=hostile-acme-pixel-key-0123456789&transaction_id=")
        };
        flood.push(tokio::spawn(async move {
            for i in 0..190 {
                let url = format!("{base}flood-{w}-{i}&amount=0.01");
                let r = c.get(url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let result = r.headers()["x-postback-result"].to_str().unwrap();
                assert!(result.starts_with("OK "), "{base}: {result}");
            }
        }));
    }
    let mut most = 0.0f64;
    while !flood.iter().all(|t| t.is_finished()) {
        most = most.max(held(&gw).await);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for t in flood {
        t.await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    most = most.max(held(&gw).await);
    assert!(most <= 1000.0, "{most} keys held, over max_keys");
    assert!(series_at(&gw.admin_url("/metrics"), "postback_dedup_evictions_total").await > 0.0);
    let (_, again) = reply(client.get(&keyed).send().await.unwrap()).await;
    assert_eq!(
        again,
        format!("DUPLICATE {id}"),
        "the keyed key survived the flood"
    );

    // One conversion fired as a pixel (its key in the public pool) and then
    // as an S2S postback is one conversion.
    let both = |gw: &GatewayProcess| {
        [
            gw.url("/pixel/acme?security_token=hostile-acme-pixel-key-0123456789&transaction_id=both-ways&amount=1.00"),
            gw.url(&format!("/postback/acme?transaction_id=both-ways&amount=1.00&security_token={KEY}")),
        ]
    };
    let [pixel, s2s] = both(&gw);
    let r = client.get(&pixel).send().await.unwrap();
    let first = r.headers()["x-postback-result"]
        .to_str()
        .unwrap()
        .to_owned();
    let both_id = ok_id(&first);
    let (_, again) = reply(client.get(&s2s).send().await.unwrap()).await;
    assert_eq!(
        again,
        format!("DUPLICATE {both_id}"),
        "the S2S twin of a pixel"
    );

    // A restart reads ~3,000 keys back into a bound of 1,000.
    let spool = gw.spool.clone();
    common::process::signal(gw.child.id(), "TERM");
    assert!(gw.exit_status().await.success());
    let gw = GatewayProcess::start_with_spool(Some(&tansu.brokers), &env, spool).await;
    let after = held(&gw).await;
    assert!(after <= 1000.0, "{after} keys after the warm-up");
    let (_, again) = reply(
        client
            .get(gw.url(&format!(
                "/postback/acme?transaction_id=the-real-click&amount=5.00&security_token={KEY}"
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again, format!("DUPLICATE {id}"), "and the restart");
    let [pixel, s2s] = both(&gw);
    let r = client.get(&pixel).send().await.unwrap();
    let result = r.headers()["x-postback-result"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        result,
        format!("DUPLICATE {both_id}"),
        "the pixel after the restart"
    );
    let (_, again) = reply(client.get(&s2s).send().await.unwrap()).await;
    assert_eq!(
        again,
        format!("DUPLICATE {both_id}"),
        "the S2S after the restart"
    );
}

/// A pixel key sits in public pages: whoever copies it spends only the
/// pixels' own bucket (a tenth of the source's rate unless
/// `pixel_rate_limit` says otherwise), never what the source's S2S postbacks
/// need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pixel_flood_with_a_public_pixel_key_cannot_spend_the_sources_s2s_budget() {
    const SHOP: &str = r#"
[sources.shop]
api_keys = ["budget-shop-key-0123456789"]
pixel_keys = ["budget-shop-pixel-0123456789"]
rate_limit = { per_second = 1, burst = 20 }
"#;
    let tansu = Tansu::start();
    let (_dir, config) = common::process::config_file(SHOP);
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[("POSTBACK_CONFIG", &config)]).await;
    let client = reqwest::Client::new();
    let mut limited = 0;
    for i in 0..200 {
        let r = client
            .get(gw.url(&format!(
                "/pixel/shop?api_key=budget-shop-pixel-0123456789&tracking=flood-{i}&amount=0.00"
            )))
            .send()
            .await
            .unwrap();
        let result = r.headers()["x-postback-result"]
            .to_str()
            .unwrap()
            .to_owned();
        if result == "ERROR rate_limited" {
            limited += 1;
        }
    }
    // The pixels' bucket holds 2 (a tenth of 20): the flood is mostly refused.
    assert!(limited >= 190, "{limited} of 200 pixels refused");
    // The source's S2S postbacks still have their whole burst.
    for i in 0..20 {
        let (status, body) = reply(
            client
                .get(gw.url(&format!(
                    "/postback/shop?api_key=budget-shop-key-0123456789&tracking=s2s-{i}&amount=1.00"
                )))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "S2S postback {i}: {body}");
    }
}

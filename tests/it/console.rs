//! The onboarding console on the admin listener: the last postbacks of each
//! source with their verdicts and reasons, secrets never shown, memory
//! bounded under a flood, nothing of it on the public listener, and its page
//! working in a real headless Chromium with nothing but the admin port.
use crate::common;
use crate::common::*;

const KEY_A: &str = "acme-key-0123456789abcdef";
const KEY_K: &str = "keitaro-key-0123456789abcd";
const KEY_W: &str = "web-key-0123456789abcdefgh";
const PKEY: &str = "web-pixel-key-0123456789ab";

fn config(recent: usize) -> String {
    format!(
        r#"
[console]
recent_per_source = {recent}
[sources.acme]
preset = "tune"
api_keys = ["{KEY_A}"]
# TUNE keeps a malformed amount; this source refuses it, to show a refusal.
amount = {{ unreadable = "refuse" }}
[sources.kt]
preset = "keitaro"
api_keys = ["{KEY_K}"]
[sources.web]
api_keys = ["{KEY_W}"]
pixel_keys = ["{PKEY}"]
pixels = true
"#
    )
}

async fn start(
    recent: usize,
) -> (
    Gateway,
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) {
    let kafka = mock_cluster();
    let toml = config(recent);
    let c = postback_gateway::config::Config::from_toml(
        &toml,
        &std::collections::BTreeMap::from([("KAFKA_BROKERS".to_owned(), "embedded".to_owned())]),
    )
    .unwrap();
    let gw = Gateway::start(&kafka.bootstrap_servers(), move |cfg| {
        cfg.sources = c.sources;
        cfg.console_recent = c.console_recent;
    })
    .await;
    (gw, kafka)
}

/// A console request with the admin token.
async fn get_text(url: &str) -> (u16, String) {
    get_as(url, Some(ADMIN_TOKEN), None).await
}

/// A request with the bearer `token` (if any) and the Host `host` (if any).
async fn get_as(url: &str, token: Option<&str>, host: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(h) = host {
        req = req.header("host", h);
    }
    reply(req.send().await.unwrap()).await
}

/// Everything the console serves: the page, the sources, every recent list.
async fn console_text(gw: &Gateway) -> String {
    let mut all = String::new();
    for path in [
        "/",
        "/sources",
        "/sources/acme/recent",
        "/sources/kt/recent",
        "/sources/web/recent",
        "/unmatched/recent",
    ] {
        let (status, body) = get_text(&gw.admin_url(path)).await;
        assert_eq!(status, 200, "{path}");
        all.push_str(&body);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_the_console() {
    let (gw, _kafka) = start(200).await;
    let client = reqwest::Client::new();
    let get = |q: String| {
        let c = client.clone();
        let url = gw.url(&q);
        async move { reply(c.get(&url).send().await.unwrap()).await }
    };
    // The key in its own parameter: accepted, then refused for its amount.
    assert_eq!(
        get(format!(
            "/postback/acme?security_token={KEY_A}&transaction_id=t1&amount=1.00"
        ))
        .await
        .0,
        200
    );
    assert_eq!(
        get(format!(
            "/postback/acme?security_token={KEY_A}&transaction_id=t2&amount=12%2C34"
        ))
        .await
        .0,
        400
    );
    // The key's value in a parameter with another name, a password, a token.
    get(format!(
        "/postback/acme?transaction_id=t3&amount=1.00&sub1={KEY_A}&password=hunter2-secret&x_token=tok-secret"
    ))
    .await;
    // A key that is wrong (and so is nobody's key) is still a secret by its name.
    get("/postback/acme?security_token=wrong-but-secret-0123&transaction_id=t4&amount=1.00".into())
        .await;
    // In a form body and in a JSON body.
    for (ctype, body) in [
        (
            "application/x-www-form-urlencoded",
            format!("security_token={KEY_A}&transaction_id=t5&amount=1.00&aff_sub2={KEY_W}"),
        ),
        (
            "application/json",
            format!(
                r#"{{"security_token":"{KEY_A}","transaction_id":"t6","amount":"1.00","note":"{PKEY}"}}"#
            ),
        ),
    ] {
        let r = client
            .post(gw.url("/postback/acme"))
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{ctype}");
    }
    // In the path, and as a pixel key.
    assert_eq!(
        get(format!("/{KEY_K}/postback?subid=t7&payout=5")).await.0,
        200
    );
    assert_eq!(
        get(format!("/pixel/web?api_key={PKEY}&tracking=t8&amount=1.00"))
            .await
            .0,
        200
    );
    // To no source at all.
    get(format!("/postback/nope?api_key={KEY_A}&tracking=t9")).await;
    // A key typed where the source's name goes, and as a bare word.
    get(format!("/postback/{KEY_W}?tracking=t10&amount=1.00")).await;
    get(format!(
        "/postback/acme?{KEY_W}&transaction_id=t11&amount=1.00"
    ))
    .await;
    // Percent-encoded, and across the 1 KiB the console keeps of a query.
    let encoded: String = KEY_W.bytes().map(|b| format!("%{b:02X}")).collect();
    get(format!(
        "/postback/acme?transaction_id=t12&amount=1.00&sub3={encoded}"
    ))
    .await;
    let pad = "p".repeat(1000);
    get(format!(
        "/postback/acme?transaction_id=t13&amount=1.00&sub4={pad}&sub5={KEY_W}&sub6={KEY_K}"
    ))
    .await;
    // Nested in a JSON body, in an array, and as a name.
    let nested = format!(
        r#"{{"transaction_id":"t14","amount":"1.00","data":{{"click":{{"ref":"{KEY_W}"}}}},"list":["{PKEY}"],"{KEY_K}":1}}"#
    );
    client
        .post(gw.url("/postback/acme"))
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .await
        .unwrap();

    let text = console_text(&gw).await;
    for secret in [
        KEY_A,
        KEY_K,
        KEY_W,
        PKEY,
        "hunter2-secret",
        "tok-secret",
        "wrong-but-secret-0123",
    ] {
        assert!(!text.contains(secret), "{secret} is in the console: {text}");
    }
    // What the operator came for is there: the requests, verdicts and reasons.
    for shown in [
        "transaction_id=t2",
        "ERROR bad_amount",
        "comma decimals are not accepted by this source",
        "subid=t7",
        "/{key}/postback",
        "tracking=t8",
        "ERROR unknown_source",
        "/postback/{key}",
        "transaction_id=t11",
        "sub3=[redacted]",
        "transaction_id=t13",
        r#"\"click\":{\"ref\":\"[redacted]\"}"#,
        // The JSON body, as a JSON string inside the JSON reply.
        r#"\"transaction_id\":\"t6\""#,
    ] {
        assert!(text.contains(shown), "{shown} is missing: {text}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_at_most_n_per_source_under_a_flood() {
    const N: usize = 50;
    let (gw, _kafka) = start(N).await;
    let client = reqwest::Client::new();
    for i in 0..400 {
        let (path, amount) = if i % 2 == 0 {
            ("/postback/acme", "1.00")
        } else {
            ("/postback/nobody", "1,00")
        };
        let url = gw.url(&format!(
            "{path}?security_token={KEY_A}&transaction_id=flood-{i}&amount={amount}&pad={}&pad2={}",
            "x".repeat(900),
            "y".repeat(900)
        ));
        client.get(&url).send().await.unwrap();
    }
    let (_, body) = get_text(&gw.admin_url("/sources/acme/recent")).await;
    let recent: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entries = recent["entries"].as_array().unwrap();
    assert_eq!(entries.len(), N);
    assert!(
        entries[0]["request"]
            .as_str()
            .unwrap()
            .contains("flood-398"),
        "newest first"
    );
    assert!(
        entries.iter().all(|e| e["cut"] == true),
        "the padding is cut"
    );
    let (_, body) = get_text(&gw.admin_url("/unmatched/recent")).await;
    let unmatched: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unmatched["entries"].as_array().unwrap().len(), N);

    let (_, body) = get_text(&gw.admin_url("/sources")).await;
    let sources: serde_json::Value = serde_json::from_str(&body).unwrap();
    let acme = &sources["sources"][0];
    assert_eq!(acme["name"], "acme");
    assert_eq!(acme["counts"]["ok"], 200, "counts cover every request");
    assert_eq!(acme["counts"]["error"], 0);
    assert_eq!(sources["unmatched"]["error"], 200);

    // Two full rings (acme's and the unmatched list), each entry at most
    // about 2.3 KiB whatever the request's size.
    let bytes = series(&gw, "postback_console_bytes").await;
    assert!(bytes > 0.0);
    assert!(bytes <= (2 * N * 2400) as f64, "{bytes} bytes");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_not_on_the_public_listener() {
    let (gw, _kafka) = start(200).await;
    for path in ["/", "/sources", "/sources/acme/recent", "/unmatched/recent"] {
        assert_eq!(get_text(&gw.url(path)).await.0, 404, "{path}");
    }
    assert_eq!(get_text(&gw.admin_url("/sources/nope/recent")).await.0, 404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium_shows_a_refused_postback_with_its_reason() {
    let (gw, _kafka) = start(200).await;
    let (status, page) = get_text(&gw.admin_url("/")).await;
    assert_eq!(status, 200);
    assert!(
        !page.contains("http:") && !page.contains("https:") && !page.contains("//cdn"),
        "the page loads nothing from elsewhere"
    );
    let refused = gw.url(&format!(
        "/postback/acme?security_token={KEY_A}&transaction_id=chromium-1&amount=12%2C34"
    ));
    assert_eq!(get_text(&refused).await.0, 400);

    // The token once, in the fragment: the page keeps it and drops it from the URL.
    let url = format!("{}#token={ADMIN_TOKEN}", gw.admin_url("/"));
    let profile = common::tempdir().unwrap();
    // No name resolves (nothing beyond the admin port is reachable by name),
    // and no proxy: the page must work from the admin port alone.
    let no_network = [
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--no-proxy-server",
    ];
    let dom = {
        let (url, p) = (url.clone(), profile.path().to_owned());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["--dump-dom"];
            args.extend(no_network);
            common::browser::chromium(&url, &p, &args)
        })
        .await
        .unwrap()
    };
    for shown in [
        "acme",
        "ERROR bad_amount",
        "amount \"12,34\": comma decimals are not accepted by this source; expected 0.00",
        "transaction_id=chromium-1",
    ] {
        assert!(dom.contains(shown), "{shown} is not on the page: {dom}");
    }
    assert!(!dom.contains(KEY_A), "no key on the page");

    // A screenshot, kept as the test's artifact.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("console.png");
    let _ = std::fs::remove_file(&shot);
    {
        let (url, p, shot) = (url.clone(), profile.path().to_owned(), shot.clone());
        tokio::task::spawn_blocking(move || {
            let arg = format!("--screenshot={}", shot.display());
            let mut args = vec![arg.as_str(), "--window-size=1280,720", "--hide-scrollbars"];
            args.extend(no_network);
            common::browser::chromium(&url, &p, &args)
        })
        .await
        .unwrap();
    }
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "a screenshot at {} ({size} bytes)",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
    gw.stop().await;
}

/// The console needs the admin token; a foreign Host (a page of another
/// site whose name was pointed here) gets 421; the metrics and the probes
/// stay open for Prometheus and the kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_needs_the_token_and_the_probes_do_not() {
    let (gw, _kafka) = start(200).await;
    for path in ["/sources", "/sources/acme/recent", "/unmatched/recent"] {
        let url = gw.admin_url(path);
        assert_eq!(
            get_as(&url, None, None).await.0,
            401,
            "{path} without a token"
        );
        assert_eq!(
            get_as(&url, Some("test-admin-token-012345678X"), None)
                .await
                .0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(get_as(&url, Some(ADMIN_TOKEN), None).await.0, 200, "{path}");
        assert_eq!(
            get_as(&url, Some(ADMIN_TOKEN), Some("rebound.attacker.example"))
                .await
                .0,
            421,
            "{path} with a foreign Host"
        );
    }
    // The page itself holds no data: without the token it is the login form.
    let (status, page) = get_as(&gw.admin_url("/"), None, None).await;
    assert_eq!(status, 401);
    assert!(page.contains("admin token"), "{page}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            get_as(&gw.admin_url(path), None, None).await.0,
            200,
            "{path}"
        );
    }
    gw.stop().await;
}

/// `[admin] metrics_addr` serves the metrics and the probes on an address
/// of their own, without the console: a Service or a network policy can
/// expose it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_address_serves_metrics_and_probes_and_never_the_console() {
    let kafka = mock_cluster();
    let port = common::process::free_port();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.metrics_addr = Some(([127, 0, 0, 1], port).into());
    })
    .await;
    let at = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get_as(&at(path), None, None).await.0, 200, "{path}");
    }
    for path in ["/", "/sources", "/unmatched/recent"] {
        assert_eq!(
            get_as(&at(path), Some(ADMIN_TOKEN), None).await.0,
            404,
            "{path}, even with the token"
        );
    }
    assert_eq!(
        get_as(&gw.admin_url("/sources"), Some(ADMIN_TOKEN), None)
            .await
            .0,
        200
    );
    gw.stop().await;
}

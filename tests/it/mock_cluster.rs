//! Black-box tests through a real socket with a real HTTP client, against
//! librdkafka's mock cluster, reading back what actually arrived in Kafka.
use std::time::Duration;

use crate::common::*;

const SETTLE: Duration = Duration::from_millis(700);

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2s_get_is_answered_ok_and_lands_once() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let (status, body) = get(&gw.url(&query("abc", "12.34"))).await;
    assert_eq!(status, 200, "{body}");
    let id = ok_id(&body);
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 1, SETTLE);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_event(&records[0], &id, "abc", "12.34", "s2s");
    let v = &records[0].value;
    assert_eq!(v["status"], "approved");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["params"], serde_json::json!({}));
    assert_eq!(v["received_at"], v["conversion_time"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_and_json_posts_and_pixels_make_events() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let client = reqwest::Client::new();

    // Form body: `+` is a space there; query and body are merged.
    let r = client
        .post(gw.url(&format!("/postback?api_key={API_KEY}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("tracking=form+token&amount=5.00&txid=T-1&sub1=a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let form_id = ok_id(&r.text().await.unwrap());

    // JSON body with a number amount, asking for a JSON reply.
    let r = client
        .post(gw.url("/postback"))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        // Written by hand: a JSON encoder would turn 7.50 into 7.5, which is not `0.00` format.
        .body(format!(r#"{{"api_key": "{API_KEY}", "tracking": "json-token", "amount": 7.50, "currency": "eur"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reply: serde_json::Value = r.json().await.unwrap();
    assert_eq!(reply["result"], "ok");
    let json_id = reply["event_id"].as_str().unwrap().to_owned();

    // Image pixel.
    let r = client
        .get(gw.url(&format!(
            "/pixel.gif?api_key={PIXEL_KEY}&tracking=pixel-token&amount=1.00&_=1699999999999"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert_eq!(
        r.headers()["cache-control"],
        "no-store, no-cache, must-revalidate, max-age=0"
    );
    let pixel_id = ok_id(r.headers()["x-postback-result"].to_str().unwrap());
    let gif = r.bytes().await.unwrap();
    assert_eq!(gif.len(), 43);
    assert!(gif.starts_with(b"GIF89a"));

    // sendBeacon: a text/plain POST body holding a query string.
    let r = client
        .post(gw.url("/pixel"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(format!(
            "api_key={PIXEL_KEY}&tracking=beacon-token&amount=2.00"
        ))
        .send()
        .await
        .unwrap();
    let beacon_id = ok_id(r.headers()["x-postback-result"].to_str().unwrap());

    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 4, SETTLE);
    assert_eq!(records.len(), 4, "{records:?}");
    let form = with_token(&records, "form token");
    assert_event(form[0], &form_id, "form token", "5.00", "s2s");
    assert_eq!(form[0].value["txid"], "T-1");
    assert_eq!(form[0].value["params"], serde_json::json!({"sub1": "a"}));
    let json = with_token(&records, "json-token");
    assert_event(json[0], &json_id, "json-token", "7.50", "s2s");
    assert_eq!(json[0].value["currency"], "EUR");
    let pixel = with_token(&records, "pixel-token");
    assert_event(pixel[0], &pixel_id, "pixel-token", "1.00", "pixel");
    assert_eq!(
        pixel[0].value["params"],
        serde_json::json!({}),
        "the cache-buster is dropped"
    );
    let beacon = with_token(&records, "beacon-token");
    assert_event(beacon[0], &beacon_id, "beacon-token", "2.00", "pixel");
    for r in &records {
        assert!(
            !r.value.to_string().contains(API_KEY),
            "the api key never reaches an event"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_kept_byte_for_byte() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let tokens = [
        "befwueicjfn93q4urcnq83xnfjemw8qz2jfq38jcrufn8j89xjqcmq3c3",
        "AbC+dE/f==",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ mixed",
        "pаypal-Ünïcødé-点击-клик",
        "abc%2Fdef",
    ];
    let mut ids = Vec::new();
    for t in &tokens {
        let (status, body) = get(&gw.url(&query(&enc(t), "1.00"))).await;
        assert_eq!(status, 200, "{t}: {body}");
        ids.push(ok_id(&body));
    }
    // A literal `+` in a query is a plus, not a space.
    let (status, body) = get(&gw.url(&query("AbC+dE/f==x", "1.00"))).await;
    assert_eq!(status, 200, "{body}");
    let plus_id = ok_id(&body);
    // Double encoding decodes once.
    let (_, body) = get(&gw.url(&query("abc%252Fdef2", "1.00"))).await;
    let double_id = ok_id(&body);

    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, tokens.len() + 2, SETTLE);
    assert_eq!(records.len(), tokens.len() + 2);
    for (t, id) in tokens.iter().zip(&ids) {
        let found = with_token(&records, t);
        assert_eq!(found.len(), 1, "token {t:?} must arrive exactly as sent");
        assert_event(found[0], id, t, "1.00", "s2s");
    }
    assert_event(
        with_token(&records, "AbC+dE/f==x")[0],
        &plus_id,
        "AbC+dE/f==x",
        "1.00",
        "s2s",
    );
    assert_event(
        with_token(&records, "abc%2Fdef2")[0],
        &double_id,
        "abc%2Fdef2",
        "1.00",
        "s2s",
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_repeat_is_a_duplicate_and_a_new_txid_or_status_is_not() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let q = query("click-1", "3.00");
    let (_, first) = get(&gw.url(&q)).await;
    let first = ok_id(&first);
    let (status, again) = get(&gw.url(&q)).await;
    assert_eq!(
        (status, again.as_str()),
        (200, format!("DUPLICATE {first}").as_str())
    );
    // Same click, other txid / status: new conversions.
    let (_, b) = get(&gw.url(&format!("{q}&txid=2"))).await;
    ok_id(&b);
    let (_, c) = get(&gw.url(&format!("{q}&status=pending"))).await;
    ok_id(&c);
    let (_, d) = get(&gw.url(&format!("{q}&status=PENDING"))).await;
    assert!(
        d.starts_with("DUPLICATE "),
        "status words are known in any case: {d}"
    );
    // A pixel repeat says so in its header.
    let r = reqwest::get(gw.url(&format!(
        "/pixel?api_key={PIXEL_KEY}&tracking=click-1&amount=3.00"
    )))
    .await
    .unwrap();
    assert_eq!(
        r.headers()["x-postback-result"],
        format!("DUPLICATE {first}")
    );

    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 3, SETTLE);
    assert_eq!(with_token(&records, "click-1").len(), 3, "{records:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_delivery_is_told_duplicate_on_its_retry() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    // A first postback connects the producer, so the slow one below is one
    // produce round trip (not a connection set-up that outlasts the delivery wait).
    let (status, _) = get(&gw.url(&query("warm-up", "1.00"))).await;
    assert_eq!(status, 200);
    // Kafka answers slowly; the client gives up before it does.
    kafka
        .broker_round_trip_time(1, Duration::from_millis(600))
        .unwrap();
    let q = query("hung-up-click", "4.20");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let gave_up = impatient.get(gw.url(&q)).send().await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    // The event reaches Kafka all the same, acknowledged, not spooled...
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 2, SETTLE);
    let hung_up = with_token(&records, "hung-up-click");
    assert_eq!(hung_up.len(), 1, "{records:?}");
    assert_eq!(metric(&gw, "postback_spooled_total").await, 0.0);
    kafka.broker_round_trip_time(1, Duration::ZERO).unwrap();
    // ...and the retry is a duplicate of it, not a second conversion.
    let (status, body) = get(&gw.url(&q)).await;
    let first = hung_up[0].value["event_id"].as_str().unwrap();
    assert_eq!((status, body), (200, format!("DUPLICATE {first}")));
    // The rest of that delivery ran as a named task of the gateway's owner
    // (the series exists once such a task started), and it has ended.
    wait_until("the detached delivery's task ended", async || {
        let running = "postback_background_tasks{task=\"detached-delivery\"}";
        value_at(&gw.admin_url("/metrics"), running).await == Some(0.0)
    })
    .await;
    // Reading settles only after nothing new arrived for a while: a second
    // event would be seen.
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 2, SETTLE);
    assert_eq!(
        with_token(&records, "hung-up-click").len(),
        1,
        "{records:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_identical_concurrent_requests_make_one_event() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let url = gw.url(&query("concurrent-click", "9.99"));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (c, u) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = c.get(u).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    let mut ok = Vec::new();
    let mut dup = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        if let Some(id) = body.strip_prefix("OK ") {
            ok.push(id.to_owned());
        } else {
            dup.push(
                body.strip_prefix("DUPLICATE ")
                    .expect("OK or DUPLICATE")
                    .to_owned(),
            );
        }
    }
    assert_eq!(ok.len(), 1, "exactly one request is accepted");
    assert!(
        dup.iter().all(|d| *d == ok[0]),
        "every duplicate names the first event"
    );
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 1, SETTLE);
    assert_eq!(records.len(), 1);
    assert_event(&records[0], &ok[0], "concurrent-click", "9.99", "s2s");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_with_no_spool_room_is_503_and_the_retry_after_recovery_is_accepted_once() {
    let kafka = mock_cluster();
    // A spool with no room: Kafka is the only way to make an event durable.
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.spool.max_bytes = 1).await;
    let url = gw.url(&query("outage-click", "4.20"));

    kafka.broker_down(1).unwrap();
    let started = std::time::Instant::now();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(r.text().await.unwrap(), "ERROR unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the 503 comes within the delivery wait"
    );
    // The pixel still answers the GIF, with the outcome in its header.
    let r = reqwest::get(gw.url(&format!(
        "/pixel?api_key={PIXEL_KEY}&tracking=outage-pixel&amount=1.00"
    )))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-postback-result"], "ERROR unavailable");
    assert_eq!(r.bytes().await.unwrap().len(), 43);

    kafka.broker_up(1).unwrap();
    let mut accepted = None;
    for _ in 0..40 {
        let (status, body) = get(&url).await;
        assert!(
            !body.starts_with("DUPLICATE"),
            "a released key is not a duplicate"
        );
        if status == 200 {
            accepted = Some(ok_id(&body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let id = accepted.expect("accepted once the broker is back");
    let (_, again) = get(&url).await;
    assert_eq!(again, format!("DUPLICATE {id}"));

    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 1, Duration::from_secs(2));
    let found = with_token(&records, "outage-click");
    assert_eq!(found.len(), 1, "{records:?}");
    assert_event(found[0], &id, "outage-click", "4.20", "s2s");
    assert!(
        with_token(&records, "outage-pixel").is_empty(),
        "a 503'd pixel is not in Kafka"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_reason_and_nothing_reaches_kafka() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.limits.max_body_bytes = 1024
    })
    .await;
    let client = reqwest::Client::new();
    let k = API_KEY;
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("/postback?api_key={k}&tracking=t&amount=12"),
            400,
            "ERROR bad_amount",
        ),
        (
            format!("/postback?api_key={k}&tracking=t&payout=10%C2%A4cy=EUR&amount=1,00"),
            400,
            "ERROR bad_amount",
        ),
        (
            format!("/postback?api_key={k}&tracking=t"),
            400,
            "ERROR missing_amount",
        ),
        (
            format!("/postback?api_key={k}&amount=1.00"),
            400,
            "ERROR missing_tracking",
        ),
        (
            format!("/postback?api_key={k}&tracking=%7Bclickid%7D&amount=1.00"),
            400,
            "ERROR unfilled_macro",
        ),
        (
            format!("/postback?api_key={k}&tracking=XYZ%payout=1&amount=1.00"),
            400,
            "ERROR bad_encoding",
        ),
        (
            format!("/postback?api_key={k}&tracking=a&tracking=b&amount=1.00"),
            400,
            "ERROR duplicate_param",
        ),
        (
            format!("/postback?api_key={k}&tracking=a%01b&amount=1.00"),
            400,
            "ERROR bad_tracking",
        ),
        (
            format!("/postback?api_key={k}&tracking=t&amount=1.00&status=Hold"),
            400,
            "ERROR bad_status",
        ),
        (
            format!("/postback?api_key={k}&tracking=t&amount=1.00&currency=XYZ"),
            400,
            "ERROR bad_currency",
        ),
        (
            format!("/postback?api_key={k}&tracking=t&amount=1000000.01"),
            400,
            "ERROR amount_out_of_range",
        ),
        (
            "/postback?tracking=t&amount=1.00".to_owned(),
            401,
            "ERROR missing_api_key",
        ),
        (
            "/postback?api_key=wrong&tracking=t&amount=1.00".to_owned(),
            403,
            "ERROR bad_api_key",
        ),
        (
            format!("/postback/nope?api_key={k}&tracking=t&amount=1.00"),
            404,
            "ERROR unknown_source",
        ),
        (
            format!(
                "/postback?api_key={k}&amount=1.00&tracking={}",
                "x".repeat(9000)
            ),
            414,
            "ERROR too_large",
        ),
    ];
    for (path, status, body) in &cases {
        let r = client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), *status, "{path}");
        assert_eq!(r.text().await.unwrap(), *body, "{path}");
    }
    let r = client
        .post(gw.url("/postback"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "api_key={k}&tracking=t&amount=1.00&pad={}",
            "x".repeat(2000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.text().await.unwrap(), "ERROR too_large");
    let r = client
        .post(gw.url("/postback"))
        .header("content-type", "application/xml")
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = client.get(gw.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client.delete(gw.url("/postback")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = client
        .get(gw.url(&query("t", "1.00")))
        .header("x-big", "y".repeat(30_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    // A refused pixel is still the GIF.
    let r = client
        .get(gw.url("/pixel.gif?tracking=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-postback-result"], "ERROR missing_api_key");
    assert_eq!(r.bytes().await.unwrap().len(), 43);

    // Then one good postback: it is the only event in the topic.
    let (_, body) = get(&gw.url(&query("good", "1.00"))).await;
    let id = ok_id(&body);
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 1, SETTLE);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_event(&records[0], &id, "good", "1.00", "s2s");

    assert_eq!(
        series(&gw, "postback_rejections_total{reason=\"bad_amount\"}").await,
        2.0
    );
    assert_eq!(
        series(&gw, "postback_accepted_total{source=\"default\"}").await,
        1.0
    );
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("postback_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("postback_kafka_delivery_duration_seconds_bucket"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_and_readyz_is_503_while_nothing_can_be_made_durable() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.spool.max_bytes = 1).await;
    assert_eq!(status_of(&gw.admin_url("/healthz")).await, 200);
    assert_eq!(status_of(&gw.admin_url("/readyz")).await, 200);
    // The public port does not serve admin paths.
    assert_eq!(status_of(&gw.url("/metrics")).await, 404);
    kafka.broker_down(1).unwrap();
    let mut not_ready = false;
    for _ in 0..50 {
        if status_of(&gw.admin_url("/readyz")).await == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        not_ready,
        "/readyz turns 503 while Kafka is unreachable and the spool has no room"
    );
    kafka.broker_up(1).unwrap();
    gw.stop().await;
}

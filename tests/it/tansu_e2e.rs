//! End-to-end: the gateway binary as its own process, against Tansu, a
//! separate Kafka-protocol broker process, with events read back by a consumer.
use crate::common;
use std::time::Duration;

use crate::common::process::{signal, GatewayProcess, Tansu};
use crate::common::*;

const SETTLE: Duration = Duration::from_secs(1);

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postbacks_reach_tansu_exactly_once() {
    let tansu = Tansu::start();
    // The topic does not exist yet: the gateway creates it at start.
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[]).await;

    let seed = "befwueicjfn93q4urcnq83xnfjemw8qz2jfq38jcrufn8j89xjqcmq3c3";
    let (status, body) = get(&gw.url(&query(seed, "12.34"))).await;
    assert_eq!(status, 200, "{body}");
    let seed_id = ok_id(&body);

    let special = "AbC+dE/f==|пример|\"quoted\" & <tag>";
    let (_, body) = get(&gw.url(&query(&enc(special), "0.50"))).await;
    let special_id = ok_id(&body);

    let r = reqwest::get(gw.url(&format!(
        "/pixel.gif?api_key={PIXEL_KEY}&tracking=pixel-1&amount=0.00"
    )))
    .await
    .unwrap();
    assert_eq!(r.headers()["content-type"], "image/gif");
    let pixel_id = ok_id(r.headers()["x-postback-result"].to_str().unwrap());

    let (_, dup) = get(&gw.url(&query(seed, "12.34"))).await;
    assert_eq!(dup, format!("DUPLICATE {seed_id}"));
    let (status, bad) = get(&gw.url(&query("never", "12,34"))).await;
    assert_eq!((status, bad.as_str()), (400, "ERROR bad_amount"));

    let records = read_topic(&tansu.brokers, TOPIC, 3, SETTLE);
    assert_eq!(records.len(), 3, "{records:?}");
    assert_event(
        with_token(&records, seed)[0],
        &seed_id,
        seed,
        "12.34",
        "s2s",
    );
    assert_event(
        with_token(&records, special)[0],
        &special_id,
        special,
        "0.50",
        "s2s",
    );
    assert_event(
        with_token(&records, "pixel-1")[0],
        &pixel_id,
        "pixel-1",
        "0.00",
        "pixel",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_with_every_acknowledged_event_in_tansu() {
    let tansu = Tansu::start();
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (c, u) = (client.clone(), gw.url(&query(&format!("term-{i}"), "1.00")));
        tasks.push(tokio::spawn(async move {
            c.get(u).send().await.ok()?.text().await.ok()
        }));
    }
    // Signal while requests are still arriving, once some were accepted.
    let accepted = gw.admin_url("/metrics");
    let series = "postback_accepted_total{source=\"default\"}";
    let (limit, every) = (Duration::from_secs(10), Duration::from_millis(5));
    wait_every("a postback is accepted", limit, every, async || {
        value_at(&accepted, series).await.is_some_and(|n| n > 0.0)
    })
    .await;
    let signalled = std::time::Instant::now();
    signal(gw.child.id(), "TERM");
    for t in tasks {
        if let Some(body) = t.await.unwrap() {
            if let Some(id) = body.strip_prefix("OK ") {
                ids.push(id.to_owned());
            }
        }
    }
    let status = gw.exit_status().await;
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "exits within the grace period"
    );
    assert!(
        !ids.is_empty(),
        "some postbacks were accepted before the signal"
    );

    let records = read_topic(&tansu.brokers, TOPIC, ids.len(), SETTLE);
    for id in &ids {
        let n = count_of(&records, id);
        assert_eq!(n, 1, "acknowledged event {id} is in Kafka exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_loses_nothing_acknowledged() {
    use tokio::io::AsyncWriteExt;

    let tansu = Tansu::start();
    let mut gw = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = client
            .get(gw.url(&query(&format!("twice-{i}"), "1.00")))
            .send()
            .await
            .unwrap();
        ids.push(ok_id(&r.text().await.unwrap()));
    }
    // A slow client holds a request open, so the first signal's drain waits for it.
    let mut slow = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    slow.write_all(b"POST /postback HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntracking=")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    signal(gw.child.id(), "TERM");
    wait_until("the first signal is taken (/readyz 503)", async || {
        status_of(&gw.admin_url("/readyz")).await == 503
    })
    .await;
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the first signal waits for open requests"
    );
    let second = std::time::Instant::now();
    signal(gw.child.id(), "TERM");
    let status = gw.exit_status().await;
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "the second signal exits at once"
    );
    assert_eq!(status.code(), Some(130));
    drop(slow);

    let records = read_topic(&tansu.brokers, TOPIC, ids.len(), SETTLE);
    for id in &ids {
        assert_eq!(count_of(&records, id), 1, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_command_reads_back_what_was_accepted() {
    let tansu = Tansu::start();
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    let (_, body) = get(&gw.url(&query("read-me-back", "3.21"))).await;
    let id = ok_id(&body);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .args(["events", "--brokers", &tansu.brokers])
        .output()
        .expect("run events");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("read-me-back "))
        .expect("the event is printed");
    let v: serde_json::Value = serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
    assert_eq!(v["event_id"], id.as_str());
    assert_eq!(v["amount"], "3.21");
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// A topic deleted while the gateway runs is created again (Kafka answers
/// a produce to a deleted topic with an error, and the events wait in the
/// spool meanwhile; Tansu 0.6 takes such a produce without a word, so here
/// the postback is sent once the topic is back), and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_at_run_time_is_created_again() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::ClientConfig;

    let tansu = Tansu::start();
    let dir = common::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    let gw =
        GatewayProcess::start_logging_to(Some(&tansu.brokers), &[("RUST_LOG", "info")], &log).await;
    let (status, before) = get(&gw.url(&query("before-delete", "1.00"))).await;
    assert_eq!(status, 200, "{before}");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &tansu.brokers)
        .create()
        .unwrap();
    let deleted = admin
        .delete_topics(&[TOPIC], &AdminOptions::new())
        .await
        .unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");

    let created = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("Created the topic")
            .count()
    };
    wait_within(
        "the topic is created again",
        Duration::from_secs(30),
        async || created() == 2,
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("The topic conversions is gone from the cluster"),
        "{text}"
    );
    let metrics = gw.admin_url("/metrics");
    wait_until("the gateway is ready again", async || {
        status_of(&gw.admin_url("/readyz")).await == 200
    })
    .await;
    assert_eq!(
        value_at(&metrics, "postback_kafka_topic_missing").await,
        Some(0.0)
    );
    let (status, after) = get(&gw.url(&query("after-delete", "2.00"))).await;
    assert_eq!(status, 200, "{after}");
    let records = read_topic(&tansu.brokers, TOPIC, 1, SETTLE);
    let found = with_token(&records, "after-delete");
    assert_eq!(found.len(), 1, "{records:?}");
    assert_eq!(found[0].value["event_id"], ok_id(&after).as_str());
}

/// SIGTERM with the broker frozen and postbacks in flight: the process exits
/// within `shutdown_grace_ms` and half a second, and every postback
/// answered OK reaches the topic once the broker is back (from the spool, at
/// the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_a_frozen_broker_ends_within_the_grace_period() {
    use std::sync::Arc;

    let tansu = Tansu::start();
    let (_dir, config) = common::process::config_file("shutdown_grace_ms = 2000\n");
    let env = [("POSTBACK_CONFIG", config.as_str())];
    let gw = GatewayProcess::start(Some(&tansu.brokers), &env).await;
    let (status, before) = get(&gw.url(&query("frozen-before", "1.00"))).await;
    assert_eq!(status, 200, "{before}");
    let spool = gw.spool.clone();

    tansu.pause();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (c, u) = (
            client.clone(),
            gw.url(&query(&format!("frozen-{i}"), "1.00")),
        );
        tasks.push(tokio::spawn(async move {
            c.get(u).send().await.ok()?.text().await.ok()
        }));
    }
    // Every one of them waits on the frozen broker in the producer's queue.
    wait_until("the postbacks wait on the broker", async || {
        value_at(&gw.admin_url("/metrics"), "postback_kafka_queue_depth")
            .await
            .is_some_and(|n| n >= 20.0)
    })
    .await;
    let signalled = std::time::Instant::now();
    signal(gw.child.id(), "TERM");
    let status = gw.exit_status().await;
    let took = signalled.elapsed();
    eprintln!("exited {took:?} after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        took <= Duration::from_millis(2500),
        "exits within shutdown_grace_ms + 0.5 s: {took:?}"
    );
    let mut ids = vec![ok_id(&before)];
    for t in tasks {
        if let Some(body) = t.await.unwrap() {
            if let Some(id) = body.strip_prefix("OK ") {
                ids.push(id.to_owned());
            }
        }
    }

    tansu.resume();
    let gw = GatewayProcess::start_with_spool(Some(&tansu.brokers), &env, Arc::clone(&spool)).await;
    let metrics = gw.admin_url("/metrics");
    wait_until("the spool is drained", async || {
        value_at(&metrics, "postback_spool_events").await == Some(0.0)
    })
    .await;
    let records = read_topic(&tansu.brokers, TOPIC, ids.len(), SETTLE);
    for id in &ids {
        let n = count_of(&records, id);
        assert_eq!(n, 1, "event {id} is in the topic once: {records:?}");
    }
}

/// `/metrics` carries the process's figures and librdkafka's statistics
/// (the queue, and per broker its state, round trip and requests) while
/// postbacks flow to Tansu; a broker that goes away is reported down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_process_and_the_kafka_client() {
    let tansu = Tansu::start();
    let gw = GatewayProcess::start(
        Some(&tansu.brokers),
        &[("KAFKA_PROPERTY_STATISTICS_INTERVAL_MS", "500")],
    )
    .await;
    let client = reqwest::Client::new();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..200 {
        let request = client.get(gw.url(&query(&format!("metrics-load-{i}"), "1.00")));
        sends.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let statuses = sends.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let metrics = gw.admin_url("/metrics");
    let mut text = String::new();
    wait_until("librdkafka's statistics reach /metrics", async || {
        text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        text.contains("postback_kafka_broker_rtt_seconds{")
            && text.contains("postback_kafka_producer_queue_max_messages ")
    })
    .await;
    let line = |prefix: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(s, v)| (s.to_owned(), v.parse().unwrap()))
            .collect()
    };
    let up = line("postback_kafka_broker_up{");
    assert_eq!(up.len(), 1, "one broker, by node id: {up:?}");
    assert_eq!(up[0].1, 1.0, "{up:?}");
    let rtt = line("postback_kafka_broker_rtt_seconds{");
    assert_eq!(rtt.len(), 2, "p50 and p99: {rtt:?}");
    assert!(rtt.iter().all(|(_, v)| *v > 0.0 && *v < 5.0), "{rtt:?}");
    for series in [
        "postback_kafka_broker_requests_in_flight{",
        "postback_kafka_broker_requests_queued{",
        "postback_kafka_producer_queue_messages ",
        "postback_kafka_producer_queue_bytes ",
    ] {
        let found = line(series);
        assert_eq!(found.len(), 1, "{series}: {found:?}");
        assert!(found[0].1 >= 0.0, "{found:?}");
    }
    assert_eq!(
        line("postback_kafka_producer_queue_max_messages ")[0].1,
        200_000.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = line("process_start_time_seconds ")[0].1;
    assert!(start <= now && now - start < 600.0, "{start} {now}");
    assert!(line("process_resident_memory_bytes ")[0].1 > 1e6);
    assert!(line("process_open_fds ")[0].1 > 3.0);
    assert!(line("process_cpu_seconds_total ")[0].1 >= 0.0);
    // Bounded labels: brokers by node id, no bootstrap or internal pseudo-broker.
    for (series, _) in up.iter().chain(&rtt) {
        let id = series.split('"').nth(1).unwrap_or_default();
        assert!(id.parse::<u32>().is_ok(), "{series}");
    }

    let broker = up[0].0.clone();
    drop(tansu);
    wait_until("the broker is reported down", async || {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        text.lines()
            .any(|l| l.strip_prefix(&broker).is_some_and(|v| v.trim() == "0"))
    })
    .await;
}

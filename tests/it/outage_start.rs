//! Kafka outages at the edges, end to end with the binary and Tansu: a
//! gateway that starts while the broker is unreachable serves postbacks from
//! the spool and delivers each exactly once when the broker comes (repeats of
//! events already in the topic are dropped then); SIGTERM while the broker is
//! down ends in time and keeps the spool for the next start.
use crate::common;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::process::{free_port, signal, GatewayProcess, Tansu};
use crate::common::*;

async fn send(gw: &GatewayProcess, token: &str) -> (u16, String) {
    reply(reqwest::get(gw.url(&query(token, "7.00"))).await.unwrap()).await
}

async fn spool_events(gw: &GatewayProcess) -> f64 {
    series_at(&gw.admin_url("/metrics"), "postback_spool_events").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_without_kafka_serves_from_the_spool_and_delivers_once() {
    // Nothing listens on the broker's port yet.
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let gw = GatewayProcess::start(Some(&brokers), &[("RUST_LOG", "info")]).await;
    eprintln!("ready without Kafka after {:?}", started.elapsed());
    let mut ok = Vec::new();
    for i in 0..20 {
        let token = format!("no-kafka-{i}");
        let (status, body) = send(&gw, &token).await;
        assert_eq!(status, 200, "{token}: {body}");
        ok.push((token, ok_id(&body)));
    }
    assert_eq!(
        spool_events(&gw).await,
        20.0,
        "all of them wait in the spool"
    );

    // The broker comes; the gateway makes the topic and drains.
    let tansu = Tansu::start_on(port);
    wait_within("the spool drains", Duration::from_secs(40), async || {
        spool_events(&gw).await == 0.0
    })
    .await;
    let (status, body) = send(&gw, "after-kafka").await;
    assert_eq!(status, 200, "{body}");
    ok.push(("after-kafka".into(), ok_id(&body)));
    let records = read_topic(&tansu.brokers, TOPIC, ok.len(), Duration::from_secs(2));
    assert_eq!(records.len(), ok.len(), "exactly the acknowledged events");
    for (token, id) in &ok {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token}");
        assert_eq!(found[0].value["event_id"], id.as_str());
    }
    for (token, id) in ok.iter().take(3) {
        assert_eq!(send(&gw, token).await.1, format!("DUPLICATE {id}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_accepted_during_a_start_without_kafka_are_not_sent_twice_and_sigterm_keeps_the_spool(
) {
    let tansu = Tansu::start();
    // Before the outage: events in the topic.
    let first = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    let mut before = HashMap::new();
    for i in 0..10 {
        let token = format!("before-{i}");
        let (status, body) = send(&first, &token).await;
        assert_eq!(status, 200, "{body}");
        before.insert(token, ok_id(&body));
    }
    let spool = first.spool.clone();
    signal(first.child.id(), "TERM");
    assert!(first.exit_status().await.success());

    // The broker freezes; a gateway starts on the same spool.
    tansu.pause();
    let gw = GatewayProcess::start_with_spool(Some(&tansu.brokers), &[("RUST_LOG", "info")], spool)
        .await;
    let mut during = Vec::new();
    // Repeats of events already in the topic: the window cannot know them yet.
    for token in ["before-0", "before-1", "before-2"] {
        let (status, body) = send(&gw, token).await;
        assert_eq!(status, 200, "{token}: {body}");
    }
    for i in 0..10 {
        let token = format!("during-{i}");
        let (status, body) = send(&gw, &token).await;
        assert_eq!(status, 200, "{token}: {body}");
        during.push((token, ok_id(&body)));
    }
    assert_eq!(spool_events(&gw).await, 13.0);

    // SIGTERM with the broker down: exit 0 within the grace period, spool kept.
    let spool = gw.spool.clone();
    let t = Instant::now();
    signal(gw.child.id(), "TERM");
    let status = gw.exit_status().await;
    assert!(status.success(), "{status}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());

    // The next start, with the broker back, drains exactly once.
    tansu.resume();
    let gw = GatewayProcess::start_with_spool(Some(&tansu.brokers), &[("RUST_LOG", "info")], spool)
        .await;
    wait_within("the spool drains", Duration::from_secs(40), async || {
        spool_events(&gw).await == 0.0
    })
    .await;
    let records = read_topic(&tansu.brokers, TOPIC, 20, Duration::from_secs(2));
    for (token, id) in before.iter() {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token} once, the repeat dropped");
        assert_eq!(found[0].value["event_id"], id.as_str());
    }
    for (token, id) in &during {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token}");
        assert_eq!(found[0].value["event_id"], id.as_str());
    }
    assert_eq!(records.len(), 20);
    assert!(series_at(&gw.admin_url("/metrics"), "postback_spool_skipped_total").await >= 3.0);
}

/// Signal handlers are in place before anything slow: a SIGHUP (a config
/// reload sent by a deploy tool) while the gateway waits for Kafka at start
/// does not kill it, and a SIGTERM then stops it in order (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_during_the_start_are_handled() {
    let spool = common::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .env_clear()
        .env("KAFKA_BROKERS", format!("127.0.0.1:{}", free_port()))
        .env("SPOOL_DIR", spool.path())
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("ADMIN_ADDR", &admin)
        .env("POSTBACK_API_KEY", API_KEY)
        .spawn()
        .unwrap();
    // The gateway binds its listeners after its signal handlers are in and
    // just before its start's wait for Kafka (up to 5 s): the signal lands
    // in that wait.
    wait_within(
        "the listeners are bound",
        Duration::from_secs(10),
        async || tokio::net::TcpStream::connect(&admin).await.is_ok(),
    )
    .await;
    signal(child.id(), "HUP");
    wait_within("ready after the SIGHUP", Duration::from_secs(20), async || {
        matches!(reqwest::get(format!("http://{admin}/readyz")).await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    signal(child.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

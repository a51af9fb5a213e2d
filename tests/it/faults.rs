//! Faults inside the gateway, injected through its `sink::faults::Faults`: a
//! stalled disk under the spool, a delivery that panics while the spool
//! drains, and a background task that panics.
use crate::common;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use postback_gateway::sink::faults::Faults;
use postback_gateway::Handles;

/// A spool write the disk does not confirm in time is answered 503 with
/// `Retry-After`, counted, and its dedup key released: the sender's retry is
/// accepted, and the late write is not sent to Kafka beside the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_disk_is_answered_503_and_the_retry_is_the_only_event() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.spool.append_timeout = Duration::from_millis(300)
    })
    .await;
    kafka.broker_down(1).unwrap();
    wait_until("Kafka is known to be down", async || {
        series(&gw, "postback_kafka_reachable").await == 0.0
    })
    .await;

    gw.faults()
        .spool_write_stall_ms
        .store(1500, Ordering::Relaxed);
    let r = reqwest::get(gw.url(&query("stalled", "3.00")))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(r.text().await.unwrap(), "ERROR unavailable");
    assert_eq!(series(&gw, "postback_spool_timeouts_total").await, 1.0);

    // The disk recovers (the late write lands); the sender retries, as a
    // sender does on a 503, until it is answered OK.
    gw.faults().spool_write_stall_ms.store(0, Ordering::Relaxed);
    let mut id = String::new();
    wait_until("a retry is accepted", async || {
        let r = reqwest::get(gw.url(&query("stalled", "3.00")))
            .await
            .unwrap();
        let (status, body) = (r.status(), r.text().await.unwrap());
        assert!(
            status == 200 || body == "ERROR unavailable",
            "{status} {body}: the key was released"
        );
        if status == 200 {
            id = ok_id(&body);
        }
        status == 200
    })
    .await;

    kafka.broker_up(1).unwrap();
    wait_until("the spool drains", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 1, Duration::from_secs(2));
    let found = with_token(&records, "stalled");
    assert_eq!(found.len(), 1, "only the retry: {records:?}");
    assert_eq!(found[0].value["event_id"], id.as_str());
    gw.stop().await;
}

/// A delivery that panics while the spool drains leaves its record to be
/// sent again: nothing acknowledged is lost to a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_delivery_leaves_its_record_in_the_spool() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    kafka.broker_down(1).unwrap();
    let mut ok = Vec::new();
    for i in 0..3 {
        let token = format!("panic-{i}");
        let r = reqwest::get(gw.url(&query(&token, "1.00"))).await.unwrap();
        assert_eq!(r.status(), 200);
        ok.push((token, ok_id(&r.text().await.unwrap())));
    }
    gw.faults()
        .drain_delivery_panics
        .store(2, Ordering::Relaxed);
    kafka.broker_up(1).unwrap();
    wait_until("the spool drains", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    assert_eq!(
        gw.faults().drain_delivery_panics.load(Ordering::Relaxed),
        0,
        "the panics happened"
    );
    assert_eq!(
        series(&gw, "postback_task_panics_total{task=\"drain-delivery\"}").await,
        2.0,
        "each panic is counted under the task's name"
    );
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 3, Duration::from_secs(2));
    assert_eq!(records.len(), 3);
    for (token, id) in &ok {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token}");
        assert_eq!(found[0].value["event_id"], id.as_str());
    }
    gw.stop().await;
}

/// A background task that panics is counted under its name and the gateway
/// goes on serving without it; at shutdown `run` returns only once every
/// task it started has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_task_panic_is_counted_and_shutdown_waits_for_every_task() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let sweeper = "postback_background_tasks{task=\"dedup-sweeper\"}";
    let panics = "postback_task_panics_total{task=\"dedup-sweeper\"}";
    assert_eq!(series(&gw, sweeper).await, 1.0);
    assert_eq!(series(&gw, panics).await, 0.0);

    gw.faults().sweeper_panics.store(true, Ordering::Relaxed);
    wait_until("the sweeper's panic is counted", async || {
        series(&gw, panics).await == 1.0
    })
    .await;
    assert_eq!(series(&gw, sweeper).await, 0.0, "the sweeper is gone");
    let r = reqwest::get(gw.url(&query("after-a-panic", "1.00")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the gateway still serves");

    let running = metrics_text(&gw).await;
    let tasks: Vec<&str> = running
        .lines()
        .filter(|l| l.starts_with("postback_background_tasks{") && !l.ends_with(" 0"))
        .collect();
    assert!(
        tasks.len() >= 5,
        "the listeners, watcher, drainer, ...: {tasks:?}"
    );
    let metrics = gw.metrics().clone();
    gw.stop().await;
    // The admin listener is gone with the gateway: read its recorder itself.
    let after = metrics.render();
    for line in after
        .lines()
        .filter(|l| l.starts_with("postback_background_tasks{"))
    {
        assert!(
            line.ends_with(" 0"),
            "still running after run returned: {line}"
        );
    }
}

/// A drainer that panics is started again (after a pause), counted, and
/// the spooled events still reach Kafka, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drainer_that_panics_is_started_again_and_the_spool_drains() {
    let kafka = mock_cluster();
    let dir = common::tempdir().unwrap();
    spool_records(
        dir.path(),
        &[("drainer-panic-1", 8001), ("drainer-panic-2", 8002)],
    )
    .await;
    let faults = Faults::default();
    faults.drainer_panics.store(true, Ordering::Relaxed);
    let handles = Handles {
        faults,
        ..Handles::default()
    };
    let path = dir.path().to_owned();
    let gw = Gateway::start_with(&kafka.bootstrap_servers(), handles, |c| c.spool_dir = path).await;
    let panics = "postback_task_panics_total{task=\"spool-drainer\"}";
    let restarts = "postback_task_restarts_total{task=\"spool-drainer\"}";
    wait_until("the spool is drained", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    assert_eq!(series(&gw, panics).await, 1.0);
    assert_eq!(series(&gw, restarts).await, 1.0);
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 2, Duration::from_secs(1));
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(with_token(&records, "drainer-panic-1").len(), 1);
    gw.stop().await;
}

//! A full disk under the spool during a Kafka outage, on a small tmpfs the
//! test mounts (the suite runs as root; elsewhere the test says why it
//! cannot run and fails): postbacks the spool cannot hold get 503, `/readyz`
//! says why, and once Kafka is back every postback answered OK is in the
//! topic exactly once.
use std::time::Duration;

use crate::common::process::{GatewayProcess, SmallDisk, Tansu};
use crate::common::*;

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_an_outage_is_503_and_said_in_readyz_and_nothing_answered_ok_is_lost() {
    let disk = SmallDisk::mount(256);
    let spool = disk.path().join("spool");
    let tansu = Tansu::start();
    let gw = GatewayProcess::start(
        Some(&tansu.brokers),
        &[("SPOOL_DIR", spool.to_str().unwrap())],
    )
    .await;
    let (status, body) = get(&gw.url(&query("disk-before", "1.00"))).await;
    assert_eq!(status, 200, "{body}");
    let mut ok = vec![ok_id(&body)];

    tansu.pause();
    let metrics = gw.admin_url("/metrics");
    wait_until("Kafka is known to be down", async || {
        value_at(&metrics, "postback_kafka_reachable").await == Some(0.0)
    })
    .await;
    // About 400 bytes a record: the 256 KiB disk is full after some hundreds.
    let padding = format!("&sub1={}", "x".repeat(200));
    let mut refused = 0;
    for i in 0..2000 {
        let (status, body) =
            get(&gw.url(&format!("{}{padding}", query(&format!("disk-{i}"), "1.00")))).await;
        match status {
            200 => ok.push(ok_id(&body)),
            503 => {
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("{other} {body}"),
        }
    }
    assert!(
        refused >= 5,
        "the disk never filled: {} answered OK",
        ok.len()
    );
    let (status, why) = get(&gw.admin_url("/readyz")).await;
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains("Kafka is not reachable") && why.contains("No space left on device"),
        "{why}"
    );
    assert_eq!(
        value_at(&metrics, "postback_spool_writable").await,
        Some(0.0)
    );

    tansu.resume();
    wait_within("the spool drains", Duration::from_secs(60), async || {
        value_at(&metrics, "postback_spool_events").await == Some(0.0)
    })
    .await;
    wait_until("ready again", async || {
        status_of(&gw.admin_url("/readyz")).await == 200
    })
    .await;
    let (status, body) = get(&gw.url(&query("disk-after", "1.00"))).await;
    assert_eq!(status, 200, "{body}");
    ok.push(ok_id(&body));

    let records = read_topic(&tansu.brokers, TOPIC, ok.len(), Duration::from_secs(1));
    for id in &ok {
        let n = count_of(&records, id);
        assert_eq!(n, 1, "event {id} once");
    }
}

//! Crashes and restarts, end to end: the gateway binary against Tansu, killed
//! with SIGKILL mid-stream and started again on the same spool.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::process::{signal, GatewayProcess, Tansu};
use crate::common::*;

/// Sends `n` postbacks from 16 concurrent senders; returns (token, reply) of
/// every postback answered 200 OK. Stops early when the gateway goes away.
async fn stream(
    gw_url: impl Fn(&str) -> String,
    prefix: &str,
    n: usize,
    kill_after: Option<(usize, u32)>,
) -> Vec<(String, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (c, tx, next) = (client.clone(), tx.clone(), next.clone());
        let urls: Vec<(String, String)> = (0..n)
            .map(|i| {
                let token = format!("{prefix}-{i}");
                let url = gw_url(&query(&token, "6.66"));
                (token, url)
            })
            .collect();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= urls.len() {
                    return;
                }
                let (token, url) = &urls[i];
                let Ok(r) = c.get(url).send().await else {
                    continue;
                };
                if r.status() == 200 {
                    if let Ok(body) = r.text().await {
                        let _ = tx.send((token.clone(), body));
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut ok = Vec::new();
    let mut killed = false;
    while let Some((token, body)) = rx.recv().await {
        if body.starts_with("OK ") {
            ok.push((token, body));
        }
        if let Some((after, pid)) = kill_after {
            if !killed && ok.len() >= after {
                signal(pid, "KILL");
                killed = true;
            }
        }
    }
    for w in workers {
        let _ = w.await;
    }
    ok
}

async fn assert_all_in_kafka_once_and_repeats_are_duplicates(
    tansu: &Tansu,
    gw: &GatewayProcess,
    ok: &[(String, String)],
) {
    let records = read_topic(&tansu.brokers, TOPIC, ok.len(), Duration::from_secs(2));
    for (token, body) in ok {
        let id = ok_id(body);
        let found: Vec<_> = records
            .iter()
            .filter(|r| r.value["event_id"] == id.as_str())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "acknowledged {token} ({id}) is in Kafka exactly once"
        );
        assert_event(found[0], &id, token, "6.66", "s2s");
    }
    let client = reqwest::Client::new();
    for (token, body) in ok {
        let again = client
            .get(gw.url(&query(token, "6.66")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            again,
            format!("DUPLICATE {}", ok_id(body)),
            "a repeat of {token} after the restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_acknowledged_and_repeats_stay_duplicates() {
    let tansu = Tansu::start();
    let mut gw = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    let pid = gw.child.id();
    let public = gw.public;
    let ok = stream(
        |q| format!("http://{public}{q}"),
        "kill9",
        3000,
        Some((200, pid)),
    )
    .await;
    let _ = gw.child.wait();
    assert!(ok.len() >= 200, "{} acknowledged before the kill", ok.len());

    let gw = GatewayProcess::start_with_spool(
        Some(&tansu.brokers),
        &[("RUST_LOG", "info")],
        gw.spool.clone(),
    )
    .await;
    assert_all_in_kafka_once_and_repeats_are_duplicates(&tansu, &gw, &ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_survive_sigkill_and_drain_after_the_restart() {
    let tansu = Tansu::start();
    let mut gw = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    // The broker stops answering: postbacks go to the spool.
    tansu.pause();
    let public = gw.public;
    let ok = stream(|q| format!("http://{public}{q}"), "spooled", 150, None).await;
    assert_eq!(
        ok.len(),
        150,
        "every postback is answered 200 from the spool"
    );
    signal(gw.child.id(), "KILL");
    let _ = gw.child.wait();
    tansu.resume();

    let started = Instant::now();
    let gw = GatewayProcess::start_with_spool(Some(&tansu.brokers), &[], gw.spool.clone()).await;
    eprintln!("restart to ready: {:?}", started.elapsed());
    assert_all_in_kafka_once_and_repeats_are_duplicates(&tansu, &gw, &ok).await;
}

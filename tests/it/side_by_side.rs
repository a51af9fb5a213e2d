//! Two gateways in one process, side by side: each has its own metrics
//! recorder and counts only what it was sent.
use crate::common::*;

/// Sends `n` new postbacks (tokens `{prefix}-0` ...) to `gw`, each answered OK.
async fn send(gw: &Gateway, prefix: &str, n: usize) {
    for i in 0..n {
        let r = reqwest::get(gw.url(&query(&format!("{prefix}-{i}"), "1.00")))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{prefix}-{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_in_one_process_count_only_their_own_postbacks() {
    let kafka = mock_cluster();
    let brokers = kafka.bootstrap_servers();
    let a = Gateway::start(&brokers, |_| {}).await;
    let b = Gateway::start(&brokers, |_| {}).await;
    send(&a, "side-a", 3).await;
    send(&b, "side-b", 5).await;
    // A repeat, and a refusal, to the first only.
    let r = reqwest::get(a.url(&query("side-a-0", "1.00")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(a.url("/postback?api_key=wrong-key-0123456789&tracking=x"))
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    let accepted = "postback_accepted_total{source=\"default\"}";
    let requests = "postback_requests_total{endpoint=\"s2s\",outcome=\"accepted\"}";
    let duplicates = "postback_requests_total{endpoint=\"s2s\",outcome=\"duplicate\"}";
    let rejected = "postback_requests_total{endpoint=\"s2s\",outcome=\"rejected\"}";
    assert_eq!(metric(&a, accepted).await, 3.0);
    assert_eq!(metric(&b, accepted).await, 5.0);
    assert_eq!(metric(&a, requests).await, 3.0);
    assert_eq!(metric(&b, requests).await, 5.0);
    assert_eq!(metric(&a, duplicates).await, 1.0);
    assert_eq!(metric(&b, duplicates).await, 0.0);
    assert_eq!(metric(&a, rejected).await, 1.0);
    assert_eq!(metric(&b, rejected).await, 0.0);
    // Each runs its own background tasks, and counts only those.
    let sweeper = "postback_background_tasks{task=\"dedup-sweeper\"}";
    assert_eq!(series(&a, sweeper).await, 1.0);
    assert_eq!(series(&b, sweeper).await, 1.0);
    // The process's own figures appear on each.
    for gw in [&a, &b] {
        let text = metrics_text(gw).await;
        assert!(
            text.lines()
                .any(|l| l.starts_with("process_resident_memory_bytes ")),
            "no process_* series"
        );
    }

    // One stopped, the other's counts and tasks are untouched.
    a.stop().await;
    send(&b, "side-b-after", 1).await;
    assert_eq!(metric(&b, accepted).await, 6.0);
    assert_eq!(series(&b, sweeper).await, 1.0);
    b.stop().await;
}

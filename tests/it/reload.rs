//! SIGHUP reloads the sources of the gateway binary under traffic: no request
//! fails, a new source works, and a broken config is refused with a log line
//! while the running sources stay.
use crate::common;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::process::{signal, GatewayProcess};
use crate::common::wait_until;

const KEY_A: &str = "reload-key-a-0123456789";
const KEY_B: &str = "reload-key-b-0123456789";

const V1: &str = r#"
[sources.a]
api_keys = ["reload-key-a-0123456789"]
"#;

const V2: &str = r#"
[sources.a]
api_keys = ["reload-key-a-0123456789"]
[sources.b]
preset = "voluum"
api_keys = ["reload-key-b-0123456789"]
"#;

/// V2 plus two sources with a problem each.
const BROKEN: &str = r#"
[sources.a]
api_keys = ["reload-key-a-0123456789"]
[sources.b]
preset = "voluum"
api_keys = ["reload-key-b-0123456789"]
[sources.c]
preset = "volum"
api_keys = ["reload-key-c-0123456789"]
[sources.d]
api_keys = ["reload-key-d-0123456789"]
surprise = true
"#;

/// Replaces the file in one step, as an editor or a deploy tool would.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `url` until it answers `status`.
async fn until(client: &reqwest::Client, url: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, body) = get(client, url).await;
        if s == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{url}: still {s} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_sources_under_traffic_and_refuses_a_broken_config() {
    let dir = common::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let log = dir.path().join("gateway.log");
    write(&config, V1);
    let gw = GatewayProcess::start_logging_to(
        None,
        &[
            ("POSTBACK_CONFIG", config.to_str().unwrap()),
            ("RUST_LOG", "info"),
        ],
        &log,
    )
    .await;
    let client = reqwest::Client::new();
    let b_url = |t: &str| gw.url(&format!("/postback/b?api_key={KEY_B}&cid={t}&payout=1.00"));

    // Traffic on source a for the whole test, on keep-alive connections.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, answered) = (stop.clone(), answered.clone());
        let (client, base) = (client.clone(), gw.url("/postback/a"));
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let url = format!("{base}?api_key={KEY_A}&tracking=w{w}-{i}&amount=1.00");
                answers.push(get(&client, &url).await);
                answered.fetch_add(1, Ordering::Relaxed);
            }
            answers
        }));
    }
    // Traffic is flowing before each change, and goes on after the last.
    let flowing = async || {
        let seen = answered.load(Ordering::Relaxed);
        wait_until("more answers to the traffic", async || {
            answered.load(Ordering::Relaxed) >= seen + 20
        })
        .await;
    };

    flowing().await;
    assert_eq!(
        get(&client, &b_url("early")).await.0,
        404,
        "b is not configured yet"
    );

    write(&config, V2);
    signal(gw.child.id(), "HUP");
    let body = until(&client, &b_url("after-reload"), 200).await;
    assert!(body.starts_with("OK "), "{body}");

    write(&config, BROKEN);
    signal(gw.child.id(), "HUP");
    let metrics = gw.admin_url("/metrics");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = get(&client, &metrics).await.1;
        if text.contains("postback_config_reloads_total{result=\"refused\"} 1") {
            assert!(text.contains("postback_config_reloads_total{result=\"applied\"} 1"));
            break;
        }
        assert!(Instant::now() < deadline, "the refusal was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = get(&client, &b_url("after-refusal")).await;
    assert_eq!(status, 200, "the running sources stay: {body}");
    let (status, _) = get(&client, &gw.url("/postback/c?api_key=x")).await;
    assert_eq!(status, 404, "the broken config's source is not there");

    flowing().await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        for (status, body) in w.await.unwrap() {
            total += 1;
            assert_eq!(status, 200, "a request failed during a reload: {body}");
            assert!(body.starts_with("OK "), "{body}");
        }
    }
    assert!(total > 20, "too little traffic to mean anything: {total}");

    let log = std::fs::read_to_string(&log).unwrap();
    let refusal = log
        .lines()
        .find(|l| l.contains("Refused the new config"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    assert!(refusal.contains("unknown preset"), "{refusal}");
    assert!(refusal.contains("surprise"), "{refusal}");
    assert!(log.contains("Reloaded the sources"), "{log}");
    drop(gw);
}

/// A reload reads files, and a file can stall (a FIFO with no writer here;
/// a hung network mount in production). With a single runtime worker, a
/// reload read on that worker would stop every request; read off it, the
/// gateway keeps answering while the reload waits, and applies it after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_stuck_on_its_file_stalls_no_request() {
    let dir = common::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    write(&config, V1);
    let log = dir.path().join("gateway.log");
    let gw = GatewayProcess::start_logging_to(
        None,
        &[
            ("POSTBACK_CONFIG", config.to_str().unwrap()),
            ("TOKIO_WORKER_THREADS", "1"),
            ("RUST_LOG", "info"),
        ],
        &log,
    )
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let a_url = |t: &str| {
        gw.url(&format!(
            "/postback/a?api_key={KEY_A}&tracking={t}&amount=1.00"
        ))
    };
    let b_url = |t: &str| gw.url(&format!("/postback/b?api_key={KEY_B}&cid={t}&payout=1.00"));

    // The config file becomes a FIFO: opening it blocks until a writer comes.
    let fifo = dir.path().join("gateway.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::rename(&fifo, &config).unwrap();
    signal(gw.child.id(), "HUP");
    wait_until("the reload has begun", async || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("reading the sources again"))
    })
    .await;

    for i in 0..20 {
        let started = Instant::now();
        let (status, body) = get(&client, &a_url(&format!("stuck-{i}"))).await;
        assert_eq!(status, 200, "a postback while the reload is stuck: {body}");
        assert!(body.starts_with("OK "), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(get(&client, &gw.admin_url("/healthz")).await.0, 200);
    assert_eq!(
        get(&client, &b_url("before")).await.0,
        404,
        "not reloaded yet"
    );

    // The writer comes: the reload reads V2 and applies it.
    let path = config.clone();
    tokio::task::spawn_blocking(move || std::fs::write(path, V2))
        .await
        .unwrap()
        .unwrap();
    let body = until(&client, &b_url("after"), 200).await;
    assert!(body.starts_with("OK "), "{body}");
    drop(gw);
}

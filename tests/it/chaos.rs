//! Chaos, end to end: postbacks stream into the gateway binary for about a
//! minute while faults cycle against a real Tansu broker, without restarting
//! the gateway between broker faults: the broker frozen for 3 s and for 12 s,
//! the gateway killed (SIGKILL) and started again, stopped (SIGTERM) with the
//! broker up and with the broker frozen. At the end every postback answered
//! `200 OK` is in the topic exactly once, re-sends of them are `DUPLICATE`,
//! every SIGTERM ended with exit 0 within the grace period, and the spool is empty.
//! The spool sits on a tmpfs of its own (the suite runs as root), which the
//! cycle fills while the broker is frozen.
//!
//! `load-tests/chaos.sh` runs the same cycle many times (`CHAOS_CYCLES`),
//! printing the gateway's memory after each.
use crate::common;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::common::process::{signal, GatewayProcess, SmallDisk, Tansu};
use crate::common::*;

/// The shutdown grace period the gateway is given (`shutdown_grace_ms`).
const GRACE: Duration = Duration::from_secs(5);
/// What a process may take beyond the grace period to exit (runtime teardown).
const EXIT_MARGIN: Duration = Duration::from_millis(1500);

/// The value of a series on the gateway process's `/metrics`; a missing series fails.
async fn gauge(gw: &GatewayProcess, name: &str) -> f64 {
    series_at(&gw.admin_url("/metrics"), name).await
}

/// Waits until the spool holds nothing; panics after `limit`.
async fn spool_drains_within(gw: &GatewayProcess, limit: Duration, after: &str) {
    let started = Instant::now();
    loop {
        let left = gauge(gw, "postback_spool_events").await;
        if left == 0.0 {
            eprintln!("{after}: spool empty after {:?}", started.elapsed());
            return;
        }
        if started.elapsed() >= limit {
            let text = reqwest::get(gw.admin_url("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("postback_") && !l.contains("_bucket"))
                .collect();
            panic!(
                "{after}: the spool still holds {left} events after {limit:?}\n{}",
                ours.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Streams postbacks with fresh tokens into whichever gateway is current,
/// recording every reply, until stopped.
struct Senders {
    target: Arc<RwLock<SocketAddr>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    replies: Arc<Mutex<Vec<(String, u16, String)>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Senders {
    fn start(target: SocketAddr) -> Senders {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let target = Arc::new(RwLock::new(target));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..8)
            .map(|w| {
                let (c, target, stop, sent, replies) = (
                    client.clone(),
                    target.clone(),
                    stop.clone(),
                    sent.clone(),
                    replies.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                        let token = format!("chaos-{w}-{i}");
                        let addr = *target.read().unwrap();
                        let url = format!("http://{addr}{}", query(&token, "4.20"));
                        match c.get(url).send().await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let body = r.text().await.unwrap_or_default();
                                replies.lock().unwrap().push((token, status, body));
                            }
                            // Refused while the gateway restarts.
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                })
            })
            .collect();
        Senders {
            target,
            stop,
            sent,
            replies,
            workers,
        }
    }

    fn aim(&self, gw: &GatewayProcess) {
        *self.target.write().unwrap() = gw.public;
    }

    async fn finish(self) -> Vec<(String, u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        eprintln!("sent {} postbacks", self.sent.load(Ordering::Relaxed));
        Arc::try_unwrap(self.replies).unwrap().into_inner().unwrap()
    }
}

/// Sends SIGTERM and checks that the process exits 0 within the grace period.
async fn sigterm_exits_cleanly(gw: GatewayProcess, when: &str) -> Arc<tempfile::TempDir> {
    let spool = gw.spool.clone();
    let started = Instant::now();
    signal(gw.child.id(), "TERM");
    let status = tokio::time::timeout(GRACE + EXIT_MARGIN + Duration::from_secs(30), async {
        gw.exit_status().await
    })
    .await
    .unwrap_or_else(|_| panic!("{when}: the gateway did not exit after SIGTERM"));
    let took = started.elapsed();
    eprintln!("{when}: SIGTERM -> exit {status} in {took:?}");
    assert!(status.success(), "{when}: SIGTERM ended with {status}");
    assert!(
        took <= GRACE + EXIT_MARGIN,
        "{when}: SIGTERM took {took:?}, beyond the grace period {GRACE:?}"
    );
    spool
}

/// How many times the fault cycle runs: `CHAOS_CYCLES`, else once (about a
/// minute). `load-tests/chaos.sh` runs many.
fn cycles() -> u32 {
    std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

async fn start(tansu: &Tansu, config: &str, spool: Arc<tempfile::TempDir>) -> GatewayProcess {
    GatewayProcess::start_with_spool(
        Some(&tansu.brokers),
        &[("POSTBACK_CONFIG", config), ("RUST_LOG", "info")],
        spool,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_faults_loses_nothing_doubles_nothing_and_every_sigterm_ends_in_time() {
    let tansu = Tansu::start();
    let (_dir, config) =
        common::process::config_file(&format!("shutdown_grace_ms = {}\n", GRACE.as_millis()));
    let config = config.as_str();
    // The spool on a disk of its own, which the cycle fills.
    let disk = SmallDisk::mount(64 * 1024);
    let spool = Arc::new(common::tempdir_in(disk.path()).unwrap());
    let mut gw = start(&tansu, config, spool).await;
    let senders = Senders::start(gw.public);
    tokio::time::sleep(Duration::from_secs(3)).await;

    for cycle in 1..=cycles() {
        // The broker stalls while the same gateway keeps running.
        for stall in [3, 12] {
            tansu.pause();
            tokio::time::sleep(Duration::from_secs(stall)).await;
            tansu.resume();
            let when = format!("cycle {cycle}, after a {stall} s stall");
            spool_drains_within(&gw, Duration::from_secs(30), &when).await;
            assert_eq!(
                gauge(&gw, "postback_kafka_reachable").await,
                1.0,
                "{when}: Kafka is reachable"
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        // The spool's disk fills while the broker is frozen: postbacks get
        // 503 until there is room again, and what was answered OK drains.
        tansu.pause();
        disk.fill("filler");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let when = format!("cycle {cycle}, after a full disk");
        let refused = gauge(&gw, "postback_spool_writable").await;
        disk.free("filler");
        tansu.resume();
        spool_drains_within(&gw, Duration::from_secs(30), &when).await;
        eprintln!("{when}: postback_spool_writable was {refused} while full");
        tokio::time::sleep(Duration::from_secs(3)).await;

        eprintln!(
            "cycle {cycle}: gateway RSS {} MiB after two stalls, {} producer restart(s)",
            rss_mib(gw.child.id()),
            gauge(&gw, "postback_kafka_producer_restarts_total").await
        );

        // SIGKILL mid-stream, then a start on the same spool.
        signal(gw.child.id(), "KILL");
        let spool = gw.spool.clone();
        let _ = gw.exit_status().await;
        gw = start(&tansu, config, spool).await;
        senders.aim(&gw);
        tokio::time::sleep(Duration::from_secs(4)).await;

        // SIGTERM with the broker up.
        let spool = sigterm_exits_cleanly(gw, "broker up").await;
        gw = start(&tansu, config, spool).await;
        senders.aim(&gw);
        tokio::time::sleep(Duration::from_secs(3)).await;

        // SIGTERM while the broker is frozen and postbacks wait in the spool.
        tansu.pause();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let spool = sigterm_exits_cleanly(gw, "broker frozen").await;
        tansu.resume();
        gw = start(&tansu, config, spool).await;
        senders.aim(&gw);
        tokio::time::sleep(Duration::from_secs(4)).await;
    }

    let replies = senders.finish().await;
    spool_drains_within(&gw, Duration::from_secs(15), "at the end").await;

    let ok: Vec<(&str, String)> = replies
        .iter()
        .filter(|(_, status, body)| *status == 200 && body.starts_with("OK "))
        .map(|(t, _, body)| (t.as_str(), ok_id(body)))
        .collect();
    let others: Vec<_> = replies
        .iter()
        .filter(|(_, status, body)| !(*status == 200 && body.starts_with("OK ")))
        .collect();
    eprintln!(
        "{} answered OK, {} otherwise: {:?}",
        ok.len(),
        others.len(),
        others.iter().take(5).collect::<Vec<_>>()
    );
    // Only 503s (not durable now) may refuse a postback, never a 4xx or a duplicate.
    for (token, status, body) in &others {
        assert_eq!(*status, 503, "{token}: {status} {body}");
    }
    assert!(ok.len() > 1000, "only {} postbacks acknowledged", ok.len());

    let records = read_topic(&tansu.brokers, TOPIC, ok.len(), Duration::from_secs(3));
    let mut by_token: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in &records {
        by_token
            .entry(r.value["token"].as_str().unwrap())
            .or_default()
            .push(r);
    }
    let doubled: Vec<_> = by_token.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} tokens are in the topic more than once: {:?}",
        doubled.len(),
        doubled
            .iter()
            .map(|(t, v)| (
                t,
                v.iter()
                    .map(|r| (
                        r.value["event_id"].as_str(),
                        r.value["received_at"].as_str()
                    ))
                    .collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
    );
    let lost: Vec<_> = ok
        .iter()
        .filter(|(t, id)| {
            by_token
                .get(t)
                .is_none_or(|v| v[0].value["event_id"] != id.as_str())
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged postbacks are not in the topic, e.g. {:?}",
        lost.len(),
        lost.first()
    );

    // Re-sends of acknowledged postbacks (every tenth) are duplicates of the first.
    let client = reqwest::Client::new();
    for (token, id) in ok.iter().step_by(10) {
        let again = client
            .get(gw.url(&query(token, "4.20")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(again, format!("DUPLICATE {id}"), "a re-send of {token}");
    }
    sigterm_exits_cleanly(gw, "at the end").await;
}

//! The spool on a failing disk, through the fault switches of a
//! `sink::faults::Faults` handed to the spool or its gateway: appends
//! whose callers stop waiting, writes that fail, failed writes that cannot be
//! cut off or moved away from, and what `/readyz` says about a spool that
//! cannot be written.
use crate::common;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use postback_gateway::metrics::Metrics;
use postback_gateway::sink::faults::Faults;
use postback_gateway::sink::spool::{Record, Spool, SpoolError};
use uuid::Uuid;

/// A spool's disk and what it reports: the fault switches the test sets
/// and the metrics the spool publishes.
#[derive(Default)]
struct Disk {
    faults: Faults,
    metrics: Metrics,
}

impl Disk {
    /// Opens the spool in `dir` on this disk.
    fn open(&self, dir: &Path) -> Arc<Spool> {
        Spool::open_with(
            dir,
            1 << 20,
            1 << 20,
            self.metrics.clone(),
            self.faults.clone(),
        )
        .unwrap()
        .0
    }

    /// A gauge the spool publishes.
    fn gauge(&self, name: &str) -> f64 {
        let text = self.metrics.render();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no gauge {name}"))
    }
}

fn record(i: u32) -> Record {
    Record {
        event_id: Uuid::from_u128(u128::from(i) + 1000),
        dedup_key: u128::from(i) * 7,
        at: 1_700_000_000 + i,
        source: "default".into(),
        key: format!("token-{i}"),
        payload: format!("{{\"n\":{i}}}").into_bytes(),
    }
}

/// The event ids a fresh open of `dir` finds waiting for Kafka.
fn spooled_ids(spool: Arc<Spool>, dir: &Path) -> Vec<Uuid> {
    spool.close();
    drop(spool);
    let (spool, pending) = Spool::open(dir, 1 << 20, 1 << 20).unwrap();
    spool.close();
    pending.into_iter().map(|s| s.event_id).collect()
}

fn ids(of: &[u32]) -> Vec<Uuid> {
    of.iter().map(|&i| record(i).event_id).collect()
}

fn segment(dir: &Path, seq: u64) -> std::path::PathBuf {
    dir.join(format!("seg-{seq:016}.log"))
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The caller gives up on an append (a timeout around it) while the disk
/// stalls before the write: the append is dropped unwritten, and its bytes
/// are no longer counted against the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_given_up_before_its_write_is_not_written() {
    let dir = common::tempdir().unwrap();
    let disk = Disk::default();
    let faults = &disk.faults;
    let spool = disk.open(dir.path());
    spool.append(&record(0)).await.unwrap();
    let one = spool.bytes();

    faults.spool_write_stall_ms.store(1000, Ordering::Relaxed);
    let gave_up = tokio::time::timeout(Duration::from_millis(300), spool.append(&record(1))).await;
    assert!(gave_up.is_err(), "the append outlasts its caller's wait");
    faults.spool_write_stall_ms.store(0, Ordering::Relaxed);
    // Queued behind the stalled write, so done only after it.
    spool.append(&record(2)).await.unwrap();

    assert_eq!(spool.bytes(), 2 * one, "the given-up append is not counted");
    assert_eq!(disk.gauge("postback_spool_events"), 2.0);
    assert_eq!(len(&segment(dir.path(), 0)), 2 * one);
    assert_eq!(spooled_ids(spool, dir.path()), ids(&[0, 2]));
}

/// The caller gives up while the disk is taking the write: the write lands,
/// and the event counts in the backlog (which the drainer's
/// acknowledgements take off again), as do its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_given_up_during_its_write_counts_when_it_lands() {
    let dir = common::tempdir().unwrap();
    let disk = Disk::default();
    let faults = &disk.faults;
    let spool = disk.open(dir.path());
    spool.append(&record(0)).await.unwrap();
    let one = spool.bytes();

    faults.spool_slow_write_ms.store(1000, Ordering::Relaxed);
    let gave_up = tokio::time::timeout(Duration::from_millis(300), spool.append(&record(1))).await;
    assert!(gave_up.is_err(), "the append outlasts its caller's wait");
    faults.spool_slow_write_ms.store(0, Ordering::Relaxed);
    spool.append(&record(2)).await.unwrap();

    assert_eq!(spool.bytes(), 3 * one);
    assert_eq!(
        disk.gauge("postback_spool_events"),
        3.0,
        "the late write is in the backlog"
    );
    assert_eq!(spooled_ids(spool, dir.path()), ids(&[0, 1, 2]));
}

/// The caller gives up while the disk is taking the write, and the write
/// then fails: its bytes are given back (no false "spool full"), the
/// spool says it cannot be written until a write succeeds, and what the
/// failed write left in the file is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_after_its_caller_gave_up_gives_its_bytes_back() {
    let dir = common::tempdir().unwrap();
    let disk = Disk::default();
    let faults = &disk.faults;
    let spool = disk.open(dir.path());
    spool.append(&record(0)).await.unwrap();
    let one = spool.bytes();

    faults.spool_slow_write_ms.store(1000, Ordering::Relaxed);
    faults.spool_disk_full.store(true, Ordering::Relaxed);
    let gave_up = tokio::time::timeout(Duration::from_millis(300), spool.append(&record(1))).await;
    assert!(gave_up.is_err(), "the append outlasts its caller's wait");
    faults.spool_slow_write_ms.store(0, Ordering::Relaxed);
    // Queued behind the failing write, so answered only after it; a caller
    // that waits hears why.
    match spool.append(&record(2)).await {
        Err(SpoolError::Io(e)) => assert!(e.to_string().contains("No space left"), "{e}"),
        other => panic!("expected a write error, got {other:?}"),
    }
    assert_eq!(spool.bytes(), one, "neither failed append is counted");
    assert_eq!(disk.gauge("postback_spool_events"), 1.0);
    assert_eq!(disk.gauge("postback_spool_writable"), 0.0);

    faults.spool_disk_full.store(false, Ordering::Relaxed);
    spool.append(&record(3)).await.unwrap();
    assert_eq!(disk.gauge("postback_spool_writable"), 1.0);
    assert_eq!(spool.bytes(), 2 * one);
    assert_eq!(disk.gauge("postback_spool_events"), 2.0);
    assert_eq!(
        len(&segment(dir.path(), 0)),
        2 * one,
        "the next record follows the last good one"
    );
    assert_eq!(spooled_ids(spool, dir.path()), ids(&[0, 3]));
}

/// A failed write whose bytes cannot be cut off the segment: the segment is
/// sealed and later records go to a new one, never after the garbage; while
/// no new segment can be made either, appends fail rather than land there,
/// and the next batch tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_that_cannot_be_cut_off_moves_the_spool_to_a_new_segment() {
    let dir = common::tempdir().unwrap();
    let disk = Disk::default();
    let faults = &disk.faults;
    let spool = disk.open(dir.path());
    spool.append(&record(0)).await.unwrap();
    let one = spool.bytes();

    faults.spool_disk_full.store(true, Ordering::Relaxed);
    faults.spool_truncate_fails.store(true, Ordering::Relaxed);
    assert!(spool.append(&record(1)).await.is_err());
    let garbage = len(&segment(dir.path(), 0));
    assert!(garbage > one, "half of the failed write is in the file");
    faults.spool_disk_full.store(false, Ordering::Relaxed);
    spool.append(&record(2)).await.unwrap();
    assert_eq!(len(&segment(dir.path(), 0)), garbage, "nothing after it");
    assert_eq!(
        len(&segment(dir.path(), 1)),
        one,
        "the next record starts a new segment"
    );

    // Neither cut off nor moved away from: the spool refuses appends.
    faults.spool_create_fails.store(true, Ordering::Relaxed);
    faults.spool_disk_full.store(true, Ordering::Relaxed);
    assert!(spool.append(&record(3)).await.is_err());
    let garbage = len(&segment(dir.path(), 1));
    faults.spool_disk_full.store(false, Ordering::Relaxed);
    assert!(spool.append(&record(4)).await.is_err());
    assert_eq!(len(&segment(dir.path(), 1)), garbage, "nothing after it");
    assert_eq!(disk.gauge("postback_spool_writable"), 0.0);
    assert_eq!(spool.bytes(), 2 * one);

    // Once a segment can be made again, the next batch goes there.
    faults.spool_create_fails.store(false, Ordering::Relaxed);
    spool.append(&record(5)).await.unwrap();
    assert_eq!(len(&segment(dir.path(), 2)), one);
    assert_eq!(disk.gauge("postback_spool_writable"), 1.0);
    assert_eq!(disk.gauge("postback_spool_events"), 3.0);
    assert_eq!(spool.bytes(), 3 * one);
    assert_eq!(spooled_ids(spool, dir.path()), ids(&[0, 2, 5]));
}

/// While Kafka is away the spool is the only way to make an event durable:
/// a disk that refuses writes makes the gateway unready, and `/readyz`
/// names both causes. Kafka back, the spool's disk does not matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_cannot_be_written_makes_the_gateway_unready_while_kafka_is_away() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    kafka.broker_down(1).unwrap();
    wait_until("Kafka is known to be down", async || {
        series(&gw, "postback_kafka_reachable").await == 0.0
    })
    .await;
    assert_eq!(
        status_of(&gw.admin_url("/readyz")).await,
        200,
        "the spool takes events"
    );

    gw.faults().spool_disk_full.store(true, Ordering::Relaxed);
    let r = reqwest::get(gw.url(&query("diskfull", "1.00")))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.unwrap(),
        "not ready: Kafka is not reachable, and the spool cannot be written: \
         No space left on device (os error 28)\n"
    );
    assert_eq!(series(&gw, "postback_spool_writable").await, 0.0);

    kafka.broker_up(1).unwrap();
    wait_until("the gateway is ready with Kafka back", async || {
        status_of(&gw.admin_url("/readyz")).await == 200
    })
    .await;
    assert_eq!(
        series(&gw, "postback_spool_writable").await,
        0.0,
        "the disk still refuses writes"
    );
    gw.faults().spool_disk_full.store(false, Ordering::Relaxed);
    gw.stop().await;
}

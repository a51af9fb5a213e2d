//! Memory per key of the dedup window: inserts 10 million committed keys
//! (the default bound is 20 million) and reports the growth of the resident
//! set per key. Not a criterion bench: `cargo bench --bench dedup_memory`.
//! `DEDUP_KEYS=N` changes the count.
//!
//! NUMBERS

use std::time::{Duration, Instant};

use postback_gateway::dedup::{self, Dedup};
use uuid::Uuid;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let keys: u64 = std::env::var("DEDUP_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let d = Dedup::new(
        Duration::from_secs(86_400),
        20_000_000,
        [7; 16],
        dedup::system_clock(),
    );
    let at = (dedup::system_clock())();
    let id = Uuid::now_v7();
    let before = rss_bytes();
    let started = Instant::now();
    for i in 0..keys {
        let k = u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64 | u128::from(i);
        d.insert_committed(k, id, at);
    }
    let after = rss_bytes();
    assert_eq!(d.len() as u64, keys);
    println!(
        "dedup memory: {keys} keys, resident set {:.1} MiB -> {:.1} MiB, {:.1} bytes per key ({:.0} ns per insert)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) as f64 / keys as f64,
        started.elapsed().as_nanos() as f64 / keys as f64
    );
}

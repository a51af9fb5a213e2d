//! Memory per key of the dedup window: inserts 10 million committed keys
//! (the default bound is 20 million) and reports the growth of the resident
//! set per key. Not a criterion bench: `cargo bench --bench dedup_memory`.
//! `DEDUP_KEYS=N` changes the count. `DEDUP_STALLS=N` then times N more
//! inserts (past the bound they push out the oldest keys) one by one and
//! prints their distribution: what a commit costs a request at the bound.
//!
//! Machine: 2 vCPU VM (AMD EPYC), 24 GiB, rustc 1.95.0, release profile.
//! `cargo bench --bench dedup_memory` (2026-11-21), dedup map of commit 51f00f8:
//!   10,000,000 keys: resident set 2.1 MiB -> 1091.8 MiB = 114.3 bytes per key
//!   (target 64). `DEDUP_KEYS=1000000`: 135.3 bytes per key.
//! The same bench on the generation-based window that replaced it (no order
//! queue, 32-byte entries): 2.0 MiB -> 530.4 MiB = 55.4 bytes per key.
//! With mimalloc as the global allocator (as in the gateway since then):
//!   10,000,000 keys: 6.2 MiB -> 690.8 MiB right after the last insert (71.8 bytes
//!   per key: the tables freed by each resize are still held), 560.9 MiB a second
//!   later (58.2 bytes per key).
//! With mimalloc 2.x (the gateway's allocator since f25026b), 2026-11-21:
//!   4.2 MiB -> 596.2 MiB right after the last insert (62.1 bytes per key), 595.8 MiB
//!   a second later (62.0 bytes per key).
//! Since the bound holds at every moment (571b2a1), 2026-12-02: 4.2 MiB ->
//!   774.0 MiB right after the last insert (80.7 bytes per key), 771.9 MiB a
//!   second later (80.5 bytes per key): the bench's 10 million keys fall in
//!   one 3-hour span, which fills four generations of an eighth of the bound.
//! The rest of those 80 bytes was transparent huge pages: mimalloc advises
//!   them on its arena, and the tables' pages were then held twice over. With
//!   them off for the process (as the gateway does at start), 2026-12-02:
//!   4.2 MiB -> 426.3 MiB right after the last insert (44.3 bytes per key),
//!   416.3 MiB a second later (43.2 bytes per key; 420 ns per insert);
//!   `DEDUP_HUGE_PAGES=1` (leave them on), same sitting: 82.4 bytes per key.
//! One table per pool instead of a map per generation (af6fc44), 2026-12-07:
//!   4.2 MiB -> 412.7 MiB right after the last insert (42.8 bytes per key),
//!   412.7 a second later (42.8; 344 ns per insert); the generation maps the
//!   same day 43.3 (397 ns per insert). `DEDUP_HUGE_PAGES=1`: 49.1 (the
//!   generation maps 80.2). `DEDUP_KEYS=20000000`: 41.8-42.1 bytes per key
//!   (the generation maps 42.7).
//! The table of 64-byte lines (58605e2) against the hashbrown table
//!   (197a787), 2026-12-07, run alternately twice: 45.7, 46.2 bytes per key
//!   a second after the last insert (4.2 -> 439.8, 444.2 MiB; 349-386 ns per
//!   insert) against 42.7, 44.2 (259-353 ns per insert): tables fill to
//!   77% at the bound and at half of it (32 bytes / 0.77 = 41.5 per key),
//!   hashbrown's to about 85% (33 bytes per entry). `DEDUP_HUGE_PAGES=1`:
//!   50.1. `DEDUP_KEYS=20000000`: 44.2.
//! A shard's tables of 64 KiB to 4 MiB in huge pages (`TableMemory`), the
//!   process turning them off except where advised, mimalloc built without
//!   its own advice, against the binary before it (7aab483), 2026-12-07
//!   evening, alternately, three runs each: 44.8, 45.1, 42.1 bytes per key
//!   a second after the last insert (median 44.8; 2.3 -> 429.2, 432.1,
//!   403.4 MiB; 481-523 ns per insert) against 45.6, 44.9, 45.0 (median
//!   45.0; 4.1 -> 439.0, 432.6, 433.3 MiB; 473-577 ns per insert). At 10
//!   million keys every shard has an 8,192-slot table, so the tables fill
//!   whole huge pages; the blocks of the sizes they grew out of are given
//!   back to the system. `DEDUP_KEYS=20000000`, twice each alternately:
//!   42.9, 41.5 (821.5, 793.5 MiB) against 44.1, 44.1 (845.5, 844.8 MiB).
//!   The cost is in the tail: `DEDUP_KEYS=20000000 DEDUP_STALLS=2000000`,
//!   twice each alternately (load average 1.9-2.1), p50 400, 411 ns against
//!   541, 531; p99.9 11.3, 8.9 us against 27.5, 23.9; but inserts over 100
//!   us 1,598, 1,604 against 600, 730, p99.99 165, 170 us against 122, 130
//!   (max 7.4, 4.6 ms against 7.4, 5.8). Under `perf record` (the whole
//!   run, the 20 million inserts before the stalls included) the kernel's
//!   page clearing (`clear_page_erms`) takes 25% of the samples against 1%:
//!   a table that first touches a huge page has all 2 MiB of it zeroed at
//!   once, and a block given back is zeroed again when taken again. Not
//!   traced further.
//! Where it went in 51f00f8: each map entry is a u128 key and a 32-byte `Slot` (the enum
//! of a u128 event id and a u32 time, padded to 16-byte alignment) plus a
//! control byte, in hashbrown tables 55-87% full; and 32 bytes per key in the
//! commit-order queue (`(u128, u32)`, padded).

use std::time::{Duration, Instant};

use postback_gateway::dedup::{self, Dedup};
use uuid::Uuid;

/// The gateway's allocator, so the growth is what the gateway shows.
#[global_allocator]
static ALLOC: postback_gateway::os::Allocator = postback_gateway::os::Allocator;

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
        postback_gateway::config::DEFAULT_DEDUP_WINDOW,
        postback_gateway::config::DEFAULT_DEDUP_MAX_KEYS,
        [7; 16],
        dedup::system_clock(),
    );
    let at = (dedup::system_clock())();
    let id = Uuid::now_v7();
    // As the gateway does at start: see `no_transparent_huge_pages`.
    if std::env::var_os("DEDUP_HUGE_PAGES").is_none() {
        postback_gateway::os::no_transparent_huge_pages();
    }
    let before = rss_bytes();
    let started = Instant::now();
    for i in 0..keys {
        let k = u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64 | u128::from(i);
        d.insert_committed(k, id, at);
    }
    let after = rss_bytes();
    let took = started.elapsed();
    assert_eq!(d.len() as u64, keys);
    // mimalloc returns the tables freed by each resize to the system after a
    // delay, on later allocator calls; a running gateway makes those calls
    // all the time. Give it a second of small allocations, as requests would.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        drop((0..1000).map(|_| vec![0u8; 256]).collect::<Vec<_>>());
    }
    let settled = rss_bytes();
    if let Some(more) = std::env::var("DEDUP_STALLS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let mut times: Vec<u64> = Vec::with_capacity(more as usize);
        let now = (dedup::system_clock())();
        for i in keys..keys + more {
            let k = u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64 | u128::from(i);
            let t = Instant::now();
            d.insert_committed(k, id, now);
            times.push(t.elapsed().as_nanos() as u64);
        }
        let total: u64 = times.iter().sum();
        times.sort_unstable();
        let q = |f: f64| times[((times.len() as f64 - 1.0) * f) as usize];
        let over = |ns: u64| times.iter().filter(|&&t| t > ns).count();
        println!(
            "stalls: {more} inserts past {keys}: mean {} ns, p50 {} ns, p99.9 {} ns, p99.99 {} ns, max {} ns; over 100 us: {}, over 1 ms: {}",
            total / more, q(0.5), q(0.999), q(0.9999), times[times.len() - 1], over(100_000), over(1_000_000)
        );
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let per_key = |b: u64| b.saturating_sub(before) as f64 / keys as f64;
    println!(
        "dedup memory: {keys} keys, resident set {:.1} MiB -> {:.1} MiB right after the last insert \
         ({:.1} bytes per key), {:.1} MiB a second later ({:.1} bytes per key; {:.0} ns per insert)",
        mib(before),
        mib(after),
        per_key(after),
        mib(settled),
        per_key(settled),
        took.as_nanos() as f64 / keys as f64
    );
}

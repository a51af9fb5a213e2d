//! Strict parsing: a query string to a checked `Conversion` (percent-decoding,
//! duplicate keys, token, amount, currency, status, pass-through).
//!
//! Machine: 2 vCPU VM (AMD EPYC), 24 GiB, rustc 1.95.0, release profile, idle
//! machine (vmstat >= 94% idle); criterion 1 s warm-up, 3 s measurement.
//! `cargo bench --bench parse` (2026-11-21, gateway code of commit 51f00f8):
//!   parse/valid      5 shapes   3.75 µs per 5 = 750 ns per postback, 17.6 allocations (704 B)
//!   parse/invalid    8 shapes   2.11 µs per 8 = 263 ns per postback,  6.5 allocations (231 B)
//!   parse/mix_90_10  100        79.2 µs per 100 = 792 ns per postback

mod common;

use std::hint::black_box;

use criterion::{criterion_group, Criterion, Throughput};
use postback_gateway::postback::{self, Params, ParseRules};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn parse_one(q: &str, rules: &ParseRules) -> bool {
    let mut p = Params::new();
    if p.add_query(q.as_bytes(), rules.plus_as_space).is_err() {
        return false;
    }
    postback::parse(&p, rules).is_ok()
}

/// 90 valid and 10 invalid, interleaved.
fn mix() -> Vec<&'static str> {
    (0..100)
        .map(|i| {
            if i % 10 == 9 {
                common::INVALID[i / 10 % common::INVALID.len()]
            } else {
                common::VALID[i % common::VALID.len()]
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rules = ParseRules::reference();
    for q in common::VALID {
        assert!(parse_one(q, &rules), "valid: {q}");
    }
    for q in common::INVALID {
        assert!(!parse_one(q, &rules), "invalid: {q}");
    }
    let mix = mix();
    let mut g = c.benchmark_group("parse");
    for (name, set) in [
        ("valid", common::VALID.to_vec()),
        ("invalid", common::INVALID.to_vec()),
        ("mix_90_10", mix),
    ] {
        g.throughput(Throughput::Elements(set.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                for q in &set {
                    black_box(parse_one(black_box(q), &rules));
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}

fn main() {
    let rules = ParseRules::reference();
    let n = 10_000;
    common::report_allocs("parse valid", common::VALID.len() as u64, n, || {
        for q in common::VALID {
            black_box(parse_one(q, &rules));
        }
    });
    common::report_allocs("parse invalid", common::INVALID.len() as u64, n, || {
        for q in common::INVALID {
            black_box(parse_one(q, &rules));
        }
    });
    benches();
    common::criterion().final_summary();
}

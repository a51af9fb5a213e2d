//! Encoding the `conversion.v1` event (docs/event.md) for a typical conversion and
//! for one with every optional field and a few pass-through parameters.
//!
//! Machine: 2 vCPU VM (AMD EPYC), 24 GiB, rustc 1.95.0, release profile, idle
//! machine (vmstat >= 94% idle); criterion 1 s warm-up, 3 s measurement.
//! `cargo bench --bench encode` (2026-11-21, gateway code of commit 51f00f8), per postback:
//!   encode/plain          1.46 µs,  9 allocations (2094 B)
//!   encode/every_field    1.79 µs, 10 allocations (2072 B)

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, Criterion, Throughput};
use postback_gateway::event::{self, Context, Kind};
use postback_gateway::postback::{self, Conversion, Params, ParseRules};
use time::OffsetDateTime;
use uuid::Uuid;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn conversion(q: &str) -> Conversion<'static> {
    let mut p = Params::new();
    p.add_query(q.as_bytes(), false).unwrap();
    postback::parse(&p, &ParseRules::reference())
        .unwrap()
        .into_owned()
}

const PLAIN: &str =
    "api_key=k&tracking=befwueicjfn93q4urcnq83xnfjemw8qz2jfq38jcrufn8j89xjqcmq3c3&amount=12.34";
const FULL: &str = "api_key=k&tracking=AbC+dE/f==&amount=0.50&txid=ord-99812&goal=sale&status=Pending&currency=eur&click_time=1700000000&sub1=a&sub2=b&sub3=%22quoted%22";

fn encode(conv: &Conversion, source: &Arc<str>, now: OffsetDateTime) -> event::Event {
    let ctx = Context {
        source: "default",
        kind: Kind::S2s,
        received_at: now,
        conversion_at_click: false,
        client_ip: "203.0.113.7",
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) postback"),
    };
    event::encode(
        conv,
        &ctx,
        source,
        Uuid::now_v7(),
        0x653831566bbe670cfbd61ace06e9a04b,
    )
}

fn bench(c: &mut Criterion) {
    let source: Arc<str> = Arc::from("default");
    let now = OffsetDateTime::now_utc();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    for (name, q) in [("plain", PLAIN), ("every_field", FULL)] {
        let conv = conversion(q);
        g.bench_function(name, |b| b.iter(|| encode(black_box(&conv), &source, now)));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}

fn main() {
    let source: Arc<str> = Arc::from("default");
    let now = OffsetDateTime::now_utc();
    for (name, q) in [("encode plain", PLAIN), ("encode every_field", FULL)] {
        let conv = conversion(q);
        common::report_allocs(name, 1, 20_000, || {
            black_box(encode(&conv, &source, now));
        });
    }
    benches();
    common::criterion().final_summary();
}

//! The request path without a socket: query string → `Params` → api key →
//! strict parse → dedup key → reserve → event encoding → commit. The HTTP
//! layer (`http::routes::handle`) takes a `hyper::Request<Incoming>`, which
//! only hyper's connection code can build, so the request parsing by hyper,
//! the reply and the Kafka round trip are not in these numbers; the load
//! tests measure them.
//!
//! Machine: 2 vCPU VM (AMD EPYC), 24 GiB, rustc 1.95.0, release profile, idle
//! machine (vmstat >= 94% idle); criterion 1 s warm-up, 3 s measurement.
//! `cargo bench --bench pipeline` (2026-11-21, gateway code of commit 51f00f8), per postback:
//!   pipeline/new_conversion     3.74 µs, 27.4 allocations (3278 B)
//!   pipeline/mix_90_5_5         3.53 µs
//!   pipeline/format_query_only  0.06 µs (building the bench's own input)
//! For scale: the gateway spends about 32 µs of CPU per postback under load
//! (README, Performance), so this path is about an eighth of it.

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use postback_gateway::dedup::{self, Claim, Dedup, KeyParts};
use postback_gateway::event::{self, Context, Kind};
use postback_gateway::postback::{self, Params};
use postback_gateway::source::Sources;
use time::OffsetDateTime;
use uuid::Uuid;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

const WAIT: Duration = Duration::from_secs(2);

struct Pipeline {
    sources: Sources,
    dedup: Arc<Dedup>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted,
    Duplicate,
    Rejected,
}

impl Pipeline {
    fn new() -> Pipeline {
        Pipeline {
            sources: Sources::single_default("bench-key".into(), None),
            dedup: Dedup::new(
                Duration::from_secs(86_400),
                1_000_000,
                [7; 16],
                dedup::system_clock(),
            ),
        }
    }

    /// What `routes::postback` does between the request head and the sink.
    fn postback(&self, query: &str) -> Outcome {
        let received_at = OffsetDateTime::now_utc();
        let Ok(source) = self.sources.resolve(None) else {
            return Outcome::Rejected;
        };
        let mut params = Params::new();
        if params
            .add_query(query.as_bytes(), source.rules.plus_as_space)
            .is_err()
        {
            return Outcome::Rejected;
        }
        if source
            .authenticate(postback::parse::api_key(&params, &source.rules))
            .is_err()
        {
            return Outcome::Rejected;
        }
        let Ok(conv) = postback::parse(&params, &source.rules) else {
            return Outcome::Rejected;
        };
        let key = self.dedup.key(&KeyParts {
            source: &source.name,
            token: &conv.token,
            txid: conv.txid.as_deref(),
            goal: conv.goal.as_deref(),
            status: conv.dedup_status(),
        });
        let reservation = match common::ready(self.dedup.reserve(key, WAIT)) {
            Claim::Reserved(r) => r,
            _ => return Outcome::Duplicate,
        };
        let event_id = Uuid::now_v7();
        let client_ip = "203.0.113.7".to_string();
        let ctx = Context {
            source: &source.name,
            kind: Kind::S2s,
            received_at,
            conversion_at_click: source.conversion_at_click,
            client_ip: &client_ip,
            user_agent: Some("postback-load"),
        };
        let event = event::encode(&conv, &ctx, &source.name, event_id, key);
        black_box(&event);
        reservation.commit(event_id);
        Outcome::Accepted
    }
}

/// Request `i` of a 90/5/5 mix: a new conversion, a repeat, a malformed one.
fn query(buf: &mut String, i: u64) {
    buf.clear();
    match i % 20 {
        0 => buf.push_str("api_key=bench-key&tracking=repeat-1&amount=12.34"),
        1 => {
            let _ = write!(buf, "api_key=bench-key&tracking=bad-{i}&amount=12,34");
        }
        _ => {
            let _ = write!(
                buf,
                "api_key=bench-key&tracking=lt-0-{i}&amount={}.{:02}&sub1=w0",
                i % 5000,
                i % 100
            );
            if i.is_multiple_of(3) {
                let _ = write!(buf, "&txid=tx{i}");
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let p = Pipeline::new();
    let mut buf = String::with_capacity(256);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let mut i = 10u64;
    g.bench_function("new_conversion", |b| {
        b.iter(|| {
            i += 1;
            query(&mut buf, i * 20 + 2);
            p.postback(&buf)
        })
    });
    let mut i = 0u64;
    g.bench_function("mix_90_5_5", |b| {
        b.iter(|| {
            i += 1;
            query(&mut buf, i + 1_000_000_000);
            p.postback(&buf)
        })
    });
    let mut i = 0u64;
    g.bench_function("format_query_only", |b| {
        b.iter(|| {
            i += 1;
            query(&mut buf, i * 20 + 2);
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}

fn main() {
    let p = Pipeline::new();
    let mut buf = String::with_capacity(256);
    query(&mut buf, 0);
    p.postback(&buf);
    assert_eq!(p.postback(&buf), Outcome::Duplicate);
    let mut i = 100u64;
    common::report_allocs("pipeline new_conversion", 1, 100_000, || {
        i += 1;
        query(&mut buf, i * 20 + 2);
        assert_eq!(p.postback(&buf), Outcome::Accepted);
    });
    benches();
    common::criterion().final_summary();
}

//! The request path without a socket: `pipeline::handle`, the function the
//! server calls with each request's plain parts, from the route to the
//! outcome: route → limits → source → params → api key → strict parse → dedup
//! claim → event encoding → sink → commit. The sink here takes each event at
//! once, so the Kafka round trip is not in these numbers, nor are hyper's
//! request parsing, the reply and the request metrics; the load tests measure them.
//!
//! Machine: 2 vCPU VM (AMD EPYC), 24 GiB, rustc 1.95.0, release profile, shared
//! with other builds (load average 2-3.5); criterion 1 s warm-up, 3 s measurement.
//! `cargo bench --bench pipeline` (2026-12-02), per postback, medians of 4 rounds
//! alternating with the bench as it was before it called the pipeline (a copy of
//! the steps without route, limits, sources' lock, sink and detached delivery):
//!   pipeline/new_conversion     2.65 µs (the copy: 2.36 µs), 7.0 allocations (1212 B; the copy: 6.0, 1015 B)
//!   pipeline/mix_90_5_5         3.21 µs (the copy: 2.25 µs)
//!   pipeline/format_query_only  0.06-0.08 µs (building the bench's own input)
//! Single rounds moved by a third on that machine; instructions per postback
//! (callgrind, which does not depend on the load) are steadier: 16.3k for a new
//! conversion, 15.6k in the mix (the copy: 14.6k, 14.0k), +12% for the steps the
//! copy left out. On an idle machine the copy took 1.61 µs (docs/performance.md).
//! The console's copy of each request (on as served; `PIPELINE_CONSOLE=0` turns
//! it off), 2026-12-02, callgrind over the 100,000 postbacks of the allocation
//! count (`valgrind --tool=callgrind target/release/deps/pipeline-* --bench none`):
//! 18.66k instructions per postback with it, 17.89k without (+770, 4%), 8.0
//! allocations (1331 B) against 7.0 (1256 B): one allocation holding the path,
//! query and body, and two short locks.
//! For scale: the gateway spends about 32 µs of CPU per postback under load
//! (README, Performance), so this path is about an eighth of it.

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use postback_gateway::config::Config;
use postback_gateway::console::Recent;
use postback_gateway::dedup::{self, Pools};
use postback_gateway::event::Event;
use postback_gateway::pipeline::{self, App, Method, Outcome, Request};
use postback_gateway::sink::{BoxFuture, Sink, SinkError};
use postback_gateway::source::{SharedSources, Sources};
use time::OffsetDateTime;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

/// A sink that takes every event at once.
struct AtOnce;

impl Sink for AtOnce {
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), SinkError>> {
        black_box(event);
        Box::pin(std::future::ready(Ok(())))
    }

    fn problem(&self) -> Option<String> {
        None
    }

    fn flush(&self, _: Duration) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

struct Pipeline {
    app: Arc<App>,
}

impl Pipeline {
    fn new() -> Pipeline {
        let config = Config::default();
        let sources = Sources::single_default("bench-key".into(), None);
        let tasks = postback_gateway::Tasks::new();
        Pipeline {
            app: Arc::new(App {
                sources: SharedSources::new(Arc::new(sources)),
                campaigns: Default::default(),
                dedup: Pools::new(
                    Duration::from_secs(86_400),
                    1_000_000,
                    1_000,
                    &[],
                    [7; 16],
                    dedup::system_clock(),
                    tasks.metrics(),
                ),
                sink: Arc::new(AtOnce),
                limits: config.limits,
                delivery_wait: config.kafka.delivery_wait,
                shutting_down: AtomicBool::new(false),
                warming: AtomicBool::new(false),
                per_client: None,
                refusals: Default::default(),
                // As served: each request copied into its source's ring
                // (`PIPELINE_CONSOLE=0` turns the console off, to weigh it).
                console: Arc::new(Recent::new(
                    std::env::var("PIPELINE_CONSOLE")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(postback_gateway::config::DEFAULT_RECENT_PER_SOURCE),
                )),
                admin: Default::default(),
                tasks,
            }),
        }
    }

    /// `GET /postback?{query}`, as the server hands it to the pipeline.
    fn postback(&self, query: &str) -> Outcome {
        let req = Request {
            method: Method::Get,
            path: "/postback",
            query: Some(query),
            host: Some("gateway.example"),
            forwarded_for: None,
            user_agent: Some("postback-load".into()),
            content_type: None,
            transfer_encoding: false,
            header_bytes: 64,
            body: Ok(Bytes::new()),
            peer: PEER,
            received_at: OffsetDateTime::now_utc(),
        };
        // Nothing waits: no other request holds a key, the sink answers at once.
        common::ready(pipeline::handle(self.app.clone(), req)).outcome
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
    assert!(matches!(p.postback(&buf), Outcome::Accepted(_)));
    assert!(matches!(p.postback(&buf), Outcome::Duplicate(Some(_))));
    let mut i = 100u64;
    common::report_allocs("pipeline new_conversion", 1, 100_000, || {
        i += 1;
        query(&mut buf, i * 20 + 2);
        assert!(matches!(p.postback(&buf), Outcome::Accepted(_)));
    });
    benches();
    common::criterion().final_summary();
}

//! Shared by the benches: a global allocator that counts, so each bench can
//! print allocations per postback next to criterion's time per postback.
#![allow(dead_code)]
// A counting GlobalAlloc is unsafe to implement: it only forwards to System.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `f` `n` times and prints the allocations (and bytes asked for) per
/// postback; each call of `f` handles `per_call` postbacks.
pub fn report_allocs(name: &str, per_call: u64, n: u64, mut f: impl FnMut()) {
    f(); // warm caches and lazily built tables
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..n {
        f();
    }
    let a = ALLOCS.load(Ordering::Relaxed) - a0;
    let b = BYTES.load(Ordering::Relaxed) - b0;
    println!(
        "allocations {name}: {:.2} per postback, {:.0} bytes per postback",
        a as f64 / (n * per_call) as f64,
        b as f64 / (n * per_call) as f64
    );
}

/// Polls a future once: the dedup calls complete at once when nothing else
/// holds the key, so benches need no runtime.
pub fn ready<F: std::future::Future>(f: F) -> F::Output {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    // Built once, so it does not show in the allocation counts.
    static WAKER: std::sync::OnceLock<Waker> = std::sync::OnceLock::new();
    let waker = WAKER.get_or_init(|| Waker::from(Arc::new(Noop)));
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(waker)) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the future was expected to complete at once"),
    }
}

/// Criterion settings that keep a full `cargo bench` within a few minutes on 2 cores.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .configure_from_args()
}

/// Postback queries as senders send them: the reference format, base64-like
/// and non-ASCII tokens, optional fields and pass-through sub-ids.
pub const VALID: &[&str] = &[
    "api_key=bench-key&tracking=befwueicjfn93q4urcnq83xnfjemw8qz2jfq38jcrufn8j89xjqcmq3c3&amount=12.34",
    "api_key=bench-key&tracking=AbC+dE/f==&amount=0.50&txid=ord-99812&currency=eur",
    "api_key=bench-key&tracking=%D0%BF%D1%80%D0%B8%D0%BC%D0%B5%D1%80-1234&amount=7.00&goal=sale&status=Pending",
    "api_key=bench-key&tracking=6f1c2a9e0b7d4c3e8f5a1b2c3d4e5f60&amount=1000.00&sub1=a&sub2=b&sub3=c&_=1699999999999",
    "api_key=bench-key&tracking=lt-0-12345&amount=29.95&txid=tx12345&currency=usd&sub1=w0",
];

/// Inputs a strict parser meets and must refuse.
pub const INVALID: &[&str] = &[
    "api_key=bench-key&tracking=abc&amount=12,34",
    "api_key=bench-key&tracking=%7Bclickid%7D&amount=1.00",
    "api_key=bench-key&tracking=%TRANSACTION_ID%&amount=1.00",
    "api_key=bench-key&tracking=a&tracking=b&amount=1.00",
    "api_key=bench-key&tracking=abc&payout=10%C2%A4cy=EUR",
    "api_key=bench-key&tracking=abc&amount=1e3",
    "api_key=bench-key&tracking=REPLACE&amount=1.00",
    "api_key=bench-key&tracking=abc",
];

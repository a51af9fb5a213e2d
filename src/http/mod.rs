//! The HTTP side: the accept loop with graceful shutdown and the connection
//! caps, the public listener's adapter to the pipeline, replies, and the admin
//! routes. This is the only module that knows hyper.
#![warn(missing_docs)]

pub(crate) mod admin;
pub(crate) mod public;
pub(crate) mod reply;

use crate::sync::LockAnyway;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::config::Limits;
use crate::rejection::Rejection;

/// The smallest read buffer hyper takes (it panics below it), whatever the
/// configured limits.
const HYPER_MIN_BUF: usize = 8192;

/// Serves `listener` with `handler` until `shutdown` turns true, then lets
/// open connections finish for up to `grace`. Connections over the limits
/// are answered 503, closed and counted in `refused`.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    refused: metrics::Counter,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<reply::Body>> + Send + 'static,
{
    let mut http = http1::Builder::new();
    // The head-read deadline is the connection's own (`Deadline`): hyper's
    // would arm a timer per request. Without a timer hyper arms none.
    http.keep_alive(true)
        // Replies are a head and a body of a few dozen bytes: copied into one
        // buffer they go out in one plain write. A vectored write of the two
        // (hyper's default) queues the body and costs more: 5-10% of the CPU
        // per postback at saturation (see docs/performance.md).
        .writev(false)
        // The whole head must fit: request line plus header block.
        .max_buf_size((limits.max_uri_bytes + limits.max_header_bytes).max(HYPER_MIN_BUF));
    let open = Arc::new(Open::default());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(ConnectionsPerClient::default());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "Cannot accept a connection.");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // A peer that vanished (a cable pulled, a NAT that forgot the
                // flow) is found and its slot freed instead of held for ever.
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(60))
                    .with_interval(Duration::from_secs(10))
                    .with_retries(3);
                let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                let Some(held) = per_client.take(peer.ip(), &limits) else {
                    refused.increment(1);
                    tokio::spawn(refuse_connection(stream));
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refused.increment(1);
                    tokio::spawn(refuse_connection(stream));
                    continue;
                };
                let h = handler.clone();
                let activity = Arc::new(Activity::new());
                let busy = activity.clone();
                let svc = service_fn(move |req| {
                    let serving = Serving::new(&busy);
                    // Boxed: hyper moves the service's future into its
                    // connection state, and a request's future is a few KiB.
                    let fut = Box::pin(h(req, peer));
                    async move {
                        let resp = fut.await;
                        drop(serving);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = http.serve_connection(TokioIo::new(stream), svc);
                let watch = Watch::new(&open);
                let head_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let mut watch = watch;
                    let mut deadline = Deadline::new(activity, head_timeout);
                    let ended = std::future::poll_fn(|cx| {
                        if watch.closing(cx) {
                            conn.as_mut().graceful_shutdown();
                        }
                        if deadline.passed(cx) {
                            return Poll::Ready(Err(None));
                        }
                        conn.as_mut().poll(cx).map_err(Some)
                    })
                    .await;
                    match ended {
                        Ok(()) => {}
                        Err(Some(e)) => debug!(%peer, error = %e, "Connection ended with an error."),
                        Err(None) => debug!(%peer, "No complete request head within the header read timeout; connection closed."),
                    }
                    drop(watch);
                    drop(slot);
                    drop(held);
                });
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = open.close_all() => {}
        _ = tokio::time::sleep(grace) => {
            warn!(grace_secs = grace.as_secs_f64(), "Open connections did not finish within the grace period.");
        }
    }
}

/// Open connections per client address, so that one address cannot hold
/// every slot of the connection cap.
#[derive(Default)]
struct ConnectionsPerClient(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection counted against its address; uncounted when dropped.
struct Held {
    counts: Arc<ConnectionsPerClient>,
    ip: std::net::IpAddr,
}

impl ConnectionsPerClient {
    /// Counts a connection from `ip`, unless the address already has `cap`.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, limits: &Limits) -> Option<Held> {
        // An IPv6 client by its prefix, as the rate limit counts it.
        let ip = crate::ratelimit::client_key(ip, limits.ipv6_client_prefix);
        let cap = limits.max_connections_per_client;
        let mut counts = self.0.lock_anyway();
        let n = counts.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Held {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock_anyway();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Answers a connection over the cap with a 503 and closes it, without
/// reading its request: existing connections keep their share.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    static REPLY: LazyLock<Vec<u8>> = LazyLock::new(|| reply::raw(Rejection::Overloaded));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&REPLY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The open connections of a listener, for a graceful shutdown: when the
/// stop begins, each connection's task is woken once and asked to finish its
/// request in flight and close. A connection registers its waker once, on
/// its first poll: checking the flag on each poll is one load, where a
/// channel's receiver would be polled (and its lock taken) on every wake-up.
#[derive(Default)]
struct Open {
    closing: AtomicBool,
    next: AtomicU64,
    wakers: Mutex<std::collections::HashMap<u64, Waker>>,
    /// Signalled when the last connection leaves after `closing`.
    gone: tokio::sync::Notify,
}

impl Open {
    /// Asks every open connection to close after its request in flight, and
    /// waits until none is left.
    async fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        loop {
            let gone = self.gone.notified();
            {
                let wakers = self.wakers.lock_anyway();
                if wakers.is_empty() {
                    return;
                }
                for w in wakers.values() {
                    w.wake_by_ref();
                }
            }
            gone.await;
        }
    }
}

/// One connection's place in [`Open`].
struct Watch {
    open: Arc<Open>,
    id: u64,
    /// The waker registered, once the connection has been polled.
    waker: Option<Waker>,
    /// Whether the connection was asked to close.
    told: bool,
}

impl Watch {
    /// Counted open from now, so that a close waits also for a connection
    /// whose task has not run yet (it sees the flag on its first poll).
    fn new(open: &Arc<Open>) -> Watch {
        let id = open.next.fetch_add(1, Ordering::Relaxed);
        open.wakers.lock_anyway().insert(id, Waker::noop().clone());
        Watch {
            open: open.clone(),
            id,
            waker: None,
            told: false,
        }
    }

    /// True once, when the listener is closing.
    fn closing(&mut self, cx: &Context<'_>) -> bool {
        if self.told {
            return false;
        }
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            self.open.wakers.lock_anyway().insert(self.id, w.clone());
            self.waker = Some(w);
        }
        // After the registration: a close that began before it is seen here,
        // one that begins after it wakes this task.
        self.told = self.open.closing.load(Ordering::SeqCst);
        self.told
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut wakers = self.open.wakers.lock_anyway();
        wakers.remove(&self.id);
        if wakers.is_empty() && self.open.closing.load(Ordering::SeqCst) {
            self.open.gone.notify_waiters();
        }
    }
}

/// A connection's requests in flight and when the last one ended, on the
/// coarse monotonic clock (milliseconds): what the head-read deadline looks
/// at when its timer fires.
struct Activity {
    busy: AtomicU32,
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            busy: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(crate::os::coarse_monotonic_ms()),
        }
    }
}

/// A request of the connection's in flight, from its head to its reply.
struct Serving(Arc<Activity>);

impl Serving {
    fn new(activity: &Arc<Activity>) -> Serving {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Serving(activity.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(crate::os::coarse_monotonic_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Release);
    }
}

/// The head-read deadline: a connection with no request in flight must
/// complete a request head within `timeout` of its start or of its last
/// reply, or it is closed (a head that trickles in, an idle keep-alive
/// connection). One timer per connection, moved only when it fires: a
/// request in between costs two atomic stores and a coarse clock read,
/// where a timer per request (hyper's) costs an allocation and a timer
/// wheel's insertion and removal.
struct Deadline {
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The timer was moved and has not been polled since (not registered).
    moved: bool,
}

impl Deadline {
    fn new(activity: Arc<Activity>, timeout: Duration) -> Deadline {
        Deadline {
            activity,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            moved: true,
        }
    }

    /// Whether the connection is past its deadline. Polls the timer only
    /// when it has fired or was moved: a registered timer wakes the task
    /// by itself.
    fn passed(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if !self.moved && !self.sleep.is_elapsed() {
                return false;
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                self.moved = false;
                return false;
            }
            let next = if self.activity.busy.load(Ordering::Acquire) > 0 {
                // The request's own limits (body read, delivery wait) bound it.
                self.timeout
            } else {
                let idle = crate::os::coarse_monotonic_ms()
                    .saturating_sub(self.activity.idle_since_ms.load(Ordering::Relaxed));
                let left = (self.timeout.as_millis() as u64).saturating_sub(idle);
                if left == 0 {
                    return true;
                }
                Duration::from_millis(left)
            };
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + next);
            self.moved = true;
        }
    }
}

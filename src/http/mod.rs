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
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
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
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // Replies are a head and a body of a few dozen bytes: copied into one
        // buffer they go out in one plain write. A vectored write of the two
        // (hyper's default) queues the body and costs more: 5-10% of the CPU
        // per postback at saturation (see docs/performance.md).
        .writev(false)
        // The whole head must fit: request line plus header block.
        .max_buf_size((limits.max_uri_bytes + limits.max_header_bytes).max(HYPER_MIN_BUF));
    let graceful = GracefulShutdown::new();
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
                let svc = service_fn(move |req| {
                    // Boxed: hyper moves the service's future into its
                    // connection state, and a request's future is a few KiB.
                    let fut = Box::pin(h(req, peer));
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%peer, error = %e, "Connection ended with an error.");
                    }
                    drop(slot);
                    drop(held);
                });
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
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

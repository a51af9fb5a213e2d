//! A bare hyper 1.x HTTP/1.1 server that answers every request with a short
//! text body: the yardstick the gateway's throughput is compared against,
//! built with the same hyper, tokio and release profile.
//!
//! Usage: `baseline [ADDR]` (default 127.0.0.1:8081).
//!
//! `BASELINE_DELAY_US=N` makes each reply wait N microseconds first, as the
//! gateway's replies wait for Kafka's acknowledgement: in a closed loop the
//! generator then waits (and is woken) as often against the baseline as
//! against the gateway, so the comparison no longer favours the server whose
//! client never sleeps.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let delay = std::env::var("BASELINE_DELAY_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&us| us > 0)
        .map(std::time::Duration::from_micros);
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("baseline listening on {addr}, each reply delayed {delay:?}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"OK 00000000-0000-0000-0000-000000000000",
                ))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

//! The public listener's requests: a hyper request becomes the pipeline's
//! plain [`Request`], its POST body read within the limits once the gates
//! before the body let it through; the pipeline's outcome becomes the reply,
//! and the request is counted and timed.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, USER_AGENT};
use hyper::{HeaderMap, Request, Response};
use time::OffsetDateTime;

use super::reply::{self, Body};
use crate::event::Kind;
use crate::pipeline::{self, App, Handled, Method, Outcome};
use crate::postback::Reason;
use crate::rejection::Rejection;

/// Handles one public request.
pub(crate) async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let json = wants_json(req.headers());
    let delivery = admit(app.clone(), req, peer).await;
    let Handled { kind, outcome } = delivery.await;
    let resp = reply::postback(kind, &outcome, json);
    if let Some(kind) = kind {
        count(&app, kind, &outcome, started);
    }
    resp
}

/// Takes a request through the pipeline's gates, reads its POST body only
/// once they let it through, and returns the rest of the pipeline, which owns
/// what it needs.
///
/// The head's parts share hyper's read buffer: they are let go when this
/// returns, before the wait for Kafka, so that hyper reads the connection's
/// next bytes into the same buffer instead of a new one (and they take no
/// room in the request's future while it waits).
async fn admit(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> impl Future<Output = Handled> + Send + 'static {
    let received_at = OffsetDateTime::now_utc();
    let (parts, body) = req.into_parts();
    let method = match parts.method {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        hyper::Method::OPTIONS => Method::Options,
        _ => Method::Other,
    };
    let headers = &parts.headers;
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let mut req = pipeline::Request {
        method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        host: text(HOST).or(parts.uri.host()),
        forwarded_for: forwarded_for(headers),
        user_agent: headers
            .get(USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes())),
        content_type: text(CONTENT_TYPE),
        transfer_encoding: headers.contains_key(TRANSFER_ENCODING),
        header_bytes: headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum(),
        // Read below, once the gates before it let the request through.
        body: Ok(Bytes::new()),
        peer: peer.ip(),
        received_at,
    };
    // Route, head limits, source, client network and rate come first: a
    // request they refuse is answered without its body being waited for or
    // read (a chunked body is never read: the head check refuses it).
    let gated = pipeline::gate(&app, &req);
    if gated.wants_body() {
        // Boxed: its state would otherwise enlarge every request's future
        // (allocated whole for each request), GETs included.
        req.body = Box::pin(read_body(&app, headers, body)).await;
    }
    gated.resume(app, &req)
}

/// Counts a routed request by endpoint and outcome, and a rejection by reason.
fn count(app: &App, kind: Kind, outcome: &Outcome, started: Instant) {
    let hot = app.metrics().hot();
    if let Outcome::Rejected(r) = outcome {
        if let Some(slot) = r.slot() {
            hot.rejection(slot);
            app.refusals.count(slot);
        }
    }
    if let Some(counted) = outcome.counted() {
        hot.request(kind, counted, started.elapsed().as_secs_f64());
    }
}

/// Every `X-Forwarded-For` line, joined in order (proxies may add a line each).
fn forwarded_for(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let mut lines = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let first = lines.next()?;
    match lines.next() {
        None => Some(first.into()),
        Some(second) => {
            let mut all = format!("{first},{second}");
            for l in lines {
                all.push(',');
                all.push_str(l);
            }
            Some(all.into())
        }
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Reads a POST body within the size and time limits.
async fn read_body(app: &App, headers: &HeaderMap, body: Incoming) -> Result<Bytes, Rejection> {
    let limit = app.limits.max_body_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Rejection::BodyTooLarge);
    }
    let body = Limited::new(body, limit).collect();
    match tokio::time::timeout(app.limits.request_timeout, body).await {
        Err(_) => Err(Rejection::RequestTimeout),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Rejection::BodyTooLarge)
        }
        Ok(Err(_)) => Err(Rejection::Invalid(Reason::BadBody)),
        Ok(Ok(b)) => Ok(b.to_bytes()),
    }
}

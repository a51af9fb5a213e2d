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
    let (json, delivery) = admit(app.clone(), req, peer).await;
    let Handled { kind, outcome } = delivery.await;
    let resp = reply::postback(kind, &outcome, json);
    if let Some(kind) = kind {
        count(&app, kind, &outcome, started);
    }
    resp
}

/// Takes a request through the pipeline's gates, reads its POST body only
/// once they let it through, and returns whether the client asked for JSON
/// and the rest of the pipeline, which owns what it needs.
///
/// The head's parts share hyper's read buffer: they are let go when this
/// returns, before the wait for Kafka, so that hyper reads the connection's
/// next bytes into the same buffer instead of a new one (and they take no
/// room in the request's future while it waits).
async fn admit(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (bool, impl Future<Output = Handled> + Send + 'static) {
    let received_at = OffsetDateTime::now_utc();
    let (parts, body) = req.into_parts();
    let method = match parts.method {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        hyper::Method::OPTIONS => Method::Options,
        _ => Method::Other,
    };
    let headers = &parts.headers;
    let head = Head::read(headers);
    let mut req = pipeline::Request {
        method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        host: head.host.or(parts.uri.host()),
        forwarded_for: head.forwarded_for,
        user_agent: head.user_agent,
        content_type: head.content_type,
        transfer_encoding: head.transfer_encoding,
        header_bytes: head.bytes,
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
        req.body = Box::pin(read_body(&app, head.content_length, body)).await;
    }
    (head.wants_json, gated.resume(app, &req))
}

/// What the pipeline reads of a request's headers, in one pass over them
/// (a lookup by name hashes the name, and most requests carry few headers).
#[derive(Default)]
struct Head<'h> {
    /// The first `Host`, when it is text.
    host: Option<&'h str>,
    /// Every `X-Forwarded-For` line, joined in order (proxies may add a line each).
    forwarded_for: Option<Cow<'h, str>>,
    /// The first `User-Agent`, invalid UTF-8 replaced.
    user_agent: Option<Cow<'h, str>>,
    /// The first `Content-Type`, when it is text.
    content_type: Option<&'h str>,
    /// The first `Content-Length`, when it is a number.
    content_length: Option<u64>,
    /// Whether a `Transfer-Encoding` was sent.
    transfer_encoding: bool,
    /// Whether the first `Accept` asks for JSON.
    wants_json: bool,
    /// The head's size: names, values and 4 bytes of `: ` and CRLF each.
    bytes: usize,
}

impl<'h> Head<'h> {
    fn read(headers: &'h HeaderMap) -> Head<'h> {
        let mut head = Head::default();
        let (mut host, mut agent, mut ctype, mut clen, mut accept) =
            (false, false, false, false, false);
        let text = |v: &'h hyper::header::HeaderValue| v.to_str().ok();
        for (name, value) in headers {
            head.bytes += name.as_str().len() + value.len() + 4;
            // The first of each: what `HeaderMap::get` would give.
            if *name == HOST {
                if !std::mem::replace(&mut host, true) {
                    head.host = text(value);
                }
            } else if *name == USER_AGENT {
                if !std::mem::replace(&mut agent, true) {
                    // Most are plain text: checked in one pass, borrowed.
                    head.user_agent = Some(match value.to_str() {
                        Ok(text) => Cow::Borrowed(text),
                        Err(_) => String::from_utf8_lossy(value.as_bytes()),
                    });
                }
            } else if *name == CONTENT_TYPE {
                if !std::mem::replace(&mut ctype, true) {
                    head.content_type = text(value);
                }
            } else if *name == CONTENT_LENGTH {
                if !std::mem::replace(&mut clen, true) {
                    head.content_length = text(value).and_then(|v| v.parse().ok());
                }
            } else if *name == ACCEPT {
                if !std::mem::replace(&mut accept, true) {
                    head.wants_json = text(value).is_some_and(|v| v.contains("application/json"));
                }
            } else if *name == TRANSFER_ENCODING {
                head.transfer_encoding = true;
            } else if name.as_str() == "x-forwarded-for" {
                if let Some(line) = text(value) {
                    head.forwarded_for = Some(match head.forwarded_for.take() {
                        None => line.into(),
                        Some(before) => format!("{before},{line}").into(),
                    });
                }
            }
        }
        head
    }
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

/// Reads a POST body within the size and time limits.
async fn read_body(app: &App, declared: Option<u64>, body: Incoming) -> Result<Bytes, Rejection> {
    let limit = app.limits.max_body_bytes;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_read_in_one_pass_as_lookups_by_name_would_read_it() {
        let mut h = HeaderMap::new();
        h.append(HOST, "a.example:8080".parse().unwrap());
        h.append(HOST, "b.example".parse().unwrap());
        h.append("x-forwarded-for", "203.0.113.7".parse().unwrap());
        h.append(
            USER_AGENT,
            hyper::header::HeaderValue::from_bytes(b"ua \xff").unwrap(),
        );
        h.append("x-forwarded-for", "198.51.100.1, 10.0.0.2".parse().unwrap());
        h.append(ACCEPT, "text/plain, application/json".parse().unwrap());
        h.append(ACCEPT, "text/html".parse().unwrap());
        h.append(CONTENT_LENGTH, "42".parse().unwrap());
        h.append(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        h.append(TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.3".parse().unwrap());
        let head = Head::read(&h);
        assert_eq!(head.host, h.get(HOST).and_then(|v| v.to_str().ok()));
        assert_eq!(head.host, Some("a.example:8080"));
        assert_eq!(
            head.forwarded_for.as_deref(),
            Some("203.0.113.7,198.51.100.1, 10.0.0.2,10.0.0.3")
        );
        assert_eq!(head.user_agent.as_deref(), Some("ua \u{fffd}"));
        assert!(head.wants_json);
        assert_eq!(head.content_length, Some(42));
        assert_eq!(head.content_type, Some("application/x-www-form-urlencoded"));
        assert!(head.transfer_encoding);
        let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        assert_eq!(head.bytes, bytes);

        let none = HeaderMap::new();
        let empty = Head::read(&none);
        assert!(
            empty.host.is_none() && empty.forwarded_for.is_none() && empty.user_agent.is_none()
        );
        assert!(!empty.wants_json && !empty.transfer_encoding && empty.bytes == 0);
        let mut h = HeaderMap::new();
        h.append(ACCEPT, "text/html".parse().unwrap());
        h.append(ACCEPT, "application/json".parse().unwrap());
        h.append(CONTENT_LENGTH, "x".parse().unwrap());
        let head = Head::read(&h);
        assert!(!head.wants_json, "only the first Accept counts, as before");
        assert_eq!(head.content_length, None);
    }
}

//! The public routes: `/postback`, `/postback/{source}`, `/pixel`, `/pixel.gif`.
//! One request flows one way: route → source → params → auth → strict parse →
//! dedup reserve → sink → commit or release → reply.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, USER_AGENT};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use time::OffsetDateTime;
use tracing::{debug, warn};
use uuid::Uuid;

use super::detach::Detachable;
use super::reply::{self, plain, Body, Outcome};
use super::App;
use crate::dedup::{Claim, KeyParts};
use crate::event::{self, Context, Kind};
use crate::metrics as m;
use crate::postback::{self, Params, Reason};

/// Handles one public request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let path = without_trailing_slash(req.uri().path());
    let (kind, target) = match route(req.method(), path) {
        Ok((kind, name)) => (kind, Target::Named(name.map(str::to_owned))),
        Err(StatusCode::NOT_FOUND) if key_route(path).is_some() => {
            if *req.method() != Method::GET && *req.method() != Method::POST {
                return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            }
            let key = key_route(path).unwrap_or_default().to_owned();
            (Kind::S2s, Target::PathKey(key))
        }
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let json = wants_json(&req);
    let outcome = postback(&app, kind, &target, req, peer).await;

    let hot = m::hot();
    if let Outcome::Rejected(r, _) = outcome {
        hot.rejection(r);
        super::refusals::count(r);
    }
    let resp = match kind {
        Kind::S2s => reply::s2s(&outcome, json),
        Kind::Pixel => reply::pixel(&outcome),
    };
    hot.request(kind, outcome.label(), started.elapsed().as_secs_f64());
    resp
}

/// Which endpoint a request is for, and the source named in its path; the
/// error is 404 or 405.
fn route<'p>(method: &Method, path: &'p str) -> Result<(Kind, Option<&'p str>), StatusCode> {
    let get_or_post = *method == Method::GET || *method == Method::POST;
    let (kind, source, allowed) = match path {
        "/postback" => (Kind::S2s, None, get_or_post),
        "/pixel" => (Kind::Pixel, None, get_or_post),
        "/pixel.gif" => (Kind::Pixel, None, *method == Method::GET),
        p => match (p.strip_prefix("/postback/"), p.strip_prefix("/pixel/")) {
            (Some(name), _) if !name.is_empty() && !name.contains('/') => {
                (Kind::S2s, Some(name), get_or_post)
            }
            (_, Some(name)) if !name.is_empty() && !name.contains('/') => {
                (Kind::Pixel, Some(name), get_or_post)
            }
            _ => return Err(StatusCode::NOT_FOUND),
        },
    };
    if allowed {
        Ok((kind, source))
    } else {
        Err(StatusCode::METHOD_NOT_ALLOWED)
    }
}

/// `path` without one trailing slash: a URL pasted into a sender's form often
/// gains one (`/postback/?...`), and it names the same endpoint.
fn without_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    }
}

/// How a request names its source.
enum Target {
    /// `/postback/{name}`, `/pixel/{name}`, or no name (host, then `default`).
    Named(Option<String>),
    /// `/{key}/postback`: the key selects and authenticates the source.
    PathKey(String),
}

/// The key of a `/{key}/postback` path.
fn key_route(path: &str) -> Option<&str> {
    let key = path.strip_prefix('/')?.strip_suffix("/postback")?;
    (!key.is_empty() && !key.contains('/')).then_some(key)
}

/// Every `X-Forwarded-For` line, joined in order (proxies may add a line each).
fn forwarded_for(headers: &HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
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

fn wants_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Takes one postback through the whole flow to its outcome.
async fn postback(
    app: &Arc<App>,
    kind: Kind,
    target: &Target,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Outcome {
    let received_at = OffsetDateTime::now_utc();
    // The head's parts share hyper's read buffer; they are dropped before the
    // wait for Kafka, so that hyper reads the connection's next bytes into the
    // same buffer instead of a new one.
    let (parts, body) = req.into_parts();

    // hyper drops a Content-Length that comes with Transfer-Encoding, so the
    // smuggling shape is only visible as Transfer-Encoding: refuse them all.
    if parts.headers.contains_key(TRANSFER_ENCODING) {
        return Outcome::reject(Reason::LengthRequired);
    }
    if app.warming.load(Ordering::Relaxed) {
        return Outcome::reject(Reason::Unavailable);
    }
    let uri_len = parts.uri.path().len() + parts.uri.query().map_or(0, |q| q.len() + 1);
    if uri_len > app.limits.max_uri_bytes {
        return Outcome::Rejected(Reason::TooLarge, StatusCode::URI_TOO_LONG);
    }
    // hyper bounds its read buffer, but a head that arrives in one read can
    // exceed it; the header limit is ours to keep.
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > app.limits.max_header_bytes {
        return Outcome::Rejected(
            Reason::TooLarge,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        );
    }
    let sources = app.sources.load();
    let host = parts
        .headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or(parts.uri.host());
    let (found, key_checked) = match target {
        Target::Named(name) => (sources.select(name.as_deref(), host), false),
        Target::PathKey(key) => (sources.by_path_key(key), true),
    };
    let source = match found {
        Ok(s) => s.clone(),
        Err(r) => return Outcome::reject(r),
    };
    drop(sources);
    if kind == Kind::Pixel && !source.pixels {
        return refuse(Reason::UnknownSource, &source.name);
    }
    let client = match source.admit(peer.ip(), forwarded_for(&parts.headers).as_deref()) {
        Ok(ip) => ip,
        Err(r) => return refuse(r, &source.name),
    };
    // The order of the gates: the client's network, the client's own rate,
    // the key, and only then the source's rate, so that a request that fails
    // authentication never spends what belongs to the source.
    if app
        .per_client
        .as_ref()
        .is_some_and(|pc| pc.check(client).is_err())
    {
        return refuse(Reason::RateLimited, &source.name);
    }

    let mut params = Params::new();
    if let Some(q) = parts.uri.query() {
        if let Err(r) = params.add_query(q.as_bytes(), source.rules.plus_as_space) {
            return refuse(r, &source.name);
        }
    }
    if parts.method == Method::POST {
        // Boxed: its state would otherwise enlarge every request's future
        // (allocated whole for each request), GETs included.
        if let Err(r) = Box::pin(read_body(app, kind, &parts.headers, body, &mut params)).await {
            return refuse(r, &source.name);
        }
    }
    if !key_checked {
        let presented = postback::parse::api_key(&params, &source.rules);
        let checked = match kind {
            Kind::S2s => source.authenticate(presented),
            Kind::Pixel => source.authenticate_pixel(presented),
        };
        if let Err(r) = checked {
            return refuse(r, &source.name);
        }
    }
    if source.rate.as_ref().is_some_and(|r| r.check().is_err()) {
        return refuse(Reason::RateLimited, &source.name);
    }
    let conv = match postback::parse(&params, &source.rules) {
        Ok(c) => c,
        Err(r) => return refuse(r, &source.name),
    };

    let key = app.dedup.key(&KeyParts {
        source: &source.name,
        token: &conv.token,
        txid: conv.txid.as_deref(),
        goal: conv.goal.as_deref(),
        status: conv.dedup_status(),
    });
    let pool = app.dedup.of(&source.name, source.is_keyed());
    let claim = match pool.try_claim(key) {
        Some(claim) => claim,
        // Another request holds the key in flight: wait for its outcome.
        // Rare, and boxed for the same reason as the body read.
        None => Box::pin(pool.reserve(key, app.delivery_wait)).await,
    };
    let reservation = match claim {
        Claim::Reserved(r) => r,
        Claim::Duplicate(first) => {
            source.count_duplicate();
            return Outcome::Duplicate(Some(first));
        }
        Claim::Busy => return Outcome::reject(Reason::Unavailable),
    };

    let event_id = Uuid::now_v7();
    let mut ip_buf = [0u8; 48];
    let user_agent = parts
        .headers
        .get(USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let ctx = Context {
        source: &source.name,
        kind,
        received_at,
        conversion_at_click: source.conversion_at_click,
        client_ip: ip_text(client, &mut ip_buf),
        user_agent: user_agent.as_deref(),
    };
    let event = event::encode(&conv, &ctx, &source.name, event_id, key);
    let campaign = conv.campaign_id;
    drop(parts);

    // Delivery runs to its end even if the client hangs up: an event Kafka
    // may still acknowledge must be committed, or its retry would count it twice.
    let sink = app.sink.clone();
    let delivered = Detachable::new(async move {
        match sink.deliver(&event).await {
            Ok(()) => {
                reservation.commit(event.event_id);
                Ok(())
            }
            Err(e) => {
                drop(reservation);
                Err(e)
            }
        }
    })
    .await;
    match delivered {
        Ok(()) => {
            source.count_accepted();
            if let Some(campaign) = campaign.as_deref() {
                app.campaigns
                    .observe(&source.platform, &source.name, campaign);
            }
            Outcome::Accepted(event_id)
        }
        Err(e) => {
            if log_allowed() {
                warn!(source = %source.name, error = %e, "Cannot make a postback durable; answering 503.");
            }
            Outcome::reject(Reason::Unavailable)
        }
    }
}

/// An address as text in `buf`, without the formatting machinery for IPv4.
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut at = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[at] = b'.';
                    at += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let first = match octet {
                    100.. => 0,
                    10.. => 1,
                    _ => 2,
                };
                for &d in &digits[first..] {
                    buf[at] = b'0' + d;
                    at += 1;
                }
            }
            at
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 45 bytes hold the longest IPv6 text.
            let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{ip}"));
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

fn refuse(reason: Reason, source: &str) -> Outcome {
    debug!(%reason, source, "Refused a postback.");
    Outcome::reject(reason)
}

/// At most one warning a second for failures that come in floods (a Kafka outage).
fn log_allowed() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    LAST.swap(now, Ordering::Relaxed) != now
}

/// Reads a POST body within the size and time limits and merges its parameters.
async fn read_body(
    app: &App,
    kind: Kind,
    headers: &HeaderMap,
    body: Incoming,
    params: &mut Params,
) -> Result<(), Reason> {
    let limit = app.limits.max_body_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Reason::TooLarge);
    }
    let ctype = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let body = Limited::new(body, limit).collect();
    let body: Bytes = match tokio::time::timeout(app.limits.request_timeout, body).await {
        Err(_) => return Err(Reason::RequestTimeout),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Reason::TooLarge)
        }
        Ok(Err(_)) => return Err(Reason::BadBody),
        Ok(Ok(b)) => b.to_bytes(),
    };
    if body.is_empty() {
        return Ok(());
    }
    match ctype.as_deref() {
        Some("application/x-www-form-urlencoded") => params.add_form(&body),
        Some("application/json") => params.add_json(&body),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => params.add_json(&body),
        // navigator.sendBeacon sends a string body as text/plain.
        Some("text/plain") | None if kind == Kind::Pixel => params.add_form(&body),
        _ => Err(Reason::UnsupportedContentType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path_and_method() {
        assert!(matches!(
            route(&Method::GET, "/postback"),
            Ok((Kind::S2s, None))
        ));
        assert!(matches!(
            route(&Method::POST, "/postback/acme"),
            Ok((Kind::S2s, Some("acme")))
        ));
        assert!(matches!(
            route(&Method::POST, "/pixel"),
            Ok((Kind::Pixel, None))
        ));
        assert!(matches!(
            route(&Method::GET, "/pixel.gif"),
            Ok((Kind::Pixel, None))
        ));
        let status = |m: &Method, p: &str| route(m, p).err().map(|s| s.as_u16());
        assert_eq!(status(&Method::POST, "/pixel.gif"), Some(405));
        assert_eq!(status(&Method::PUT, "/postback"), Some(405));
        assert_eq!(status(&Method::GET, "/postback/a/b"), Some(404));
        assert_eq!(status(&Method::GET, "/"), Some(404));
        // A trailing slash names the same endpoint; two do not.
        fn slash<'p>(m: &Method, p: &'p str) -> Result<(Kind, Option<&'p str>), StatusCode> {
            route(m, without_trailing_slash(p))
        }
        assert!(matches!(
            slash(&Method::GET, "/postback/"),
            Ok((Kind::S2s, None))
        ));
        assert!(matches!(
            slash(&Method::GET, "/pixel/"),
            Ok((Kind::Pixel, None))
        ));
        assert!(matches!(
            slash(&Method::GET, "/postback/acme/"),
            Ok((Kind::S2s, Some("acme")))
        ));
        assert!(slash(&Method::GET, "/postback//").is_err());
        assert!(slash(&Method::GET, "/").is_err());
        assert_eq!(
            key_route(without_trailing_slash("/k3y/postback/")),
            Some("k3y")
        );
    }

    #[test]
    fn addresses_read_as_their_display_form() {
        let mut buf = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "203.0.113.7",
            "10.200.9.255",
            "1.20.100.0",
            "::1",
            "2001:db8::ff00:42:8329",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }
}

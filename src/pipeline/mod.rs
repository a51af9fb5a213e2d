//! The request pipeline on plain parts: route → head limits → source → client
//! (network, rate) → params → key → source rate → strict parse → dedup claim →
//! sink → commit or release → [`Outcome`]. `http/` turns a hyper request into a
//! [`Request`], reads a POST body only once the gates before it let the request
//! through (`gate`, then `Gated::resume`), and turns the outcome into a
//! reply; nothing here knows hyper, so the pipeline bench drives [`handle`] (the
//! same two steps) as the server does.
#![warn(missing_docs)]

mod admit;
mod deliver;
mod detach;
mod params;
pub mod refusals;
mod route;

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use tracing::debug;
use uuid::Uuid;

use crate::config::Limits;
use crate::console;
use crate::dedup::Pools;
use crate::event::Kind;
use crate::postback;
use crate::ratelimit::PerClient;
use crate::rejection::{Counted, Rejection};
use crate::sink::Sink;
use crate::source::claims::CampaignClaims;
use crate::source::{SharedSources, Source};
use crate::tasks::Tasks;
use deliver::Claimed;
use route::Target;

/// Everything a request needs, shared by all connections.
pub struct App {
    /// Swapped whole on a reload; each request takes one snapshot.
    pub sources: SharedSources,
    /// Which source first sent each campaign, per platform.
    pub campaigns: CampaignClaims,
    /// The dedup window's pools, where each conversion's key is claimed.
    pub dedup: Arc<Pools>,
    /// Where events go: Kafka, or the spool when Kafka cannot take them.
    pub sink: Arc<dyn Sink>,
    /// The request limits (sizes, timeouts) the gates and the body read keep.
    pub limits: Limits,
    /// Longest wait for a key held in flight by another request.
    pub delivery_wait: Duration,
    /// Set on the shutdown signal; `/readyz` turns 503 at once.
    pub shutting_down: AtomicBool,
    /// True until the dedup window is rebuilt at start; postbacks get 503
    /// meanwhile, since a retry could not yet be told from a new conversion.
    pub warming: AtomicBool,
    /// Per-client-address rate limit, when configured.
    pub per_client: Option<PerClient>,
    /// Refusals since the last summary the sweeper logged.
    pub refusals: refusals::Refusals,
    /// The last postbacks of each source, for the admin console.
    pub console: Arc<crate::console::Recent>,
    /// Who may read the console.
    pub admin: crate::config::admin::AdminAccess,
    /// The owner of the background tasks: a delivery whose client hung up
    /// finishes in one of its tasks, named, its panic counted, waited for at
    /// shutdown. Its metrics are the gateway's ([`App::metrics`]).
    pub tasks: Tasks,
}

impl App {
    /// The gateway's metrics, which `/metrics` renders.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.tasks.metrics()
    }

    /// Whether events can be made durable now.
    pub(crate) fn ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why the instance must not take traffic now, if it must not.
    pub(crate) fn not_ready(&self) -> Option<String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Some("shutting down".into());
        }
        if self.warming.load(Ordering::Relaxed) {
            return Some("rebuilding the dedup window from the topic".into());
        }
        self.sink.problem()
    }
}

/// The request methods the routes tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`: its body may carry parameters.
    Post,
    /// `OPTIONS`: a preflight's answer on the pixel endpoints, else 405.
    Options,
    /// Any other (`HEAD` among them): 405 where the path is known.
    Other,
}

/// The parts of one request that the pipeline reads.
pub struct Request<'r> {
    /// The request method, as far as the routes tell methods apart.
    pub method: Method,
    /// The path as sent (not percent-decoded).
    pub path: &'r str,
    /// The query as sent, without the `?`.
    pub query: Option<&'r str>,
    /// The `Host` header (or the host of an absolute request URI): custom
    /// tracking domains select their source by it.
    pub host: Option<&'r str>,
    /// Every `X-Forwarded-For` line, joined in order.
    pub forwarded_for: Option<Cow<'r, str>>,
    /// The `User-Agent` header (not UTF-8 bytes replaced), for the event.
    pub user_agent: Option<Cow<'r, str>>,
    /// The `Content-Type` header as sent.
    pub content_type: Option<&'r str>,
    /// Whether the request came with `Transfer-Encoding`; such a request is
    /// refused (see [`Rejection::LengthRequired`]) and its body is not read.
    pub transfer_encoding: bool,
    /// The size of the header block: each name and value plus 4 bytes.
    pub header_bytes: usize,
    /// A POST's body, read within the size and time limits, or why it could
    /// not be; it counts at the body's step of the flow, after the checks
    /// before it. The server reads it only when `Gated::wants_body` says so
    /// (empty until then). Ignored for other methods.
    pub body: Result<Bytes, Rejection>,
    /// The client's address as the socket sees it.
    pub peer: IpAddr,
    /// When the request arrived.
    pub received_at: OffsetDateTime,
}

/// What happened to one postback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Made durable (acknowledged by Kafka, or spooled) under this event id.
    Accepted(Uuid),
    /// A repeat of one accepted before: the first event's id, where known.
    Duplicate(Option<Uuid>),
    /// Answered as a success and filed nothing, as the postback asked (a
    /// status its source's `ignore_list` parameter names).
    Ignored,
    /// Refused, and why; nothing of it reached Kafka.
    Rejected(Rejection),
}

impl Outcome {
    /// How `postback_requests_total` counts it; `None` for a request that is
    /// not counted as a postback.
    pub(crate) fn counted(&self) -> Option<Counted> {
        match self {
            Outcome::Accepted(_) => Some(Counted::Accepted),
            Outcome::Duplicate(_) => Some(Counted::Duplicate),
            Outcome::Ignored => Some(Counted::Ignored),
            Outcome::Rejected(r) => r.verdict().outcome,
        }
    }
}

impl From<Rejection> for Outcome {
    fn from(r: Rejection) -> Outcome {
        Outcome::Rejected(r)
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// The endpoint, once the request was routed (`None`: 404 or 405).
    pub(crate) kind: Option<Kind>,
    /// What happened to the postback.
    pub outcome: Outcome,
}

/// Takes one request through the pipeline, its body (if any) already read:
/// `gate`, then `Gated::resume`.
pub fn handle(app: Arc<App>, req: Request<'_>) -> impl Future<Output = Handled> + Send + 'static {
    gate(&app, &req).resume(app, &req)
}

/// The gates that come before a POST body is read, in their fixed order:
/// route, head limits, source, client (network, own rate). A request they
/// refuse is answered without its body ever being read, so a sender the
/// source does not take cannot make the gateway wait for a body or read it.
pub(crate) fn gate<'r>(app: &App, req: &Request<'r>) -> Gated<'r> {
    let (kind, target) = match route::route(req.method, req.path) {
        Ok(routed) => routed,
        Err(r) => return Gated(Gates::Unrouted(r)),
    };
    let source =
        match admit::check_head(app, req).and_then(|()| admit::find_source(app, &target, req)) {
            Ok(source) => source,
            Err(reason) => {
                return Gated(Gates::Refused {
                    kind,
                    target,
                    source: None,
                    reason,
                })
            }
        };
    match admit::admit_client(app, kind, &target, &source, req) {
        Ok(client) => Gated(Gates::Passed {
            kind,
            target,
            source,
            client,
            post: req.method == Method::Post,
        }),
        Err(reason) => {
            debug!(%reason, source = &*source.name, "Refused a postback.");
            Gated(Gates::Refused {
                kind,
                target,
                source: Some(source),
                reason,
            })
        }
    }
}

/// A request after the gates before its body: [`Gated::wants_body`] says
/// whether to read a POST body into [`Request::body`] before
/// [`Gated::resume`] takes it the rest of the way.
pub(crate) struct Gated<'r>(Gates<'r>);

enum Gates<'r> {
    /// No endpoint: 404 or 405.
    Unrouted(Rejection),
    /// Routed, then refused by a gate; `source` once it was found.
    Refused {
        kind: Kind,
        target: Target<'r>,
        source: Option<Arc<Source>>,
        reason: Rejection,
    },
    /// Through every gate before the body.
    Passed {
        kind: Kind,
        target: Target<'r>,
        source: Arc<Source>,
        client: IpAddr,
        /// Whether the request is a POST, whose body is wanted now.
        post: bool,
    },
}

impl Gated<'_> {
    /// Whether the request passed the gates and is a POST: only then is its
    /// body wanted.
    pub(crate) fn wants_body(&self) -> bool {
        matches!(self.0, Gates::Passed { post: true, .. })
    }

    /// The rest of the pipeline for `req` (the request these gates saw, its
    /// body now read when [`Gated::wants_body`] said so).
    ///
    /// The steps that read `req` run in this call; the future it returns owns
    /// what it needs (the event, the dedup reservation), so the caller can
    /// let the request go before the waits for a claim held elsewhere and for
    /// Kafka.
    pub(crate) fn resume(
        self,
        app: Arc<App>,
        req: &Request<'_>,
    ) -> impl Future<Output = Handled> + Send + 'static {
        let (routed, source, prepared) = match self.0 {
            Gates::Unrouted(r) => (None, None, Err(r.into())),
            Gates::Refused {
                kind,
                target,
                source,
                reason,
            } => (Some((kind, target)), source, Err(reason.into())),
            Gates::Passed {
                kind,
                target,
                source,
                client,
                ..
            } => {
                let held = source.clone();
                let prepared = prepare(&app, kind, &target, req, source, client);
                (Some((kind, target)), Some(held), prepared)
            }
        };
        let kind = routed.as_ref().map(|(kind, _)| *kind);
        let kept =
            routed.and_then(|(kind, target)| keep(&app, kind, &target, req, source.as_deref()));
        let source = source.map(|s| s.name.clone());
        async move {
            let outcome = match prepared {
                Ok(claimed) => deliver::finish(&app, claimed).await,
                Err(outcome) => outcome,
            };
            if let Some(entry) = kept {
                app.console
                    .record(source.as_ref(), entry.with(verdict(&outcome)));
            }
            Handled { kind, outcome }
        }
    }
}

/// What the console keeps of a routed request (copied now: the request is
/// let go before the waits), when it keeps anything.
fn keep(
    app: &App,
    kind: Kind,
    target: &Target<'_>,
    req: &Request<'_>,
    source: Option<&Source>,
) -> Option<console::Kept> {
    if !app.console.enabled() {
        return None;
    }
    let sources = app.sources.load();
    let secrets = console::redact::Secrets {
        source,
        sources: &sources,
    };
    let path = match target {
        // The key is the secret: the console shows the path's shape only.
        Target::PathKey(_) => "/{key}/postback",
        Target::Named(_) => req.path,
    };
    let body = match (&req.method, &req.body) {
        (Method::Post, Ok(b)) => b.as_ref(),
        _ => &[],
    };
    Some(console::Kept::new(
        req.received_at,
        kind.as_str(),
        path,
        req.peer,
        req.query.unwrap_or("").as_bytes(),
        body,
        &secrets,
    ))
}

/// The verdict as the sender was told it.
fn verdict(outcome: &Outcome) -> console::Verdict {
    match outcome {
        Outcome::Accepted(id) => console::Verdict::Ok(*id),
        Outcome::Duplicate(id) => console::Verdict::Duplicate(*id),
        Outcome::Ignored => console::Verdict::Ignored,
        Outcome::Rejected(r) => console::Verdict::Error(*r),
    }
}

/// The steps after the gates, up to the dedup claim, in their fixed order.
/// `Err` is the outcome when nothing is left to deliver: a rejection or a
/// duplicate.
fn prepare(
    app: &App,
    kind: Kind,
    target: &Target<'_>,
    req: &Request<'_>,
    source: Arc<Source>,
    client: IpAddr,
) -> Result<Claimed, Outcome> {
    let refuse = |reason| {
        debug!(%reason, source = &*source.name, "Refused a postback.");
        Outcome::Rejected(reason)
    };
    let params = checked(kind, target, req, &source).map_err(refuse)?;
    if postback::ignored(&params, &source.rules) {
        source.count_ignored(app.metrics());
        return Err(Outcome::Ignored);
    }
    let conv =
        postback::parse(&params, &source.rules).map_err(|r| refuse(Rejection::Invalid(r)))?;
    source.count_unread(conv.unread, app.metrics());
    deliver::claim(app, kind, source, conv, client, req)
}

/// The gates between the body and the parse: the parameters, the key and the
/// source's rate, in that order, so that a request that fails authentication
/// spends nothing of the source's.
fn checked(
    kind: Kind,
    target: &Target<'_>,
    req: &Request<'_>,
    source: &Source,
) -> Result<postback::Params, Rejection> {
    let params = params::read(kind, source, req)?;
    admit::authenticate(kind, target, source, &params)?;
    admit::check_source_rate(kind, source)?;
    Ok(params)
}

//! The gates before parsing, in their fixed order: the request's framing and
//! size and whether postbacks are taken yet; the source; the client's network
//! and its own rate; then (once the parameters are read) the key and the
//! source's rate. A request that fails authentication never spends what
//! belongs to the source.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::route::Target;
use super::{App, Request};
use crate::event::Kind;
use crate::postback::{self, Params};
use crate::rejection::Rejection;
use crate::source::Source;

/// The request's framing and size limits, and the warm-up: checked before
/// anything is looked up.
pub(super) fn check_head(app: &App, req: &Request<'_>) -> Result<(), Rejection> {
    if req.transfer_encoding {
        return Err(Rejection::LengthRequired);
    }
    if app.warming.load(Ordering::Relaxed) {
        return Err(Rejection::Unavailable);
    }
    let uri_len = req.path.len() + req.query.map_or(0, |q| q.len() + 1);
    if uri_len > app.limits.max_uri_bytes {
        return Err(Rejection::UriTooLong);
    }
    if req.header_bytes > app.limits.max_header_bytes {
        return Err(Rejection::HeadersTooLarge);
    }
    Ok(())
}

/// The source the request names (path, host, or the default), or the one
/// whose key is in the path.
pub(super) fn find_source(
    app: &App,
    target: &Target<'_>,
    req: &Request<'_>,
) -> Result<Arc<Source>, Rejection> {
    let host = req.host;
    let sources = app.sources.load();
    let found = match target {
        Target::Named(name) => sources.select(*name, host),
        Target::PathKey(_) if !sources.path_keys_admit(req.peer, req.forwarded_for.as_deref()) => {
            Err(Rejection::IpNotAllowed)
        }
        // A wrong key in the path spends the client's own rate, so keys
        // cannot be guessed faster than a client may send.
        Target::PathKey(key) => sources.by_path_key(key).map_err(|e| {
            if app
                .per_client
                .as_ref()
                .is_some_and(|pc| pc.check(req.peer).is_err())
            {
                Rejection::RateLimited
            } else {
                e
            }
        }),
    };
    found.cloned()
}

/// Whether the source takes this kind of request from this client, and the
/// client's own rate; returns the client's address (after trusted proxies).
pub(super) fn admit_client(
    app: &App,
    kind: Kind,
    target: &Target<'_>,
    source: &Source,
    req: &Request<'_>,
) -> Result<IpAddr, Rejection> {
    if kind == Kind::Pixel && !source.pixels {
        return Err(Rejection::NoPixels);
    }
    let client = match source.admit(req.peer, req.forwarded_for.as_deref()) {
        Ok(client) => client,
        // A valid path key from a network another path-keyed source admits:
        // answered like any wrong key, so the reply does not confirm it.
        Err(Rejection::IpNotAllowed) if matches!(target, Target::PathKey(_)) => {
            return Err(Rejection::BadApiKey)
        }
        Err(e) => return Err(e),
    };
    if app
        .per_client
        .as_ref()
        .is_some_and(|pc| pc.check(client).is_err())
    {
        return Err(Rejection::RateLimited);
    }
    Ok(client)
}

/// The key among the parameters, unless the path's key already selected the
/// source; pixels are checked against the source's pixel keys.
pub(super) fn authenticate(
    kind: Kind,
    target: &Target<'_>,
    source: &Source,
    params: &Params,
) -> Result<(), Rejection> {
    if let Target::PathKey(_) = target {
        return Ok(());
    }
    let presented = postback::parse::api_key(params, &source.rules);
    match kind {
        Kind::S2s => source.authenticate(presented),
        Kind::Pixel => source.authenticate_pixel(presented),
    }
}

/// The source's own rate, spent only by authenticated requests; pixels
/// spend a bucket of their own, so a public pixel key cannot starve the
/// source's S2S postbacks.
pub(super) fn check_source_rate(kind: Kind, source: &Source) -> Result<(), Rejection> {
    let limiter = match kind {
        Kind::S2s => &source.rate,
        Kind::Pixel => &source.pixel_rate,
    };
    match limiter {
        Some(rate) if rate.check().is_err() => Err(Rejection::RateLimited),
        _ => Ok(()),
    }
}

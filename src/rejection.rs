//! Why a request was not accepted, and how that is answered. One `match`
//! (`Rejection::verdict`) decides, for every rejection, the HTTP status, the
//! `Retry-After`, whether the connection closes, the reason code of the reply and
//! the metric labels; nothing else sets a status. The parser's own outcomes stay
//! [`Reason`]s and arrive here as [`Rejection::Invalid`].
#![warn(missing_docs)]

use std::fmt;

use crate::postback::Reason;

/// One reason a request gets no `OK` or `DUPLICATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    // Routing.
    /// A path that names no endpoint.
    NotFound,
    /// An endpoint that does not take the request's method; the reply's
    /// `Allow` names the ones it takes (RFC 9110 §15.5.6).
    MethodNotAllowed(Allow),
    /// `OPTIONS` on a pixel endpoint: 204 with `Allow` and the CORS headers a
    /// browser's preflight asks for before a beacon POST. Not a postback.
    Options,

    // The request's framing and size.
    /// A body without `Content-Length` (chunked): postbacks are small and
    /// framed by length, and `Transfer-Encoding` next to `Content-Length` is
    /// the classic request-smuggling shape. The body is not read, so nothing
    /// after it on the connection is trusted.
    LengthRequired,
    /// A request line (path and query) over its limit.
    UriTooLong,
    /// A header block over its limit.
    HeadersTooLarge,
    /// A body over its limit.
    BodyTooLarge,
    /// The body did not arrive within the request timeout.
    RequestTimeout,
    /// A body whose content type is neither form nor JSON.
    UnsupportedContentType,

    // The source and its credentials.
    /// A source name (path or host) that no configured source has.
    UnknownSource,
    /// A pixel for a source that takes none (a keyed source without pixel keys,
    /// or one with `pixels = false`).
    NoPixels,
    /// A client address outside the source's allowed networks.
    IpNotAllowed,
    /// No api key where the source requires one.
    MissingApiKey,
    /// An api key the source does not know.
    BadApiKey,
    /// An S2S postback to a source without keys, which takes pixels only.
    PixelOnly,

    // The postback itself.
    /// The strict parser refused the postback (400).
    Invalid(Reason),

    // Availability.
    /// Over a rate limit (the client address's or the source's).
    RateLimited,
    /// The event could not be made durable now, or the gateway is still
    /// rebuilding its dedup window.
    Unavailable,
    /// A connection over the connection cap, answered without reading its request.
    Overloaded,
    /// `/readyz` while events cannot be made durable (the admin listener).
    NotReady,
}

/// The methods an endpoint takes, as its `Allow` header lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Allow {
    /// `GET` only (`/pixel.gif`, the admin routes).
    Get,
    /// `GET` and `POST` (the postback and pixel endpoints).
    GetPost,
}

impl Allow {
    /// The `Allow` header's value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Allow::Get => "GET",
            Allow::GetPost => "GET, POST",
        }
    }
}

/// How a rejection is answered and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) status: u16,
    /// Seconds a sender should wait before it tries again.
    pub(crate) retry_after: Option<&'static str>,
    /// Whether the connection closes after the reply.
    pub(crate) close: bool,
    pub(crate) text: Text,
    /// The `outcome` of `postback_requests_total`, and whether the
    /// rejection is counted at all: requests that are not postbacks (no
    /// route, the connection cap, the admin probe) are not.
    pub(crate) outcome: Option<Counted>,
}

/// What a postback came to, as `postback_requests_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Made durable: a new conversion.
    Accepted,
    /// An exact repeat of one already taken.
    Duplicate,
    /// Answered as a success and filed nothing (a status it said to ignore).
    Ignored,
    /// Refused for what it is.
    Rejected,
    /// Turned away for now: the sender should try again later.
    Unavailable,
}

impl Counted {
    /// Every outcome, in the order of their series.
    pub const ALL: [Counted; 5] = [
        Counted::Accepted,
        Counted::Duplicate,
        Counted::Ignored,
        Counted::Rejected,
        Counted::Unavailable,
    ];

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Counted::Accepted => "accepted",
            Counted::Duplicate => "duplicate",
            Counted::Ignored => "ignored",
            Counted::Rejected => "rejected",
            Counted::Unavailable => "unavailable",
        }
    }
}

/// What a rejection's reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text {
    /// A reason code: `ERROR <code>` (or JSON, or a pixel's `X-Postback-Result`);
    /// the same code is the `reason` label of `postback_rejections_total`.
    Code(&'static str),
    /// A fixed plain-text line, for requests outside the postback flow.
    Line(&'static str),
}

/// Outcomes of rejected postbacks: refused for what they are, or turned
/// away for now (the sender should try again later).
const REJECTED: Option<Counted> = Some(Counted::Rejected);
const UNAVAILABLE: Option<Counted> = Some(Counted::Unavailable);

/// Seconds a sender should wait before retrying a 503.
const RETRY_LATER: Option<&str> = Some("5");
/// Seconds a rate-limited sender should wait (buckets refill continuously),
/// and a connection over the cap (a slot frees when any connection closes).
const RETRY_SOON: Option<&str> = Some("1");

impl Rejection {
    /// The one place that decides how each rejection is answered and counted.
    pub(crate) fn verdict(self) -> Verdict {
        use Rejection::*;
        use Text::{Code, Line};
        let v = |status, retry_after, close, text, outcome| Verdict {
            status,
            retry_after,
            close,
            text,
            outcome,
        };
        match self {
            NotFound => v(404, None, false, Line("not found\n"), None),
            MethodNotAllowed(_) => v(405, None, false, Line("method not allowed\n"), None),
            Options => v(204, None, false, Line(""), None),

            LengthRequired => v(411, None, true, Code("length_required"), REJECTED),
            UriTooLong => v(414, None, false, Code("too_large"), REJECTED),
            HeadersTooLarge => v(431, None, false, Code("too_large"), REJECTED),
            BodyTooLarge => v(413, None, false, Code("too_large"), REJECTED),
            RequestTimeout => v(408, None, false, Code("request_timeout"), REJECTED),
            UnsupportedContentType => {
                v(415, None, false, Code("unsupported_content_type"), REJECTED)
            }

            UnknownSource => v(404, None, false, Code("unknown_source"), REJECTED),
            NoPixels => v(403, None, false, Code("no_pixels"), REJECTED),
            IpNotAllowed => v(403, None, false, Code("ip_not_allowed"), REJECTED),
            MissingApiKey => v(401, None, false, Code("missing_api_key"), REJECTED),
            BadApiKey => v(403, None, false, Code("bad_api_key"), REJECTED),
            PixelOnly => v(403, None, false, Code("pixel_only"), REJECTED),

            Invalid(r) => v(400, None, false, Code(r.as_str()), REJECTED),

            RateLimited => v(429, RETRY_SOON, false, Code("rate_limited"), UNAVAILABLE),
            Unavailable => v(503, RETRY_LATER, false, Code("unavailable"), UNAVAILABLE),
            Overloaded => v(503, RETRY_SOON, true, Code("unavailable"), None),
            NotReady => v(503, None, false, Line("not ready\n"), None),
        }
    }

    /// The reason code, for rejections that have one.
    pub(crate) fn code(self) -> Option<&'static str> {
        match self.verdict().text {
            Text::Code(code) => Some(code),
            Text::Line(_) => None,
        }
    }

    /// One rejection of each counted reason code, in a fixed order (the
    /// parser's reasons first, as the codes were always listed): the metric
    /// series registered at start and the refusal summary's slots.
    pub(crate) fn counted() -> impl Iterator<Item = Rejection> {
        use Rejection::*;
        Reason::ALL.into_iter().map(Invalid).chain([
            UnsupportedContentType,
            MissingApiKey,
            BadApiKey,
            IpNotAllowed,
            PixelOnly,
            NoPixels,
            UnknownSource,
            BodyTooLarge,
            RateLimited,
            Unavailable,
            RequestTimeout,
            LengthRequired,
        ])
    }

    /// How many reason codes are counted.
    pub(crate) const COUNTED: usize = Reason::ALL.len() + 12;

    /// This rejection's position in [`Rejection::counted`] (by reason code),
    /// or `None` when it is not counted.
    pub(crate) fn slot(self) -> Option<usize> {
        let v = self.verdict();
        v.outcome?;
        Rejection::counted().position(|c| c.verdict().text == v.text)
    }
}

impl fmt::Display for Rejection {
    /// The reason code (or, outside the postback flow, the reply's line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict().text {
            Text::Code(s) | Text::Line(s) => f.write_str(s.trim_end()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn every() -> Vec<Rejection> {
        use Rejection::*;
        let mut all: Vec<Rejection> = Rejection::counted().collect();
        all.extend([
            UriTooLong,
            HeadersTooLarge,
            NotFound,
            MethodNotAllowed(Allow::Get),
            MethodNotAllowed(Allow::GetPost),
            Options,
            Overloaded,
            NotReady,
        ]);
        all
    }

    #[test]
    fn every_rejection_is_a_client_or_server_error() {
        for r in every() {
            let s = r.verdict().status;
            // A preflight's answer is no refusal, and carries no body.
            if r == Rejection::Options {
                assert_eq!(s, 204);
                continue;
            }
            assert!((400..600).contains(&s), "{r:?}: {s}");
        }
    }

    #[test]
    fn each_counted_code_has_one_slot() {
        let counted: Vec<Rejection> = Rejection::counted().collect();
        assert_eq!(counted.len(), Rejection::COUNTED);
        let codes: HashSet<_> = counted.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Rejection::COUNTED, "a code counted twice");
        for (i, r) in counted.iter().enumerate() {
            assert_eq!(r.slot(), Some(i), "{r:?}");
        }
        // The three size limits share one code, hence one series.
        assert_eq!(Rejection::UriTooLong.slot(), Rejection::BodyTooLarge.slot());
        assert_eq!(
            Rejection::HeadersTooLarge.slot(),
            Rejection::BodyTooLarge.slot()
        );
        for r in [
            Rejection::NotFound,
            Rejection::MethodNotAllowed(Allow::GetPost),
            Rejection::Options,
            Rejection::Overloaded,
            Rejection::NotReady,
        ] {
            assert_eq!(r.slot(), None, "{r:?} is not a postback");
        }
    }

    #[test]
    fn a_rejection_reads_as_its_code() {
        assert_eq!(
            Rejection::Invalid(Reason::BadAmount).to_string(),
            "bad_amount"
        );
        assert_eq!(Rejection::HeadersTooLarge.to_string(), "too_large");
    }
}

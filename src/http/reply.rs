//! Replies. One `match` decides the HTTP status of every reason; S2S callers get
//! one line of text (or JSON), pixels always get the transparent GIF.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use uuid::Uuid;

use crate::postback::Reason;

pub type Body = Full<Bytes>;

/// The 43-byte transparent 1x1 GIF.
pub const GIF: &[u8; 43] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

/// Seconds a sender should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "5";
/// Seconds a rate-limited sender should wait (buckets refill continuously).
const RATE_RETRY_AFTER_SECS: &str = "1";

/// What happened to one postback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted(Uuid),
    Duplicate(Option<Uuid>),
    /// Refused; the status is usually [`status_of`] the reason, except for the
    /// size limits, which have one status each.
    Rejected(Reason, StatusCode),
}

impl Outcome {
    pub fn reject(reason: Reason) -> Outcome {
        Outcome::Rejected(reason, status_of(reason))
    }

    /// The `outcome` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted(_) => "accepted",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::Rejected(Reason::Unavailable | Reason::RateLimited, _) => "unavailable",
            Outcome::Rejected(..) => "rejected",
        }
    }

    /// The reply text: `OK <id>`, `DUPLICATE <id>`, `ERROR <reason>`.
    pub fn text(&self) -> String {
        let with_id = |word: &str, id: &Uuid| {
            let mut text = String::with_capacity(word.len() + 37);
            text.push_str(word);
            text.push(' ');
            text.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
            text
        };
        match self {
            Outcome::Accepted(id) => with_id("OK", id),
            Outcome::Duplicate(Some(id)) => with_id("DUPLICATE", id),
            Outcome::Duplicate(None) => "DUPLICATE".to_owned(),
            Outcome::Rejected(r, _) => format!("ERROR {r}"),
        }
    }

    fn json(&self) -> String {
        let v = match self {
            Outcome::Accepted(id) => {
                serde_json::json!({"result": "ok", "event_id": id.to_string()})
            }
            Outcome::Duplicate(id) => {
                serde_json::json!({"result": "duplicate", "event_id": id.map(|i| i.to_string())})
            }
            Outcome::Rejected(r, _) => serde_json::json!({"result": "error", "reason": r.as_str()}),
        };
        v.to_string()
    }

    fn status(&self) -> StatusCode {
        match self {
            Outcome::Accepted(_) | Outcome::Duplicate(_) => StatusCode::OK,
            Outcome::Rejected(_, s) => *s,
        }
    }
}

/// The HTTP status of each reason.
pub fn status_of(reason: Reason) -> StatusCode {
    match reason {
        Reason::MissingApiKey => StatusCode::UNAUTHORIZED,
        Reason::BadApiKey | Reason::IpNotAllowed | Reason::PixelOnly => StatusCode::FORBIDDEN,
        Reason::UnknownSource => StatusCode::NOT_FOUND,
        Reason::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Reason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Reason::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Reason::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Reason::LengthRequired => StatusCode::LENGTH_REQUIRED,
        Reason::BadEncoding
        | Reason::DuplicateParam
        | Reason::MissingTracking
        | Reason::BadTracking
        | Reason::ParamTooLong
        | Reason::UnfilledMacro
        | Reason::BadAmount
        | Reason::MissingAmount
        | Reason::AmountOutOfRange
        | Reason::BadStatus
        | Reason::BadCurrency
        | Reason::CurrencyMismatch
        | Reason::BadClickTime
        | Reason::TooManyParams
        | Reason::BadBody => StatusCode::BAD_REQUEST,
    }
}

/// The reply to a server-to-server postback.
pub fn s2s(outcome: &Outcome, json: bool) -> Response<Body> {
    let (body, ctype) = if json {
        (outcome.json(), "application/json")
    } else {
        (outcome.text(), "text/plain; charset=utf-8")
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = outcome.status();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    match resp.status() {
        StatusCode::SERVICE_UNAVAILABLE => {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        StatusCode::TOO_MANY_REQUESTS => {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RATE_RETRY_AFTER_SECS));
        }
        _ => {}
    }
    if matches!(outcome, Outcome::Rejected(Reason::LengthRequired, _)) {
        // The body was not read: nothing after it on this connection is trusted.
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The reply to a pixel: always 200 and the GIF; the outcome rides in a header.
pub fn pixel(outcome: &Outcome) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(GIF)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    if let Ok(v) = HeaderValue::from_str(&outcome.text()) {
        h.insert("x-postback-result", v);
    }
    if matches!(outcome, Outcome::Rejected(Reason::LengthRequired, _)) {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A plain-text reply outside the postback flow (404, 405, admin).
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gif_is_a_43_byte_gif() {
        assert_eq!(GIF.len(), 43);
        assert!(GIF.starts_with(b"GIF89a"));
        assert_eq!(GIF[42], 0x3b);
    }

    #[test]
    fn every_reason_has_a_client_or_server_error_status() {
        for r in Reason::ALL {
            let s = status_of(r);
            assert!(s.is_client_error() || s.is_server_error(), "{r}: {s}");
        }
    }

    #[test]
    fn unavailable_asks_for_a_retry_later() {
        let resp = s2s(&Outcome::reject(Reason::Unavailable), false);
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[RETRY_AFTER], RETRY_AFTER_SECS);
    }
}

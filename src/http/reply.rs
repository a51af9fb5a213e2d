//! Replies, written from the pipeline's outcome. A rejection's status,
//! `Retry-After`, connection close and reason code come from its
//! [`Verdict`](crate::rejection::Verdict); S2S callers get one line of text (or
//! JSON), pixels always get the transparent GIF.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ALLOW, CACHE_CONTROL, CONNECTION,
    CONTENT_TYPE, RETRY_AFTER,
};
use hyper::{Response, StatusCode};
use uuid::Uuid;

use crate::event::Kind;
use crate::pipeline::Outcome;
use crate::rejection::{Rejection, Text, Verdict};

pub(crate) type Body = Full<Bytes>;

/// The 43-byte transparent 1x1 GIF.
pub(crate) const GIF: &[u8; 43] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// The reply to a request of the public routes: a pixel's GIF, an S2S reply,
/// or (not routed) the rejection's line.
pub(crate) fn postback(kind: Option<Kind>, outcome: &Outcome, json: bool) -> Response<Body> {
    match (kind, outcome) {
        (Some(Kind::Pixel), _) => pixel(outcome),
        (_, Outcome::Rejected(r)) => rejected(*r, json),
        (_, accepted) => {
            let (body, ctype) = if json {
                (self::json(accepted), "application/json")
            } else {
                (text(accepted), TEXT_PLAIN)
            };
            with_body(StatusCode::OK, Bytes::from(body), ctype)
        }
    }
}

/// The reply to a rejection outside a pixel: `ERROR <code>` (or its JSON),
/// or the rejection's line.
pub(crate) fn rejected(r: Rejection, json: bool) -> Response<Body> {
    let v = r.verdict();
    if r == Rejection::Options {
        return preflight();
    }
    let (body, ctype) = match v.text {
        Text::Line(line) => (Bytes::from_static(line.as_bytes()), TEXT_PLAIN),
        Text::Code(_) if json => (
            Bytes::from(self::json(&Outcome::Rejected(r))),
            "application/json",
        ),
        Text::Code(_) => (Bytes::from(text(&Outcome::Rejected(r))), TEXT_PLAIN),
    };
    let mut resp = with_body(status(&v), body, ctype);
    if let Some(secs) = v.retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(secs));
    }
    if v.close {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Rejection::MethodNotAllowed(allow) = r {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow.as_str()));
    }
    resp
}

/// `OPTIONS` on a pixel endpoint: what it takes, and that any page may send
/// it a beacon (a pixel is public by nature: its key is in the page).
fn preflight() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(ALLOW, HeaderValue::from_static("GET, POST"));
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
}

/// The reply to a pixel: always 200 and the GIF; the outcome rides in a header.
fn pixel(outcome: &Outcome) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(GIF)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    if let Ok(v) = HeaderValue::from_str(&text(outcome)) {
        h.insert("x-postback-result", v);
    }
    if matches!(outcome, Outcome::Rejected(r) if r.verdict().close) {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A 200 plain-text reply outside the postback flow (admin).
pub(crate) fn ok(text: &'static str) -> Response<Body> {
    with_body(
        StatusCode::OK,
        Bytes::from_static(text.as_bytes()),
        TEXT_PLAIN,
    )
}

/// A rejection as the raw bytes of a whole HTTP/1.1 reply, for a connection
/// answered without hyper (over the connection cap).
pub(crate) fn raw(r: Rejection) -> Vec<u8> {
    let v = r.verdict();
    let status = status(&v);
    let body = match v.text {
        Text::Code(code) => format!("ERROR {code}"),
        Text::Line(line) => line.to_owned(),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    if let Some(secs) = v.retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str(&format!(
        "content-type: {TEXT_PLAIN}\r\ncontent-length: {}\r\n",
        body.len()
    ));
    if v.close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

fn status(v: &Verdict) -> StatusCode {
    StatusCode::from_u16(v.status).expect("every verdict's status is a valid status code")
}

fn with_body(status: StatusCode, body: Bytes, ctype: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

/// The reply text: `OK <id>`, `DUPLICATE <id>`, `ERROR <reason>`.
fn text(outcome: &Outcome) -> String {
    let with_id = |word: &str, id: &Uuid| {
        let mut text = String::with_capacity(word.len() + 37);
        text.push_str(word);
        text.push(' ');
        text.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        text
    };
    match outcome {
        Outcome::Accepted(id) => with_id("OK", id),
        Outcome::Duplicate(Some(id)) => with_id("DUPLICATE", id),
        Outcome::Duplicate(None) => "DUPLICATE".to_owned(),
        Outcome::Ignored => "IGNORED".to_owned(),
        Outcome::Rejected(r) => format!("ERROR {r}"),
    }
}

fn json(outcome: &Outcome) -> String {
    let v = match outcome {
        Outcome::Accepted(id) => {
            serde_json::json!({"result": "ok", "event_id": id.to_string()})
        }
        Outcome::Duplicate(id) => {
            serde_json::json!({"result": "duplicate", "event_id": id.map(|i| i.to_string())})
        }
        Outcome::Ignored => serde_json::json!({"result": "ignored"}),
        Outcome::Rejected(r) => serde_json::json!({"result": "error", "reason": r.code()}),
    };
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postback::Reason;

    #[test]
    fn the_gif_is_a_43_byte_gif() {
        assert_eq!(GIF.len(), 43);
        assert!(GIF.starts_with(b"GIF89a"));
        assert_eq!(GIF[42], 0x3b);
    }

    #[test]
    fn unavailable_asks_for_a_retry_later() {
        let resp = rejected(Rejection::Unavailable, false);
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[RETRY_AFTER], "5");
        let resp = rejected(Rejection::RateLimited, true);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn a_size_limit_has_its_own_status_and_one_code() {
        for (r, status) in [
            (Rejection::BodyTooLarge, 413),
            (Rejection::UriTooLong, 414),
            (Rejection::HeadersTooLarge, 431),
        ] {
            let resp = rejected(r, false);
            assert_eq!(resp.status(), status);
            assert_eq!(text(&Outcome::Rejected(r)), "ERROR too_large");
        }
        assert_eq!(
            text(&Outcome::Rejected(Rejection::Invalid(Reason::BadAmount))),
            "ERROR bad_amount"
        );
    }

    #[test]
    fn a_refused_connection_reads_as_a_whole_reply() {
        let raw = String::from_utf8(raw(Rejection::Overloaded)).unwrap();
        assert_eq!(
            raw,
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
             content-type: text/plain; charset=utf-8\r\ncontent-length: 17\r\nconnection: close\r\n\r\n\
             ERROR unavailable"
        );
    }
}

//! `postback-gateway test-fire`: what a network's "send a test conversion"
//! button does, from the command line. The URL `postback-url` would print for
//! a source, its macros filled with the network's documented sample values
//! (a click id holding `+`, `/` and `=`, a payout in the network's shape),
//! fired at a running gateway; then the verdict and the event as read back
//! from Kafka.
#![warn(missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};

use crate::source::presets::{default_sample, network_named, Role};
use crate::source::url::{encode, fields, source_urls, Field, UrlError};
use crate::source::Source;

/// One test conversion, ready to fire.
#[derive(Debug, Clone)]
pub struct Shot {
    /// The URL, macros filled in.
    pub url: String,
    /// The form body, for a network that posts its fields.
    pub body: Option<String>,
    /// The click id it carries, which keys its event in Kafka.
    pub token: String,
}

/// The test conversion for `source` as `network` (or the source's own
/// network; without one, the placeholders take generic samples) would send
/// it to the gateway at `target` (`http://host:port`).
pub fn shot(source: &Source, network: Option<&str>, target: &str) -> Result<Shot, UrlError> {
    let urls = source_urls(source, target, network)?;
    let net = network
        .or(source.url.network.as_deref())
        .and_then(network_named);
    let fields = fields(source, net).map_err(UrlError::Mismatch)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let token = format!("test-fire-{nanos:x}+a/b==");
    let value = |f: &Field| -> Option<String> {
        match (f.role, f.samples.first()) {
            (Role::Tracking, _) => Some(token.clone()),
            (_, Some((v, _))) => Some(v.clone()),
            (role, None) if f.is_placeholder() => default_sample(role).map(str::to_owned),
            (_, None) => None,
        }
    };
    let (path, query) = urls
        .postback
        .split_once('?')
        .unwrap_or((urls.postback.as_str(), ""));
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        match fields.iter().find(|f| encode(&f.param) == key) {
            Some(f) => {
                if let Some(v) = value(f) {
                    pairs.push(format!("{key}={}", encode(&v)));
                }
            }
            None => pairs.push(pair.to_owned()),
        }
    }
    let body: Vec<String> = fields
        .iter()
        .filter(|f| f.in_body)
        .filter_map(|f| value(f).map(|v| format!("{}={}", encode(&f.param), encode(&v))))
        .collect();
    let url = if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", pairs.join("&"))
    };
    Ok(Shot {
        url,
        body: (!body.is_empty()).then(|| body.join("&")),
        token,
    })
}

/// The reply to a fired shot.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body (the S2S reply's line), without trailing whitespace.
    pub body: String,
}

/// Sends `shot` over plain HTTP/1.1 (the gateway's own listener, or a
/// loopback proxy in front of it) and reads the reply.
pub fn fire(shot: &Shot, timeout: Duration) -> anyhow::Result<Reply> {
    let rest = shot
        .url
        .strip_prefix("http://")
        .context("test-fire speaks plain http:// to the gateway's listener")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream =
        TcpStream::connect(&addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = match &shot.body {
        Some(b) => format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: postback-gateway test-fire\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{b}",
            b.len()
        ),
        None => format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: postback-gateway test-fire\r\n\
             Connection: close\r\n\r\n"
        ),
    };
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut raw)
        .context("no reply")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP reply")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("a chunked reply; the gateway does not send one");
    }
    Ok(Reply {
        status,
        body: body.trim_end().to_owned(),
    })
}

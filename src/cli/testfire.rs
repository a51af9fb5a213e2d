//! `postback-gateway test-fire`: what a network's "send a test conversion"
//! button does, from the command line. The URL `postback-url` would print for
//! a source, its macros filled with the network's documented sample values
//! (a click id holding `+`, `/` and `=`, a payout in the network's shape),
//! fired at a running gateway; then the verdict and the event as read back
//! from Kafka.
#![warn(missing_docs)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};

use crate::postback::Role;
use crate::source::presets::{default_sample, network_named};
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
/// it to the gateway at `target` (`http://host:port`, or the `https://` URL
/// networks are given).
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

/// Sends `shot` to its URL, `http://` or `https://` (the address a network is
/// given, through the TLS front in front of the gateway), and reads the
/// reply. TLS is verified against `ca_file`'s certificates when one is given
/// (a private CA), else against the public roots (webpki-roots). A redirect
/// is not followed: a network fires at the URL it was given, so a 3xx is the
/// verdict (with where it points).
pub fn fire(shot: &Shot, timeout: Duration, ca_file: Option<&Path>) -> anyhow::Result<Reply> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca_file {
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certificates(path)?));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("postback-gateway test-fire")
        .tls_config(tls.build())
        .build()
        .into();
    let sent = match &shot.body {
        Some(b) => agent
            .post(&shot.url)
            .content_type("application/x-www-form-urlencoded")
            .send(b.as_bytes()),
        None => agent.get(&shot.url).call(),
    };
    let mut reply = sent.with_context(|| format!("cannot reach {}", origin(&shot.url)))?;
    let status = reply.status().as_u16();
    let location = reply
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    let body = reply
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .context("cannot read the reply")?;
    let body = match location {
        Some(to) if (300..400).contains(&status) => {
            format!("{} (redirects to {to})", body.trim_end())
        }
        _ => body.trim_end().to_owned(),
    };
    Ok(Reply { status, body })
}

/// The certificates in the PEM file at `path`.
fn certificates(path: &Path) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// `scheme://host:port` of `url`, for messages (the query holds the api key).
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..]
        .find(['/', '?'])
        .map_or(url, |end| &url[..after_scheme + end])
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn messages_name_the_origin_and_never_the_query() {
        assert_eq!(
            origin("https://pb.example.com/postback?api_key=secret"),
            "https://pb.example.com"
        );
        assert_eq!(origin("http://127.0.0.1:8080?k=v"), "http://127.0.0.1:8080");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}

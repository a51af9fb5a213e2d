//! Who may read the console: a bearer token, compared in constant time, and
//! a Host allow-list against DNS rebinding. `/metrics`, `/healthz` and
//! `/readyz` stay open: probes and Prometheus carry no token.

use std::net::IpAddr;

use hyper::header::{HeaderMap, AUTHORIZATION, HOST};
use subtle::ConstantTimeEq;

/// The console's credential and the host names it answers to.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// The bearer token; `None` keeps the console closed to everyone.
    pub token: Option<String>,
    /// Host names (besides IP addresses and `localhost`) a browser may use
    /// to reach the console: behind a proxy, its public name.
    pub hosts: Vec<String>,
}

/// Why a console request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// A Host that is a name outside the allow-list (a page of another
    /// site whose name was made to point here): 421.
    ForeignHost,
    /// No token, or a wrong one: 401.
    NoToken,
}

impl AdminAccess {
    /// Whether a request with `headers` may read the console.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        if let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) {
            if !self.host_allowed(host) {
                return Err(Denied::ForeignHost);
            }
        }
        let Some(token) = &self.token else {
            return Err(Denied::NoToken);
        };
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(Denied::NoToken)
        }
    }

    /// An IP address or `localhost` cannot be rebound by someone else's
    /// DNS; any other name must be one the operator listed.
    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host);
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok()
            || bare.eq_ignore_ascii_case("localhost")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(bare))
    }
}

/// `host` without its `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(host: &str, auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn the_token_opens_the_console_and_nothing_else_does() {
        let access = AdminAccess {
            token: Some("admin-token-0123456789".into()),
            hosts: vec!["console.example.com".into()],
        };
        let ok = Some("Bearer admin-token-0123456789");
        assert_eq!(access.check(&headers("127.0.0.1:9090", ok)), Ok(()));
        assert_eq!(access.check(&headers("[::1]:9090", ok)), Ok(()));
        assert_eq!(access.check(&headers("localhost:9090", ok)), Ok(()));
        assert_eq!(access.check(&headers("10.1.2.3", ok)), Ok(()));
        assert_eq!(access.check(&headers("Console.Example.com", ok)), Ok(()));
        assert_eq!(
            access.check(&headers("127.0.0.1:9090", None)),
            Err(Denied::NoToken)
        );
        for wrong in [
            "Bearer admin-token-012345678",
            "Bearer ",
            "admin-token-0123456789",
        ] {
            assert_eq!(
                access.check(&headers("127.0.0.1:9090", Some(wrong))),
                Err(Denied::NoToken),
                "{wrong}"
            );
        }
        assert_eq!(
            access.check(&headers("rebound.attacker.example:9090", ok)),
            Err(Denied::ForeignHost)
        );
        let closed = AdminAccess::default();
        assert_eq!(
            closed.check(&headers("127.0.0.1:9090", Some("Bearer "))),
            Err(Denied::NoToken)
        );
    }
}

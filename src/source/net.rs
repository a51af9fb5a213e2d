//! Client networks: CIDR blocks, the allow list of a source and the proxies
//! whose `X-Forwarded-For` is believed. A header from any other peer is
//! ignored, so a sender cannot claim an allowed address by writing one.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One CIDR block (`203.0.113.0/24`, `2001:db8::/32`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(net: u128, ip: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (ip >> shift)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not a network like 203.0.113.0/24 or 2001:db8::/32");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        let c = Cidr { addr, prefix };
        // Host bits set (`10.0.0.1/8`) usually means a typo in the prefix.
        if c.network() != addr {
            return Err(format!(
                "{s:?} has host bits set; did you mean {}?",
                c.masked()
            ));
        }
        Ok(c)
    }
}

impl Cidr {
    fn network(&self) -> IpAddr {
        self.masked().addr
    }

    fn masked(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A list of blocks; empty matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Networks(pub Vec<Cidr>);

impl Networks {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client address of a request: the peer, or, when the peer is a trusted
/// proxy, the nearest address in `X-Forwarded-For` that is not itself a
/// trusted proxy. An unparsable header entry stops the walk at the proxy.
pub(crate) fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &Networks) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Networks {
        Networks(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn parses_and_matches_blocks() {
        let n = nets(&["203.0.113.0/24", "10.1.2.3", "2001:db8::/32", "0.0.0.0/0"]);
        assert!(n.0[0].contains(ip("203.0.113.255")));
        assert!(!n.0[0].contains(ip("203.0.114.0")));
        assert!(n.0[1].contains(ip("10.1.2.3")));
        assert!(!n.0[1].contains(ip("10.1.2.4")));
        assert!(n.0[2].contains(ip("2001:db8:ffff::1")));
        assert!(!n.0[2].contains(ip("2001:db9::1")));
        assert!(n.0[3].contains(ip("192.0.2.1")));
        assert!(!n.0[3].contains(ip("::1")), "families do not mix");
        assert!(n.0[0].contains(ip("::ffff:203.0.113.9")), "v4-mapped v6");
    }

    #[test]
    fn refuses_bad_blocks() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0/8",
            "10.0.0.1/8",
            "::/129",
            "host.example",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let xff = Some("198.51.100.1, 203.0.113.7, 10.0.0.2");
        assert_eq!(client_ip(ip("10.0.0.1"), xff, &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("192.0.2.9"), xff, &trusted), ip("192.0.2.9"));
        assert_eq!(client_ip(ip("10.0.0.1"), None, &trusted), ip("10.0.0.1"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), Some("junk, 10.0.0.3"), &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff, &Networks::default()),
            ip("10.0.0.1")
        );
    }
}

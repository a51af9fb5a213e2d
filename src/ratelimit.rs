//! Token-bucket rate limits: one bucket per source, and one per client address
//! (bounded in number). Buckets refill continuously. A refusal carries how long
//! until the bucket's next token, but the reply does not pass it on: a 429's
//! `Retry-After` is a fixed second (docs/http-api.md), so a sender limited to
//! less than one postback a second may be refused again when it comes back.
#![warn(missing_docs)]

use crate::sync::LockAnyway;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// A rate: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Tokens the bucket holds at most (the burst allowed at once).
    pub burst: f64,
}

impl Rate {
    /// The slowest rate a limit may have: one request in about three hours.
    pub(crate) const MIN_PER_SECOND: f64 = 0.0001;
    /// Beyond any one process's reach: a larger figure is a typo.
    pub const MAX: f64 = 1e9;

    /// A rate from config, checked: both figures finite, `per_second` within
    /// MIN_PER_SECOND..=MAX, `burst` within 1..=MAX (`None`: `per_second`, at least 1).
    pub fn checked(per_second: f64, burst: Option<f64>) -> Result<Rate, String> {
        let burst = burst.unwrap_or(per_second.max(1.0));
        if !(Rate::MIN_PER_SECOND..=Rate::MAX).contains(&per_second) {
            return Err(format!(
                "per_second must be a number from {} to {}",
                Rate::MIN_PER_SECOND,
                Rate::MAX
            ));
        }
        if !(1.0..=Rate::MAX).contains(&burst) {
            return Err(format!("burst must be a number from 1 to {}", Rate::MAX));
        }
        Ok(Rate { per_second, burst })
    }
}

/// One token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(
                Duration::try_from_secs_f64((1.0 - self.tokens) / rate.per_second)
                    .unwrap_or(Duration::MAX),
            )
        }
    }
}

/// A single bucket, for one source.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    bucket: Mutex<Bucket>,
}

impl Limiter {
    /// A limiter with a full bucket.
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            bucket: Mutex::new(Bucket::full(rate, Instant::now())),
        }
    }

    /// Takes a token, or says how long until the next one.
    pub fn check(&self) -> Result<(), Duration> {
        let mut b = self.bucket.lock_anyway();
        b.take(self.rate, Instant::now())
    }
}

/// The IPv6 prefix a client is counted by unless `[limits]
/// ipv6_client_prefix` says otherwise: one subscriber or host usually holds
/// a whole /64, and walks through it at will.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The address a client is counted under: an IPv4 address as it is, an
/// IPv6 address by its first `ipv6_prefix` bits; an IPv4-mapped address as
/// IPv4.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let host_bits = 128 - u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// One bucket per client (see [`client_key`]), bounded in number.
pub struct PerClient {
    rate: Rate,
    buckets: DashMap<IpAddr, Bucket>,
    /// Past this many tracked clients new ones share one bucket, so a flood
    /// from many addresses cannot grow memory without bound, nor pass
    /// untracked.
    max_clients: usize,
    shared: Mutex<Bucket>,
    ipv6_prefix: u8,
}

impl PerClient {
    /// A bucket of `rate` per client (IPv6 by its first `ipv6_prefix` bits),
    /// for up to `max_clients` clients.
    pub fn new(rate: Rate, max_clients: usize, ipv6_prefix: u8) -> PerClient {
        PerClient {
            rate,
            buckets: DashMap::new(),
            max_clients,
            shared: Mutex::new(Bucket::full(rate, Instant::now())),
            ipv6_prefix,
        }
    }

    /// Takes a token of `ip`'s bucket, or says how long until its next one.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let ip = client_key(ip, self.ipv6_prefix);
        if let Some(mut b) = self.buckets.get_mut(&ip) {
            return b.take(self.rate, now);
        }
        if self.buckets.len() >= self.max_clients {
            return self.shared.lock_anyway().take(self.rate, now);
        }
        self.buckets
            .entry(ip)
            .or_insert_with(|| Bucket::full(self.rate, now))
            .take(self.rate, now)
    }

    /// Forgets addresses whose bucket has refilled: they cost nothing to re-create.
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        let refill = Duration::from_secs_f64(self.rate.burst / self.rate.per_second);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < refill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate {
            per_second: 10.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        for _ in 0..3 {
            assert!(b.take(rate, t0).is_ok());
        }
        let wait = b.take(rate, t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(b.take(rate, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(rate, t0 + Duration::from_millis(100)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(rate, later).is_ok());
        }
        assert!(b.take(rate, later).is_err());
    }

    #[test]
    fn clients_are_limited_separately_and_the_map_is_bounded() {
        let pc = PerClient::new(
            Rate {
                per_second: 1.0,
                burst: 1.0,
            },
            2,
            DEFAULT_IPV6_PREFIX,
        );
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        assert!(pc.check(a).is_ok());
        assert!(pc.check(a).is_err());
        assert!(pc.check(b).is_ok());
        // Past the bound, a new address shares one bucket with the others
        // past it: not tracked, but limited.
        assert!(pc.check(c).is_ok());
        assert!(pc.check(c).is_err());
        assert_eq!(pc.buckets.len(), 2);
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_past_the_bound_clients_share_a_bucket() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let key = |t: &str| client_key(ip(t), DEFAULT_IPV6_PREFIX);
        assert_eq!(key("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2::"));
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            ip("2001:db8:1:2::")
        );
        assert_ne!(key("2001:db8:1:3::1"), ip("2001:db8:1:2::"));
        assert_eq!(key("::ffff:192.0.2.7"), ip("192.0.2.7"));
        assert_eq!(key("192.0.2.7"), ip("192.0.2.7"));
        // Another prefix, where a provider hands out /56s; 128 is per address.
        assert_eq!(
            client_key(ip("2001:db8:1:2ff::1"), 56),
            ip("2001:db8:1:200::")
        );
        assert_eq!(client_key(ip("2001:db8::7"), 128), ip("2001:db8::7"));

        let rate = Rate {
            per_second: 0.001,
            burst: 2.0,
        };
        // 200 addresses of one /64 are one client.
        let pc = PerClient::new(rate, 1000, DEFAULT_IPV6_PREFIX);
        let allowed = (0..200u16)
            .filter(|i| pc.check(ip(&format!("2001:db8:0:1::{i:x}"))).is_ok())
            .count();
        assert_eq!(allowed, 2);
        // Past the bound, new clients share one bucket instead of passing.
        let pc = PerClient::new(rate, 3, DEFAULT_IPV6_PREFIX);
        let allowed = (1..=50u8)
            .filter(|i| pc.check(ip(&format!("198.51.100.{i}"))).is_ok())
            .count();
        assert_eq!(
            allowed,
            3 + 2,
            "one each for three tracked clients, the shared burst for the rest"
        );
    }
}

//! Sources: who may send postbacks and how each one names its parameters.
//! A source owns its credentials, its client networks and its [`ParseRules`];
//! with no configured sources, one `default` source takes the reference format
//! of docs/http-api.md. The set of sources is swapped whole on a reload.
#![warn(missing_docs)]

pub mod claims;
pub(crate) mod config;
pub(crate) mod net;
pub mod presets;
pub mod url;

/// What every key (api or pixel, of any source) must be: it goes into URLs as
/// it is.
pub const KEY_RULE: &str = "16 to 256 characters of A-Z, a-z, 0-9, '-', '.', '_', '~'";

use crate::sync::RwLockAnyway;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

use crate::postback::ParseRules;
use crate::rejection::Rejection;
use net::Networks;
use url::UrlTemplate;

/// One sender.
#[derive(Debug)]
pub struct Source {
    /// The id of the configuration ([`Sources::id`]) that holds it, set
    /// when one takes it in; 0 (no configuration's) before.
    pub(crate) member_of: u64,
    /// The name of its `[sources.NAME]` table: in paths, events and metric labels.
    pub name: Arc<str>,
    /// Accepted api keys (several, for rotation); empty means no key is asked for.
    keys: Vec<Vec<u8>>,
    /// Keys for pixels only: a pixel URL sits in a public page, so its key
    /// is public and must never open the S2S endpoint.
    pixel_keys: Vec<Vec<u8>>,
    /// A keyless source takes pixels only, unless this says otherwise.
    pub(crate) s2s_without_key: bool,
    /// Dedup keys this source may hold in a pool of its own (fixed at start).
    pub(crate) dedup_max_keys: Option<usize>,
    /// How its postbacks are parsed.
    pub rules: ParseRules,
    /// Whether `conversion_time` is the click time the postback carries.
    pub(crate) conversion_at_click: bool,
    /// Which fields besides the token make a conversion distinct.
    pub(crate) dedup_fields: DedupFields,
    /// Platform type (the preset unless configured): two sources of one
    /// platform must not claim the same campaign.
    pub platform: Arc<str>,
    /// The key may arrive as the first path segment (`/{key}/postback`).
    pub(crate) key_in_path: bool,
    /// Whether `/pixel` requests are taken for this source.
    pub(crate) pixels: bool,
    /// Host names (custom tracking domains) that select this source.
    pub(crate) hosts: Vec<String>,
    /// Client networks allowed to send; empty allows every address.
    pub(crate) allow: Networks,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: Networks,
    /// How the postback URL handed to this sender is written.
    pub url: UrlTemplate,
    /// S2S postbacks per second this source may send; `None` is unlimited.
    pub(crate) rate: Option<crate::ratelimit::Limiter>,
    /// Pixels per second, in a bucket of their own (pixel keys are public);
    /// `None` is unlimited.
    pub(crate) pixel_rate: Option<crate::ratelimit::Limiter>,
    /// This source's counters in the metrics of the gateway that serves it,
    /// registered on first use, so a request allocates no label.
    counters: std::sync::OnceLock<(crate::metrics::Metrics, SourceCounters)>,
}

#[derive(Clone)]
struct SourceCounters {
    accepted: metrics::Counter,
    duplicates: metrics::Counter,
    /// Amounts kept as sent because they could not be read.
    unread_amounts: metrics::Counter,
    /// Click times kept as sent (or dropped, a placeholder) instead of read.
    unread_click_times: metrics::Counter,
    /// Postbacks answered as a success that filed nothing.
    ignored: metrics::Counter,
}

impl std::fmt::Debug for SourceCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceCounters")
    }
}

/// The fields of a conversion, besides its source and token, whose values
/// tell two conversions apart (`dedup_fields`). The reference key is txid,
/// goal and status (docs/http-api.md, "Parameters and parsing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DedupFields {
    pub(crate) txid: bool,
    pub(crate) goal: bool,
    pub(crate) status: bool,
    /// A second sale on the same click with another amount is a new conversion.
    pub(crate) amount: bool,
}

impl Default for DedupFields {
    fn default() -> Self {
        DedupFields {
            txid: true,
            goal: true,
            status: true,
            amount: false,
        }
    }
}

impl DedupFields {
    /// The names `dedup_fields` takes.
    pub(crate) const NAMES: [&'static str; 4] = ["txid", "goal", "status", "amount"];

    /// The fields named in `names`; `Err` with the first unknown name.
    pub(crate) fn named(names: &[String]) -> Result<DedupFields, String> {
        let mut f = DedupFields {
            txid: false,
            goal: false,
            status: false,
            amount: false,
        };
        for n in names {
            match n.as_str() {
                "txid" => f.txid = true,
                "goal" => f.goal = true,
                "status" => f.status = true,
                "amount" => f.amount = true,
                other => return Err(other.to_owned()),
            }
        }
        Ok(f)
    }
}

impl Source {
    pub(crate) fn new(name: &str, keys: Vec<String>, rules: ParseRules) -> Source {
        Source {
            member_of: 0,
            name: Arc::from(name),
            pixels: keys.is_empty(),
            keys: keys.into_iter().map(String::into_bytes).collect(),
            pixel_keys: Vec::new(),
            s2s_without_key: false,
            dedup_max_keys: None,
            rules,
            conversion_at_click: false,
            dedup_fields: DedupFields::default(),
            platform: Arc::from("reference"),
            key_in_path: false,
            hosts: Vec::new(),
            allow: Networks::default(),
            trusted_proxies: Networks::default(),
            url: UrlTemplate::default(),
            rate: None,
            pixel_rate: None,
            counters: std::sync::OnceLock::new(),
        }
    }

    /// This source's counters in `metrics`. Registered once, with the first
    /// gateway that counts for it; a second gateway of the process that
    /// serves the same `Sources` value looks its counters up each time.
    fn counters(&self, metrics: &crate::metrics::Metrics) -> Cow<'_, SourceCounters> {
        let (owner, counters) = self
            .counters
            .get_or_init(|| (metrics.clone(), self.register(metrics)));
        if owner.same(metrics) {
            Cow::Borrowed(counters)
        } else {
            Cow::Owned(self.register(metrics))
        }
    }

    fn register(&self, metrics: &crate::metrics::Metrics) -> SourceCounters {
        use crate::metrics as m;
        let source = ("source", &*self.name);
        SourceCounters {
            accepted: metrics.counter_with(m::ACCEPTED, &[source]),
            duplicates: metrics.counter_with(m::DUPLICATES, &[source]),
            unread_amounts: metrics.counter_with(m::UNREAD, &[source, ("role", "amount")]),
            unread_click_times: metrics.counter_with(m::UNREAD, &[source, ("role", "click_time")]),
            ignored: metrics.counter_with(m::IGNORED, &[source]),
        }
    }

    /// Counts a postback answered as a success that filed nothing.
    pub(crate) fn count_ignored(&self, metrics: &crate::metrics::Metrics) {
        self.counters(metrics).ignored.increment(1);
    }

    /// Counts the values of a parsed conversion kept as sent instead of read.
    pub(crate) fn count_unread(
        &self,
        unread: crate::postback::parse::Unread,
        metrics: &crate::metrics::Metrics,
    ) {
        if unread.amount {
            self.counters(metrics).unread_amounts.increment(1);
        }
        if unread.click_time {
            self.counters(metrics).unread_click_times.increment(1);
        }
    }

    /// Counts an event made durable.
    pub(crate) fn count_accepted(&self, metrics: &crate::metrics::Metrics) {
        self.counters(metrics).accepted.increment(1);
    }

    /// Counts a repeat answered `DUPLICATE`.
    pub(crate) fn count_duplicate(&self, metrics: &crate::metrics::Metrics) {
        self.counters(metrics).duplicates.increment(1);
    }

    /// Checks an S2S postback's `presented` key against the api keys in
    /// constant time per key, so the reply time does not tell how much of a
    /// key was right. A source without keys takes no S2S postbacks (anyone
    /// could send them) unless `s2s_without_key` says so.
    pub(crate) fn authenticate(&self, presented: Option<&str>) -> Result<(), Rejection> {
        if self.keys.is_empty() {
            return if self.s2s_without_key {
                Ok(())
            } else {
                Err(Rejection::PixelOnly)
            };
        }
        check_key(&self.keys, presented)
    }

    /// Checks a pixel's key: none for a keyless source; for a keyed one, one
    /// of its `pixel_keys`, never an api key.
    pub(crate) fn authenticate_pixel(&self, presented: Option<&str>) -> Result<(), Rejection> {
        if self.keys.is_empty() && self.pixel_keys.is_empty() {
            return Ok(());
        }
        check_key(&self.pixel_keys, presented)
    }

    /// Gives the source its pixel keys; a keyed source takes pixels with them.
    pub(crate) fn set_pixel_keys(&mut self, keys: Vec<String>) {
        self.pixel_keys = keys.into_iter().map(String::into_bytes).collect();
    }

    /// The key handed out in pixel URLs: the first pixel key.
    pub(crate) fn first_pixel_key(&self) -> Option<&str> {
        self.pixel_keys
            .first()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// Whether the source asks S2S postbacks for a key.
    pub(crate) fn is_keyed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// How many api keys the source has (the console shows the count, never a key).
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many pixel keys the source has.
    pub(crate) fn pixel_key_count(&self) -> usize {
        self.pixel_keys.len()
    }

    /// The key handed out in postback URLs: the first one listed.
    pub(crate) fn first_key(&self) -> Option<&str> {
        self.keys.first().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The client address (see [`net::client_ip`]), or `ip_not_allowed`.
    pub(crate) fn admit(
        &self,
        peer: IpAddr,
        forwarded_for: Option<&str>,
    ) -> Result<IpAddr, Rejection> {
        let client = net::client_ip(peer, forwarded_for, &self.trusted_proxies);
        if self.allow.is_empty() || self.allow.contains(client) {
            Ok(client)
        } else {
            Err(Rejection::IpNotAllowed)
        }
    }
}

/// `presented` against `keys`, in constant time per key.
fn check_key(keys: &[Vec<u8>], presented: Option<&str>) -> Result<(), Rejection> {
    let presented = presented.ok_or(Rejection::MissingApiKey)?.as_bytes();
    let mut ok = subtle::Choice::from(0);
    for k in keys {
        ok |= k.as_slice().ct_eq(presented);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(Rejection::BadApiKey)
    }
}

/// Every configured source, by name, host and path key.
#[derive(Debug, Default)]
pub struct Sources {
    by_name: HashMap<String, Arc<Source>>,
    /// The source of plain `/postback` and `/pixel` requests.
    default: Option<Arc<Source>>,
    /// Lowercase host names.
    by_host: HashMap<String, Arc<Source>>,
    /// Sources that take their key in the path, tried in turn.
    path_keyed: Vec<Arc<Source>>,
    /// Every api and pixel key of every source, for redaction.
    keys: KeySet,
    /// Tells this configuration from every other one of the process.
    id: SourcesId,
}

/// A number no other [`Sources`] value of the process has: what the
/// console's cache of redaction verdicts ([`crate::console::redact`]) keys
/// its entries by, so that a reloaded configuration never meets the
/// verdicts of the one before.
#[derive(Debug)]
struct SourcesId(u64);

impl Default for SourcesId {
    fn default() -> SourcesId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        SourcesId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Every api and pixel key of every source. The console asks it about every
/// parameter name and value of each request it keeps, so most answers come
/// from the length alone: keys come in a few lengths, and the values of a
/// postback rarely have one of them.
#[derive(Debug, Default)]
struct KeySet {
    /// Bit `n` is set when a key of `n` bytes exists (`n` below 256;
    /// longer values are always looked up).
    lengths: [u64; 4],
    /// The shortest key's length (0 before the first).
    shortest: usize,
    keys: std::collections::HashSet<Box<[u8]>>,
}

impl KeySet {
    fn insert(&mut self, key: &[u8]) {
        if let Some(word) = self.lengths.get_mut(key.len() / 64) {
            *word |= 1 << (key.len() % 64);
        }
        if self.keys.is_empty() || key.len() < self.shortest {
            self.shortest = key.len();
        }
        self.keys.insert(key.into());
    }

    fn contains(&self, value: &[u8]) -> bool {
        let n = value.len();
        match self.lengths.get(n / 64) {
            Some(word) if word & (1 << (n % 64)) == 0 => false,
            _ => self.keys.contains(value),
        }
    }
}

impl Sources {
    /// The single `default` source with the reference format and one key.
    /// The `default` source of a gateway without a config file: S2S with
    /// `api_key`, and pixels only with a `pixel_key` of their own.
    pub fn single_default(api_key: String, pixel_key: Option<String>) -> Sources {
        let mut s = Source::new("default", vec![api_key], ParseRules::reference());
        if let Some(p) = pixel_key {
            s.set_pixel_keys(vec![p]);
            s.pixels = true;
        }
        Sources::from_list(vec![s])
    }

    /// Indexes `list`; the config has checked that names and hosts are unique.
    /// A source named `default` serves requests that name no source.
    pub(crate) fn from_list(list: Vec<Source>) -> Sources {
        let mut s = Sources::default();
        for mut src in list {
            src.member_of = s.id.0;
            let src = Arc::new(src);
            for h in &src.hosts {
                s.by_host.insert(h.to_ascii_lowercase(), src.clone());
            }
            if src.key_in_path {
                s.path_keyed.push(src.clone());
            }
            if &*src.name == "default" {
                s.default = Some(src.clone());
            }
            for k in src.keys.iter().chain(&src.pixel_keys) {
                s.keys.insert(k);
            }
            s.by_name.insert(src.name.to_string(), src);
        }
        s
    }

    /// The source named in a path, or the default one.
    pub(crate) fn resolve(&self, name: Option<&str>) -> Result<&Arc<Source>, Rejection> {
        match name {
            Some(n) => self.by_name.get(n).ok_or(Rejection::UnknownSource),
            None => self.default.as_ref().ok_or(Rejection::UnknownSource),
        }
    }

    /// The source of a request: named in its path, else the one its `Host`
    /// selects, else the default.
    pub(crate) fn select(
        &self,
        name: Option<&str>,
        host: Option<&str>,
    ) -> Result<&Arc<Source>, Rejection> {
        if name.is_none() && !self.by_host.is_empty() {
            if let Some(h) = host.map(host_name) {
                if let Some(s) = self.by_host.get(h.as_ref()) {
                    return Ok(s);
                }
            }
        }
        self.resolve(name)
    }

    /// The source whose key is `key`, for `/{key}/postback`. Every candidate is
    /// checked in constant time; no match is `bad_api_key`.
    /// Whether any source that takes its key in the path admits this
    /// client's network: the network is checked before the key, so a client
    /// from elsewhere learns nothing of which keys exist.
    pub(crate) fn path_keys_admit(&self, peer: IpAddr, forwarded_for: Option<&str>) -> bool {
        self.path_keyed.is_empty()
            || self
                .path_keyed
                .iter()
                .any(|s| s.admit(peer, forwarded_for).is_ok())
    }

    pub(crate) fn by_path_key(&self, key: &str) -> Result<&Arc<Source>, Rejection> {
        self.path_keyed
            .iter()
            .find(|s| s.authenticate(Some(key)).is_ok())
            .ok_or(Rejection::BadApiKey)
    }

    /// Whether `value` is one of the api or pixel keys of any source (for
    /// redacting a key wherever a sender put it).
    pub(crate) fn is_key(&self, value: &[u8]) -> bool {
        !value.is_empty() && self.keys.contains(value)
    }

    /// Whether text of `encoded_len` bytes could percent-decode to a key
    /// (decoding never lengthens it): the shorter ones need no decoding
    /// to be told apart from every key.
    pub(crate) fn may_decode_to_key(&self, encoded_len: usize) -> bool {
        !self.keys.keys.is_empty() && encoded_len >= self.keys.shortest
    }

    /// A number no other configuration of this process has.
    pub(crate) fn id(&self) -> u64 {
        self.id.0
    }

    /// The source called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Source>> {
        self.by_name.get(name)
    }

    /// Every source.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Source>> {
        self.by_name.values()
    }

    /// Every source's name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

/// A `Host` header without its port, lowercase.
fn host_name(host: &str) -> Cow<'_, str> {
    let h = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

/// The running set of sources. Requests take a snapshot once; a reload swaps
/// the whole set, so a request never sees half of an old and half of a new one.
#[derive(Debug)]
pub struct SharedSources(RwLock<Arc<Sources>>);

impl SharedSources {
    /// Starts with `sources`.
    pub fn new(sources: Arc<Sources>) -> SharedSources {
        SharedSources(RwLock::new(sources))
    }

    /// The current set; the lock is held only for the clone of an `Arc`.
    pub(crate) fn load(&self) -> Arc<Sources> {
        self.0.read_anyway().clone()
    }

    pub(crate) fn store(&self, sources: Arc<Sources>) {
        *self.0.write_anyway() = sources;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_every_source_is_known_whatever_its_length() {
        let long = "k".repeat(300);
        let mut a = Source::new(
            "a",
            vec!["key-a".into(), long.clone()],
            ParseRules::reference(),
        );
        a.set_pixel_keys(vec!["px".into()]);
        let b = Source::new(
            "b",
            vec!["a-64-byte-key".repeat(5)[..64].into()],
            ParseRules::reference(),
        );
        let all = Sources::from_list(vec![a, b]);
        for key in ["key-a", "px", &long, &"a-64-byte-key".repeat(5)[..64]] {
            assert!(all.is_key(key.as_bytes()), "{key}");
        }
        // Of a key's length, of another length, longer than the length table.
        for other in [
            "key-b",
            "p",
            "pxx",
            &"k".repeat(299),
            &"k".repeat(301),
            "",
            &"a".repeat(64),
        ] {
            assert!(!all.is_key(other.as_bytes()), "{other}");
        }
        // The shortest key is the pixel key "px": shorter text cannot
        // decode to any key; "%70x" (4 bytes) decodes to it.
        assert!(!all.may_decode_to_key(1) && all.may_decode_to_key(2) && all.may_decode_to_key(4));
        assert!(!Sources::from_list(vec![]).may_decode_to_key(100));
    }

    #[test]
    fn keys_are_checked() {
        let s = Source::new(
            "n",
            vec!["old".into(), "new".into()],
            ParseRules::reference(),
        );
        assert_eq!(s.authenticate(Some("new")), Ok(()));
        assert_eq!(s.authenticate(Some("old")), Ok(()));
        assert_eq!(s.authenticate(Some("ne")), Err(Rejection::BadApiKey));
        assert_eq!(s.authenticate(Some("newer")), Err(Rejection::BadApiKey));
        assert_eq!(s.authenticate(None), Err(Rejection::MissingApiKey));
        // A keyless source takes pixels without a key, and S2S only when told.
        let mut open = Source::new("n", vec![], ParseRules::reference());
        assert_eq!(open.authenticate_pixel(None), Ok(()));
        assert_eq!(open.authenticate(None), Err(Rejection::PixelOnly));
        open.s2s_without_key = true;
        assert_eq!(open.authenticate(None), Ok(()));
        // Pixel keys open pixels only; api keys never open pixels.
        let mut keyed = Source::new("k", vec!["api".into()], ParseRules::reference());
        assert!(!keyed.pixels, "a keyed source takes no pixels by default");
        keyed.set_pixel_keys(vec!["pix".into()]);
        assert_eq!(keyed.authenticate_pixel(Some("pix")), Ok(()));
        assert_eq!(
            keyed.authenticate_pixel(Some("api")),
            Err(Rejection::BadApiKey)
        );
        assert_eq!(keyed.authenticate(Some("pix")), Err(Rejection::BadApiKey));
    }

    #[test]
    fn resolves_by_path_name_or_default() {
        let s = Sources::single_default("k".into(), None);
        assert_eq!(&*s.resolve(None).unwrap().name, "default");
        assert_eq!(&*s.resolve(Some("default")).unwrap().name, "default");
        assert_eq!(
            s.resolve(Some("nope")).unwrap_err(),
            Rejection::UnknownSource
        );
    }

    #[test]
    fn selects_by_host_and_path_key() {
        let mut a = Source::new("a", vec!["key-of-a".into()], ParseRules::reference());
        a.hosts = vec!["track.a.example".into()];
        let mut b = Source::new("b", vec!["key-of-b".into()], ParseRules::reference());
        b.key_in_path = true;
        let s = Sources::from_list(vec![a, b]);
        let name = |r: Result<&Arc<Source>, Rejection>| r.map(|s| s.name.to_string());
        assert_eq!(
            name(s.select(None, Some("TRACK.a.example:8080"))),
            Ok("a".into())
        );
        assert_eq!(
            name(s.select(Some("b"), Some("track.a.example"))),
            Ok("b".into())
        );
        assert_eq!(
            name(s.select(None, Some("other"))),
            Err(Rejection::UnknownSource)
        );
        assert_eq!(name(s.by_path_key("key-of-b")), Ok("b".into()));
        assert_eq!(name(s.by_path_key("key-of-a")), Err(Rejection::BadApiKey));
        assert_eq!(host_name("[::1]:80"), "[::1]");
    }

    #[test]
    fn admits_allowed_networks_only() {
        let mut s = Source::new("n", vec![], ParseRules::reference());
        s.allow = Networks(vec!["203.0.113.0/24".parse().unwrap()]);
        s.trusted_proxies = Networks(vec!["10.0.0.1".parse().unwrap()]);
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert_eq!(s.admit(ip("203.0.113.5"), None), Ok(ip("203.0.113.5")));
        assert_eq!(
            s.admit(ip("198.51.100.1"), None),
            Err(Rejection::IpNotAllowed)
        );
        assert_eq!(
            s.admit(ip("198.51.100.1"), Some("203.0.113.5")),
            Err(Rejection::IpNotAllowed),
            "a header from an untrusted peer is ignored"
        );
        assert_eq!(
            s.admit(ip("10.0.0.1"), Some("203.0.113.5")),
            Ok(ip("203.0.113.5"))
        );
    }
}

//! The onboarding console: the last postbacks of each source, with what
//! arrived and the verdict, for the moment a network says "we fired it".
//!
//! The hot path pays one bounded copy per request: the path kind, the client,
//! at most `MAX_REQUEST_BYTES` of the query and body, redacted as they are
//! copied, and the verdict, into a ring of the source's (or of the unmatched
//! list). The copy goes into the buffer of an entry an earlier request pushed
//! out of a ring, so a full console allocates nothing per request. Refusals
//! are explained when the log is read, on the admin listener only.
#![warn(missing_docs)]

pub(crate) mod explain;
pub(crate) mod page;
pub(crate) mod redact;

use crate::sync::{LockAnyway, RwLockAnyway};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use time::OffsetDateTime;

use uuid::Uuid;

use crate::rejection::{Rejection, Text};
use crate::source::{Source, Sources};
use crate::spare::{self, Spare};

/// The part of a request's query and body that is kept; the rest is cut
/// (the entry says so).
pub(crate) const MAX_REQUEST_BYTES: usize = 1024;

/// The most an entry's buffer holds: the path, the query and the body at
/// their limits, and some room.
const KEPT_CAPACITY: usize = 256 + 2 * MAX_REQUEST_BYTES + 64;

thread_local! {
    /// Buffers of entries pushed out of a ring, for the next copies on the
    /// same thread.
    static SPARE: Spare = const { Spare::new(64, KEPT_CAPACITY) };
}

/// What a request came to, as the sender was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok(Uuid),
    /// The first event's id, where known.
    Duplicate(Option<Uuid>),
    /// The refusal, as the reply said it (`ERROR bad_amount`).
    Error(Rejection),
    /// Answered as a success, filed nothing (a status the postback said to ignore).
    Ignored,
}

impl Verdict {
    /// `ok`, `duplicate` or `error`: the filter the page offers.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Verdict::Ok(_) | Verdict::Ignored => "ok",
            Verdict::Duplicate(_) => "duplicate",
            Verdict::Error(_) => "error",
        }
    }

    /// As the reply's first line says it: `OK <id>`, `ERROR <reason>`.
    pub(crate) fn text(&self) -> String {
        match self {
            Verdict::Ok(id) => format!("OK {id}"),
            Verdict::Duplicate(Some(id)) => format!("DUPLICATE {id}"),
            Verdict::Duplicate(None) => "DUPLICATE".to_owned(),
            Verdict::Error(r) => match r.verdict().text {
                Text::Code(code) => format!("ERROR {code}"),
                Text::Line(line) => line.trim_end().to_owned(),
            },
            Verdict::Ignored => "IGNORED".to_owned(),
        }
    }
}

/// One request as the console keeps it: its path, query and body, redacted
/// and cut to whole parameters when kept, in one buffer.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) at: OffsetDateTime,
    /// `s2s` or `pixel`.
    pub(crate) endpoint: &'static str,
    pub(crate) client: IpAddr,
    /// The path (a key in it shows as `{key}`), then the query, then the body.
    text: Vec<u8>,
    path_len: u16,
    query_len: u16,
    /// Whether the path, query or body was longer than what is kept.
    pub(crate) cut: bool,
    pub(crate) verdict: Verdict,
}

impl Entry {
    /// Heap and inline bytes this entry holds, for the memory gauge.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Entry>() + self.text.capacity()
    }

    fn part(&self, from: usize, to: usize) -> String {
        String::from_utf8_lossy(&self.text[from..to]).into_owned()
    }

    /// The path: `/postback/acme`, `/{key}/postback`.
    pub(crate) fn path(&self) -> String {
        self.part(0, usize::from(self.path_len))
    }

    /// The query as sent (percent-encoded), secrets redacted, cut at
    /// [`MAX_REQUEST_BYTES`].
    pub(crate) fn query(&self) -> String {
        let from = usize::from(self.path_len);
        self.part(from, from + usize::from(self.query_len))
    }

    /// A form or JSON body, when there was one, secrets redacted, cut at
    /// [`MAX_REQUEST_BYTES`].
    pub(crate) fn body(&self) -> String {
        self.part(
            usize::from(self.path_len) + usize::from(self.query_len),
            self.text.len(),
        )
    }
}

/// What is kept of a request before its verdict is known.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    at: OffsetDateTime,
    endpoint: &'static str,
    client: IpAddr,
    text: Vec<u8>,
    path_len: u16,
    query_len: u16,
    cut: bool,
}

impl Kept {
    /// Keeps at most 256 bytes of the path and [`MAX_REQUEST_BYTES`] of
    /// each of `query` and `body`, redacted of `secrets`, in one buffer (an
    /// evicted entry's, when this thread has one).
    pub(crate) fn new(
        at: OffsetDateTime,
        endpoint: &'static str,
        path: &str,
        client: IpAddr,
        query: &[u8],
        body: &[u8],
        secrets: &redact::Secrets<'_>,
    ) -> Kept {
        let mut text = spare::take(&SPARE);
        text.reserve(
            path.len().min(256)
                + query.len().min(MAX_REQUEST_BYTES)
                + body.len().min(MAX_REQUEST_BYTES),
        );
        let mut cut = secrets.path(path, 256, &mut text);
        let path_len = text.len();
        cut |= secrets.form(query, MAX_REQUEST_BYTES, &mut text);
        let query_len = text.len() - path_len;
        if !body.is_empty() {
            cut |= if body.trim_ascii_start().starts_with(b"{")
                || body.trim_ascii_start().starts_with(b"[")
            {
                secrets.json(body, MAX_REQUEST_BYTES, &mut text)
            } else {
                secrets.form(body, MAX_REQUEST_BYTES, &mut text)
            };
        }
        // A part longer than its limit is written, then taken back: the
        // buffer may have grown past what is kept.
        if text.capacity() > KEPT_CAPACITY {
            text.shrink_to(KEPT_CAPACITY);
        }
        Kept {
            at,
            endpoint,
            client,
            text,
            path_len: path_len as u16,
            query_len: query_len as u16,
            cut,
        }
    }

    /// The entry, once the request's verdict is known.
    pub(crate) fn with(self, verdict: Verdict) -> Entry {
        Entry {
            at: self.at,
            endpoint: self.endpoint,
            client: self.client,
            text: self.text,
            path_len: self.path_len,
            query_len: self.query_len,
            cut: self.cut,
            verdict,
        }
    }
}

/// One source's ring and its counts since start.
#[derive(Default)]
struct Log {
    entries: VecDeque<Entry>,
    bytes: usize,
    ok: u64,
    duplicate: u64,
    error: u64,
    last_seen: Option<OffsetDateTime>,
}

impl Log {
    fn counts(&self) -> Counts {
        Counts {
            ok: self.ok,
            duplicate: self.duplicate,
            error: self.error,
            last_seen: self.last_seen.map(rfc3339),
        }
    }
}

/// Counts of one source since start, and when it last sent anything.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Counts {
    pub(crate) ok: u64,
    pub(crate) duplicate: u64,
    pub(crate) error: u64,
    /// RFC 3339.
    pub(crate) last_seen: Option<String>,
}

/// The recent postbacks of every source, and of requests that matched none.
pub struct Recent {
    per_source: usize,
    logs: RwLock<HashMap<Arc<str>, Arc<Mutex<Log>>, Fnv>>,
    unmatched: Mutex<Log>,
    bytes: AtomicUsize,
    /// Entries pushed out of a full ring, for the record.
    evicted: AtomicU64,
}

/// FNV-1a, a few instructions a byte: for the logs' map, whose keys are the
/// configured sources' names, never a sender's text, so no sender can aim
/// collisions at it (it is looked up for every request the console keeps);
/// and for the slot of a redaction verdict ([`redact`]), where a collision
/// costs only the verdict's work.
#[derive(Default, Clone, Copy)]
pub(crate) struct Fnv;

/// The hasher [`Fnv`] builds.
pub(crate) struct FnvHasher(u64);

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl Recent {
    /// Keeps the last `per_source` requests of each source (and of the
    /// unmatched list); 0 keeps nothing.
    pub fn new(per_source: usize) -> Recent {
        Recent {
            per_source,
            logs: RwLock::new(HashMap::default()),
            unmatched: Mutex::new(Log::default()),
            bytes: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Whether anything is kept (`recent_per_source` above 0).
    pub(crate) fn enabled(&self) -> bool {
        self.per_source > 0
    }

    /// Records one request of `source` (`None`: it matched no source).
    pub(crate) fn record(&self, source: Option<&Arc<str>>, entry: Entry) {
        if self.per_source == 0 {
            return;
        }
        match source {
            Some(name) => {
                let log = self.log_of(name);
                let mut log = log.lock_anyway();
                self.push(&mut log, entry);
            }
            None => {
                let mut log = self.unmatched.lock_anyway();
                self.push(&mut log, entry);
            }
        }
    }

    /// The log of `name`, when it has one.
    fn existing(&self, name: &str) -> Option<Arc<Mutex<Log>>> {
        self.logs.read_anyway().get(name).cloned()
    }

    fn log_of(&self, name: &Arc<str>) -> Arc<Mutex<Log>> {
        self.existing(name).unwrap_or_else(|| {
            let mut logs = self.logs.write_anyway();
            logs.entry(name.clone()).or_default().clone()
        })
    }

    fn push(&self, log: &mut Log, entry: Entry) {
        match entry.verdict {
            Verdict::Ok(_) | Verdict::Ignored => log.ok += 1,
            Verdict::Duplicate(_) => log.duplicate += 1,
            Verdict::Error(_) => log.error += 1,
        }
        log.last_seen = Some(entry.at);
        let size = entry.bytes();
        log.entries.push_back(entry);
        log.bytes += size;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        while log.entries.len() > self.per_source {
            if let Some(old) = log.entries.pop_front() {
                let size = old.bytes();
                log.bytes -= size;
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                spare::give_back(&SPARE, old.text);
            }
        }
    }

    /// The entries of `source` (`None`: the unmatched list), newest first.
    pub(crate) fn entries(&self, source: Option<&str>) -> Vec<Entry> {
        let take = |log: &Log| log.entries.iter().rev().cloned().collect();
        match source {
            Some(name) => self
                .existing(name)
                .map_or_else(Vec::new, |l| take(&l.lock_anyway())),
            None => take(&self.unmatched.lock_anyway()),
        }
    }

    /// The counts of `source` since start.
    pub(crate) fn counts(&self, source: &str) -> Counts {
        self.existing(source)
            .map_or_else(Counts::default, |l| l.lock_anyway().counts())
    }

    /// Bytes the console holds now (`postback_console_bytes`, set when
    /// `/metrics` is read rather than on every request).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The most it can hold: every configured source's ring and the
    /// unmatched list full of the largest entries.
    #[cfg(test)]
    fn bound(&self, sources: usize) -> usize {
        let largest = std::mem::size_of::<Entry>() + KEPT_CAPACITY;
        (sources + 1) * self.per_source * largest
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `GET /sources`: every source with its preset, network, keys, pixels and
/// counts, the unmatched list's counts, and the console's memory.
pub(crate) fn sources_json(recent: &Recent, sources: &Sources) -> serde_json::Value {
    let mut list: Vec<&Arc<Source>> = sources.all().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": &*s.name,
                "preset": &*s.platform,
                "network": s.url.network,
                "keys": s.key_count(),
                "pixel_keys": s.pixel_key_count(),
                "pixels": s.pixels,
                "counts": recent.counts(&s.name),
            })
        })
        .collect();
    let unmatched = recent.unmatched.lock_anyway().counts();
    serde_json::json!({
        "sources": rows,
        "unmatched": unmatched,
        "recent_per_source": recent.per_source,
        "memory_bytes": recent.bytes(),
    })
}

/// `GET /sources/{name}/recent` (`name` `None`: `GET /unmatched/recent`):
/// the entries newest first, secrets redacted, refusals explained; `None`
/// for a source that does not exist.
pub(crate) fn recent_json(
    recent: &Recent,
    sources: &Sources,
    name: Option<&str>,
) -> Option<serde_json::Value> {
    let source = match name {
        Some(n) => Some(sources.get(n)?.as_ref()),
        None => None,
    };
    let entries: Vec<serde_json::Value> = recent
        .entries(name)
        .iter()
        .map(|e| {
            let (query, body) = (e.query(), e.body());
            let explanation = match e.verdict {
                Verdict::Error(refusal) => Some(explain::explain(refusal, &query, &body, source)),
                _ => None,
            };
            serde_json::json!({
                "at": rfc3339(e.at),
                "endpoint": e.endpoint,
                "path": e.path(),
                "client": e.client.to_string(),
                "request": query,
                "body": body,
                "cut": e.cut,
                "kind": e.verdict.kind(),
                "verdict": e.verdict.text(),
                "explanation": explanation,
            })
        })
        .collect();
    Some(serde_json::json!({ "source": name, "entries": entries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize, verdict: Verdict) -> Entry {
        Kept::new(
            OffsetDateTime::UNIX_EPOCH,
            "s2s",
            "/postback/a",
            "127.0.0.1".parse().unwrap(),
            format!("tracking=t{i}&amount=1.00").as_bytes(),
            b"",
            &no_secrets(),
        )
        .with(verdict)
    }

    #[test]
    fn a_ring_keeps_the_last_n_and_counts_everything() {
        let r = Recent::new(3);
        let a: Arc<str> = Arc::from("a");
        for i in 0..10 {
            r.record(Some(&a), entry(i, Verdict::Ok(Uuid::from_u128(i as u128))));
        }
        r.record(
            Some(&a),
            entry(
                10,
                Verdict::Error(Rejection::Invalid(crate::postback::Reason::BadAmount)),
            ),
        );
        let got = r.entries(Some("a"));
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].verdict,
            Verdict::Error(Rejection::Invalid(crate::postback::Reason::BadAmount)),
            "newest first"
        );
        assert_eq!(got[2].query(), "tracking=t8&amount=1.00");
        assert_eq!(got[2].path(), "/postback/a");
        assert_eq!(got[2].body(), "");
        let c = r.counts("a");
        assert_eq!((c.ok, c.duplicate, c.error), (10, 0, 1));
        assert!(r.bytes() <= r.bound(1), "{} > {}", r.bytes(), r.bound(1));
        assert!(r.entries(None).is_empty());
        assert!(r.entries(Some("b")).is_empty());
    }

    #[test]
    fn a_full_ring_hands_its_evicted_buffers_to_the_next_copies() {
        let r = Recent::new(2);
        let a: Arc<str> = Arc::from("a");
        while spare::take(&SPARE).capacity() > 0 {}
        for i in 0..3 {
            r.record(Some(&a), entry(i, Verdict::Ok(Uuid::from_u128(i as u128))));
        }
        let buf = spare::take(&SPARE);
        assert!(
            buf.capacity() > 0 && buf.is_empty(),
            "the evicted entry's buffer"
        );
        spare::give_back(&SPARE, buf);
        let e = entry(
            3,
            Verdict::Error(Rejection::Invalid(crate::postback::Reason::BadAmount)),
        );
        assert_eq!(e.query(), "tracking=t3&amount=1.00");
        assert_eq!(spare::take(&SPARE).capacity(), 0, "the copy took it");
        r.record(Some(&a), e);
        let got = r.entries(Some("a"));
        assert_eq!(got[0].query(), "tracking=t3&amount=1.00");
        assert_eq!(got[1].query(), "tracking=t2&amount=1.00");
    }

    fn no_secrets() -> redact::Secrets<'static> {
        static NONE: std::sync::LazyLock<Sources> = std::sync::LazyLock::new(Sources::default);
        redact::Secrets {
            source: None,
            sources: &NONE,
        }
    }

    #[test]
    fn cutting_keeps_whole_parameters() {
        let q = format!("a=1&b={}é", "b".repeat(MAX_REQUEST_BYTES - 4));
        let e = Kept::new(
            OffsetDateTime::UNIX_EPOCH,
            "s2s",
            "/p",
            "127.0.0.1".parse().unwrap(),
            q.as_bytes(),
            b"x=1",
            &no_secrets(),
        )
        .with(Verdict::Error(Rejection::Invalid(
            crate::postback::Reason::BadAmount,
        )));
        assert!(e.cut);
        assert_eq!(e.query(), "a=1");
        assert_eq!(e.body(), "x=1");
        assert!(e.bytes() <= std::mem::size_of::<Entry>() + KEPT_CAPACITY);
    }
}

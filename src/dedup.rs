//! The dedup window: a sharded map from a 128-bit keyed hash of
//! (source, token, txid, goal, status) to the first event's id.
//!
//! A key is *reserved* while its event is in flight and *committed* only once
//! the event is durable; a reservation that is dropped without a commit is
//! released, so the sender's retry is not mistaken for a duplicate. A request
//! that finds a key in flight waits for that outcome instead of guessing.
//! Committed keys leave in commit order: when their window ends, or, oldest
//! first, when the map holds more than its bound.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use siphasher::sip128::{Hasher128, SipHasher13};
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics as m;

/// The keys are already uniform hashes: hashing them again is wasted work.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64 ^ (n >> 64) as u64;
    }
}

type Map = DashMap<u128, Slot, BuildHasherDefault<PassThrough>>;

/// What the map holds for one key.
enum Slot {
    /// Durable; `at` is the commit time in unix seconds.
    Committed { event_id: u128, at: u32 },
    /// An event for this key is being made durable right now.
    InFlight(Arc<watch::Sender<Flight>>),
}

/// The outcome of an in-flight event, as seen by requests waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    Pending,
    Committed(u128),
    Released,
}

/// Seconds since the unix epoch; injectable so tests use a fixed clock.
pub type Clock = Arc<dyn Fn() -> u32 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0)
    })
}

/// The fields of a conversion that make it one conversion.
pub struct KeyParts<'a> {
    pub source: &'a str,
    pub token: &'a str,
    pub txid: Option<&'a str>,
    pub goal: Option<&'a str>,
    pub status: &'a str,
}

pub struct Dedup {
    map: Map,
    /// Committed keys in commit order, for expiry and the size bound. May hold
    /// stale entries (a key committed again later); those are skipped.
    order: Mutex<VecDeque<(u128, u32)>>,
    window_secs: u32,
    max_keys: usize,
    hash_key: [u8; 16],
    clock: Clock,
}

/// What [`Dedup::reserve`] found.
pub enum Claim {
    /// This request owns the key: make the event durable, then commit.
    Reserved(Reservation),
    /// Already committed; the first event's id.
    Duplicate(Uuid),
    /// Another request held the key in flight for longer than the wait.
    Busy,
}

impl Dedup {
    pub fn new(window: Duration, max_keys: usize, hash_key: [u8; 16], clock: Clock) -> Arc<Dedup> {
        Arc::new(Dedup {
            map: Map::default(),
            order: Mutex::new(VecDeque::new()),
            window_secs: window.as_secs().min(u64::from(u32::MAX)) as u32,
            max_keys,
            hash_key,
            clock,
        })
    }

    /// The 128-bit keyed hash of a conversion's identity. Fields are
    /// length-prefixed so that no two different tuples hash the same input.
    pub fn key(&self, parts: &KeyParts<'_>) -> u128 {
        let mut h = SipHasher13::new_with_key(&self.hash_key);
        let mut field = |tag: u8, v: Option<&str>| {
            h.write_u8(tag);
            match v {
                None => h.write_u64(u64::MAX),
                Some(s) => {
                    h.write_u64(s.len() as u64);
                    h.write(s.as_bytes());
                }
            }
        };
        field(1, Some(parts.source));
        field(2, Some(parts.token));
        field(3, parts.txid);
        field(4, parts.goal);
        field(5, Some(parts.status));
        h.finish128().as_u128()
    }

    /// Claims `key`. When another request has it in flight, waits up to
    /// `wait` for that outcome: committed means duplicate, released means
    /// this request may try to make its own event durable.
    pub async fn reserve(self: &Arc<Self>, key: u128, wait: Duration) -> Claim {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut rx = match self.try_reserve(key) {
                Ok(claim) => return claim,
                Err(rx) => rx,
            };
            let outcome =
                tokio::time::timeout_at(deadline, rx.wait_for(|f| *f != Flight::Pending)).await;
            match outcome {
                Ok(Ok(f)) if matches!(*f, Flight::Committed(_)) => {
                    if let Flight::Committed(id) = *f {
                        return Claim::Duplicate(Uuid::from_u128(id));
                    }
                }
                // Released (or the holder vanished): try again.
                Ok(_) => continue,
                Err(_) => return Claim::Busy,
            }
        }
    }

    /// Claims `key` without waiting; `Err` carries the receiver of an in-flight outcome.
    fn try_reserve(self: &Arc<Self>, key: u128) -> Result<Claim, watch::Receiver<Flight>> {
        let now = (self.clock)();
        match self.map.entry(key) {
            Entry::Occupied(mut e) => match e.get() {
                Slot::Committed { event_id, at } if !self.expired(*at, now) => {
                    Ok(Claim::Duplicate(Uuid::from_u128(*event_id)))
                }
                Slot::Committed { .. } => {
                    let tx = Arc::new(watch::Sender::new(Flight::Pending));
                    e.insert(Slot::InFlight(tx.clone()));
                    Ok(Claim::Reserved(self.reservation(key, tx)))
                }
                Slot::InFlight(tx) => Err(tx.subscribe()),
            },
            Entry::Vacant(e) => {
                let tx = Arc::new(watch::Sender::new(Flight::Pending));
                e.insert(Slot::InFlight(tx.clone()));
                Ok(Claim::Reserved(self.reservation(key, tx)))
            }
        }
    }

    fn reservation(self: &Arc<Self>, key: u128, tx: Arc<watch::Sender<Flight>>) -> Reservation {
        Reservation {
            dedup: self.clone(),
            key,
            tx,
            done: false,
        }
    }

    fn expired(&self, at: u32, now: u32) -> bool {
        now.saturating_sub(at) >= self.window_secs
    }

    /// Records a key as committed at `at` (unix seconds) without a request:
    /// used to rebuild the window from what is already durable.
    pub fn insert_committed(&self, key: u128, event_id: Uuid, at: u32) {
        self.map.insert(
            key,
            Slot::Committed {
                event_id: event_id.as_u128(),
                at,
            },
        );
        self.push_order(key, at);
    }

    fn push_order(&self, key: u128, at: u32) {
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.push_back((key, at));
        let now = (self.clock)();
        self.trim(&mut order, now);
    }

    /// Drops keys whose window ended, then the oldest keys past the bound.
    fn trim(&self, order: &mut VecDeque<(u128, u32)>, now: u32) {
        while let Some(&(key, at)) = order.front() {
            let expired = self.expired(at, now);
            if !expired && order.len() <= self.max_keys {
                break;
            }
            order.pop_front();
            let removed = self
                .map
                .remove_if(
                    &key,
                    |_, s| matches!(s, Slot::Committed { at: a, .. } if *a == at),
                )
                .is_some();
            if removed {
                if expired {
                    metrics::counter!(m::DEDUP_EXPIRED).increment(1);
                } else {
                    metrics::counter!(m::DEDUP_EVICTIONS).increment(1);
                }
            }
        }
    }

    /// Expires keys whose window ended; called periodically so that memory
    /// is returned even when no new keys arrive.
    pub fn sweep(&self) {
        let now = (self.clock)();
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        self.trim(&mut order, now);
        drop(order);
        metrics::gauge!(m::DEDUP_KEYS).set(self.map.len() as f64);
    }

    /// Keys held, committed and in flight.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Ownership of a key while its event is made durable. Dropping it without
/// [`Reservation::commit`] releases the key.
pub struct Reservation {
    dedup: Arc<Dedup>,
    key: u128,
    tx: Arc<watch::Sender<Flight>>,
    done: bool,
}

impl Reservation {
    /// The event is durable: later requests for this key are duplicates of `event_id`.
    pub fn commit(mut self, event_id: Uuid) {
        let at = (self.dedup.clock)();
        let id = event_id.as_u128();
        self.dedup
            .map
            .insert(self.key, Slot::Committed { event_id: id, at });
        self.dedup.push_order(self.key, at);
        self.tx.send_replace(Flight::Committed(id));
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let tx = &self.tx;
        self.dedup.map.remove_if(
            &self.key,
            |_, s| matches!(s, Slot::InFlight(t) if Arc::ptr_eq(t, tx)),
        );
        tx.send_replace(Flight::Released);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn fixed_clock() -> (Arc<AtomicU32>, Clock) {
        let now = Arc::new(AtomicU32::new(1_000_000));
        let n = now.clone();
        (now, Arc::new(move || n.load(Ordering::SeqCst)))
    }

    fn parts<'a>(token: &'a str, txid: Option<&'a str>, status: &'a str) -> KeyParts<'a> {
        KeyParts {
            source: "default",
            token,
            txid,
            goal: None,
            status,
        }
    }

    fn dedup(max: usize) -> (Arc<AtomicU32>, Arc<Dedup>) {
        let (now, clock) = fixed_clock();
        (
            now,
            Dedup::new(Duration::from_secs(100), max, [7; 16], clock),
        )
    }

    const WAIT: Duration = Duration::from_millis(200);

    #[test]
    fn key_separates_every_field() {
        let (_, d) = dedup(10);
        let base = d.key(&parts("t", Some("x"), "approved"));
        assert_eq!(base, d.key(&parts("t", Some("x"), "approved")));
        assert_ne!(base, d.key(&parts("t", Some("y"), "approved")));
        assert_ne!(base, d.key(&parts("t", None, "approved")));
        assert_ne!(base, d.key(&parts("t", Some("x"), "pending")));
        assert_ne!(base, d.key(&parts("u", Some("x"), "approved")));
        // Length prefixes: moving a byte between fields changes the key.
        assert_ne!(
            d.key(&parts("ab", Some("c"), "s")),
            d.key(&parts("a", Some("bc"), "s"))
        );
    }

    #[tokio::test]
    async fn commit_makes_repeats_duplicates() {
        let (_, d) = dedup(10);
        let Claim::Reserved(r) = d.reserve(1, WAIT).await else {
            panic!("first claim")
        };
        let id = Uuid::now_v7();
        r.commit(id);
        match d.reserve(1, WAIT).await {
            Claim::Duplicate(first) => assert_eq!(first, id),
            _ => panic!("expected duplicate"),
        }
    }

    #[tokio::test]
    async fn release_lets_the_retry_through() {
        let (_, d) = dedup(10);
        let Claim::Reserved(r) = d.reserve(1, WAIT).await else {
            panic!()
        };
        drop(r);
        assert!(d.is_empty());
        assert!(matches!(d.reserve(1, WAIT).await, Claim::Reserved(_)));
    }

    #[tokio::test]
    async fn a_waiter_sees_the_commit_of_the_request_in_flight() {
        let (_, d) = dedup(10);
        let Claim::Reserved(r) = d.reserve(1, WAIT).await else {
            panic!()
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.reserve(1, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        let id = Uuid::now_v7();
        r.commit(id);
        assert!(matches!(waiter.await.unwrap(), Claim::Duplicate(x) if x == id));
    }

    #[tokio::test]
    async fn a_waiter_takes_over_a_released_key() {
        let (_, d) = dedup(10);
        let Claim::Reserved(r) = d.reserve(1, WAIT).await else {
            panic!()
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.reserve(1, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        drop(r);
        assert!(matches!(waiter.await.unwrap(), Claim::Reserved(_)));
    }

    #[tokio::test]
    async fn a_waiter_gives_up_after_its_wait() {
        let (_, d) = dedup(10);
        let Claim::Reserved(_r) = d.reserve(1, WAIT).await else {
            panic!()
        };
        assert!(matches!(
            d.reserve(1, Duration::from_millis(20)).await,
            Claim::Busy
        ));
    }

    #[tokio::test]
    async fn keys_expire_after_the_window() {
        let (now, d) = dedup(10);
        let Claim::Reserved(r) = d.reserve(1, WAIT).await else {
            panic!()
        };
        r.commit(Uuid::now_v7());
        now.fetch_add(99, Ordering::SeqCst);
        assert!(matches!(d.reserve(1, WAIT).await, Claim::Duplicate(_)));
        now.fetch_add(1, Ordering::SeqCst);
        d.sweep();
        assert!(d.is_empty());
        assert!(matches!(d.reserve(1, WAIT).await, Claim::Reserved(_)));
    }

    #[tokio::test]
    async fn the_oldest_keys_go_first_past_the_bound() {
        let (_, d) = dedup(3);
        for k in 1..=5u128 {
            let Claim::Reserved(r) = d.reserve(k, WAIT).await else {
                panic!()
            };
            r.commit(Uuid::now_v7());
        }
        assert_eq!(d.len(), 3);
        assert!(matches!(d.reserve(1, WAIT).await, Claim::Reserved(_)));
        assert!(matches!(d.reserve(5, WAIT).await, Claim::Duplicate(_)));
    }

    #[tokio::test]
    async fn concurrent_identical_claims_reserve_once() {
        let (_, d) = dedup(100);
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                match d.reserve(9, Duration::from_secs(5)).await {
                    Claim::Reserved(r) => {
                        tokio::task::yield_now().await;
                        r.commit(Uuid::now_v7());
                        1
                    }
                    _ => 0,
                }
            }));
        }
        let mut reserved = 0;
        for t in tasks {
            reserved += t.await.unwrap();
        }
        assert_eq!(reserved, 1);
    }
}

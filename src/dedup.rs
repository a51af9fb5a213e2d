//! The dedup window: a 128-bit keyed hash of (source, token, txid, goal,
//! status) mapped to the first event's id.
//!
//! A key is *reserved* while its event is in flight and *committed* only once
//! the event is durable; a reservation that is dropped without a commit is
//! released, so the sender's retry is not mistaken for a duplicate. A request
//! that finds a key in flight waits for that outcome instead of guessing.
//!
//! Committed keys live in time generations: each generation is a sharded map
//! holding the keys committed during one eighth of the window. A key is kept
//! for at least the window (and at most about an eighth more); when a generation is
//! entirely past the window it is dropped whole, and when more keys than the
//! bound are held, the oldest generation goes first. No per-key order list or
//! timestamp is kept, so a key costs one map entry: 32 bytes plus the map's
//! slack.

use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use siphasher::sip128::{Hasher128, SipHasher13};
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics as m;

/// Generations per window: memory holds at most 1 + 1/GENERATIONS windows of keys.
const GENERATIONS: u32 = 8;

/// Shards per generation. DashMap's default follows the CPUs the process
/// may use (4 when pinned to one core), and a shard that outgrows its table
/// is rehashed whole under its lock: a quarter of a million-key generation
/// stalled every request that needed that shard for milliseconds. With 128
/// shards each rehash is a 128th of the generation.
const SHARDS: usize = 128;

/// The map's hasher. The keys are already uniform hashes, so a full hash
/// of them again would be wasted work; but they are SipHashes under
/// `hash_key`, which may be the public default, so anyone could compute keys
/// that land in one shard and bucket. Each process therefore mixes the key's
/// words with a secret seed of its own (splitmix64's finalizer: a few
/// multiplies), which `dedup_key` in events does not depend on.
struct Mixed(u64);

/// This process's seed for [`Mixed`].
static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(rand::random);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Hasher for Mixed {
    fn finish(&self) -> u64 {
        mix(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }
}

/// Builds [`Mixed`] hashers seeded with this process's secret.
#[derive(Clone, Copy)]
struct Seeded;

impl std::hash::BuildHasher for Seeded {
    type Hasher = Mixed;
    fn build_hasher(&self) -> Mixed {
        Mixed(*SEED)
    }
}

impl Default for Seeded {
    fn default() -> Self {
        Seeded
    }
}

/// A 128-bit value as two words, so map entries need 8-byte alignment, not 16.
type Wide = (u64, u64);

fn wide(n: u128) -> Wide {
    ((n >> 64) as u64, n as u64)
}

fn narrow(w: Wide) -> u128 {
    (u128::from(w.0) << 64) | u128::from(w.1)
}

type Hash = Seeded;

/// The keys committed during one span of time, mapped to their event ids.
struct Generation {
    /// `commit time / span`.
    index: u64,
    keys: DashMap<Wide, Wide, Hash>,
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
    /// Oldest first; the newest takes new commits.
    generations: RwLock<VecDeque<Generation>>,
    /// Keys whose event is being made durable right now; the channel exists
    /// only once a second request for the key waits on the outcome.
    in_flight: DashMap<Wide, Option<watch::Sender<Flight>>, Hash>,
    /// Seconds of commit time per generation.
    span: u32,
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
        let window = window.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        Arc::new(Dedup {
            generations: RwLock::new(VecDeque::new()),
            in_flight: DashMap::default(),
            span: window.div_ceil(GENERATIONS),
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
                Ok(Ok(f)) => {
                    if let Flight::Committed(id) = *f {
                        return Claim::Duplicate(Uuid::from_u128(id));
                    }
                    // Released (or the holder vanished): try again.
                }
                Ok(Err(_)) => {}
                Err(_) => return Claim::Busy,
            }
        }
    }

    /// Claims `key` unless another request holds it in flight (`None`: then
    /// [`Dedup::reserve`] waits for that outcome).
    pub fn try_claim(self: &Arc<Self>, key: u128) -> Option<Claim> {
        self.try_reserve(key).ok()
    }

    /// Claims `key` without waiting; `Err` carries the receiver of an in-flight outcome.
    fn try_reserve(self: &Arc<Self>, key: u128) -> Result<Claim, watch::Receiver<Flight>> {
        match self.in_flight.entry(wide(key)) {
            Entry::Occupied(mut e) => {
                let tx = e
                    .get_mut()
                    .get_or_insert_with(|| watch::Sender::new(Flight::Pending));
                return Err(tx.subscribe());
            }
            Entry::Vacant(e) => {
                e.insert(None);
            }
        }
        // Looked up only now that the key is held: a commit leaves the
        // in-flight map only after the committed key is in place, so an
        // earlier holder's commit is visible here.
        let reservation = Reservation {
            dedup: self.clone(),
            key,
            done: false,
        };
        if let Some(id) = self.committed(key) {
            drop(reservation);
            return Ok(Claim::Duplicate(Uuid::from_u128(id)));
        }
        Ok(Claim::Reserved(reservation))
    }

    /// The first event's id, when `key` is committed and inside the window.
    fn committed(&self, key: u128) -> Option<u128> {
        let oldest = self.oldest_live(self.now_index());
        let gens = self.generations.read().unwrap_or_else(|p| p.into_inner());
        gens.iter()
            .rev()
            .filter(|g| g.index >= oldest)
            .find_map(|g| g.keys.get(&wide(key)).map(|id| narrow(*id)))
    }

    fn now_index(&self) -> u64 {
        u64::from((self.clock)() / self.span)
    }

    /// The oldest generation index still inside the window at `now_index`.
    fn oldest_live(&self, now_index: u64) -> u64 {
        now_index.saturating_sub(u64::from(GENERATIONS))
    }

    /// Records `key` as committed at `at` (unix seconds) under `event_id`.
    /// Keys older than the window are ignored.
    pub fn insert_committed(&self, key: u128, event_id: Uuid, at: u32) {
        self.insert_committed_at(key, event_id, at, (self.clock)());
    }

    /// [`Dedup::insert_committed`] with the current time already read.
    fn insert_committed_at(&self, key: u128, event_id: Uuid, at: u32, now: u32) {
        let index = u64::from(at / self.span);
        if index < self.oldest_live(u64::from(now / self.span)) {
            return;
        }
        let mut inserted = false;
        {
            let gens = self.generations.read().unwrap_or_else(|p| p.into_inner());
            if let Some(g) = gens.iter().find(|g| g.index == index) {
                g.keys.insert(wide(key), wide(event_id.as_u128()));
                inserted = true;
            }
        }
        if !inserted {
            let mut gens = self.generations.write().unwrap_or_else(|p| p.into_inner());
            // Generations stay sorted by index; one for `index` may have appeared meanwhile.
            let pos = gens
                .iter()
                .position(|g| g.index >= index)
                .unwrap_or(gens.len());
            if gens.get(pos).is_none_or(|g| g.index != index) {
                // A new newest generation starts at the size the last one
                // reached: growing by doubling would rehash a shard of
                // hundreds of thousands of keys under its lock, mid-request.
                let size = match gens.back() {
                    Some(last) if pos == gens.len() => last.keys.len().min(self.max_keys),
                    _ => 0,
                };
                gens.insert(
                    pos,
                    Generation {
                        index,
                        keys: DashMap::with_capacity_and_hasher_and_shard_amount(
                            size,
                            Hash::default(),
                            SHARDS,
                        ),
                    },
                );
            }
            gens[pos].keys.insert(wide(key), wide(event_id.as_u128()));
        }
    }

    /// Drops generations past the window, then the oldest ones past the
    /// bound; called every second so that memory is returned even when no
    /// new keys arrive.
    pub fn sweep(&self) {
        let oldest = self.oldest_live(self.now_index());
        let mut gens = self.generations.write().unwrap_or_else(|p| p.into_inner());
        while gens.front().is_some_and(|g| g.index < oldest) {
            if let Some(g) = gens.pop_front() {
                metrics::counter!(m::DEDUP_EXPIRED).increment(g.keys.len() as u64);
            }
        }
        let mut total: usize = gens.iter().map(|g| g.keys.len()).sum();
        // The newest generation is kept even past the bound: it holds the keys
        // being committed now.
        while total > self.max_keys && gens.len() > 1 {
            if let Some(g) = gens.pop_front() {
                total -= g.keys.len();
                metrics::counter!(m::DEDUP_EVICTIONS).increment(g.keys.len() as u64);
            }
        }
        drop(gens);
        metrics::gauge!(m::DEDUP_KEYS).set((total + self.in_flight.len()) as f64);
    }

    /// Keys held, committed and in flight.
    pub fn len(&self) -> usize {
        let gens = self.generations.read().unwrap_or_else(|p| p.into_inner());
        gens.iter().map(|g| g.keys.len()).sum::<usize>() + self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ownership of a key while its event is made durable. Dropping it without
/// [`Reservation::commit`] releases the key.
pub struct Reservation {
    dedup: Arc<Dedup>,
    key: u128,
    done: bool,
}

impl Reservation {
    /// The event is durable: later requests for this key are duplicates of `event_id`.
    pub fn commit(mut self, event_id: Uuid) {
        let now = (self.dedup.clock)();
        // Commit first, then leave the in-flight map: a request that misses
        // the in-flight entry finds the committed key.
        self.dedup.insert_committed_at(self.key, event_id, now, now);
        self.leave(Flight::Committed(event_id.as_u128()));
        self.done = true;
    }

    /// Leaves the in-flight map (the entry is this reservation's for as long
    /// as it lives) and tells any waiters how it ended.
    fn leave(&self, outcome: Flight) {
        if let Some((_, Some(waiters))) = self.dedup.in_flight.remove(&wide(self.key)) {
            waiters.send_replace(outcome);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.leave(Flight::Released);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn keys_that_share_a_simple_combination_of_their_words_spread_out() {
        use std::hash::BuildHasher;
        // Keys an attacker could line up if the words were only xored: all
        // with the same hi ^ lo. Mixed, their hashes all differ.
        let hashes: std::collections::HashSet<u64> = (0..1000u64)
            .map(|i| Seeded.hash_one::<Wide>((i, i ^ 0xdead_beef)))
            .collect();
        assert_eq!(hashes.len(), 1000);
    }

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
    fn a_new_generation_starts_at_the_size_of_the_last_one() {
        let (now, d) = dedup(1_000_000);
        let at = now.load(Ordering::SeqCst);
        for i in 0..5_000u128 {
            d.insert_committed(i, Uuid::from_u128(i), at);
        }
        let next = at + d.span;
        now.store(next, Ordering::SeqCst);
        d.insert_committed(1 << 100, Uuid::from_u128(1), next);
        let gens = d.generations.read().unwrap();
        assert_eq!(gens.len(), 2);
        let newest = gens.back().unwrap();
        assert_eq!(newest.keys.len(), 1);
        // No doubling on the way to the last generation's size.
        assert!(
            newest.keys.capacity() >= 5_000,
            "{}",
            newest.keys.capacity()
        );
    }

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
    async fn keys_are_kept_for_the_window_and_at_most_an_eighth_more() {
        // Window 100 s: generations of 13 s.
        let (now, d) = dedup(10);
        let Claim::Reserved(r) = d.reserve(1, WAIT).await else {
            panic!()
        };
        r.commit(Uuid::now_v7());
        now.fetch_add(100, Ordering::SeqCst);
        d.sweep();
        assert!(
            matches!(d.reserve(1, WAIT).await, Claim::Duplicate(_)),
            "kept for the whole window"
        );
        // Generations of 13 s: a key lives between 8 and 9 of them.
        now.fetch_add(18, Ordering::SeqCst);
        d.sweep();
        assert!(d.is_empty(), "gone about an eighth of the window later");
        assert!(matches!(d.reserve(1, WAIT).await, Claim::Reserved(_)));
    }

    #[tokio::test]
    async fn past_the_bound_the_oldest_generation_goes_first() {
        let (now, d) = dedup(4);
        // Two keys in each of three generations.
        for k in 1..=6u128 {
            let Claim::Reserved(r) = d.reserve(k, WAIT).await else {
                panic!()
            };
            r.commit(Uuid::now_v7());
            if k % 2 == 0 {
                now.fetch_add(13, Ordering::SeqCst);
            }
        }
        d.sweep();
        assert_eq!(d.len(), 4);
        assert!(
            matches!(d.reserve(1, WAIT).await, Claim::Reserved(_)),
            "the oldest went"
        );
        assert!(matches!(d.reserve(3, WAIT).await, Claim::Duplicate(_)));
        assert!(matches!(d.reserve(6, WAIT).await, Claim::Duplicate(_)));
    }

    #[tokio::test]
    async fn keys_rebuilt_from_the_past_land_in_their_generation() {
        let (now, d) = dedup(100);
        let t = now.load(Ordering::SeqCst);
        let id = Uuid::now_v7();
        d.insert_committed(7, id, t - 90);
        d.insert_committed(8, id, t - 500);
        assert!(matches!(d.reserve(7, WAIT).await, Claim::Duplicate(x) if x == id));
        assert!(
            matches!(d.reserve(8, WAIT).await, Claim::Reserved(_)),
            "older than the window: ignored"
        );
        now.fetch_add(30, Ordering::SeqCst);
        d.sweep();
        assert!(
            matches!(d.reserve(7, WAIT).await, Claim::Reserved(_)),
            "expires with its generation"
        );
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

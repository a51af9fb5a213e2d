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
#![warn(missing_docs)]

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

/// The keys a generation may take, at most `most`: rounded down so that each
/// shard's table ends nearly full. A hashbrown table holds 7/8 of its
/// power-of-two bucket count and doubles past that, so a generation sized by
/// the bound alone ended 55-60% full (about 55 bytes per key for 33 bytes of
/// entry); filled to 7/8 less four standard deviations of the keys' spread
/// over the shards (so a shard rarely outgrows its table), it is about 85% full.
fn fill_cap(most: usize) -> usize {
    let per_shard = most / SHARDS;
    if per_shard < 64 {
        return most;
    }
    let mut buckets = per_shard.next_power_of_two();
    loop {
        let fill = buckets / 8 * 7;
        let usable = fill - 4 * (fill as f64).sqrt() as usize;
        if usable <= per_shard {
            return usable * SHARDS;
        }
        buckets /= 2;
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
    /// Keys in `keys`, kept on insert: `DashMap::len` locks every shard.
    held: std::sync::atomic::AtomicUsize,
}

impl Generation {
    fn len(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Inserts; true when the key is new to this generation.
    fn insert(&self, key: u128, event_id: Uuid) -> bool {
        let new = self
            .keys
            .insert(wide(key), wide(event_id.as_u128()))
            .is_none();
        if new {
            self.held.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        new
    }
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

/// The real clock, to the second (the kernel's coarse clock: see
/// [`crate::os::coarse_unix_seconds`]).
pub fn system_clock() -> Clock {
    Arc::new(|| crate::os::coarse_unix_seconds() as u32)
}

/// The fields of a conversion that make it one conversion.
pub struct KeyParts<'a> {
    /// The source's name.
    pub source: &'a str,
    /// The tracking token, as decoded.
    pub token: &'a str,
    /// The transaction id, if sent.
    pub txid: Option<&'a str>,
    /// The goal, if sent.
    pub goal: Option<&'a str>,
    /// The normalized status (a pending conversion approved later is new).
    pub status: &'a str,
    /// The amount's canonical text, for a source whose repeats with another
    /// amount are new sales (RedTrack's "increment payout" mode); `None`
    /// for the others, whose keys stay what they always were.
    pub amount: Option<&'a str>,
}

/// One pool of the dedup window: keys in flight and committed keys in time
/// generations, bounded in number.
pub struct Dedup {
    /// Oldest first; the newest takes new commits.
    generations: RwLock<VecDeque<Generation>>,
    /// Keys whose event is being made durable right now; the channel exists
    /// only once a second request for the key waits on the outcome.
    in_flight: DashMap<Wide, Option<watch::Sender<Flight>>, Hash>,
    /// Seconds of commit time per generation.
    span: u32,
    max_keys: usize,
    /// Committed keys held, kept with every insert and drop, so the bound
    /// holds at every moment, not only at the next sweep.
    held: std::sync::atomic::AtomicUsize,
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
    /// A pool that keeps keys for `window`, at most `max_keys` of them, hashing
    /// with `hash_key`.
    pub fn new(window: Duration, max_keys: usize, hash_key: [u8; 16], clock: Clock) -> Arc<Dedup> {
        let window = window.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        Arc::new(Dedup {
            generations: RwLock::new(VecDeque::new()),
            in_flight: DashMap::default(),
            span: window.div_ceil(GENERATIONS),
            max_keys,
            held: std::sync::atomic::AtomicUsize::new(0),
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
        // Hashed only when the source counts it, so that every other key is
        // the one it always was (the window rebuilt at start holds old keys).
        if parts.amount.is_some() {
            field(6, parts.amount);
        }
        h.finish128().as_u128()
    }

    /// Claims `key`. When another request has it in flight, waits up to
    /// `wait` for that outcome: committed means duplicate, released means
    /// this request may try to make its own event durable.
    pub async fn reserve(self: &Arc<Self>, key: u128, wait: Duration) -> Claim {
        Route::within(self).reserve(key, wait).await
    }

    /// [`Dedup::reserve`] along `route`.
    async fn reserve_along(route: &Route, key: u128, wait: Duration) -> Claim {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut rx = match route.try_reserve(key) {
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

    /// Claims `key` in this pool's in-flight map without waiting, for an
    /// event whose key is to be kept in `store` and whose earlier commits may
    /// also be in `also`; `Err` carries the receiver of an in-flight outcome.
    fn try_reserve_for(
        self: &Arc<Self>,
        key: u128,
        store: &Arc<Dedup>,
        also: Option<&Dedup>,
    ) -> Result<Claim, watch::Receiver<Flight>> {
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
            store: store.clone(),
            key,
            done: false,
        };
        if let Some(id) = self
            .committed(key)
            .or_else(|| also.and_then(|p| p.committed(key)))
        {
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

    /// Keys one generation holds at most: when the newest generation of a
    /// span is full, another one for the same span follows it, so that the
    /// oldest keys can go an eighth of the bound at a time.
    fn generation_cap(&self) -> usize {
        fill_cap((self.max_keys / GENERATIONS as usize).max(1))
    }

    /// [`Dedup::insert_committed`] with the current time already read.
    fn insert_committed_at(&self, key: u128, event_id: Uuid, at: u32, now: u32) {
        let index = u64::from(at / self.span);
        if index < self.oldest_live(u64::from(now / self.span)) {
            return;
        }
        let cap = self.generation_cap();
        let mut added = None;
        {
            let gens = self.generations.read().unwrap_or_else(|p| p.into_inner());
            if let Some(g) = gens.iter().rev().find(|g| g.index == index) {
                if g.len() < cap {
                    added = Some(g.insert(key, event_id));
                }
            }
        }
        let added = match added {
            Some(a) => a,
            None => {
                let mut gens = self.generations.write().unwrap_or_else(|p| p.into_inner());
                // Generations stay sorted by index, those of one span in the
                // order they filled; one may have appeared meanwhile.
                let last_of_span = gens.iter().rposition(|g| g.index == index);
                let pos = match last_of_span {
                    Some(i) if gens[i].len() < cap => i,
                    Some(i) => {
                        gens.insert(i + 1, self.new_generation(index, cap));
                        i + 1
                    }
                    None => {
                        let pos = gens
                            .iter()
                            .position(|g| g.index > index)
                            .unwrap_or(gens.len());
                        // A new newest generation starts at the size the last
                        // one reached: growing by doubling would rehash a
                        // shard of hundreds of thousands of keys under its
                        // lock, mid-request.
                        let size = match gens.back() {
                            Some(last) if pos == gens.len() => last.len().min(cap),
                            _ => 0,
                        };
                        gens.insert(pos, self.new_generation(index, size));
                        pos
                    }
                };
                gens[pos].insert(key, event_id)
            }
        };
        if added && self.held.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 > self.max_keys
        {
            self.evict_over_bound();
        }
    }

    fn new_generation(&self, index: u64, capacity: usize) -> Generation {
        Generation {
            index,
            keys: DashMap::with_capacity_and_hasher_and_shard_amount(
                capacity,
                Hash::default(),
                SHARDS,
            ),
            held: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Drops the oldest generations while more keys than the bound are held.
    fn evict_over_bound(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut gens = self.generations.write().unwrap_or_else(|p| p.into_inner());
        while self.held.load(Relaxed) > self.max_keys && gens.len() > 1 {
            if let Some(g) = gens.pop_front() {
                self.held.fetch_sub(g.len(), Relaxed);
                metrics::counter!(m::DEDUP_EVICTIONS).increment(g.len() as u64);
            }
        }
    }

    /// Drops generations past the window; called every second so that
    /// memory is returned even when no new keys arrive. Returns the keys held.
    pub(crate) fn sweep(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let oldest = self.oldest_live(self.now_index());
        let mut gens = self.generations.write().unwrap_or_else(|p| p.into_inner());
        while gens.front().is_some_and(|g| g.index < oldest) {
            if let Some(g) = gens.pop_front() {
                self.held.fetch_sub(g.len(), Relaxed);
                metrics::counter!(m::DEDUP_EXPIRED).increment(g.len() as u64);
            }
        }
        drop(gens);
        self.len()
    }

    /// Keys held, committed and in flight.
    pub fn len(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed) + self.in_flight.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The dedup window in pools with bounds of their own: keys of sources with
/// api keys, keys of keyless (pixel) sources, which anyone can send, and one
/// pool for each source that asks for its own share (`dedup_max_keys`). A
/// flood through one pool pushes out that pool's old keys only. All bounds
/// together are `max_keys`.
pub struct Pools {
    /// Keys of sources with api keys (and no share of their own).
    pub keyed: Arc<Dedup>,
    /// Keys of keyless (pixel) sources.
    pub public: Arc<Dedup>,
    /// Sources with a share of their own, by name.
    own: std::collections::HashMap<String, Arc<Dedup>>,
}

impl Pools {
    /// `public_max_keys` of `max_keys` go to keyless sources, each of `own`
    /// (source name, keys) to that source, the rest to keyed sources.
    pub fn new(
        window: Duration,
        max_keys: usize,
        public_max_keys: usize,
        own: &[(String, usize)],
        hash_key: [u8; 16],
        clock: Clock,
    ) -> Arc<Pools> {
        let public_max_keys = public_max_keys.min(max_keys.saturating_sub(1)).max(1);
        let own_total: usize = own.iter().map(|(_, n)| n).sum();
        let keyed_max = max_keys
            .saturating_sub(public_max_keys)
            .saturating_sub(own_total)
            .max(1);
        Arc::new(Pools {
            keyed: Dedup::new(window, keyed_max, hash_key, clock.clone()),
            public: Dedup::new(window, public_max_keys, hash_key, clock.clone()),
            own: own
                .iter()
                .map(|(name, n)| {
                    let pool = Dedup::new(window, (*n).max(1), hash_key, clock.clone());
                    (name.clone(), pool)
                })
                .collect(),
        })
    }

    /// The pool of the source called `name`: its own, else the keyed or the
    /// keyless sources' pool.
    pub fn of(&self, name: &str, keyed: bool) -> &Arc<Dedup> {
        match self.own.get(name) {
            Some(pool) => pool,
            None if keyed => &self.keyed,
            None => &self.public,
        }
    }

    /// Where a conversion of the source called `name` claims and keeps its
    /// key. A pixel key is public, so a pixel's key is kept in the public
    /// pool whoever's pixel key it carries: a flood with a copied pixel key
    /// pushes out public keys only. The same conversion may come as a pixel
    /// and as an S2S postback, so a keyed source's claims of either kind are
    /// ordered in its own pool's in-flight map and look for commits in both
    /// pools (`takes_pixels`: only a source that takes pixels has any in the
    /// public pool).
    pub fn route(&self, name: &str, keyed: bool, takes_pixels: bool, pixel: bool) -> Route {
        let own = self.of(name, keyed);
        if !keyed || !takes_pixels {
            return Route::within(own);
        }
        Route {
            arbiter: own.clone(),
            store: self.store(name, keyed, pixel).clone(),
            also: Some(self.public.clone()),
        }
    }

    /// The pool that keeps the committed key of an event of the source called
    /// `name`: the public pool for a keyed source's pixel, else the source's
    /// own (what [`Pools::route`] commits to, and where a restart puts the key).
    pub fn store(&self, name: &str, keyed: bool, pixel: bool) -> &Arc<Dedup> {
        if keyed && pixel {
            &self.public
        } else {
            self.of(name, keyed)
        }
    }

    /// The keyed hash of a conversion (the same in both pools).
    pub fn key(&self, parts: &KeyParts<'_>) -> u128 {
        self.keyed.key(parts)
    }

    /// Expires both pools; sets the keys-held gauge; returns the keys held.
    pub(crate) fn sweep(&self) -> usize {
        let held = self.keyed.sweep()
            + self.public.sweep()
            + self.own.values().map(|p| p.sweep()).sum::<usize>();
        metrics::gauge!(m::DEDUP_KEYS).set(held as f64);
        held
    }

    /// Keys held in every pool.
    pub fn len(&self) -> usize {
        self.keyed.len() + self.public.len() + self.own.values().map(|p| p.len()).sum::<usize>()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where one conversion's key is claimed, looked up and kept: usually one
/// pool; see [`Pools::route`] for the case of two.
#[derive(Clone)]
pub struct Route {
    /// The pool whose in-flight map orders the claims of the key.
    arbiter: Arc<Dedup>,
    /// The pool the committed key goes to.
    store: Arc<Dedup>,
    /// Another pool whose committed keys count too.
    also: Option<Arc<Dedup>>,
}

impl Route {
    /// Claims, looks up and keeps keys in `pool` alone.
    pub fn within(pool: &Arc<Dedup>) -> Route {
        Route {
            arbiter: pool.clone(),
            store: pool.clone(),
            also: None,
        }
    }

    /// [`Dedup::reserve`] along this route.
    pub async fn reserve(&self, key: u128, wait: Duration) -> Claim {
        Dedup::reserve_along(self, key, wait).await
    }

    /// Claims `key` unless another request holds it in flight (`None`: then
    /// [`Route::reserve`] waits for that outcome).
    pub(crate) fn try_claim(&self, key: u128) -> Option<Claim> {
        self.try_reserve(key).ok()
    }

    fn try_reserve(&self, key: u128) -> Result<Claim, watch::Receiver<Flight>> {
        self.arbiter
            .try_reserve_for(key, &self.store, self.also.as_deref())
    }
}

/// Ownership of a key while its event is made durable. Dropping it without
/// [`Reservation::commit`] releases the key.
pub struct Reservation {
    /// The pool whose in-flight map holds the key.
    dedup: Arc<Dedup>,
    /// The pool the key is committed to.
    store: Arc<Dedup>,
    key: u128,
    done: bool,
}

impl Reservation {
    /// The event is durable: later requests for this key are duplicates of `event_id`.
    pub fn commit(mut self, event_id: Uuid) {
        let now = (self.store.clock)();
        // Commit first, then leave the in-flight map: a request that misses
        // the in-flight entry finds the committed key.
        self.store.insert_committed_at(self.key, event_id, now, now);
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

    #[test]
    fn a_generation_is_capped_to_fill_its_shards_tables() {
        // 20 million keys: an eighth is 2.5 million, 19,531 per shard, which
        // would end in 32,768-bucket tables 60% full; capped at 13,860 per
        // shard they end in 16,384-bucket tables 85% full.
        assert_eq!(fill_cap(2_500_000), 13_860 * SHARDS);
        for most in [1, 100, 8_000, 100_000, 2_500_000, 250_000_000] {
            let cap = fill_cap(most);
            assert!(
                cap <= most && cap * 2 > most || most < 64 * SHARDS,
                "{most}: {cap}"
            );
        }
    }

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

    #[test]
    fn an_amount_is_part_of_the_key_only_where_the_source_counts_it() {
        let (_, d) = dedup(10);
        let base = parts("t", Some("x"), "approved");
        let with = |a| KeyParts {
            amount: Some(a),
            ..parts("t", Some("x"), "approved")
        };
        assert_ne!(d.key(&base), d.key(&with("10.00")));
        assert_ne!(d.key(&with("10.00")), d.key(&with("15.00")));
        assert_eq!(d.key(&with("10.00")), d.key(&with("10.00")));
        assert_ne!(d.key(&with("")), d.key(&base), "no amount is a value too");
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
            amount: None,
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
    async fn the_bound_holds_at_every_moment_even_within_one_generation() {
        let (_now, d) = dedup(80);
        // All at the same second: one span of time, many keys.
        for k in 1..=1000u128 {
            let Claim::Reserved(r) = d.reserve(k, WAIT).await else {
                panic!()
            };
            r.commit(Uuid::now_v7());
            assert!(d.len() <= 80, "{} keys held after {k}", d.len());
        }
        assert!(d.len() > 60, "the bound is used, not emptied: {}", d.len());
        // The newest keys are the ones kept.
        assert!(matches!(d.reserve(1000, WAIT).await, Claim::Duplicate(_)));
        assert!(matches!(d.reserve(1, WAIT).await, Claim::Reserved(_)));
    }

    #[tokio::test]
    async fn a_source_with_a_share_of_its_own_keeps_it_through_another_sources_flood() {
        let (_now, clock) = fixed_clock();
        let pools = Pools::new(
            Duration::from_secs(100),
            1000,
            100,
            &[("big-network".to_owned(), 300)],
            [7; 16],
            clock,
        );
        let mine = pools.of("big-network", true);
        let Claim::Reserved(r) = mine.reserve(1, WAIT).await else {
            panic!()
        };
        r.commit(Uuid::now_v7());
        // Another keyed source, and the keyless ones, flood their pools.
        for k in 2..5000u128 {
            for pool in [pools.of("other", true), pools.of("landing", false)] {
                let Claim::Reserved(r) = pool.reserve(k, WAIT).await else {
                    panic!()
                };
                r.commit(Uuid::now_v7());
            }
        }
        assert!(matches!(mine.reserve(1, WAIT).await, Claim::Duplicate(_)));
        assert!(pools.len() <= 1000, "{}", pools.len());
        assert!(pools.of("other", true).len() <= 600);
        assert!(pools.of("landing", false).len() <= 100);
    }

    #[tokio::test]
    async fn a_keyed_sources_pixels_keep_their_keys_in_the_public_pool_and_count_against_its_s2s() {
        let (_now, clock) = fixed_clock();
        let pools = Pools::new(Duration::from_secs(100), 1000, 100, &[], [7; 16], clock);
        let s2s = pools.route("acme", true, true, false);
        let pixel = pools.route("acme", true, true, true);
        // An S2S postback committed: the same conversion as a pixel is a duplicate.
        let Claim::Reserved(r) = s2s.reserve(1, WAIT).await else {
            panic!()
        };
        let id = Uuid::now_v7();
        r.commit(id);
        assert!(matches!(pixel.reserve(1, WAIT).await, Claim::Duplicate(x) if x == id));
        // A pixel committed: kept in the public pool, and the same
        // conversion as an S2S postback is a duplicate.
        let Claim::Reserved(r) = pixel.reserve(2, WAIT).await else {
            panic!()
        };
        r.commit(id);
        assert_eq!((pools.keyed.len(), pools.public.len()), (1, 1));
        assert!(matches!(s2s.reserve(2, WAIT).await, Claim::Duplicate(_)));
        // In flight at once: the second waits for the first, whichever kind.
        let Claim::Reserved(first) = pixel.try_claim(3).unwrap() else {
            panic!()
        };
        assert!(s2s.try_claim(3).is_none(), "the pixel holds the key");
        let waiting = tokio::spawn({
            let s2s = s2s.clone();
            async move { s2s.reserve(3, WAIT).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.commit(id);
        assert!(matches!(waiting.await.unwrap(), Claim::Duplicate(x) if x == id));
        // A flood of unique pixels pushes out public keys only.
        for k in 10..5000u128 {
            let Claim::Reserved(r) = pixel.reserve(k, WAIT).await else {
                panic!()
            };
            r.commit(Uuid::now_v7());
        }
        assert!(matches!(s2s.reserve(1, WAIT).await, Claim::Duplicate(_)));
        assert_eq!(pools.keyed.len(), 1);
        assert!(pools.public.len() <= 100);
    }

    #[tokio::test]
    async fn a_warm_up_larger_than_the_bound_keeps_within_it() {
        let (now, d) = dedup(100);
        let start = now.load(Ordering::SeqCst);
        // Keys from the whole window, oldest first, as a topic is read back.
        for k in 0..5000u32 {
            d.insert_committed(u128::from(k) + 1, Uuid::now_v7(), start - 100 + k / 100);
            assert!(d.len() <= 100);
        }
        assert!(d.len() >= 80, "{}", d.len());
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

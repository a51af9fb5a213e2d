//! The dedup window: a 128-bit keyed hash of (source, token, txid, goal,
//! status) mapped to the first event's id.
//!
//! A key is *reserved* while its event is in flight and *committed* only once
//! the event is durable; a reservation that is dropped without a commit is
//! released, so the sender's retry is not mistaken for a duplicate. A request
//! that finds a key in flight waits for that outcome instead of guessing.
//! A key in flight is a slot of the table below, with a tag of its own
//! ([`PENDING`]): a claim's one probe finds a duplicate, a key in flight or
//! the place of a new key, which it takes there and then; the commit gives
//! that slot its generation and the event's id, a release removes it.
//!
//! Committed keys of a pool live in one table (sharded), so a lookup is one
//! probe however many keys the window holds. Each key belongs to a time
//! generation: the keys committed during one eighth of the window, at most
//! an eighth of the bound (a busy span gets several). The generation is a
//! tag of 6 bits carried in the top bits of the stored key (the other 122
//! bits identify it), so a key costs one 32-byte entry and no per-key order
//! list or timestamp. The table is the module's own ([`Table`]): open
//! addressing over those entries, two to a 64-byte cache line, linear
//! probing in Robin Hood order, tag 0 for an empty slot. A claim of a new
//! key and its commit read the line of the key's home and usually the one
//! after it, which the first one's miss brings in nearly for free; a
//! hashbrown table, which keeps its control bytes apart from its entries,
//! read a control byte and then an entry, two misses at the default bound
//! of 20 million keys (about 830 MB of table). A key is kept for at least the window (and at most
//! about an eighth more); when a generation is entirely past the window all
//! its keys go at once, and when more keys than the bound are held, the
//! oldest generation goes first. Both only mark the generation's tag dead,
//! which every lookup checks; its entries are removed from the table later,
//! a few shards at each sweep or when a shard would otherwise grow, and the
//! tag is reused only once none is left.
//!
//! At the default bound the one miss of a claim was mostly the address's
//! translation, not the line: in 4 KiB pages the table spans about 200,000
//! of them, so nearly every claim missed the TLB, and in a VM each such
//! miss is a nested page walk. A shard's tables of 64 KiB to 4 MiB are
//! therefore kept in memory of the pool's own, advised for huge pages
//! ([`TableMemory`]; the process leaves huge pages off everywhere else, see
//! `os::no_transparent_huge_pages`): at 20 million keys a new key's claim
//! and commit went from 752 to 639 ns, a duplicate's lookup from 600 to
//! 442 (benches/dedup.rs, 2026-12-07 evening), at the same memory per key.
//! A prefetch of the home line before the in-flight entry did not make a
//! claim measurably faster (the prefetch waits for the same walk).
#![warn(missing_docs)]

use crate::sync::LockAnyway;
use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use siphasher::sip128::{Hasher128, SipHasher13};
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics as m;

/// Generations per window: memory holds at most 1 + 1/GENERATIONS windows of keys.
const GENERATIONS: u32 = 8;

/// Bits of a stored key that carry its generation's tag.
const TAG_BITS: u32 = 6;
/// Tags a slot can carry: those a pool gives its generations, live ones
/// (at most about 2 × GENERATIONS + 2) and dead ones whose keys are not all
/// removed yet, and [`PENDING`]. Tag 0 is none of them: a slot whose tag is
/// 0 is empty.
const TAGS: usize = 1 << TAG_BITS;
/// The tag of a key in flight: a claim puts the key in its slot at once,
/// with this tag, and the commit gives the slot its generation's tag and
/// the event's id (or the release removes it). It is never a generation's,
/// and lookups and removals take it as live.
const PENDING: usize = TAGS - 1;
/// In a pending slot's `id.0`: a request waits on the key's outcome
/// ([`Dedup::waiting`] holds its channel).
const WAITED: u64 = 1;
const TAG_SHIFT: u32 = 64 - TAG_BITS;
/// The bits of a key's high word that identify it in the table.
const KEY_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// Most shards in one pool's table. Each shard is a table of its own behind
/// a lock; a shard that outgrows its table is rehashed whole under that lock,
/// and a full one that holds dead keys has them removed under it, so at the
/// default bound (20 million keys, 1,444 shards) either goes through at most
/// about 14,000 keys.
const MAX_SHARDS: usize = 2048;

/// The in-flight map's hasher. The keys are already uniform hashes, so a
/// full hash of them again would be wasted work; but they are SipHashes under
/// `hash_key`, which may be the public default, so anyone could compute keys
/// that land in one shard and bucket. Each process therefore mixes the key's
/// words with a secret seed of its own (splitmix64's finalizer: a few
/// multiplies), which `dedup_key` in events does not depend on. The table of
/// committed keys mixes them the same way ([`slot_hash`]).
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

/// The share of its slots a shard's table fills before it doubles:
/// `LOAD.0 / LOAD.1`. Linear probing slows down steeply past it (the run a
/// new key shifts grows as 1 / (1 - fill)²), and at a lower share a key
/// costs more memory (32 bytes / fill).
const LOAD: (usize, usize) = (4, 5);

/// Slots of a shard's smallest table (once it holds a key).
const MIN_SLOTS: usize = 16;

/// The keys a table of `slots` takes before it doubles.
fn room(slots: usize) -> usize {
    slots * LOAD.0 / LOAD.1
}

/// The keys a shard's table of `slots` may take before it doubles, less
/// four standard deviations of the keys' spread over the shards: a pool's
/// shards are as many as make its bound fill each shard's table to about
/// 77% (see [`shard_count`]), not the 40-80% a power-of-two shard count
/// would give.
fn usable(slots: usize) -> usize {
    let fill = room(slots);
    fill - 4 * (fill as f64).sqrt() as usize
}

/// Shards for a pool of `max_keys`: as many as make the bound fill tables
/// of one power-of-two size to about 77% (so half the bound, a quarter...
/// fill the next smaller sizes as well), at most [`MAX_SHARDS`].
fn shard_count(max_keys: usize) -> usize {
    let mut slots = 64;
    loop {
        let shards = max_keys.div_ceil(usable(slots)).max(1);
        if shards <= MAX_SHARDS {
            return shards;
        }
        slots *= 2;
    }
}

/// How long one sweep may spend removing a pool's dead keys (it finishes
/// the shard it is in: at the default bound a shard holds about 14,000 keys).
const SWEEP_BUDGET: Duration = Duration::from_millis(2);

/// A 128-bit value as two words, so map entries need 8-byte alignment, not 16.
type Wide = (u64, u64);

fn wide(n: u128) -> Wide {
    ((n >> 64) as u64, n as u64)
}

fn narrow(w: Wide) -> u128 {
    (u128::from(w.0) << 64) | u128::from(w.1)
}

/// A key as the table stores it: the top [`TAG_BITS`] bits cleared (a
/// slot carries its tag there). Keys are SipHash-1-3 outputs, so the 122
/// bits left identify a key as surely as 128 would for any real count.
fn stored(key: u128) -> Wide {
    let (hi, lo) = wide(key);
    (hi & KEY_MASK, lo)
}

/// The table's hash of a stored key (see [`Mixed`]).
fn key_hash(k: Wide) -> u64 {
    mix(mix(*SEED ^ k.0) ^ k.1)
}

/// One committed key: the key (its top bits the tag of its generation) and
/// the first event's id; 32 bytes. All zero (tag 0) is an empty slot.
#[derive(Clone, Copy, Default)]
struct Slot {
    hi: u64,
    lo: u64,
    id: Wide,
}

impl Slot {
    const EMPTY: Slot = Slot {
        hi: 0,
        lo: 0,
        id: (0, 0),
    };

    fn tag(&self) -> usize {
        (self.hi >> TAG_SHIFT) as usize
    }

    fn is_empty(&self) -> bool {
        self.tag() == 0
    }

    fn is_pending(&self) -> bool {
        self.tag() == PENDING
    }

    fn is(&self, k: Wide) -> bool {
        self.lo == k.1 && self.hi & KEY_MASK == k.0
    }
}

fn slot_hash(s: &Slot) -> u64 {
    key_hash((s.hi & KEY_MASK, s.lo))
}

/// Two slots: one 64-byte cache line, so the table's storage is aligned to
/// lines and a slot never straddles two.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([Slot; 2]);

/// Where a probe for a key ended.
enum Probe {
    /// The key's slot.
    Found(usize),
    /// Where the key goes: an empty slot, or the first slot of a key whose
    /// home is past the key's (it and the run after it move up by one).
    Vacant(usize),
}

/// One shard of a pool's table: open addressing over slots in a
/// power-of-two array, linear probing, in Robin Hood order. A key's home is
/// the slot its hash picks, and the keys of a run (slots between two empty
/// ones) lie in the order of their homes, so a probe for a key that is not
/// there stops at the first key whose home is past the key's, not at the
/// run's end. At the fill the bound gives (77%) a probe reads about two
/// lines on average, the home's and the one after it, and an insert moves
/// the keys up to the run's end, a few lines further on.
/// Keys are removed in bulk ([`Table::retain`]): the keys after a removed
/// one move back towards their homes, so the table has no tombstones.
#[derive(Default)]
struct Table {
    /// The slots, two per line; no line when the table is empty.
    lines: Lines,
    /// Slots taken.
    len: usize,
    /// Where the pool keeps this shard's larger tables, if it does.
    place: Option<Place>,
}

/// A table's lines: on the heap, or a block of its pool's [`TableMemory`].
enum Lines {
    Heap(Box<[Line]>),
    Huge(crate::os::Block<Line>),
}

impl Default for Lines {
    fn default() -> Self {
        Lines::Heap(Box::default())
    }
}

impl std::ops::Deref for Lines {
    type Target = [Line];
    fn deref(&self) -> &[Line] {
        match self {
            Lines::Heap(l) => l,
            Lines::Huge(l) => l,
        }
    }
}

impl std::ops::DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [Line] {
        match self {
            Lines::Heap(l) => l,
            Lines::Huge(l) => l,
        }
    }
}

/// Sizes of table (in slots, as powers of two) that a pool keeps in huge
/// pages: from 64 KiB a table (2,048 slots) to 4 MiB (131,072). A smaller
/// table is on the heap, where it shares pages with others; so is a larger
/// one, which a shard reaches only far past its pool's bound.
const HUGE_TABLES: std::ops::RangeInclusive<u32> = 11..=17;

/// One pool's memory for its shards' tables of the sizes in
/// [`HUGE_TABLES`]: for each size, one region of a block per shard, side by
/// side in shard order ([`crate::os::Blocks`], mapped when a shard first
/// needs a table of that size). The shards of a pool hold about as many
/// keys each, so they have tables of one size, and those fill whole huge
/// pages: at 10 million keys all 1,581 shards of the default pool have
/// 8,192-slot tables (256 KiB), which fill 198 huge pages of 2 MiB; a shard
/// that outgrows its size leaves a hole in the smaller size's region, whose
/// pages go back to the system, and makes the larger size's region hold a
/// huge page for itself and the shards beside it. The 4 KiB pages of a
/// heap table would each need a TLB entry of their own: at 20 million keys
/// nearly every claim missed the TLB, a nested page walk in a VM.
struct TableMemory {
    shards: usize,
    sizes: [std::sync::OnceLock<Option<Arc<crate::os::Blocks>>>; 7],
}

impl TableMemory {
    fn new(shards: usize) -> Arc<TableMemory> {
        Arc::new(TableMemory {
            shards,
            sizes: Default::default(),
        })
    }

    /// Lines for shard `shard`'s table of `slots` slots; `None` when that
    /// size is not kept here, the shard's block of it is in use (a table
    /// rebuilt at its own size), or the system refuses the memory.
    fn lines(&self, shard: usize, slots: usize) -> Option<crate::os::Block<Line>> {
        let size = slots.trailing_zeros();
        if !slots.is_power_of_two() || !HUGE_TABLES.contains(&size) {
            return None;
        }
        let blocks = self.sizes[(size - HUGE_TABLES.start()) as usize].get_or_init(|| {
            crate::os::Blocks::new(slots * std::mem::size_of::<Slot>(), self.shards)
        });
        blocks.as_ref()?.take(shard)
    }
}

/// A shard's place in its pool's [`TableMemory`].
#[derive(Clone)]
struct Place {
    memory: Arc<TableMemory>,
    shard: usize,
}

impl Table {
    /// An empty table whose larger sizes go to `place`.
    fn placed(place: Place) -> Table {
        Table {
            place: Some(place),
            ..Table::default()
        }
    }

    /// A table of `slots` slots (a power of two, at least two) in `place`
    /// when it keeps that size, else on the heap.
    fn in_place(slots: usize, place: Option<Place>) -> Table {
        let lines = match place.as_ref().and_then(|p| p.memory.lines(p.shard, slots)) {
            Some(lines) => Lines::Huge(lines),
            None => Lines::Heap(vec![Line::default(); slots / 2].into_boxed_slice()),
        };
        Table {
            lines,
            len: 0,
            place,
        }
    }

    fn slots(&self) -> usize {
        self.lines.len() * 2
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The keys it takes before it doubles.
    fn capacity(&self) -> usize {
        room(self.slots())
    }

    fn slot(&self, i: usize) -> &Slot {
        &self.lines[i / 2].0[i % 2]
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        &mut self.lines[i / 2].0[i % 2]
    }

    fn mask(&self) -> usize {
        self.slots() - 1
    }

    /// How far the slot at `i` (taken) is from its key's home.
    fn distance(&self, i: usize) -> usize {
        i.wrapping_sub(slot_hash(self.slot(i)) as usize) & self.mask()
    }

    /// Looks for the key `k` of hash `hash`. The table has a slot.
    fn probe(&self, hash: u64, k: Wide) -> Probe {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        let mut distance = 0;
        loop {
            let s = self.slot(i);
            if s.is_empty() {
                return Probe::Vacant(i);
            }
            if s.is(k) {
                return Probe::Found(i);
            }
            // Every key is at its home or past it: at the key's home no
            // other key's home is past the key's.
            if distance > 0 && self.distance(i) < distance {
                return Probe::Vacant(i);
            }
            i = (i + 1) & mask;
            distance += 1;
        }
    }

    /// The slot of key `k` of hash `hash`, live or dead.
    fn find(&self, hash: u64, k: Wide) -> Option<&Slot> {
        if self.len == 0 {
            return None;
        }
        match self.probe(hash, k) {
            Probe::Found(i) => Some(self.slot(i)),
            Probe::Vacant(_) => None,
        }
    }

    /// Puts `slot` at `i` (where [`Table::probe`] said its key goes) and
    /// moves the run from there up by one slot. The table has room.
    fn insert_at(&mut self, i: usize, slot: Slot) {
        // As its own home, so no slot before `i` is looked at; none is dead.
        self.insert_over(i, i, slot, |_| false);
    }

    /// Puts `slot` of home `home` at `i`, where [`Table::probe`] said its
    /// key goes, taking over a dead slot (as `dead` says) instead of moving
    /// the run past it: the slot just before `i` when the probe passed it
    /// (every key from the home to it is at or past its own home, so the
    /// order holds), else the first one from `i` to the run's end, the keys
    /// between moving up by one. Returns the dead slot taken over, if any;
    /// the table has room when none is on the way.
    fn insert_over(
        &mut self,
        mut i: usize,
        home: usize,
        mut slot: Slot,
        dead: impl Fn(&Slot) -> bool,
    ) -> Option<Slot> {
        let mask = self.mask();
        if i != home & mask {
            let before = self.slot_mut(i.wrapping_sub(1) & mask);
            if dead(before) {
                return Some(std::mem::replace(before, slot));
            }
        }
        loop {
            let s = self.slot_mut(i);
            if s.is_empty() {
                *s = slot;
                self.len += 1;
                return None;
            }
            if dead(s) {
                return Some(std::mem::replace(s, slot));
            }
            std::mem::swap(s, &mut slot);
            i = (i + 1) & mask;
        }
    }

    /// Removes the key at `i`: the keys after it in its run move back by
    /// one, as far as the first that is at its home.
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        loop {
            let next = (i + 1) & mask;
            if self.slot(next).is_empty() || self.distance(next) == 0 {
                *self.slot_mut(i) = Slot::EMPTY;
                break;
            }
            *self.slot_mut(i) = *self.slot(next);
            i = next;
        }
        self.len -= 1;
    }

    /// Inserts `slot`, whose key the table does not hold. It has room.
    fn insert_new(&mut self, slot: Slot) {
        let k = (slot.hi & KEY_MASK, slot.lo);
        match self.probe(slot_hash(&slot), k) {
            Probe::Vacant(i) => self.insert_at(i, slot),
            Probe::Found(_) => unreachable!("a key is in a table once"),
        }
    }

    /// The taken slots.
    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.lines
            .iter()
            .flat_map(|l| l.0.iter())
            .filter(|s| !s.is_empty())
    }

    /// Removes the slots `keep` says no to, in one pass: each key left
    /// moves back over the slots freed before it in its run, as far as its
    /// home or the key before it (as if the run's keys were inserted again
    /// in the order of their homes).
    fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        if self.len == 0 {
            return;
        }
        let mask = self.mask();
        // From an empty slot, so that no run crosses the start (the table
        // is never full); offsets below are from it.
        let Some(start) = (0..self.slots()).find(|&i| self.slot(i).is_empty()) else {
            return;
        };
        // Where the next key of the current run goes.
        let mut to = 1;
        for at in 1..=self.slots() {
            let i = (start + at) & mask;
            let s = *self.slot(i);
            if s.is_empty() {
                to = at + 1;
            } else if !keep(&s) {
                *self.slot_mut(i) = Slot::EMPTY;
                self.len -= 1;
            } else if to < at {
                // Its home is inside the run, which began after `start`.
                let dest = (at - self.distance(i)).max(to);
                if dest < at {
                    *self.slot_mut((start + dest) & mask) = s;
                    *self.slot_mut(i) = Slot::EMPTY;
                }
                to = dest + 1;
            } else {
                to = at + 1;
            }
        }
    }

    /// Rebuilds the table in `slots` slots (a power of two that has room
    /// for its keys, or 0 when it has none).
    fn resize(&mut self, slots: usize) {
        let place = self.place.clone();
        let old = std::mem::replace(
            self,
            if slots == 0 {
                Table {
                    place,
                    ..Table::default()
                }
            } else {
                Table::in_place(slots, place)
            },
        );
        for s in old.iter() {
            self.insert_new(*s);
        }
    }

    /// The fewest slots that take `keys` keys before they double.
    fn slots_for(keys: usize) -> usize {
        let mut slots = MIN_SLOTS;
        while room(slots) < keys {
            slots *= 2;
        }
        slots
    }
}

/// The keys committed during one span of time (at most an eighth of the
/// bound): where they are is their tag in the table.
struct Generation {
    /// `commit time / span`.
    index: u64,
    tag: usize,
    /// Keys committed to it and not moved to a newer one.
    count: usize,
}

/// The outcome of an in-flight event, as seen by requests waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    Pending,
    Committed(u128),
    Released,
}

pub use crate::os::{system_clock, Clock};

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

/// Bytes of a key's input gathered before the hasher takes them: a whole
/// postback's fields usually fit, so the hasher is called once instead of
/// three times a field.
const KEY_INPUT_BUFFER: usize = 192;

/// A key's input on its way into the hasher: each field as its tag byte,
/// its length (or `u64::MAX` for none) as eight little-endian bytes, and
/// its bytes. SipHash reads its input as one stream, so where the writes
/// are cut does not change the key (`keys_stay_what_they_were` holds it).
struct KeyInput {
    hasher: SipHasher13,
    buf: [u8; KEY_INPUT_BUFFER],
    len: usize,
}

impl KeyInput {
    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.hasher.write(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > self.buf.len() {
                self.hasher.write(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn field(&mut self, tag: u8, value: Option<&str>) {
        self.put(&[tag]);
        match value {
            None => self.put(&u64::MAX.to_le_bytes()),
            Some(s) => {
                self.put(&(s.len() as u64).to_le_bytes());
                self.put(s.as_bytes());
            }
        }
    }

    fn finish(mut self) -> u128 {
        self.hasher.write(&self.buf[..self.len]);
        self.hasher.finish128().as_u128()
    }
}

/// One pool of the dedup window: keys in flight, and committed keys in one
/// table by time generation, bounded in number.
pub struct Dedup {
    /// The committed keys, sharded by their hash.
    shards: Box<[Mutex<Table>]>,
    /// The live generations, oldest first; the newest takes new commits.
    /// Taken before any shard's lock, never while holding one.
    generations: Mutex<VecDeque<Generation>>,
    /// By tag: 1 + the index of the live generation that has it; 0 when
    /// none does (its keys, if any are left in the table, are dead).
    tags: [AtomicU64; TAGS],
    /// By tag: slots in the table that carry it, and commits about to add
    /// one; a tag is given to a new generation only when none is left.
    placed: [AtomicUsize; TAGS],
    /// The next shard the sweep looks through for dead keys.
    purge_next: AtomicUsize,
    /// Keys whose event is being made durable right now: their slots, tagged
    /// [`PENDING`], are in the table.
    flying: AtomicUsize,
    /// The outcome channels of keys in flight that a second request waits
    /// on (their slots say so: [`WAITED`]). Taken only under the key's
    /// shard's lock.
    waiting: Mutex<std::collections::HashMap<Wide, watch::Sender<Flight>, Seeded>>,
    /// Seconds of commit time per generation.
    span: u32,
    max_keys: usize,
    /// Committed keys held (in live generations), kept with every insert
    /// and drop, so the bound holds at every moment, not only at the next sweep.
    held: AtomicUsize,
    hash_key: [u8; 16],
    clock: Clock,
    /// `postback_dedup_evictions_total` of the gateway's metrics.
    evictions: metrics::Counter,
    /// `postback_dedup_expired_total`.
    expired: metrics::Counter,
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
        Dedup::counted(
            window,
            max_keys,
            hash_key,
            clock,
            [metrics::Counter::noop(), metrics::Counter::noop()],
        )
    }

    /// [`Dedup::new`], counting its evictions and expired keys in `counters`.
    fn counted(
        window: Duration,
        max_keys: usize,
        hash_key: [u8; 16],
        clock: Clock,
        counters: [metrics::Counter; 2],
    ) -> Arc<Dedup> {
        let [evictions, expired] = counters;
        let window = window.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        let shards = shard_count(max_keys);
        let memory = TableMemory::new(shards);
        Arc::new(Dedup {
            shards: (0..shards)
                .map(|shard| {
                    Mutex::new(Table::placed(Place {
                        memory: memory.clone(),
                        shard,
                    }))
                })
                .collect(),
            generations: Mutex::new(VecDeque::new()),
            tags: std::array::from_fn(|t| AtomicU64::new(if t == PENDING { u64::MAX } else { 0 })),
            placed: std::array::from_fn(|_| AtomicUsize::new(0)),
            purge_next: AtomicUsize::new(0),
            flying: AtomicUsize::new(0),
            waiting: Mutex::default(),
            span: window.div_ceil(GENERATIONS),
            max_keys: max_keys.max(1),
            held: AtomicUsize::new(0),
            hash_key,
            clock,
            evictions,
            expired,
        })
    }

    /// The 128-bit keyed hash of a conversion's identity. Fields are
    /// length-prefixed so that no two different tuples hash the same input.
    pub fn key(&self, parts: &KeyParts<'_>) -> u128 {
        let mut input = KeyInput {
            hasher: SipHasher13::new_with_key(&self.hash_key),
            buf: [0; KEY_INPUT_BUFFER],
            len: 0,
        };
        input.field(1, Some(parts.source));
        input.field(2, Some(parts.token));
        input.field(3, parts.txid);
        input.field(4, parts.goal);
        input.field(5, Some(parts.status));
        // Hashed only when the source counts it, so that every other key is
        // the one it always was (the window rebuilt at start holds old keys).
        if parts.amount.is_some() {
            input.field(6, parts.amount);
        }
        input.finish()
    }

    /// Claims `key`. When another request has it in flight, waits up to
    /// `wait` for that outcome: committed means duplicate, released means
    /// this request may try to make its own event durable.
    pub async fn reserve(self: &Arc<Self>, key: u128, wait: Duration) -> Claim {
        Route::within(self).reserve(key, wait).await
    }

    /// [`Dedup::reserve`] along `route`.
    async fn reserve_along(route: &Route, key: u128, wait: Duration) -> Claim {
        // Read the clock only once there is something to wait for: most
        // claims are settled at once.
        let mut deadline = None;
        loop {
            let mut rx = match route.try_reserve(key) {
                Ok(claim) => return claim,
                Err(rx) => rx,
            };
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + wait);
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

    /// Claims `key` in this pool's table without waiting, for an event
    /// whose key is to be kept in `store` and whose earlier commits may also
    /// be in `also`; `Err` carries the receiver of an in-flight outcome.
    /// One probe: the key's slot tells a duplicate or a key in flight, and
    /// a new key takes a slot there and then, tagged [`PENDING`].
    fn try_reserve_for(
        self: &Arc<Self>,
        key: u128,
        store: &Arc<Dedup>,
        also: Option<&Dedup>,
    ) -> Result<Claim, watch::Receiver<Flight>> {
        let oldest = self.oldest_live(self.now_index());
        let k = stored(key);
        let hash = key_hash(k);
        let pending = Slot {
            hi: k.0 | (PENDING as u64) << TAG_SHIFT,
            lo: k.1,
            id: (0, 0),
        };
        let mut shard = self.shard(hash);
        self.make_room(&mut shard);
        match shard.probe(hash, k) {
            Probe::Vacant(i) => self.put(&mut shard, hash, i, pending),
            Probe::Found(i) => {
                let s = shard.slot_mut(i);
                if s.is_pending() {
                    s.id.0 |= WAITED;
                    let mut waiting = self.waiting.lock_anyway();
                    let tx = waiting
                        .entry(k)
                        .or_insert_with(|| watch::Sender::new(Flight::Pending));
                    return Err(tx.subscribe());
                }
                if self.live(s, oldest) {
                    return Ok(Claim::Duplicate(Uuid::from_u128(narrow(s.id))));
                }
                // A key past the window or of a dead generation: its slot is
                // this claim's, and the old key is gone.
                let old = s.tag();
                *s = pending;
                self.placed[old].fetch_sub(1, Relaxed);
            }
        }
        self.flying.fetch_add(1, Relaxed);
        drop(shard);
        let reservation = Reservation {
            dedup: self.clone(),
            store: store.clone(),
            key,
            done: false,
        };
        // Looked up only now that the key is held here: a commit to `also`
        // leaves this table only after the committed key is in place there.
        if let Some(id) = also.and_then(|p| p.committed(key)) {
            drop(reservation);
            return Ok(Claim::Duplicate(Uuid::from_u128(id)));
        }
        Ok(Claim::Reserved(reservation))
    }

    /// Makes room in a full shard for one more key: dead keys go first;
    /// when they are too few to make room for a while (a 32nd of the keys),
    /// the table doubles.
    fn make_room(&self, shard: &mut Table) {
        if shard.len() >= shard.capacity() {
            self.purge_shard(shard);
            let least = shard.len() + shard.len() / 32 + 1;
            if least > shard.capacity() {
                shard.resize(Table::slots_for(least));
            }
        }
    }

    /// Puts `slot`, of hash `hash`, at `i` where the probe said it goes,
    /// over a dead key on the way if there is one.
    fn put(&self, shard: &mut Table, hash: u64, i: usize, slot: Slot) {
        let dead = |s: &Slot| self.tags[s.tag()].load(Relaxed) == 0;
        if let Some(gone) = shard.insert_over(i, hash as usize, slot, dead) {
            self.placed[gone.tag()].fetch_sub(1, Relaxed);
        }
    }

    /// Ends the flight of `key`, whose pending slot this pool holds: the
    /// slot takes generation `tag` and id `id` when both are given, else it
    /// is removed; a request waiting on it learns `outcome`.
    fn land(&self, key: u128, kept: Option<(usize, u128)>, outcome: Flight) {
        let k = stored(key);
        let hash = key_hash(k);
        let mut shard = self.shard(hash);
        // A key in flight keeps its slot until it lands: nothing removes or
        // takes over a pending slot but this.
        let Probe::Found(i) = shard.probe(hash, k) else {
            debug_assert!(false, "a key in flight lost its slot");
            return;
        };
        let s = shard.slot_mut(i);
        debug_assert!(s.is_pending());
        let waited = s.id.0 & WAITED != 0;
        match kept {
            Some((tag, id)) => {
                s.hi = k.0 | (tag as u64) << TAG_SHIFT;
                s.id = wide(id);
            }
            None => shard.remove_at(i),
        }
        self.flying.fetch_sub(1, Relaxed);
        if waited {
            if let Some(tx) = self.waiting.lock_anyway().remove(&k) {
                tx.send_replace(outcome);
            }
        }
    }

    /// The shard of the table that holds keys of hash `hash`: from bits the
    /// shard's table does not use (it takes the low ones for the slot).
    fn shard(&self, hash: u64) -> MutexGuard<'_, Table> {
        let i = (((hash >> 25) & 0xffff_ffff) * self.shards.len() as u64) >> 32;
        self.shards[i as usize].lock_anyway()
    }

    /// Whether a slot's generation is live and inside the window whose
    /// oldest generation index is `oldest`.
    fn live(&self, slot: &Slot, oldest: u64) -> bool {
        self.tags[slot.tag()].load(Relaxed) > oldest
    }

    /// The first event's id, when `key` is committed and inside the window
    /// (a key in flight here is not committed).
    fn committed(&self, key: u128) -> Option<u128> {
        let oldest = self.oldest_live(self.now_index());
        let k = stored(key);
        let hash = key_hash(k);
        let shard = self.shard(hash);
        shard
            .find(hash, k)
            .filter(|s| !s.is_pending() && self.live(s, oldest))
            .map(|s| narrow(s.id))
    }

    fn now_index(&self) -> u64 {
        u64::from((self.clock)() / self.span)
    }

    /// The oldest generation index still inside the window at `now_index`.
    fn oldest_live(&self, now_index: u64) -> u64 {
        now_index.saturating_sub(u64::from(GENERATIONS))
    }

    /// Records `key` as committed at `at` (unix seconds) under `event_id`.
    /// Keys older than the window are ignored. A key already committed and
    /// inside the window keeps its first event's id and time.
    pub fn insert_committed(&self, key: u128, event_id: Uuid, at: u32) {
        self.insert_committed_at(key, event_id, at, (self.clock)());
    }

    /// Keys one generation holds at most: when the newest generation of a
    /// span is full, another one for the same span follows it, so that the
    /// oldest keys can go an eighth of the bound at a time.
    fn generation_cap(&self) -> usize {
        (self.max_keys / GENERATIONS as usize).max(1)
    }

    /// [`Dedup::insert_committed`] with the current time already read.
    fn insert_committed_at(&self, key: u128, event_id: Uuid, at: u32, now: u32) {
        let index = u64::from(at / self.span);
        let oldest = self.oldest_live(u64::from(now / self.span));
        if index < oldest {
            return;
        }
        let Some(tag) = self.take_place(index) else {
            return;
        };
        let k = stored(key);
        let hash = key_hash(k);
        let slot = Slot {
            hi: k.0 | (tag as u64) << TAG_SHIFT,
            lo: k.1,
            id: wide(event_id.as_u128()),
        };
        let mut shard = self.shard(hash);
        self.make_room(&mut shard);
        let held_already = match shard.probe(hash, k) {
            Probe::Vacant(i) => {
                self.put(&mut shard, hash, i, slot);
                false
            }
            Probe::Found(i) => {
                let s = shard.slot_mut(i);
                let old = s.tag();
                // A key in flight (a warm-up beside live claims) keeps its
                // claim: it looked for this key before it was here.
                if self.live(s, oldest) {
                    true
                } else {
                    // A dead key's slot: taken over, and the dead key is gone.
                    *s = slot;
                    self.placed[old].fetch_sub(1, Relaxed);
                    false
                }
            }
        };
        drop(shard);
        if held_already {
            self.give_back(tag);
        }
    }

    /// Counts a key into the newest generation of span `index` (a new one
    /// when there is none or it is full) and returns that generation's tag,
    /// counted as placed. At the bound the oldest generations go first, so
    /// the count never passes it; `None` when the key would itself be the
    /// oldest held (it is counted as evicted).
    fn take_place(&self, index: u64) -> Option<usize> {
        let cap = self.generation_cap();
        let mut gens = self.generations.lock_anyway();
        if self.held.load(Relaxed) >= self.max_keys {
            if gens.front().is_some_and(|g| index < g.index) {
                self.evictions.increment(1);
                return None;
            }
            while self.held.load(Relaxed) >= self.max_keys {
                match gens.pop_front() {
                    Some(g) => self.drop_generation(g, &self.evictions),
                    None => break,
                }
            }
        }
        let pos = match gens.iter().rposition(|g| g.index == index) {
            Some(i) if gens[i].count < cap => i,
            _ => {
                let tag = self.free_tag(&mut gens);
                // Generations stay sorted by index, those of one span in the
                // order they filled.
                let pos = match gens.iter().rposition(|g| g.index == index) {
                    Some(i) => i + 1,
                    None => gens
                        .iter()
                        .position(|g| g.index > index)
                        .unwrap_or(gens.len()),
                };
                self.tags[tag].store(index + 1, Relaxed);
                gens.insert(
                    pos,
                    Generation {
                        index,
                        tag,
                        count: 0,
                    },
                );
                pos
            }
        };
        gens[pos].count += 1;
        let tag = gens[pos].tag;
        self.placed[tag].fetch_add(1, Relaxed);
        self.held.fetch_add(1, Relaxed);
        Some(tag)
    }

    /// Undoes [`Dedup::take_place`] for a key that was already held.
    fn give_back(&self, tag: usize) {
        let mut gens = self.generations.lock_anyway();
        if let Some(g) = gens.iter_mut().find(|g| g.tag == tag) {
            g.count -= 1;
            self.held.fetch_sub(1, Relaxed);
        }
        self.placed[tag].fetch_sub(1, Relaxed);
    }

    /// A tag that no live generation has and no slot carries: after removing
    /// dead keys from the whole table if need be (never needed in practice:
    /// at most about 2 × GENERATIONS + 2 of the 64 are live).
    fn free_tag(&self, gens: &mut VecDeque<Generation>) -> usize {
        loop {
            let free = (1..PENDING)
                .find(|&t| self.tags[t].load(Relaxed) == 0 && self.placed[t].load(Relaxed) == 0);
            if let Some(t) = free {
                return t;
            }
            if self.dirty() {
                for shard in self.shards.iter() {
                    let mut shard = shard.lock_anyway();
                    self.purge_shard(&mut shard);
                }
                // What is left of a dead tag is a commit between its place
                // and its slot: it is about to land.
                std::thread::yield_now();
                continue;
            }
            // Every tag live: the oldest generation goes.
            if let Some(g) = gens.pop_front() {
                self.drop_generation(g, &self.evictions);
            }
        }
    }

    /// Whether the table holds dead keys (or a commit of a dead generation
    /// is about to add one).
    fn dirty(&self) -> bool {
        (1..PENDING).any(|t| self.tags[t].load(Relaxed) == 0 && self.placed[t].load(Relaxed) > 0)
    }

    /// Marks a generation's keys dead (its tag no longer counts) and counts them in `metric`.
    fn drop_generation(&self, g: Generation, counter: &metrics::Counter) {
        self.tags[g.tag].store(0, Relaxed);
        self.held.fetch_sub(g.count, Relaxed);
        counter.increment(g.count as u64);
    }

    /// Removes the dead keys (of tags no live generation has) from one
    /// shard, in place, in one pass over it; rebuilds its table at half its
    /// size or less when it is less than a quarter full (the window's keys
    /// expired: the memory goes back).
    fn purge_shard(&self, shard: &mut Table) {
        shard.retain(|s| {
            if self.tags[s.tag()].load(Relaxed) == 0 {
                self.placed[s.tag()].fetch_sub(1, Relaxed);
                return false;
            }
            true
        });
        if shard.len() < shard.capacity() / 4 {
            let slots = if shard.len() == 0 {
                0
            } else {
                Table::slots_for(2 * shard.len())
            };
            if slots < shard.slots() {
                shard.resize(slots);
            }
        }
    }

    /// The most committed keys this pool holds.
    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Forgets every committed key (keys in flight stay): for a warm-up
    /// that reads the window again to keep only its newest keys. The keys
    /// leave the table as the sweeper goes through it; no lookup finds
    /// them from now on. Not counted as evicted or expired.
    pub(crate) fn forget_committed(&self) {
        let mut gens = self.generations.lock_anyway();
        let uncounted = metrics::Counter::noop();
        while let Some(g) = gens.pop_front() {
            self.drop_generation(g, &uncounted);
        }
    }

    /// Drops generations past the window; called every second so that
    /// memory is returned even when no new keys arrive. Each call then
    /// removes dead keys shard by shard for [`SWEEP_BUDGET`] at most (the
    /// sweeper runs on a runtime worker), so at the default bound a pass
    /// over the table takes a few minutes. Returns the keys held.
    pub(crate) fn sweep(&self) -> usize {
        let oldest = self.oldest_live(self.now_index());
        {
            let mut gens = self.generations.lock_anyway();
            while gens.front().is_some_and(|g| g.index < oldest) {
                if let Some(g) = gens.pop_front() {
                    self.drop_generation(g, &self.expired);
                }
            }
        }
        if self.dirty() {
            let started = std::time::Instant::now();
            for _ in 0..self.shards.len() {
                let i = self.purge_next.fetch_add(1, Relaxed) % self.shards.len();
                let mut shard = self.shards[i].lock_anyway();
                self.purge_shard(&mut shard);
                drop(shard);
                if started.elapsed() >= SWEEP_BUDGET {
                    break;
                }
            }
        }
        self.len()
    }

    /// Keys held, committed and in flight.
    pub fn len(&self) -> usize {
        self.held.load(Relaxed) + self.flying.load(Relaxed)
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
    /// `postback_dedup_keys` of the gateway's metrics.
    keys: metrics::Gauge,
}

impl Pools {
    /// `public_max_keys` of `max_keys` go to keyless sources, each of `own`
    /// (source name, keys) to that source, the rest to keyed sources; each
    /// counts its evictions and expired keys in `metrics`.
    pub fn new(
        window: Duration,
        max_keys: usize,
        public_max_keys: usize,
        own: &[(String, usize)],
        hash_key: [u8; 16],
        clock: Clock,
        metrics: &m::Metrics,
    ) -> Arc<Pools> {
        let counters = || {
            [
                metrics.counter(m::DEDUP_EVICTIONS),
                metrics.counter(m::DEDUP_EXPIRED),
            ]
        };
        let public_max_keys = public_max_keys.min(max_keys.saturating_sub(1)).max(1);
        let own_total: usize = own.iter().map(|(_, n)| n).sum();
        let keyed_max = max_keys
            .saturating_sub(public_max_keys)
            .saturating_sub(own_total)
            .max(1);
        Arc::new(Pools {
            keyed: Dedup::counted(window, keyed_max, hash_key, clock.clone(), counters()),
            public: Dedup::counted(window, public_max_keys, hash_key, clock.clone(), counters()),
            own: own
                .iter()
                .map(|(name, n)| {
                    let pool =
                        Dedup::counted(window, (*n).max(1), hash_key, clock.clone(), counters());
                    (name.clone(), pool)
                })
                .collect(),
            keys: metrics.gauge(m::DEDUP_KEYS),
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
        self.keys.set(held as f64);
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
        self.done = true;
        let now = (self.store.clock)();
        let id = event_id.as_u128();
        if Arc::ptr_eq(&self.store, &self.dedup) {
            // The pending slot becomes the committed key, in place.
            let tag = self.store.take_place(u64::from(now / self.store.span));
            self.dedup
                .land(self.key, tag.map(|t| (t, id)), Flight::Committed(id));
            return;
        }
        // Commit first, then leave the pending slot: a request that no
        // longer finds the key in flight finds the committed key.
        self.store.insert_committed_at(self.key, event_id, now, now);
        self.dedup.land(self.key, None, Flight::Committed(id));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.dedup.land(self.key, None, Flight::Released);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_bound_fills_its_shards_tables_to_about_77_percent() {
        // 20 million keys: 1,581 shards of 12,651 keys at most, in
        // 16,384-slot tables (13,107 before they double) 77% full; half
        // the bound fills 8,192-slot tables as much.
        assert_eq!(shard_count(20_000_000), 1_581);
        assert_eq!(usable(16_384), 12_651);
        for most in [1, 100, 8_000, 100_000, 2_500_000, 20_000_000, 250_000_000] {
            let shards = shard_count(most);
            assert!((1..=MAX_SHARDS).contains(&shards), "{most}: {shards}");
            let per_shard = most.div_ceil(shards);
            let slots = Table::slots_for(per_shard);
            assert!(
                most < 64 * MAX_SHARDS || per_shard * 100 / slots >= 70,
                "{most}: {per_shard} keys per {slots}-slot shard"
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

    /// Checks the table's invariants: its count, and Robin Hood order (a
    /// run's keys in the order of their homes: each at most one slot
    /// further from its home than the one before it, the first of a run at
    /// its home unless the run wraps around).
    fn check_table(t: &Table) {
        assert_eq!(t.iter().count(), t.len());
        assert!(t.len() <= t.capacity());
        for i in 0..t.slots() {
            if t.slot(i).is_empty() {
                continue;
            }
            let before = i.wrapping_sub(1) & t.mask();
            if t.slot(before).is_empty() {
                assert_eq!(t.distance(i), 0, "slot {i} opens a run away from its home");
            } else {
                assert!(
                    t.distance(i) <= t.distance(before) + 1,
                    "slot {i} out of order"
                );
            }
        }
    }

    fn table_key(n: u64) -> Wide {
        (mix(n) & KEY_MASK, mix(!n))
    }

    #[test]
    fn a_shard_s_larger_tables_are_in_its_pool_s_memory_and_keep_their_keys() {
        let memory = TableMemory::new(3);
        let mut t = Table::placed(Place {
            memory: memory.clone(),
            shard: 2,
        });
        let huge = |t: &Table| matches!(t.lines, Lines::Huge(_));
        let slot = |n: u64| {
            let k = table_key(n);
            Slot {
                hi: k.0 | 1 << TAG_SHIFT,
                lo: k.1,
                id: (n, !n),
            }
        };
        let mut sizes = Vec::new();
        for n in 0..30_000u64 {
            if t.len() >= t.capacity() {
                t.resize(Table::slots_for(t.len() + 1));
                sizes.push((t.slots(), huge(&t)));
            }
            t.insert_new(slot(n));
        }
        check_table(&t);
        let expected: Vec<(usize, bool)> = (4..=16)
            .map(|b| (1 << b, HUGE_TABLES.contains(&b)))
            .collect();
        assert_eq!(sizes, expected);
        // Rebuilt at its own size: the block is in use, so the heap.
        t.resize(t.slots());
        assert!(!huge(&t));
        t.resize(2 * t.slots());
        assert!(huge(&t), "the block of the larger size was given back");
        // Other shards' blocks are theirs.
        let mut other = Table::in_place(
            t.slots(),
            Some(Place {
                memory: memory.clone(),
                shard: 0,
            }),
        );
        assert!(huge(&other));
        other.insert_new(slot(u64::MAX));
        for n in 0..30_000u64 {
            let k = table_key(n);
            assert_eq!(t.find(key_hash(k), k).map(|s| s.id), Some((n, !n)));
        }
        check_table(&t);
        // Shrunk: the heap again, the keys kept.
        t.retain(|s| s.id.0 < 100);
        t.resize(Table::slots_for(200));
        assert!(!huge(&t));
        check_table(&t);
        assert_eq!(t.len(), 100);
        assert_eq!(other.len(), 1);
    }

    #[test]
    fn the_table_agrees_with_a_map_through_inserts_removals_and_resizes() {
        let mut t = Table::default();
        let mut model: std::collections::HashMap<Wide, (usize, Wide)> = Default::default();
        // Few distinct keys, so that inserts find keys already there and
        // removals hit; small tables, so that runs wrap around.
        let mut rng = 0x1234_5678u64;
        let mut next = move || {
            rng = mix(rng.wrapping_add(0x9e37_79b9_7f4a_7c15));
            rng
        };
        // Tags taken as dead by inserts that may take over a dead slot:
        // those below `dead_below` (it moves, as generations die).
        let mut dead_below = 0;
        let (mut taken_over, mut removed) = (0, 0);
        for round in 0..20_000u64 {
            let r = next();
            let k = table_key(r % 700);
            let hash = key_hash(k);
            match r >> 60 {
                0..=7 => {
                    let tag = 1 + (r >> 32) as usize % (TAGS - 1);
                    let slot = Slot {
                        hi: k.0 | (tag as u64) << TAG_SHIFT,
                        lo: k.1,
                        id: (round, r),
                    };
                    if t.len() >= t.capacity() {
                        t.resize(Table::slots_for(t.len() + 1));
                    }
                    match t.probe(hash, k) {
                        Probe::Found(i) => *t.slot_mut(i) = slot,
                        Probe::Vacant(i) if r & 1 == 0 => t.insert_at(i, slot),
                        Probe::Vacant(i) => {
                            let dead = |s: &Slot| s.tag() < dead_below;
                            if let Some(gone) = t.insert_over(i, hash as usize, slot, dead) {
                                assert!(gone.tag() < dead_below);
                                let gone = model.remove(&(gone.hi & KEY_MASK, gone.lo));
                                assert!(gone.is_some(), "round {round}: a slot of the model");
                                taken_over += 1;
                            }
                        }
                    }
                    model.insert(k, (tag, slot.id));
                }
                8 => dead_below = (r >> 32) as usize % TAGS,
                9 => {
                    if t.len() > 0 {
                        if let Probe::Found(i) = t.probe(hash, k) {
                            t.remove_at(i);
                            removed += 1;
                        }
                    }
                    model.remove(&k);
                }
                10..=13 => {
                    // Remove every key with this tag.
                    let tag = 1 + (r >> 32) as usize % (TAGS - 1);
                    t.retain(|s| s.tag() != tag);
                    model.retain(|_, v| v.0 != tag);
                }
                14 => {
                    let slots = Table::slots_for(2 * t.len());
                    t.resize(if t.len() == 0 { 0 } else { slots });
                }
                _ => {
                    let found = t.find(hash, k).map(|s| (s.tag(), s.id));
                    assert_eq!(found, model.get(&k).copied(), "round {round}");
                }
            }
            if round % 97 == 0 {
                check_table(&t);
                assert_eq!(t.len(), model.len());
            }
        }
        check_table(&t);
        for (k, v) in &model {
            let s = t.find(key_hash(*k), *k).expect("a key of the model");
            assert_eq!((s.tag(), s.id), *v);
        }
        assert!(t
            .find(key_hash(table_key(1_000)), table_key(1_000))
            .is_none());
        assert!(taken_over > 100 && removed > 100, "{taken_over} {removed}");
    }

    #[tokio::test]
    async fn a_key_in_flight_in_the_other_pool_is_not_a_commit_there() {
        let (_, own) = dedup(100);
        let (_, public) = dedup(100);
        let route = Route {
            arbiter: own.clone(),
            store: public.clone(),
            also: Some(public.clone()),
        };
        let Claim::Reserved(in_public) = public.reserve(3, WAIT).await else {
            panic!("a new key")
        };
        let Claim::Reserved(r) = route.reserve(3, WAIT).await else {
            panic!("in flight in the other pool, not committed there")
        };
        drop(in_public);
        r.commit(Uuid::from_u128(9));
        assert_eq!(own.len(), 0, "the slot in flight left the arbiter's table");
        assert!(
            matches!(route.reserve(3, WAIT).await, Claim::Duplicate(x) if x == Uuid::from_u128(9))
        );
        assert!(
            matches!(public.reserve(3, WAIT).await, Claim::Duplicate(x) if x == Uuid::from_u128(9))
        );
    }

    #[tokio::test]
    async fn a_claim_holds_one_slot_until_it_commits_or_is_released() {
        let (_, d) = dedup(100);
        let Claim::Reserved(r) = d.reserve(1, WAIT).await else {
            panic!("a new key")
        };
        assert_eq!((d.len(), slots(&d).0), (1, 1), "in flight: one slot");
        drop(r);
        assert_eq!((d.len(), slots(&d)), (0, (0, 0)), "released: no slot");
        let Claim::Reserved(r) = d.reserve(1, WAIT).await else {
            panic!("released, so new again")
        };
        r.commit(Uuid::from_u128(5));
        assert_eq!(
            (d.len(), slots(&d)),
            (1, (1, 1)),
            "committed in the same slot"
        );
        assert!(matches!(d.reserve(1, WAIT).await, Claim::Duplicate(x) if x == Uuid::from_u128(5)));
    }

    #[test]
    fn a_full_table_keeps_its_order_and_finds_every_key() {
        let mut t = Table::in_place(MIN_SLOTS, None);
        let keys: Vec<Wide> = (0..t.capacity() as u64).map(table_key).collect();
        for (n, k) in keys.iter().enumerate() {
            t.insert_new(Slot {
                hi: k.0 | 1 << TAG_SHIFT,
                lo: k.1,
                id: (n as u64, 0),
            });
            check_table(&t);
        }
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(t.find(key_hash(*k), *k).map(|s| s.id.0), Some(n as u64));
        }
        // Removing every other key shifts the rest back into order.
        let mut odd = false;
        t.retain(|_| {
            odd = !odd;
            odd
        });
        check_table(&t);
        assert_eq!(t.len(), keys.len().div_ceil(2));
        let held = keys.iter().filter(|k| t.find(key_hash(**k), **k).is_some());
        assert_eq!(held.count(), t.len());
    }

    #[test]
    fn a_slot_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::size_of::<Line>(), 64);
        assert_eq!(std::mem::align_of::<Line>(), 64);
    }

    /// Slots in the table, live or dead, and the tags they carry as counted.
    fn slots(d: &Dedup) -> (usize, usize) {
        let physical = d.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        let placed = d.placed.iter().map(|p| p.load(Ordering::SeqCst)).sum();
        (physical, placed)
    }

    /// Keys the table's shards hold before they grow or rebuild.
    fn capacity(d: &Dedup) -> usize {
        capacities(d).iter().sum()
    }

    /// Keys each of the table's shards holds before it grows or rebuilds.
    fn capacities(d: &Dedup) -> Vec<usize> {
        d.shards
            .iter()
            .map(|s| s.lock().unwrap().capacity())
            .collect()
    }

    #[test]
    fn a_new_generation_starts_at_the_size_of_the_last_one() {
        // One table for the window: a new generation is a tag, and the
        // table it shares is not rebuilt or doubled when one starts.
        let (now, d) = dedup(1_000_000);
        let at = now.load(Ordering::SeqCst);
        for i in 0..5_000u128 {
            d.insert_committed(i, Uuid::from_u128(i), at);
        }
        let before = capacities(&d);
        let next = at + d.span;
        now.store(next, Ordering::SeqCst);
        d.insert_committed(1 << 100, Uuid::from_u128(1), next);
        assert_eq!(d.generations.lock().unwrap().len(), 2);
        assert_eq!(slots(&d), (5_001, 5_001));
        // Only the shard the new key lands in may grow (its own load factor,
        // as for any insert); every other shard is as it was.
        let after = capacities(&d);
        let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(changed <= 1, "{changed} shards changed capacity");
    }

    #[test]
    fn keys_stay_what_they_were() {
        // Keys are kept in Kafka's events and read back at start: the
        // hashed bytes of a tuple must never change.
        let d = Dedup::new(Duration::from_secs(60), 10, [7; 16], system_clock());
        let long = "t".repeat(300);
        let mut got = Vec::new();
        for (token, txid, goal, amount) in [
            ("abc", Some("ord-1"), None, None),
            ("пример~AbC+dE/f==|", None, Some("sale"), Some("12.30")),
            (long.as_str(), Some(long.as_str()), Some(""), None),
        ] {
            got.push(format!(
                "{:032x}",
                d.key(&KeyParts {
                    source: "default",
                    token,
                    txid,
                    goal,
                    status: "approved",
                    amount,
                })
            ));
        }
        // As the version that first kept keys in events hashed them.
        assert_eq!(
            got,
            [
                "e6cd8d2e0f23e3b3b5ecf09f024cd7c5",
                "1447faa92a0ada1048d87c8eec345dfc",
                "c1cd075d2ea8fdcc6652af928beae191",
            ]
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
            &crate::metrics::Metrics::new(),
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
        let metrics = crate::metrics::Metrics::new();
        let pools = Pools::new(
            Duration::from_secs(100),
            1000,
            100,
            &[],
            [7; 16],
            clock,
            &metrics,
        );
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

    #[tokio::test]
    async fn an_evicted_key_is_gone_before_its_slot_is_removed() {
        // The fifth key pushes out the first; its insert takes over the
        // first key's slot when that slot is on its way, so fifth keys are
        // tried until one leaves the dead slot in the table (the slots'
        // places depend on the process's seed).
        let (d, fifth) = (6..40u128)
            .find_map(|fifth| {
                let (now, d) = dedup(4);
                for k in 1..=4u128 {
                    d.insert_committed(k, Uuid::from_u128(k), now.load(Ordering::SeqCst));
                    now.fetch_add(13, Ordering::SeqCst);
                }
                d.insert_committed(fifth, Uuid::from_u128(fifth), now.load(Ordering::SeqCst));
                assert_eq!(d.len(), 4);
                let (physical, placed) = slots(&d);
                assert_eq!(physical, placed);
                (physical == 5).then_some((d, fifth))
            })
            .expect("a fifth key that leaves the first one's slot");
        // Key 1's generation went; its slot is still in the table, dead.
        assert_eq!(slots(&d), (5, 5));
        assert!(matches!(d.reserve(1, WAIT).await, Claim::Reserved(_)));
        for k in [2, 3, 4, fifth] {
            assert!(
                matches!(d.reserve(k, WAIT).await, Claim::Duplicate(x) if x == Uuid::from_u128(k))
            );
        }
        // The claim of key 1 took its dead slot and its release removed it.
        assert_eq!(slots(&d), (4, 4));
    }

    #[tokio::test]
    async fn a_dead_key_s_slot_is_removed_by_the_sweep() {
        let (now, d) = dedup(4);
        for k in 1..=5u128 {
            d.insert_committed(k, Uuid::from_u128(k), now.load(Ordering::SeqCst));
            now.fetch_add(13, Ordering::SeqCst);
        }
        assert_eq!(d.len(), 4);
        assert!(slots(&d).0 <= 5);
        for _ in 0..16 {
            d.sweep();
        }
        assert_eq!(slots(&d), (4, 4));
    }

    #[tokio::test]
    async fn eviction_goes_oldest_generation_first_across_spans_and_fills() {
        // A bound of 80: generations of at most 10 keys.
        let (now, d) = dedup(80);
        let t = now.load(Ordering::SeqCst);
        // Two spans' keys, 25 in the older span (three generations) and 25
        // in the newer, then a flood in the newest span.
        for k in 0..25u128 {
            d.insert_committed(1000 + k, Uuid::from_u128(k), t);
        }
        now.store(t + d.span, Ordering::SeqCst);
        for k in 0..25u128 {
            d.insert_committed(2000 + k, Uuid::from_u128(k), t + d.span);
        }
        now.store(t + 2 * d.span, Ordering::SeqCst);
        for k in 0..40u128 {
            d.insert_committed(3000 + k, Uuid::from_u128(k), t + 2 * d.span);
            assert!(d.len() <= 80);
        }
        // 90 keys at a bound of 80: the oldest generation (10 keys) went.
        assert_eq!(d.len(), 80);
        let held =
            |range: std::ops::Range<u128>| range.filter(|k| d.committed(*k).is_some()).count();
        assert_eq!(held(1000..1025), 15);
        assert_eq!(held(1000..1010), 0, "the first ten went first");
        assert_eq!(held(2000..2025), 25);
        assert_eq!(held(3000..3040), 40);
        // A key older than every held one, at the bound, is not let in.
        d.insert_committed(9, Uuid::from_u128(9), t - d.span);
        assert!(d.committed(9).is_none());
        assert_eq!(held(1010..1025), 15);
    }

    #[tokio::test]
    async fn expiry_empties_the_table_and_its_tags_are_reused() {
        let (now, d) = dedup(100_000);
        let t = now.load(Ordering::SeqCst);
        for k in 0..20_000u128 {
            d.insert_committed(k, Uuid::from_u128(k), t);
        }
        let before = capacity(&d);
        now.store(t + 118, Ordering::SeqCst);
        assert!(d.committed(5).is_none(), "past the window before any sweep");
        for _ in 0..16 {
            d.sweep();
        }
        assert_eq!(d.len(), 0);
        assert_eq!(slots(&d), (0, 0));
        let after: usize = capacity(&d);
        assert!(after < before / 4, "memory returned: {before} -> {after}");
        // Many more generations than tags, over many windows.
        for round in 0..200u32 {
            let at = t + 118 + round * d.span;
            now.store(at, Ordering::SeqCst);
            for k in 0..50u128 {
                d.insert_committed(u128::from(round) << 64 | k, Uuid::from_u128(k), at);
            }
            d.sweep();
        }
        assert!(d.committed(199 << 64).is_some());
        assert!(d.committed(190 << 64).is_none());
        let (physical, placed) = slots(&d);
        assert_eq!(physical, placed);
        assert!(physical <= 50 * (9 + 18), "{physical}");
    }

    #[test]
    fn a_flood_from_many_threads_keeps_the_bound_and_the_table_small() {
        let (_now, d) = dedup(5_000);
        std::thread::scope(|s| {
            for thread in 0..4u128 {
                let d = &d;
                s.spawn(move || {
                    for k in 0..50_000u128 {
                        d.insert_committed(thread << 64 | k, Uuid::from_u128(k), 1_000_000);
                        assert!(d.len() <= 5_000, "{}", d.len());
                    }
                });
            }
        });
        assert!(d.len() >= 4_000, "{}", d.len());
        let (physical, placed) = slots(&d);
        assert_eq!(physical, placed);
        // Dead keys make room before a shard would double.
        let before = capacity(&d);
        assert!(before < 5_000 * 4, "{before}");
        // A key committed after the flood is held.
        d.insert_committed(1 << 100, Uuid::from_u128(1), 1_000_000);
        assert_eq!(d.committed(1 << 100), Some(1));
    }

    #[test]
    fn a_warm_up_repeat_keeps_the_first_event_id() {
        let (now, d) = dedup(100);
        let t = now.load(Ordering::SeqCst);
        d.insert_committed(7, Uuid::from_u128(1), t - 50);
        d.insert_committed(7, Uuid::from_u128(2), t - 10);
        assert_eq!(d.len(), 1);
        assert_eq!(d.committed(7), Some(1));
        assert_eq!(slots(&d), (1, 1));
    }

    #[test]
    fn keys_that_differ_in_their_top_bits_only_are_one_key() {
        // The top six bits carry the generation's tag; keys are SipHashes,
        // so two that differ only there do not occur.
        let (now, d) = dedup(100);
        let t = now.load(Ordering::SeqCst);
        d.insert_committed(5 | 1 << 127, Uuid::from_u128(1), t);
        assert_eq!(d.committed(5), Some(1));
        assert_eq!(d.committed(5 | 1 << 122), Some(1));
        assert_eq!(d.committed(5 | 1 << 121), None);
    }
}

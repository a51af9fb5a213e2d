//! The durable spool: an append-only log of events Kafka could not take, on
//! local disk, drained to Kafka when it is back.
//!
//! Records are `[len u32][crc32 u32][body]`, little-endian, in segment files
//! `seg-<seq>.log` that rotate by size. One writer thread appends and commits
//! in groups: every record that arrived while the previous `fdatasync` ran is
//! covered by the next one, and each append is acknowledged only after the sync
//! that covers it. A segment is deleted only once every record in it is
//! acknowledged by Kafka. On start, a torn last record (a crash mid-write, never
//! acknowledged) fails its checksum and is cut off; a damaged record with whole
//! ones after it (a flipped byte, a bad sector) costs that record only, at
//! start and while the drainer reads alike. A record that passes its checksum
//! is never thrown away: one in a format version this build does not read
//! stops the start instead.

use crate::sync::LockAnyway;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::{oneshot, Notify};
use tracing::{info, warn};
use uuid::Uuid;

use super::faults::Faults;
use crate::metrics as m;
use crate::tasks;

const HEADER: usize = 8;
const VERSION: u8 = 1;
/// No single record comes near this; a larger length is corruption.
const MAX_RECORD: usize = 4 << 20;
/// The drainer reads at most this much at a time (more than one record's worth).
const READ_CHUNK: u64 = 8 << 20;
// A read that begins at a record always holds the whole record, so a record
// a read cuts short is never taken for damage.
const _: () = assert!(READ_CHUNK as usize >= HEADER + MAX_RECORD);

/// The lock file in a spool directory.
const LOCK_FILE: &str = "LOCK";
/// Records Kafka refused for good, in the segment format; never deleted by
/// the gateway. Renamed to a segment name (`seg-<n>.log`, above every
/// segment's number) it is drained at the next start.
pub(crate) const DEAD_LETTER_FILE: &str = "dead-letter.log";

/// Makes `dir` (private to this user: it holds client addresses and tokens)
/// and takes its lock, so that a second process cannot drain and delete the
/// segments the first is writing. The lock is the OS's (flock), so it goes
/// with the process however it ends; the file names the holder's pid.
fn lock_dir(dir: &Path) -> io::Result<File> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // A directory made here is the owner's alone. One that exists is
        // never chmod-ed (SPOOL_DIR=/var/lib must not change the host's) and
        // is refused when others may enter it.
        builder.mode(0o700);
        builder.create(dir)?;
        let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the spool directory {} is open to its group or to others (mode {mode:04o}); \
                     it holds client addresses and tracking tokens: make it 0700 \
                     (chmod 700 {0}), or point SPOOL_DIR at a directory that does not exist \
                     yet, which the gateway creates 0700",
                    dir.display()
                ),
            ));
        }
    }
    #[cfg(not(unix))]
    builder.create(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the spool directory {} is in use by another gateway process{}; \
                     each process needs a SPOOL_DIR of its own",
                    dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    }
                ),
            ));
        }
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(file)
}

/// Creates a segment file readable by this user only.
fn create_segment(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// One spooled event, with what is needed to rebuild the dedup window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's dedup key.
    pub dedup_key: u128,
    /// When it was spooled, unix seconds.
    pub at: u32,
    /// The source that accepted it.
    pub source: String,
    /// The Kafka message key (the tracking token).
    pub key: String,
    /// The event, as it goes to Kafka.
    pub payload: Vec<u8>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let body_len =
            1 + 16 + 16 + 4 + 2 + self.source.len() + 4 + self.key.len() + self.payload.len();
        let mut out = Vec::with_capacity(HEADER + body_len);
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(VERSION);
        out.extend_from_slice(&self.event_id.as_u128().to_le_bytes());
        out.extend_from_slice(&self.dedup_key.to_le_bytes());
        out.extend_from_slice(&self.at.to_le_bytes());
        out.extend_from_slice(&(self.source.len() as u16).to_le_bytes());
        out.extend_from_slice(self.source.as_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.payload);
        let crc = crc32fast::hash(&out[HEADER..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(body: &[u8]) -> Option<Record> {
        let mut r = body;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (a, b) = r.split_at_checked(n)?;
            r = b;
            Some(a)
        };
        if take(1)?[0] != VERSION {
            return None;
        }
        let event_id = Uuid::from_u128(u128::from_le_bytes(take(16)?.try_into().ok()?));
        let dedup_key = u128::from_le_bytes(take(16)?.try_into().ok()?);
        let at = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let slen = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let source = String::from_utf8(take(slen)?.to_vec()).ok()?;
        let klen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let key = String::from_utf8(take(klen)?.to_vec()).ok()?;
        Some(Record {
            event_id,
            dedup_key,
            at,
            source,
            key,
            payload: r.to_vec(),
        })
    }
}

/// What recovery keeps of a spooled record: enough to rebuild the dedup
/// window (the payload stays on disk for the drainer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's dedup key.
    pub dedup_key: u128,
    /// When it was spooled, unix seconds.
    pub at: u32,
    /// The source that accepted it.
    pub source: String,
    /// Whether it is a pixel's (its key lives in the public dedup pool).
    pub pixel: bool,
}

/// Whether an event's payload is a pixel's. Read once per record at start.
fn is_pixel(payload: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow, default)]
        kind: &'a str,
    }
    serde_json::from_slice::<Kind>(payload).is_ok_and(|k| k.kind == "pixel")
}

/// What the bytes at one offset of a segment hold.
enum At {
    /// A whole record, its checksum verified, and its length with the header.
    Whole(usize, Record),
    /// A record whose checksum holds, in a format version this build does
    /// not read (a newer build wrote it): not damage.
    Newer(u8),
    /// No whole record: damage, or a record cut short at the end of the file.
    Bad,
    /// The bytes at hand end before it can be told.
    Short,
}

/// What is at `pos` of `bytes`.
fn record_at(bytes: &[u8], pos: usize) -> At {
    let Some(header) = bytes.get(pos..pos + HEADER) else {
        return At::Short;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return At::Bad;
    }
    let Some(body) = bytes.get(pos + HEADER..pos + HEADER + len) else {
        return At::Short;
    };
    if crc32fast::hash(body) != crc {
        return At::Bad;
    }
    match body.first() {
        Some(&version) if version != VERSION => At::Newer(version),
        _ => match Record::decode(body) {
            Some(record) => At::Whole(HEADER + len, record),
            None => At::Bad,
        },
    }
}

/// Whole records read out of part of a segment, and the damage between them.
#[derive(Default)]
struct Scan {
    /// Each whole record, with where it begins and ends in the segment.
    records: Vec<(u64, u64, Record)>,
    /// Ranges of the segment in which no whole record begins (damage).
    damaged: Vec<(u64, u64)>,
    /// Where the scan stopped: the end of the bytes, or where the next read
    /// must begin.
    end: u64,
    /// Where damage began that the bytes ended in before a whole record
    /// followed it; the next read, from `end`, goes on with it.
    open_damage: Option<u64>,
}

/// A record in a format version this build does not read, at `offset`.
struct Newer {
    offset: u64,
    version: u8,
}

/// Reads whole records out of `bytes`, which begin at byte `base` of a
/// segment (at a record, or inside damage that began at `damaged_since`). A
/// record that fails its checksum is skipped by resynchronising on the next
/// whole record after it, byte by byte. `complete` says the bytes reach the
/// end of what there is to read (the file, or its synced length): a record
/// they cut short is damage then, and otherwise where the next read begins.
/// A record of another version is refused with `Err`, or taken for damage
/// when `newer_is_damage`.
fn scan(
    bytes: &[u8],
    base: u64,
    complete: bool,
    damaged_since: Option<u64>,
    newer_is_damage: bool,
) -> Result<Scan, Newer> {
    let mut out = Scan::default();
    let mut since = damaged_since;
    let mut pos = 0;
    while pos < bytes.len() {
        let at = base + pos as u64;
        match record_at(bytes, pos) {
            At::Whole(len, record) => {
                if let Some(from) = since.take() {
                    out.damaged.push((from, at));
                }
                out.records.push((at, at + len as u64, record));
                pos += len;
            }
            At::Newer(version) if !newer_is_damage => {
                return Err(Newer {
                    offset: at,
                    version,
                })
            }
            At::Short if !complete => break,
            At::Newer(_) | At::Bad | At::Short => {
                since.get_or_insert(at);
                pos += 1;
            }
        }
    }
    out.end = base + pos as u64;
    match since {
        Some(from) if complete => out.damaged.push((from, out.end)),
        since => out.open_damage = since,
    }
    Ok(out)
}

/// Why a segment is not read: a newer build wrote a record in it.
fn refuse_newer(path: &Path, newer: Newer) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "spool segment {}: record at byte {} has format version {}, which this build \
             does not read; start a newer build or move the segment away",
            path.display(),
            newer.offset,
            newer.version
        ),
    )
}

/// Reads one segment at start. A record that fails its checksum in the
/// middle (a flipped byte, a bad sector) is skipped by resynchronising on the
/// next whole record after it: every record around it is kept, the skipped
/// byte range is logged and counted, and the segment is rewritten without
/// it. Only a damaged tail with no whole record after it (a crash in
/// mid-write, never acknowledged) is cut. A record in a format this build
/// does not read is an error, found before anything is cut or rewritten: a
/// rollback after a format change must not delete events a newer build
/// acknowledged. Returns the records' keys and the segment's length after
/// recovery.
fn recover_segment(
    dir: &Path,
    path: &Path,
    metrics: &m::Metrics,
) -> io::Result<(Vec<Spooled>, u64)> {
    let bytes = fs::read(path)?;
    let len = bytes.len() as u64;
    let Scan {
        records,
        mut damaged,
        ..
    } = scan(&bytes, 0, true, None, false).map_err(|newer| refuse_newer(path, newer))?;
    // Damage that runs to the end of the file is a torn tail.
    let torn = match damaged.last() {
        Some(&(from, to)) if to == len => {
            damaged.pop();
            Some(from)
        }
        _ => None,
    };
    let valid: u64 = records.iter().map(|(from, to, _)| to - from).sum();
    for (from, to) in &damaged {
        metrics.counter(m::SPOOL_CORRUPT).increment(1);
        tracing::error!(
            segment = %path.display(),
            from,
            to,
            "Skipped a corrupt range in a spool segment: the acknowledged events in it \
             are lost; every whole record around it is kept."
        );
    }
    if let Some(from) = torn {
        warn!(segment = %path.display(), cut = len - from,
              "Cut a torn tail off a spool segment; those bytes were never acknowledged.");
    }
    if !damaged.is_empty() {
        // Rewrite the segment with the whole records only, so that readers
        // never meet the damage again; the old file goes only once the new
        // one is on disk.
        let tmp = path.with_extension("rewrite");
        let mut out = create_segment(&tmp)?;
        for (from, to, _) in &records {
            out.write_all(&bytes[*from as usize..*to as usize])?;
        }
        out.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)?;
    } else if torn.is_some() {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(valid)?;
        f.sync_all()?;
    }
    let found = records
        .into_iter()
        .map(|(_, _, r)| Spooled {
            pixel: is_pixel(&r.payload),
            event_id: r.event_id,
            dedup_key: r.dedup_key,
            at: r.at,
            source: r.source,
        })
        .collect();
    Ok((found, valid))
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Bytes covered by a completed fdatasync; readers never go past it.
    synced: u64,
    /// Whether the writer has moved on to a newer segment.
    sealed: bool,
    /// Whole records written to it (or found in it at start).
    records: u64,
    /// How far the drainer's reads have gone: records before this are
    /// counted in `whole`, damage before it was reported.
    seen: u64,
    /// Whole records the drainer's reads found; fewer than `records` when
    /// damage cost some.
    whole: u64,
}

impl Segment {
    fn new(seq: u64, path: PathBuf, synced: u64, records: u64, sealed: bool) -> Segment {
        Segment {
            seq,
            path,
            synced,
            sealed,
            records,
            seen: 0,
            whole: 0,
        }
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The append would pass `[spool] max_bytes`.
    #[error("the spool is full")]
    Full,
    /// The disk refused the write or the sync.
    #[error("cannot write the spool: {0}")]
    Io(#[from] io::Error),
    /// The writer thread is gone (closed, or it panicked).
    #[error("the spool writer has stopped")]
    Closed,
}

enum Msg {
    Append(Pending),
    /// Seal the active segment (the drainer has caught up with it).
    Rotate,
}

/// One append on its way to the writer.
struct Pending {
    bytes: Vec<u8>,
    reserved: Reservation,
    /// Set once nobody waits for the answer (see [`Abandon`]).
    abandoned: Arc<AtomicBool>,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// What the writer thread shares with the spool's other users. The writer
/// settles each append's share of it itself, so an append whose caller
/// stopped waiting (a timeout around [`Spool::append`]) is counted all the
/// same.
struct Shared {
    /// Bytes on disk, and in appends on their way to it, so the bound holds.
    bytes: AtomicU64,
    /// Records not yet acknowledged by Kafka.
    events: AtomicU64,
    /// Why the spool cannot take writes now, if it cannot.
    unwritable: Mutex<Option<String>>,
    /// The metrics of the gateway the spool belongs to.
    metrics: m::Metrics,
}

impl Shared {
    fn publish(&self) {
        let m = &self.metrics;
        m.gauge(m::SPOOL_BYTES)
            .set(self.bytes.load(Ordering::Acquire) as f64);
        m.gauge(m::SPOOL_EVENTS)
            .set(self.events.load(Ordering::Acquire) as f64);
    }

    fn set_unwritable(&self, why: Option<String>) {
        self.metrics
            .gauge(m::SPOOL_WRITABLE)
            .set(if why.is_some() { 0.0 } else { 1.0 });
        *self.unwritable.lock_anyway() = why;
    }
}

/// Bytes counted against `max_bytes` for a write on its way to disk. Dropped
/// before it is kept (the write was discarded, or failed, or the writer
/// stopped with it still queued), it gives them back, whoever holds it then.
struct Reservation {
    shared: Arc<Shared>,
    n: u64,
}

impl Reservation {
    /// Counts `n` bytes against the bound; `None` if they would pass `max`.
    fn take(shared: &Arc<Shared>, n: u64, max: u64) -> Option<Reservation> {
        if shared.bytes.fetch_add(n, Ordering::AcqRel) + n > max {
            shared.bytes.fetch_sub(n, Ordering::AcqRel);
            return None;
        }
        Some(Reservation {
            shared: shared.clone(),
            n,
        })
    }

    /// The bytes are on disk: they stay counted until their file is deleted.
    fn keep(mut self) {
        self.n = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.n > 0 {
            self.shared.bytes.fetch_sub(self.n, Ordering::AcqRel);
            self.shared.publish();
        }
    }
}

/// Held by [`Spool::append`] while it waits: dropped with an append future
/// that never got its answer (a timeout around it), it tells the writer that
/// nobody waits any more, and a write not yet begun is discarded instead of
/// landing behind the caller's back. Dropped after the answer it changes
/// nothing: the writer is done with the append by then.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The spool of one gateway process: appends through its writer thread,
/// reads and deletes for the drainer.
pub struct Spool {
    /// The directory's lock, held until the spool is closed.
    lock: Mutex<Option<File>>,
    dir: PathBuf,
    /// To the writer thread; taken at close, which ends the thread.
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    /// The writer thread, joined at close.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    segments: Arc<Mutex<VecDeque<Segment>>>,
    /// The counts and health the writer thread keeps.
    shared: Arc<Shared>,
    max_bytes: u64,
    /// Wakes the drainer after a sync.
    pub(crate) appended: Arc<Notify>,
    /// The faults a test injects into the gateway this spool belongs to.
    faults: Faults,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, cutting off a torn tail, and
    /// returns it with every whole record still waiting for Kafka. A record
    /// in a format version this build does not read is an error that names
    /// its segment: nothing is changed, so a newer build can still read it.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> io::Result<(Arc<Spool>, Vec<Spooled>)> {
        Spool::open_with(
            dir,
            max_bytes,
            segment_bytes,
            m::Metrics::new(),
            Default::default(),
        )
    }

    /// [`Spool::open`] recording into `metrics`, with the faults a test
    /// injects into it (and into the drainer that reads it).
    pub fn open_with(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        metrics: m::Metrics,
        faults: Faults,
    ) -> io::Result<(Arc<Spool>, Vec<Spooled>)> {
        let lock = lock_dir(dir)?;
        let Recovered {
            mut segments,
            pending,
            bytes,
        } = recover(dir, segments_on_disk(dir)?, &metrics)?;
        // The dead-letter file shares the bound: Kafka refusing every event
        // (an ACL change) must not fill the disk behind the limit's back.
        let bytes = bytes
            + fs::metadata(dir.join(DEAD_LETTER_FILE))
                .map(|m| m.len())
                .unwrap_or(0);
        let next_seq = segments.back().map_or(0, |s| s.seq + 1);
        let active = segment_path(dir, next_seq);
        let file = create_segment(&active)?;
        sync_dir(dir)?;
        segments.push_back(Segment::new(next_seq, active, 0, 0, false));
        if !pending.is_empty() {
            info!(
                events = pending.len(),
                bytes, "Recovered spooled events; they drain to Kafka when it is reachable."
            );
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            bytes: AtomicU64::new(bytes),
            events: AtomicU64::new(pending.len() as u64),
            unwritable: Mutex::new(None),
            metrics,
        });
        shared.set_unwritable(None);
        let spool = Arc::new(Spool {
            lock: Mutex::new(Some(lock)),
            dir: dir.to_owned(),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            segments: Arc::new(Mutex::new(segments)),
            shared: shared.clone(),
            max_bytes,
            appended: Arc::new(Notify::new()),
            faults: faults.clone(),
        });
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            len: 0,
            seq: next_seq,
            segment_bytes,
            segments: spool.segments.clone(),
            appended: spool.appended.clone(),
            shared,
            seal: false,
            garbage: false,
            faults,
        };
        *spool.writer.lock_anyway() = Some(writer.start(rx)?);
        spool.publish();
        Ok((spool, pending))
    }

    /// Appends `record` and resolves once it is on disk. Dropped before it
    /// resolves, the append is not written if the writer has not begun its
    /// write yet; if it has, it counts like any other.
    pub async fn append(&self, record: &Record) -> Result<(), SpoolError> {
        let bytes = record.encode();
        let Some(reserved) = Reservation::take(&self.shared, bytes.len() as u64, self.max_bytes)
        else {
            return Err(SpoolError::Full);
        };
        let abandoned = Arc::new(AtomicBool::new(false));
        let (done, rx) = oneshot::channel();
        let pending = Pending {
            bytes,
            reserved,
            abandoned: abandoned.clone(),
            done,
        };
        // An append the writer cannot take is dropped here, and gives its
        // bytes back with it.
        let sent = match &*self.tx.lock_anyway() {
            Some(tx) => tx.send(Msg::Append(pending)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(SpoolError::Closed);
        }
        let _waiting = Abandon(abandoned);
        rx.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Whether an append of a typical event would fit.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes() + 64 * 1024 <= self.max_bytes
    }

    /// Why the spool cannot take writes now: the last write or sync failed
    /// (until a later one succeeds), or the writer has stopped. Whether it is
    /// full is [`Spool::has_room`]'s question.
    pub(crate) fn health(&self) -> Option<String> {
        if self.tx.lock_anyway().is_none() {
            return Some(SpoolError::Closed.to_string());
        }
        self.shared.unwritable.lock_anyway().clone()
    }

    /// Records not yet acknowledged by Kafka. Those lost to damage the
    /// drainer found leave it when their segment is deleted.
    pub(crate) fn backlog(&self) -> u64 {
        self.shared.events.load(Ordering::Acquire)
    }

    /// Bytes on disk (counted against `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Acquire)
    }

    fn publish(&self) {
        self.shared.publish();
    }

    /// The faults a test injects into this spool's gateway.
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The metrics of this spool's gateway.
    pub(crate) fn metrics(&self) -> &m::Metrics {
        &self.shared.metrics
    }

    /// The oldest segment's synced records from byte `from` on, and whether
    /// that segment is sealed. `None` when there is nothing to read. A
    /// damaged record is skipped as at start (only it is lost, and the range
    /// is logged and counted once); damage with no whole record after it
    /// ends what the batch says there is to read.
    pub(crate) fn read_from(&self, seq: u64, from: u64) -> io::Result<Option<Batch>> {
        let (path, synced, sealed) = {
            let segs = self.segments.lock_anyway();
            match segs.iter().find(|s| s.seq == seq) {
                Some(s) => (s.path.clone(), s.synced, s.sealed),
                None => return Ok(None),
            }
        };
        if synced <= from {
            return Ok(Some(Batch {
                records: Vec::new(),
                sealed,
                synced,
            }));
        }
        let mut f = File::open(&path)?;
        let mut records = Vec::new();
        let mut damaged = Vec::new();
        let mut at = from;
        let mut since = None;
        loop {
            let mut buf = vec![0; (synced - at).min(READ_CHUNK) as usize];
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut buf)?;
            let complete = at + buf.len() as u64 == synced;
            // This build wrote every record a read meets (the start refused
            // segments of a newer format), so one claiming another version
            // is damage that happens to pass its checksum.
            let Ok(found) = scan(&buf, at, complete, since, true) else {
                unreachable!("newer records are damage here")
            };
            records.extend(found.records);
            damaged.extend(found.damaged);
            since = found.open_damage;
            // Damage longer than one read: read on until a whole record ends
            // it, since the drainer moves on by records only.
            if since.is_some() && records.is_empty() && found.end > at {
                at = found.end;
                continue;
            }
            break;
        }
        self.note_read(seq, &path, &records, &damaged);
        // Damage at the end of what is synced, with no whole record after
        // it: the drainer is done with the segment once it is past the
        // records before it.
        let readable = match damaged.last() {
            Some(&(start, end)) if end == synced => start,
            _ => synced,
        };
        Ok(Some(Batch {
            records: records.into_iter().map(|(_, end, r)| (end, r)).collect(),
            sealed,
            synced: readable,
        }))
    }

    /// Counts the whole records a read found and reports the damage it met,
    /// each once however often the drainer reads the same bytes.
    fn note_read(
        &self,
        seq: u64,
        path: &Path,
        records: &[(u64, u64, Record)],
        damaged: &[(u64, u64)],
    ) {
        let new_damage: Vec<(u64, u64)> = {
            let mut segs = self.segments.lock_anyway();
            let Some(seg) = segs.iter_mut().find(|s| s.seq == seq) else {
                return;
            };
            let seen = seg.seen;
            seg.whole += records.iter().filter(|(_, end, _)| *end > seen).count() as u64;
            let new = damaged
                .iter()
                .filter(|(_, end)| *end > seen)
                .copied()
                .collect();
            let last = records.iter().map(|(_, end, _)| *end);
            seg.seen = last
                .chain(damaged.iter().map(|(_, end)| *end))
                .fold(seen, u64::max);
            new
        };
        for (from, to) in new_damage {
            self.shared.metrics.counter(m::SPOOL_CORRUPT).increment(1);
            tracing::error!(
                segment = %path.display(),
                from,
                to,
                "Skipped a corrupt range in a spool segment while draining it: the \
                 acknowledged events in it are lost; every whole record around it is sent."
            );
        }
    }

    /// The oldest segment's sequence number.
    pub(crate) fn oldest(&self) -> u64 {
        let segs = self.segments.lock_anyway();
        segs.front().map_or(0, |s| s.seq)
    }

    /// Called by the drainer once every record of a sealed segment is in Kafka.
    pub(crate) fn remove(&self, seq: u64) -> io::Result<()> {
        let path = {
            let segs = self.segments.lock_anyway();
            let Some(seg) = segs.iter().find(|s| s.seq == seq && s.sealed) else {
                return Ok(());
            };
            seg.path.clone()
        };
        // The file goes first: if that fails the segment stays listed (and
        // counted against the bound), and the drainer tries again.
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let seg = {
            let mut segs = self.segments.lock_anyway();
            let Some(i) = segs.iter().position(|s| s.seq == seq) else {
                return Ok(());
            };
            segs.remove(i).expect("index from position")
        };
        self.shared.bytes.fetch_sub(seg.synced, Ordering::AcqRel);
        // Records lost to damage were never sent, so never acknowledged:
        // they leave the backlog with their segment.
        let lost = seg.records.saturating_sub(seg.whole);
        if lost > 0 {
            let _ = self
                .shared
                .events
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                    Some(e.saturating_sub(lost))
                });
        }
        self.publish();
        Ok(())
    }

    /// Stops the writer thread once it has written what it was given, waits
    /// for it, and lets go of the directory's lock (at the end of a run; the
    /// process exiting does the same). Later appends fail with `Closed`.
    /// Blocking: the writer may be in the middle of a sync.
    pub fn close(&self) {
        self.tx.lock_anyway().take();
        let writer = self.writer.lock_anyway().take();
        if let Some(writer) = writer {
            // A panic in it was reported by the thread itself.
            let _ = writer.join();
        }
        self.lock.lock_anyway().take();
    }

    /// Appends `record` to the dead-letter file and syncs it. Blocking. The
    /// file counts toward `max_bytes`: past it the record stays in the spool
    /// (and the spool fills, and `/readyz` says so) instead of the disk.
    pub(crate) fn dead_letter(&self, record: &Record) -> io::Result<()> {
        let path = self.dir.join(DEAD_LETTER_FILE);
        let new = !path.exists();
        let bytes = record.encode();
        let Some(reserved) = Reservation::take(&self.shared, bytes.len() as u64, self.max_bytes)
        else {
            return Err(io::Error::other(
                "the dead-letter file would pass [spool] max_bytes",
            ));
        };
        create_segment(&path).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_data()
        })?;
        reserved.keep();
        self.publish();
        if new {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Marks `n` records acknowledged without removing their segment yet.
    pub(crate) fn acknowledged(&self, n: u64) {
        let _ = self
            .shared
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some(e.saturating_sub(n))
            });
        self.publish();
    }

    /// Asks the writer to seal the active segment so it can be deleted.
    pub(crate) fn rotate(&self) {
        if let Some(tx) = &*self.tx.lock_anyway() {
            let _ = tx.send(Msg::Rotate);
        }
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Records read by the drainer, each with the byte offset just past it.
pub(crate) struct Batch {
    pub records: Vec<(u64, Record)>,
    pub sealed: bool,
    /// How far the segment's records go: its synced length, or where damage
    /// begins that no whole record follows. The drainer is done with a
    /// sealed segment once it is past this.
    pub synced: u64,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:016}.log"))
}

/// The segment files in `dir` by number, each under the name it has on disk
/// (a replayed dead-letter file may be named without the zero padding).
fn segments_on_disk(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let seq = name
                .strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// What recovery found in the segments at start.
struct Recovered {
    /// Every segment, sealed, oldest first.
    segments: VecDeque<Segment>,
    /// The whole records still waiting for Kafka.
    pending: Vec<Spooled>,
    /// Their bytes on disk.
    bytes: u64,
}

/// Recovers each segment of `found` (made private again, damage cut or
/// skipped): see [`recover_segment`].
fn recover(dir: &Path, found: Vec<(u64, PathBuf)>, metrics: &m::Metrics) -> io::Result<Recovered> {
    let mut segments = VecDeque::new();
    let mut pending = Vec::new();
    let mut bytes = 0u64;
    for (seq, path) in found {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        }
        let (records, valid) = recover_segment(dir, &path, metrics)?;
        bytes += valid;
        segments.push_back(Segment::new(seq, path, valid, records.len() as u64, true));
        pending.extend(records);
    }
    Ok(Recovered {
        segments,
        pending,
        bytes,
    })
}

/// Makes a new file's directory entry durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Owns the active segment file; the only code that writes the spool.
struct Writer {
    dir: PathBuf,
    file: File,
    /// The active segment's synced length; the file holds nothing after it
    /// unless `garbage` says so.
    len: u64,
    seq: u64,
    segment_bytes: u64,
    segments: Arc<Mutex<VecDeque<Segment>>>,
    appended: Arc<Notify>,
    shared: Arc<Shared>,
    /// The active segment is to be sealed (the drainer asked): tried again
    /// after every batch until a new segment could be made.
    seal: bool,
    /// A failed write left bytes after `len` that could not be cut off:
    /// nothing more is written to this segment.
    garbage: bool,
    faults: Faults,
}

impl Writer {
    /// Starts the writer's thread. A panic in it is reported there; appends
    /// waiting then and later get `Closed` (503).
    fn start(self, rx: mpsc::Receiver<Msg>) -> io::Result<std::thread::JoinHandle<()>> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name(tasks::SPOOL_WRITER.into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| self.run(rx));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    tasks::report_panic(&shared.metrics, tasks::SPOOL_WRITER, panic.as_ref());
                }
                shared.set_unwritable(Some(SpoolError::Closed.to_string()));
            })
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            // Everything that queued up during the last sync goes into this one.
            let mut appends = Vec::new();
            let mut rotate = false;
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                match msg {
                    Msg::Append(pending) => appends.push(pending),
                    Msg::Rotate => rotate = true,
                }
            }
            if !appends.is_empty() {
                self.write(appends);
            }
            self.seal |= rotate && self.len > 0;
            if self.seal || self.garbage || self.len >= self.segment_bytes {
                if let Err(e) = self.rotate() {
                    warn!(error = %e, "Cannot start a new spool segment; trying again after the next write.");
                }
            }
        }
    }

    /// Writes one group of appends, syncs it, and answers each.
    fn write(&mut self, appends: Vec<Pending>) {
        self.faults.spool_write();
        // Nothing may land after bytes a failed write left behind: cut them
        // off now, or go on in a new segment.
        if self.garbage {
            if let Err(e) = self.truncate().or_else(|_| self.rotate()) {
                warn!(error = %e, "Cannot write the spool; those postbacks get 503.");
                self.fail(appends, &e);
                return;
            }
        }
        // The last moment to drop an append whose caller stopped waiting: its
        // sender was answered 503 and sends it again, so it is not written.
        // Dropping it gives its bytes back.
        let live: Vec<Pending> = appends
            .into_iter()
            .filter(|p| !p.abandoned.load(Ordering::Acquire))
            .collect();
        if live.is_empty() {
            return;
        }
        let mut buf = Vec::with_capacity(live.iter().map(|p| p.bytes.len()).sum());
        for p in &live {
            buf.extend_from_slice(&p.bytes);
        }
        match self.write_and_sync(&buf) {
            Ok(()) => {
                let n = live.len() as u64;
                // Counted before the drainer can read them, so that its
                // acknowledgements never come first.
                self.shared.events.fetch_add(n, Ordering::AcqRel);
                self.len += buf.len() as u64;
                self.set_synced(n);
                self.shared.set_unwritable(None);
                let waiting: Vec<_> = live
                    .into_iter()
                    .map(|p| {
                        p.reserved.keep();
                        p.done
                    })
                    .collect();
                // The gauges are right before anyone hears of the write.
                self.shared.publish();
                self.shared.metrics.counter(m::SPOOL_SYNCS).increment(1);
                for done in waiting {
                    let _ = done.send(Ok(()));
                }
                self.appended.notify_one();
            }
            Err(e) => {
                warn!(error = %e, "Cannot write the spool; those postbacks get 503.");
                // Keep the file consistent with what was acknowledged.
                if let Err(cut) = self.truncate() {
                    warn!(error = %cut, "Cannot cut a failed write off a spool segment; sealing it.");
                    self.garbage = true;
                }
                self.fail(live, &e);
            }
        }
    }

    fn write_and_sync(&mut self, buf: &[u8]) -> io::Result<()> {
        self.faults.spool_slow_write();
        if self.faults.spool_disk_full() {
            // What a full disk leaves: part of the batch in the file.
            self.file.write_all(&buf[..buf.len() / 2])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.file.write_all(buf)?;
        self.file.sync_data()
    }

    /// Answers `appends` with `e`; their bytes are given back, and the spool
    /// says it cannot be written, before anyone hears of it.
    fn fail(&self, appends: Vec<Pending>, e: &io::Error) {
        let waiting: Vec<_> = appends.into_iter().map(|p| p.done).collect();
        self.shared.set_unwritable(Some(e.to_string()));
        for done in waiting {
            // Each waiter gets its own copy, with the OS's code where there is one.
            let e = match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            };
            let _ = done.send(Err(SpoolError::Io(e)));
        }
    }

    /// Cuts what a failed write left off the active segment.
    fn truncate(&mut self) -> io::Result<()> {
        self.faults.spool_truncate()?;
        self.file.set_len(self.len)?;
        self.garbage = false;
        Ok(())
    }

    fn set_synced(&self, records: u64) {
        let mut segs = self.segments.lock_anyway();
        if let Some(s) = segs.iter_mut().find(|s| s.seq == self.seq) {
            s.synced = self.len;
            s.records += records;
        }
    }

    /// Seals the active segment at its synced length and goes on in a new one.
    fn rotate(&mut self) -> io::Result<()> {
        let seq = self.seq + 1;
        let path = segment_path(&self.dir, seq);
        self.faults.spool_create()?;
        let file = create_segment(&path)?;
        sync_dir(&self.dir)?;
        let mut segs = self.segments.lock_anyway();
        if let Some(s) = segs.iter_mut().find(|s| s.seq == self.seq) {
            s.sealed = true;
        }
        segs.push_back(Segment::new(seq, path, 0, 0, false));
        drop(segs);
        self.file = file;
        self.seq = seq;
        self.len = 0;
        self.seal = false;
        self.garbage = false;
        self.appended.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory its owner's alone, as a spool directory must be.
    fn tempdir() -> io::Result<tempfile::TempDir> {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
    }

    fn record(i: u32) -> Record {
        Record {
            event_id: Uuid::from_u128(u128::from(i) + 1000),
            dedup_key: u128::from(i) * 7,
            at: 1_700_000_000 + i,
            source: "default".into(),
            key: format!("token-{i}"),
            payload: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    /// The whole records of a segment's bytes, each with the offset just
    /// past it, and how far they go.
    fn read_records(bytes: &[u8]) -> (Vec<(u64, Record)>, u64) {
        let Ok(found) = scan(bytes, 0, true, None, false) else {
            panic!("a record of a newer format");
        };
        let valid = found.records.last().map_or(0, |r| r.1);
        let records = found.records.into_iter().map(|(_, end, r)| (end, r));
        (records.collect(), valid)
    }

    fn keys(range: impl IntoIterator<Item = u32>) -> Vec<Spooled> {
        range
            .into_iter()
            .map(|i| {
                let r = record(i);
                Spooled {
                    pixel: is_pixel(&r.payload),
                    event_id: r.event_id,
                    dedup_key: r.dedup_key,
                    at: r.at,
                    source: r.source,
                }
            })
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let r = record(5);
        let bytes = r.encode();
        let (recs, valid) = read_records(&bytes);
        assert_eq!(valid, bytes.len() as u64);
        assert_eq!(recs[0].1, r);
    }

    #[tokio::test]
    async fn appended_records_survive_a_reopen() {
        let dir = tempdir().unwrap();
        {
            let (spool, pending) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            assert!(pending.is_empty());
            for i in 0..10 {
                spool.append(&record(i)).await.unwrap();
            }
            assert_eq!(spool.backlog(), 10);
        }
        let (_, pending) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(pending, keys(0..10));
    }

    #[tokio::test]
    async fn a_torn_last_record_is_cut_and_the_whole_ones_kept() {
        let dir = tempdir().unwrap();
        {
            let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            for i in 0..3 {
                spool.append(&record(i)).await.unwrap();
            }
        }
        let seg = segment_path(dir.path(), 0);
        let whole = fs::metadata(&seg).unwrap().len();
        // A crash in mid-write: half of a fourth record.
        let torn = record(3).encode();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);
        let (spool, pending) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(pending, keys(0..3));
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            whole,
            "the torn tail is cut off"
        );
        // New appends go to a fresh segment and are read back after the old ones.
        spool.append(&record(9)).await.unwrap();
        drop(spool);
        let (_, pending) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(pending.len(), 4);
        assert_eq!(pending[3], keys(9..10)[0]);
    }

    #[tokio::test]
    async fn a_corrupt_record_in_the_middle_costs_that_record_only() {
        let dir = tempdir().unwrap();
        {
            let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            for i in 0..5 {
                spool.append(&record(i)).await.unwrap();
            }
        }
        let seg = segment_path(dir.path(), 0);
        let one = record(0).encode().len();
        for (what, offset) in [("a body byte", one + 20), ("a length byte", 3 * one + 1)] {
            let mut bytes = fs::read(&seg).unwrap();
            bytes[offset] ^= 0xff;
            fs::write(&seg, &bytes).unwrap();
            let (spool, pending) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            drop(spool);
            match what {
                "a body byte" => assert_eq!(pending, keys([0, 2, 3, 4]), "{what}"),
                // After the first rewrite the fourth record in the file is record 4.
                _ => assert_eq!(pending, keys([0, 2, 3]), "{what}"),
            }
            // The segment was rewritten without the damage: reading it again
            // finds exactly the same records and nothing to skip.
            let (whole, valid) = read_records(&fs::read(&seg).unwrap());
            assert_eq!(valid, fs::metadata(&seg).unwrap().len(), "{what}");
            assert_eq!(whole.len(), pending.len(), "{what}");
        }
    }

    #[test]
    fn damage_at_the_end_is_a_torn_tail_and_is_cut() {
        let dir = tempdir().unwrap();
        let seg = dir.path().join("seg-0.log");
        let mut bytes: Vec<u8> = (0..3).flat_map(|i| record(i).encode()).collect();
        let whole = bytes.len();
        let mut last = record(3).encode();
        last[30] ^= 0xff;
        bytes.extend_from_slice(&last);
        fs::write(&seg, &bytes).unwrap();
        let (found, valid) = recover_segment(dir.path(), &seg, &m::Metrics::new()).unwrap();
        assert_eq!(found, keys(0..3));
        assert_eq!(valid, whole as u64);
        assert_eq!(fs::metadata(&seg).unwrap().len(), whole as u64);
    }

    #[tokio::test]
    async fn a_full_spool_refuses_appends() {
        let dir = tempdir().unwrap();
        let one = record(0).encode().len() as u64;
        let (spool, _) = Spool::open(dir.path(), one * 2, 1 << 20).unwrap();
        spool.append(&record(0)).await.unwrap();
        spool.append(&record(1)).await.unwrap();
        assert!(matches!(
            spool.append(&record(2)).await,
            Err(SpoolError::Full)
        ));
        assert_eq!(spool.backlog(), 2);
    }

    #[tokio::test]
    async fn concurrent_appends_share_syncs() {
        let dir = tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 30, 1 << 30).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = spool.clone();
            tasks.push(tokio::spawn(
                async move { s.append(&record(i)).await.is_ok() },
            ));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(spool.backlog(), 200);
        drop(spool);
        let (_, pending) = Spool::open(dir.path(), 1 << 30, 1 << 30).unwrap();
        assert_eq!(pending.len(), 200);
    }

    #[tokio::test]
    async fn segments_rotate_by_size() {
        let dir = tempdir().unwrap();
        let one = record(0).encode().len() as u64;
        let (spool, _) = Spool::open(dir.path(), 1 << 20, one * 3).unwrap();
        for i in 0..10 {
            spool.append(&record(i)).await.unwrap();
        }
        let segs = fs::read_dir(dir.path()).unwrap().count();
        assert!(segs >= 3, "{segs} segments");
        drop(spool);
        let (_, pending) = Spool::open(dir.path(), 1 << 20, one * 3).unwrap();
        assert_eq!(pending, keys(0..10));
    }

    /// Flips one byte of the file at `offset`, in place, as a bad sector
    /// would under a running gateway.
    fn flip(path: &Path, offset: u64) {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&[b[0] ^ 0x40]).unwrap();
    }

    fn sealed(spool: &Spool, seq: u64) -> bool {
        let segs = spool.segments.lock().unwrap();
        segs.iter().any(|s| s.seq == seq && s.sealed)
    }

    /// Segment 0 sealed with records 0-3 in it, and records 4 and 5 in
    /// segment 1.
    async fn two_segments(dir: &Path) -> (Arc<Spool>, u64) {
        let one = record(0).encode().len() as u64;
        let (spool, _) = Spool::open(dir, 1 << 20, one * 4).unwrap();
        for i in 0..6 {
            spool.append(&record(i)).await.unwrap();
        }
        assert!(sealed(&spool, 0));
        (spool, one)
    }

    #[tokio::test]
    async fn damage_found_while_draining_costs_that_record_only() {
        let dir = tempdir().unwrap();
        let (spool, one) = two_segments(dir.path()).await;
        // A bit flips in the middle of the first record's body while the
        // gateway runs.
        flip(&segment_path(dir.path(), 0), one / 2);
        let batch = spool.read_from(0, 0).unwrap().unwrap();
        let ids: Vec<Uuid> = batch.records.iter().map(|(_, r)| r.event_id).collect();
        let want: Vec<Uuid> = (1..4).map(|i| record(i).event_id).collect();
        assert_eq!(ids, want, "the records after the damaged one are read");
        let ends: Vec<u64> = batch.records.iter().map(|(end, _)| *end).collect();
        assert_eq!(ends, [2 * one, 3 * one, 4 * one]);
        assert!(batch.sealed);
        assert_eq!(batch.synced, 4 * one);
        // Read again (a retried round), the damage is the same and counted once.
        let again = spool.read_from(0, 0).unwrap().unwrap();
        assert_eq!(again.records.len(), 3);
        // Drained and deleted, the segment takes the lost record off the
        // backlog with it: what is left is segment 1's two records.
        assert_eq!(spool.backlog(), 6);
        spool.acknowledged(3);
        spool.remove(0).unwrap();
        assert_eq!(spool.backlog(), 2);
        assert_eq!(spool.bytes(), 2 * one);
        let rest = spool.read_from(1, 0).unwrap().unwrap();
        assert_eq!(rest.records.len(), 2);
    }

    #[tokio::test]
    async fn damage_at_the_end_of_a_segment_does_not_hold_the_drainer() {
        let dir = tempdir().unwrap();
        let (spool, one) = two_segments(dir.path()).await;
        // The last record of the sealed segment is damaged: no whole record
        // follows it to resynchronise on.
        flip(&segment_path(dir.path(), 0), 3 * one + one / 2);
        let batch = spool.read_from(0, 0).unwrap().unwrap();
        assert_eq!(batch.records.len(), 3);
        assert_eq!(
            batch.synced,
            3 * one,
            "the records end where the damage begins"
        );
        // Past the last whole record there is nothing left to read, so the
        // drainer (at `pos >= synced` of a sealed segment) deletes it.
        let rest = spool.read_from(0, 3 * one).unwrap().unwrap();
        assert!(rest.records.is_empty());
        assert!(rest.sealed && rest.synced <= 3 * one);
        spool.acknowledged(3);
        spool.remove(0).unwrap();
        assert_eq!(spool.backlog(), 2);
    }

    #[tokio::test]
    async fn damage_in_the_segment_being_written_is_passed_by_later_records() {
        let dir = tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        let one = record(0).encode().len() as u64;
        spool.append(&record(0)).await.unwrap();
        spool.append(&record(1)).await.unwrap();
        flip(&segment_path(dir.path(), 0), one + 10);
        let batch = spool.read_from(0, 0).unwrap().unwrap();
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.synced, one);
        spool.append(&record(2)).await.unwrap();
        let batch = spool.read_from(0, one).unwrap().unwrap();
        let ids: Vec<Uuid> = batch.records.iter().map(|(_, r)| r.event_id).collect();
        assert_eq!(ids, [record(2).event_id]);
        assert_eq!(batch.synced, 3 * one);
    }

    /// `record(i)` as a newer build might write it: another version byte,
    /// and a checksum that holds.
    fn newer(i: u32) -> Vec<u8> {
        let mut bytes = record(i).encode();
        bytes[HEADER] = VERSION + 1;
        let crc = crc32fast::hash(&bytes[HEADER..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn a_record_of_a_newer_format_stops_the_start_and_is_kept() {
        let one = record(0).encode().len();
        let mut damaged = record(1).encode();
        damaged[20] ^= 0xff;
        let torn = record(3).encode()[..one / 2].to_vec();
        for (what, parts, offset) in [
            (
                "in the middle",
                vec![record(0).encode(), newer(1), record(2).encode()],
                one,
            ),
            (
                "at the end",
                vec![record(0).encode(), record(1).encode(), newer(2)],
                2 * one,
            ),
            (
                "after damage",
                vec![record(0).encode(), damaged.clone(), newer(2)],
                2 * one,
            ),
            (
                "before a torn tail",
                vec![newer(0), record(1).encode(), torn.clone()],
                0,
            ),
        ] {
            let dir = tempdir().unwrap();
            let seg = segment_path(dir.path(), 7);
            let bytes = parts.concat();
            fs::write(&seg, &bytes).unwrap();
            let Err(e) = Spool::open(dir.path(), 1 << 20, 1 << 20) else {
                panic!("{what}: the spool opened");
            };
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}");
            let msg = e.to_string();
            assert!(msg.contains("seg-0000000000000007.log"), "{what}: {msg}");
            assert!(
                msg.contains(&format!("record at byte {offset} ")),
                "{what}: {msg}"
            );
            assert!(msg.contains("format version 2"), "{what}: {msg}");
            assert_eq!(
                fs::read(&seg).unwrap(),
                bytes,
                "{what}: the segment is untouched"
            );
            assert_eq!(
                segments_on_disk(dir.path()).unwrap().len(),
                1,
                "{what}: no segment was added"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_spool_says_it_cannot_be_written() {
        let dir = tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(spool.health(), None);
        spool.close();
        assert_eq!(
            spool.health().as_deref(),
            Some("the spool writer has stopped")
        );
        assert!(matches!(
            spool.append(&record(0)).await,
            Err(SpoolError::Closed)
        ));
        assert_eq!(spool.bytes(), 0, "a refused append is not counted");
    }
}

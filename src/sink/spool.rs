//! The durable spool: an append-only log of events Kafka could not take, on
//! local disk, drained to Kafka when it is back.
//!
//! Records are `[len u32][crc32 u32][body]`, little-endian, in segment files
//! `seg-<seq>.log` that rotate by size. One writer thread appends and commits
//! in groups: every record that arrived while the previous `fdatasync` ran is
//! covered by the next one, and each append is acknowledged only after the sync
//! that covers it. A segment is deleted only once every record in it is
//! acknowledged by Kafka. On start, a torn last record (a crash mid-write, never
//! acknowledged) fails its checksum and is cut off.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::{oneshot, Notify};
use tracing::{info, warn};
use uuid::Uuid;

use crate::metrics as m;
use crate::tasks;

const HEADER: usize = 8;
const VERSION: u8 = 1;
/// No single record comes near this; a larger length is corruption.
const MAX_RECORD: usize = 4 << 20;
/// The drainer reads at most this much at a time (more than one record's worth).
const READ_CHUNK: u64 = 8 << 20;

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
        builder.mode(0o700);
        builder.create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
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
}

/// A whole, checksummed record at `pos` of `bytes`, and its length with the header.
fn record_at(bytes: &[u8], pos: usize) -> Option<(usize, Record)> {
    let header = bytes.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return None;
    }
    let body = bytes.get(pos + HEADER..pos + HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((HEADER + len, Record::decode(body)?))
}

/// Reads one segment at start. A record that fails its checksum in the
/// middle (a flipped byte, a bad sector) is skipped by resynchronising on the
/// next whole record after it: every record around it is kept, the skipped
/// byte range is logged and counted, and the segment is rewritten without
/// it. Only a damaged tail with no whole record after it (a crash in
/// mid-write, never acknowledged) is cut. Returns the records' keys and the
/// segment's length after recovery.
fn recover_segment(dir: &Path, path: &Path) -> io::Result<(Vec<Spooled>, u64)> {
    let bytes = fs::read(path)?;
    let mut found = Vec::new();
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let mut skipped: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        if let Some((len, r)) = record_at(&bytes, pos) {
            found.push(Spooled {
                event_id: r.event_id,
                dedup_key: r.dedup_key,
                at: r.at,
                source: r.source,
            });
            kept.push((pos, pos + len));
            pos += len;
            continue;
        }
        match (pos + 1..bytes.len()).find(|&p| record_at(&bytes, p).is_some()) {
            Some(next) => {
                skipped.push((pos, next));
                pos = next;
            }
            None => break,
        }
    }
    let valid: u64 = kept.iter().map(|(a, b)| (b - a) as u64).sum();
    for (from, to) in &skipped {
        metrics::counter!(m::SPOOL_CORRUPT).increment(1);
        tracing::error!(
            segment = %path.display(),
            from,
            to,
            "Skipped a corrupt range in a spool segment: the acknowledged events in it \
             are lost; every whole record around it is kept."
        );
    }
    if pos < bytes.len() {
        warn!(segment = %path.display(), cut = bytes.len() - pos,
              "Cut a torn tail off a spool segment; those bytes were never acknowledged.");
    }
    if !skipped.is_empty() {
        // Rewrite the segment with the whole records only, so that readers
        // never meet the damage again; the old file goes only once the new
        // one is on disk.
        let tmp = path.with_extension("rewrite");
        let mut out = create_segment(&tmp)?;
        for (a, b) in &kept {
            out.write_all(&bytes[*a..*b])?;
        }
        out.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)?;
    } else if pos < bytes.len() {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(valid)?;
        f.sync_all()?;
    }
    Ok((found, valid))
}

/// Reads whole, checksummed records from `bytes`; returns them with the
/// length of the valid prefix (a torn or corrupt tail is not part of it).
fn read_records(bytes: &[u8]) -> (Vec<(u64, Record)>, u64) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while bytes.len() - pos >= HEADER {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD || bytes.len() - pos - HEADER < len {
            break;
        }
        let body = &bytes[pos + HEADER..pos + HEADER + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let Some(rec) = Record::decode(body) else {
            break;
        };
        pos += HEADER + len;
        out.push((pos as u64, rec));
    }
    (out, pos as u64)
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Bytes covered by a completed fdatasync; readers never go past it.
    synced: u64,
    /// Whether the writer has moved on to a newer segment.
    sealed: bool,
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
    Append(Vec<u8>, oneshot::Sender<Result<(), SpoolError>>),
    /// Seal the active segment (the drainer has caught up with it).
    Rotate,
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
    /// Bytes on disk, counted when an append is accepted so the bound holds.
    bytes: Arc<AtomicU64>,
    /// Records not yet acknowledged by Kafka.
    events: Arc<AtomicU64>,
    max_bytes: u64,
    /// Wakes the drainer after a sync.
    pub(crate) appended: Arc<Notify>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, cutting off a torn tail, and
    /// returns it with every whole record still waiting for Kafka.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> io::Result<(Arc<Spool>, Vec<Spooled>)> {
        let lock = lock_dir(dir)?;
        let Recovered {
            mut segments,
            pending,
            bytes,
        } = recover(dir, segments_on_disk(dir)?)?;
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
        segments.push_back(Segment {
            seq: next_seq,
            path: active,
            synced: 0,
            sealed: false,
        });
        if !pending.is_empty() {
            info!(
                events = pending.len(),
                bytes, "Recovered spooled events; they drain to Kafka when it is reachable."
            );
        }
        let (tx, rx) = mpsc::channel();
        let spool = Arc::new(Spool {
            lock: Mutex::new(Some(lock)),
            dir: dir.to_owned(),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            segments: Arc::new(Mutex::new(segments)),
            bytes: Arc::new(AtomicU64::new(bytes)),
            events: Arc::new(AtomicU64::new(pending.len() as u64)),
            max_bytes,
            appended: Arc::new(Notify::new()),
        });
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            len: 0,
            seq: next_seq,
            segment_bytes,
            segments: spool.segments.clone(),
            appended: spool.appended.clone(),
        };
        *spool.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer.start(rx)?);
        spool.publish();
        Ok((spool, pending))
    }

    /// Appends `record` and resolves once it is on disk.
    pub async fn append(&self, record: &Record) -> Result<(), SpoolError> {
        let bytes = record.encode();
        let n = bytes.len() as u64;
        if self.bytes.fetch_add(n, Ordering::AcqRel) + n > self.max_bytes {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(SpoolError::Full);
        }
        let (done, rx) = oneshot::channel();
        let sent = match &*self.tx.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(tx) => tx.send(Msg::Append(bytes, done)).is_ok(),
            None => false,
        };
        if !sent {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(SpoolError::Closed);
        }
        let result = rx.await.unwrap_or(Err(SpoolError::Closed));
        match &result {
            Ok(()) => {
                self.events.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => {
                self.bytes.fetch_sub(n, Ordering::AcqRel);
            }
        }
        self.publish();
        result
    }

    /// Whether an append of a typical event would fit.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes.load(Ordering::Acquire) + 64 * 1024 <= self.max_bytes
    }

    /// Records not yet acknowledged by Kafka.
    pub(crate) fn backlog(&self) -> u64 {
        self.events.load(Ordering::Acquire)
    }

    /// Bytes on disk (counted against `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    fn publish(&self) {
        metrics::gauge!(m::SPOOL_BYTES).set(self.bytes() as f64);
        metrics::gauge!(m::SPOOL_EVENTS).set(self.backlog() as f64);
    }

    /// The oldest segment's synced records from byte `from` on, and whether
    /// that segment is sealed. `None` when there is nothing to read.
    pub(crate) fn read_from(&self, seq: u64, from: u64) -> io::Result<Option<Batch>> {
        let (path, synced, sealed) = {
            let segs = self.segments.lock().unwrap_or_else(|p| p.into_inner());
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
        f.seek(SeekFrom::Start(from))?;
        let mut buf = vec![0; (synced - from).min(READ_CHUNK) as usize];
        f.read_exact(&mut buf)?;
        let (records, _) = read_records(&buf);
        Ok(Some(Batch {
            records: records
                .into_iter()
                .map(|(end, r)| (from + end, r))
                .collect(),
            sealed,
            synced,
        }))
    }

    /// The oldest segment's sequence number.
    pub(crate) fn oldest(&self) -> u64 {
        let segs = self.segments.lock().unwrap_or_else(|p| p.into_inner());
        segs.front().map_or(0, |s| s.seq)
    }

    /// Called by the drainer once every record of a sealed segment is in Kafka.
    pub(crate) fn remove(&self, seq: u64) -> io::Result<()> {
        let path = {
            let segs = self.segments.lock().unwrap_or_else(|p| p.into_inner());
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
            let mut segs = self.segments.lock().unwrap_or_else(|p| p.into_inner());
            let Some(i) = segs.iter().position(|s| s.seq == seq) else {
                return Ok(());
            };
            segs.remove(i).expect("index from position")
        };
        self.bytes.fetch_sub(seg.synced, Ordering::AcqRel);
        self.publish();
        Ok(())
    }

    /// Stops the writer thread once it has written what it was given, waits
    /// for it, and lets go of the directory's lock (at the end of a run; the
    /// process exiting does the same). Later appends fail with `Closed`.
    /// Blocking: the writer may be in the middle of a sync.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            // A panic in it was reported by the thread itself.
            let _ = writer.join();
        }
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Appends `record` to the dead-letter file and syncs it. Blocking. The
    /// file counts toward `max_bytes`: past it the record stays in the spool
    /// (and the spool fills, and `/readyz` says so) instead of the disk.
    pub(crate) fn dead_letter(&self, record: &Record) -> io::Result<()> {
        let path = self.dir.join(DEAD_LETTER_FILE);
        let new = !path.exists();
        let bytes = record.encode();
        let n = bytes.len() as u64;
        if self.bytes.fetch_add(n, Ordering::AcqRel) + n > self.max_bytes {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(io::Error::other(
                "the dead-letter file would pass [spool] max_bytes",
            ));
        }
        let written = create_segment(&path).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_data()
        });
        if let Err(e) = written {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(e);
        }
        self.publish();
        if new {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Marks `n` records acknowledged without removing their segment yet.
    pub(crate) fn acknowledged(&self, n: u64) {
        let _ = self
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some(e.saturating_sub(n))
            });
        self.publish();
    }

    /// Asks the writer to seal the active segment so it can be deleted.
    pub(crate) fn rotate(&self) {
        if let Some(tx) = &*self.tx.lock().unwrap_or_else(|p| p.into_inner()) {
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
fn recover(dir: &Path, found: Vec<(u64, PathBuf)>) -> io::Result<Recovered> {
    let mut segments = VecDeque::new();
    let mut pending = Vec::new();
    let mut bytes = 0u64;
    for (seq, path) in found {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        }
        let (records, valid) = recover_segment(dir, &path)?;
        bytes += valid;
        pending.extend(records);
        segments.push_back(Segment {
            seq,
            path,
            synced: valid,
            sealed: true,
        });
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
    len: u64,
    seq: u64,
    segment_bytes: u64,
    segments: Arc<Mutex<VecDeque<Segment>>>,
    appended: Arc<Notify>,
}

impl Writer {
    /// Starts the writer's thread. A panic in it is reported there; appends
    /// waiting then and later get `Closed` (503).
    fn start(self, rx: mpsc::Receiver<Msg>) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(tasks::SPOOL_WRITER.into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| self.run(rx));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    tasks::report_panic(tasks::SPOOL_WRITER, panic.as_ref());
                }
            })
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            // Everything that queued up during the last sync goes into this one.
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let mut waiters = Vec::new();
            let mut buf = Vec::new();
            let mut rotate = false;
            for msg in batch {
                match msg {
                    Msg::Append(bytes, done) => {
                        buf.extend_from_slice(&bytes);
                        waiters.push(done);
                    }
                    Msg::Rotate => rotate = true,
                }
            }
            if !buf.is_empty() {
                super::faults::spool_write();
                let result = self
                    .file
                    .write_all(&buf)
                    .and_then(|()| self.file.sync_data());
                match result {
                    Ok(()) => {
                        self.len += buf.len() as u64;
                        self.set_synced();
                        for w in waiters {
                            let _ = w.send(Ok(()));
                        }
                        metrics::counter!(m::SPOOL_SYNCS).increment(1);
                        self.appended.notify_one();
                    }
                    Err(e) => {
                        warn!(error = %e, "Cannot write the spool; those postbacks get 503.");
                        // Keep the file consistent with what was acknowledged.
                        let _ = self.file.set_len(self.len);
                        for w in waiters {
                            let _ = w
                                .send(Err(SpoolError::Io(io::Error::new(e.kind(), e.to_string()))));
                        }
                    }
                }
            }
            if (rotate && self.len > 0) || self.len >= self.segment_bytes {
                if let Err(e) = self.rotate() {
                    warn!(error = %e, "Cannot start a new spool segment.");
                }
            }
        }
    }

    fn set_synced(&self) {
        let mut segs = self.segments.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = segs.iter_mut().find(|s| s.seq == self.seq) {
            s.synced = self.len;
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        let seq = self.seq + 1;
        let path = segment_path(&self.dir, seq);
        let file = create_segment(&path)?;
        sync_dir(&self.dir)?;
        let mut segs = self.segments.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = segs.iter_mut().find(|s| s.seq == self.seq) {
            s.sealed = true;
        }
        segs.push_back(Segment {
            seq,
            path,
            synced: 0,
            sealed: false,
        });
        drop(segs);
        self.file = file;
        self.seq = seq;
        self.len = 0;
        self.appended.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn keys(range: impl IntoIterator<Item = u32>) -> Vec<Spooled> {
        range
            .into_iter()
            .map(|i| {
                let r = record(i);
                Spooled {
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
        let dir = tempfile::tempdir().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("seg-0.log");
        let mut bytes: Vec<u8> = (0..3).flat_map(|i| record(i).encode()).collect();
        let whole = bytes.len();
        let mut last = record(3).encode();
        last[30] ^= 0xff;
        bytes.extend_from_slice(&last);
        fs::write(&seg, &bytes).unwrap();
        let (found, valid) = recover_segment(dir.path(), &seg).unwrap();
        assert_eq!(found, keys(0..3));
        assert_eq!(valid, whole as u64);
        assert_eq!(fs::metadata(&seg).unwrap().len(), whole as u64);
    }

    #[tokio::test]
    async fn a_full_spool_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
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
}

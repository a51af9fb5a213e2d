//! Faults a test injects into a gateway running in its own process, to show
//! what the gateway does when the disk stalls or a task panics. They exist
//! only with the `fault-injection` feature, which the test suite turns on
//! (a dev-dependency of the crate on itself) and a release build never has:
//! without it every check below is an empty inline function.

#[cfg(not(feature = "fault-injection"))]
mod off {
    #[inline(always)]
    pub(crate) fn spool_write() {}
    #[inline(always)]
    pub(crate) fn spool_slow_write() {}
    #[inline(always)]
    pub(crate) fn spool_disk_full() -> bool {
        false
    }
    #[inline(always)]
    pub(crate) fn spool_truncate() -> std::io::Result<()> {
        Ok(())
    }
    #[inline(always)]
    pub(crate) fn spool_create() -> std::io::Result<()> {
        Ok(())
    }
    #[inline(always)]
    pub(crate) fn drain_delivery_panics() -> bool {
        false
    }
    #[inline(always)]
    pub(crate) fn sweeper_panics() -> bool {
        false
    }
    #[inline(always)]
    pub(crate) fn drainer_panics() -> bool {
        false
    }
}
#[cfg(not(feature = "fault-injection"))]
pub(crate) use off::*;

#[cfg(feature = "fault-injection")]
pub use on::*;

#[cfg(feature = "fault-injection")]
mod on {
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

    /// The spool writer sleeps this long before each write (a stalled disk).
    pub static SPOOL_WRITE_STALL_MS: AtomicU64 = AtomicU64::new(0);

    /// The spool's disk takes this long over each write the writer has begun:
    /// appends whose callers stop waiting meanwhile are written all the same.
    pub static SPOOL_SLOW_WRITE_MS: AtomicU64 = AtomicU64::new(0);

    /// While set, spool writes fail as on a full disk: half of each batch
    /// reaches the file, then the write fails with ENOSPC.
    pub static SPOOL_DISK_FULL: AtomicBool = AtomicBool::new(false);

    /// While set, the spool cannot cut a failed write's bytes off its segment.
    pub static SPOOL_TRUNCATE_FAILS: AtomicBool = AtomicBool::new(false);

    /// While set, the spool cannot create a new segment file.
    pub static SPOOL_CREATE_FAILS: AtomicBool = AtomicBool::new(false);

    /// The drainer's next this-many deliveries panic.
    pub static DRAIN_DELIVERY_PANICS: AtomicU32 = AtomicU32::new(0);

    /// Sleeps while the disk is told to stall.
    pub(crate) fn spool_write() {
        let ms = SPOOL_WRITE_STALL_MS.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    /// Sleeps while the disk is told to be slow, once a write has begun.
    pub(crate) fn spool_slow_write() {
        let ms = SPOOL_SLOW_WRITE_MS.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    /// Whether the spool's disk is told to be full.
    pub(crate) fn spool_disk_full() -> bool {
        SPOOL_DISK_FULL.load(Ordering::Relaxed)
    }

    /// Fails when the spool is told it cannot cut a segment.
    pub(crate) fn spool_truncate() -> std::io::Result<()> {
        if SPOOL_TRUNCATE_FAILS.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("truncation refused by a test"));
        }
        Ok(())
    }

    /// Fails when the spool is told it cannot create a segment.
    pub(crate) fn spool_create() -> std::io::Result<()> {
        if SPOOL_CREATE_FAILS.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("segment creation refused by a test"));
        }
        Ok(())
    }

    /// Whether this drain delivery is to panic (and counts it).
    pub(crate) fn drain_delivery_panics() -> bool {
        DRAIN_DELIVERY_PANICS
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// The dedup sweeper panics at its next round (a background task's panic).
    pub static SWEEPER_PANICS: AtomicBool = AtomicBool::new(false);

    /// Whether the sweeper is to panic now (once per setting).
    pub(crate) fn sweeper_panics() -> bool {
        SWEEPER_PANICS.swap(false, Ordering::Relaxed)
    }

    /// The spool's drainer panics at its next round (a task restarted after a panic).
    pub static DRAINER_PANICS: AtomicBool = AtomicBool::new(false);

    /// Whether the drainer is to panic now (once per setting).
    pub(crate) fn drainer_panics() -> bool {
        DRAINER_PANICS.swap(false, Ordering::Relaxed)
    }
}

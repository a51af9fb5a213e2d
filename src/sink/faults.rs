//! Faults a test injects into one gateway, to show what it does when the
//! disk stalls or a task panics. A test makes a [`Faults`], hands it to the
//! gateway ([`crate::run_with`]) or to a spool ([`super::spool::Spool::open_with`])
//! and sets its switches; the spool writer, the drainer and the sweeper read
//! them through the gateway's own state. The switches exist only with the
//! `fault-injection` feature, which the test suite turns on (a dev-dependency
//! of the crate on itself) and a release build never has: without it
//! `Faults` is a zero-sized value and every check an empty inline function.

#[cfg(not(feature = "fault-injection"))]
mod off {
    /// No switches: a release build injects no faults.
    #[derive(Clone, Debug, Default)]
    pub struct Faults;

    impl Faults {
        #[inline(always)]
        pub(crate) fn spool_write(&self) {}
        #[inline(always)]
        pub(crate) fn spool_slow_write(&self) {}
        #[inline(always)]
        pub(crate) fn spool_disk_full(&self) -> bool {
            false
        }
        #[inline(always)]
        pub(crate) fn spool_truncate(&self) -> std::io::Result<()> {
            Ok(())
        }
        #[inline(always)]
        pub(crate) fn spool_create(&self) -> std::io::Result<()> {
            Ok(())
        }
        #[inline(always)]
        pub(crate) fn drain_delivery_panics(&self) -> bool {
            false
        }
        #[inline(always)]
        pub(crate) fn sweeper_panics(&self) -> bool {
            false
        }
        #[inline(always)]
        pub(crate) fn drainer_panics(&self) -> bool {
            false
        }
    }
}
#[cfg(not(feature = "fault-injection"))]
pub use off::Faults;

#[cfg(feature = "fault-injection")]
pub use on::{Faults, Switches};

#[cfg(feature = "fault-injection")]
mod on {
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
    use std::sync::Arc;

    /// One gateway's switches; clones share them. All off to begin with.
    #[derive(Clone, Debug, Default)]
    pub struct Faults(Arc<Switches>);

    impl std::ops::Deref for Faults {
        type Target = Switches;

        fn deref(&self) -> &Switches {
            &self.0
        }
    }

    /// The switches a test sets.
    #[derive(Debug, Default)]
    pub struct Switches {
        /// The spool writer sleeps this long before each write (a stalled disk).
        pub spool_write_stall_ms: AtomicU64,
        /// The spool's disk takes this long over each write the writer has
        /// begun: appends whose callers stop waiting meanwhile are written all
        /// the same.
        pub spool_slow_write_ms: AtomicU64,
        /// While set, spool writes fail as on a full disk: half of each batch
        /// reaches the file, then the write fails with ENOSPC.
        pub spool_disk_full: AtomicBool,
        /// While set, the spool cannot cut a failed write's bytes off its segment.
        pub spool_truncate_fails: AtomicBool,
        /// While set, the spool cannot create a new segment file.
        pub spool_create_fails: AtomicBool,
        /// The drainer's next this-many deliveries panic.
        pub drain_delivery_panics: AtomicU32,
        /// The dedup sweeper panics at its next round (a background task's panic).
        pub sweeper_panics: AtomicBool,
        /// The spool's drainer panics at its next round (a task restarted
        /// after a panic).
        pub drainer_panics: AtomicBool,
    }

    impl Faults {
        /// Sleeps while the disk is told to stall.
        pub(crate) fn spool_write(&self) {
            sleep_ms(self.spool_write_stall_ms.load(Ordering::Relaxed));
        }

        /// Sleeps while the disk is told to be slow, once a write has begun.
        pub(crate) fn spool_slow_write(&self) {
            sleep_ms(self.spool_slow_write_ms.load(Ordering::Relaxed));
        }

        /// Whether the spool's disk is told to be full.
        pub(crate) fn spool_disk_full(&self) -> bool {
            self.spool_disk_full.load(Ordering::Relaxed)
        }

        /// Fails when the spool is told it cannot cut a segment.
        pub(crate) fn spool_truncate(&self) -> std::io::Result<()> {
            if self.spool_truncate_fails.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("truncation refused by a test"));
            }
            Ok(())
        }

        /// Fails when the spool is told it cannot create a segment.
        pub(crate) fn spool_create(&self) -> std::io::Result<()> {
            if self.spool_create_fails.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("segment creation refused by a test"));
            }
            Ok(())
        }

        /// Whether this drain delivery is to panic (and counts it).
        pub(crate) fn drain_delivery_panics(&self) -> bool {
            self.drain_delivery_panics
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        }

        /// Whether the sweeper is to panic now (once per setting).
        pub(crate) fn sweeper_panics(&self) -> bool {
            self.sweeper_panics.swap(false, Ordering::Relaxed)
        }

        /// Whether the drainer is to panic now (once per setting).
        pub(crate) fn drainer_panics(&self) -> bool {
            self.drainer_panics.swap(false, Ordering::Relaxed)
        }
    }

    fn sleep_ms(ms: u64) {
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

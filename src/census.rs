//! How many keys of each second of the dedup window a read of the topic met,
//! per pool, and which keys a second read keeps when a pool met more than
//! its bound.
//!
//! A pool at its bound lets its oldest generation go, and the keys of one
//! generation are those committed in one span of time *in the order they
//! came*. Live commits come in time order; a read of the topic does not (it
//! reads the partitions side by side, a batch of one and then of another),
//! so a warm-up that meets more keys than the bound could keep older keys and
//! forget a newer one, whose sender's retry would then count twice. The
//! start-up warm-up therefore counts the keys it reads; a pool that met more
//! than its bound is emptied and read again keeping only the newest keys
//! that fit: every key newer than a cutoff second, and as many of that
//! second as there is room for, so that nothing is evicted.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::dedup::Dedup;
use crate::sync::LockAnyway;

/// Keys met per second of the window, per pool.
pub(crate) struct Census {
    /// The window's first second (unix time).
    start: u32,
    /// Seconds in the window.
    seconds: usize,
    /// Few pools (the keyed, the public, one per source with its own share):
    /// found by pointer.
    pools: Mutex<Vec<(Arc<Dedup>, Vec<u32>)>>,
}

/// Which keys of an emptied pool a second read keeps.
pub(crate) struct Keep {
    /// Keys committed after this second (unix time) are all kept.
    cutoff: u32,
    /// How many keys of the cutoff second are still kept.
    room: AtomicUsize,
}

impl Keep {
    /// Whether a key committed at `at` is kept (counting it when it is of
    /// the cutoff second).
    pub(crate) fn admits(&self, at: u32) -> bool {
        if at != self.cutoff {
            return at > self.cutoff;
        }
        self.room
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl Census {
    /// A census of the window of `window_secs` seconds that ends at `now`.
    pub(crate) fn new(now: u32, window_secs: u32) -> Census {
        let window_secs = window_secs.max(1);
        Census {
            start: now.saturating_sub(window_secs),
            seconds: window_secs as usize + 1,
            pools: Mutex::new(Vec::new()),
        }
    }

    /// Counts a key of `pool` committed at `at`. A key older than the window
    /// is not counted (the pool does not take it either); one from a clock
    /// ahead of this one counts as the window's last second.
    pub(crate) fn count(&self, pool: &Arc<Dedup>, at: u32) {
        let Some(offset) = at.checked_sub(self.start) else {
            return;
        };
        let second = (offset as usize).min(self.seconds - 1);
        let mut pools = self.pools.lock_anyway();
        let at = match pools.iter().position(|(p, _)| Arc::ptr_eq(p, pool)) {
            Some(i) => i,
            None => {
                pools.push((pool.clone(), vec![0; self.seconds]));
                pools.len() - 1
            }
        };
        pools[at].1[second] += 1;
    }

    /// The pools that met more keys than their bound, each with what a
    /// second read of it keeps: the newest keys, as many as the bound.
    pub(crate) fn overflowing(&self) -> Vec<(Arc<Dedup>, Keep)> {
        let pools = self.pools.lock_anyway();
        pools
            .iter()
            .filter_map(|(pool, counts)| {
                let bound = pool.max_keys();
                let mut newer = 0usize;
                for (second, &n) in counts.iter().enumerate().rev() {
                    let n = n as usize;
                    if newer + n > bound {
                        let keep = Keep {
                            cutoff: self.start + second as u32,
                            room: AtomicUsize::new(bound - newer),
                        };
                        return Some((pool.clone(), keep));
                    }
                    newer += n;
                }
                None
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pool(max: usize) -> Arc<Dedup> {
        Dedup::new(
            Duration::from_secs(1000),
            max,
            [1; 16],
            crate::dedup::system_clock(),
        )
    }

    #[test]
    fn a_pool_past_its_bound_keeps_the_newest_seconds_and_part_of_the_cutoff_second() {
        let (small, large) = (pool(10), pool(100));
        let census = Census::new(2_000, 1_000);
        // 4 keys at 1,990, 6 at 1,995, 3 at 1,999, one from a clock ahead
        // (counted at 2,000), one before the window (not counted).
        for (at, n) in [(1_990, 4), (1_995, 6), (1_999, 3), (2_500, 1), (500, 1)] {
            for _ in 0..n {
                census.count(&small, at);
                census.count(&large, at);
            }
        }
        let over = census.overflowing();
        assert_eq!(
            over.len(),
            1,
            "the pool of 100 met 14 keys: not past its bound"
        );
        let (p, keep) = &over[0];
        assert!(Arc::ptr_eq(p, &small));
        // Newer than 1,995: 4 keys; with 1,995's 6 they are 10, the bound:
        // the cutoff is 1,990, with no room left for its keys.
        assert!(keep.admits(1_999) && keep.admits(2_000) && keep.admits(2_500));
        assert_eq!((0..6).filter(|_| keep.admits(1_995)).count(), 6);
        assert!(!keep.admits(1_990) && !keep.admits(1_989));
    }

    #[test]
    fn the_cutoff_second_is_shared_when_it_does_not_fit_whole() {
        let p = pool(5);
        let census = Census::new(100, 100);
        for at in [90, 90, 90, 95, 95, 95, 99] {
            census.count(&p, at);
        }
        let over = census.overflowing();
        let (_, keep) = &over[0];
        // 99 (1 key) fits; 95's 3 keys fit (4 <= 5); 90's 3 do not: 1 of them.
        assert!(keep.admits(99));
        assert_eq!((0..3).filter(|_| keep.admits(95)).count(), 3);
        assert_eq!((0..3).filter(|_| keep.admits(90)).count(), 1);
        assert!(!keep.admits(89));
    }
}

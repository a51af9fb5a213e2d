//! Locks that outlive a panic.
//!
//! Every lock in the gateway guards data that stays whole when a holder
//! panics (counters, maps, queues, a slot to fill), and a panic in one task
//! must not take every later request down with the lock: a poisoned lock is
//! taken as it is. This is the one place that says so.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`], whether or not a holder panicked.
pub(crate) trait LockAnyway<T: ?Sized> {
    /// Locks, taking the data as it is if a holder panicked.
    fn lock_anyway(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockAnyway<T> for Mutex<T> {
    fn lock_anyway(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`], whether or not a holder panicked.
pub(crate) trait RwLockAnyway<T: ?Sized> {
    /// Locks for reading, taking the data as it is if a writer panicked.
    fn read_anyway(&self) -> RwLockReadGuard<'_, T>;
    /// Locks for writing, taking the data as it is if a holder panicked.
    fn write_anyway(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockAnyway<T> for RwLock<T> {
    fn read_anyway(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_anyway(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_whose_holder_panicked_is_taken_with_its_data() {
        let m = Mutex::new(1);
        let rw = RwLock::new(2);
        let _ = std::panic::catch_unwind(|| {
            let _m = m.lock().unwrap();
            let _w = rw.write().unwrap();
            panic!("a holder panics");
        });
        assert!(m.is_poisoned() && rw.is_poisoned());
        *m.lock_anyway() += 1;
        assert_eq!(*m.lock_anyway(), 2);
        *rw.write_anyway() += 1;
        assert_eq!(*rw.read_anyway(), 3);
    }
}

//! Byte buffers kept for reuse by the thread that let them go: the request
//! path's copies (the console's, the event's JSON) take one instead of
//! allocating, so a steady load allocates nothing for them.

use std::cell::RefCell;
use std::thread::LocalKey;

/// One thread's spare buffers of one use.
pub(crate) struct Spare {
    buffers: RefCell<Vec<Vec<u8>>>,
    /// At most this many are kept...
    count: usize,
    /// ...each of at most this many bytes; a larger one is freed.
    capacity: usize,
}

impl Spare {
    /// Keeps at most `count` buffers of at most `capacity` bytes each.
    pub(crate) const fn new(count: usize, capacity: usize) -> Spare {
        Spare {
            buffers: RefCell::new(Vec::new()),
            count,
            capacity,
        }
    }
}

/// An empty buffer of `pool`'s, else a new one.
pub(crate) fn take(pool: &'static LocalKey<Spare>) -> Vec<u8> {
    pool.try_with(|p| p.buffers.try_borrow_mut().ok().and_then(|mut b| b.pop()))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps `buf` in `pool` for a later [`take`], when there is room.
pub(crate) fn give_back(pool: &'static LocalKey<Spare>, mut buf: Vec<u8>) {
    let _ = pool.try_with(|p| {
        if buf.capacity() == 0 || buf.capacity() > p.capacity {
            return;
        }
        if let Ok(mut buffers) = p.buffers.try_borrow_mut() {
            if buffers.len() < p.count {
                buf.clear();
                buffers.push(std::mem::take(&mut buf));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static POOL: Spare = const { Spare::new(2, 64) };
    }

    #[test]
    fn buffers_come_back_emptied_and_within_bounds() {
        let mut a = take(&POOL);
        assert_eq!(a.capacity(), 0, "a new one when there is none");
        a.extend_from_slice(b"abc");
        let cap = a.capacity();
        give_back(&POOL, a);
        let b = take(&POOL);
        assert!(b.is_empty() && b.capacity() == cap);
        give_back(&POOL, Vec::with_capacity(65));
        assert_eq!(take(&POOL).capacity(), 0, "too large to keep");
        for _ in 0..3 {
            give_back(&POOL, Vec::with_capacity(8));
        }
        assert_eq!(take(&POOL).capacity(), 8);
        assert_eq!(take(&POOL).capacity(), 8);
        assert_eq!(take(&POOL).capacity(), 0, "at most two kept");
    }
}

//! Pauses between retries, with jitter. After an outage every instance's
//! spool drainer and producer watcher would otherwise retry in the same
//! second, again and again (fixed doubling keeps them in lockstep). Each
//! pause is drawn at random from the upper half of its nominal length
//! ("equal jitter"): never shorter than half of it, never longer, so the
//! bounds and caps written beside each use still hold.

use std::time::Duration;

/// A pause of at least half of `nominal` and at most `nominal`, at random.
pub(crate) fn jittered(nominal: Duration) -> Duration {
    let half = nominal / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Pauses doubling from `first` up to `max`, each one [`jittered`].
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    /// The nominal length of the next pause.
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first.min(max),
        }
    }

    /// The next pause; the one after it is nominally twice as long, up to `max`.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = jittered(self.next);
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Starts again from `first` (after a success, or a long quiet spell).
    pub(crate) fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sequences_differ_and_each_pause_stays_within_its_bounds() {
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(30));
        let run = || {
            let mut b = Backoff::new(first, max);
            (0..12).map(|_| b.next_pause()).collect::<Vec<_>>()
        };
        let (a, b) = (run(), run());
        assert_ne!(a, b, "two instances do not retry in lockstep");
        for seq in [&a, &b] {
            for (i, pause) in seq.iter().enumerate() {
                let nominal = (first * 2u32.pow(i as u32)).min(max);
                assert!(
                    *pause >= nominal / 2 && *pause <= nominal,
                    "pause {i}: {pause:?} outside {:?}..={nominal:?}",
                    nominal / 2
                );
            }
        }
        // Capped: the later pauses never exceed the cap.
        assert!(a[11] <= max && a[11] >= max / 2, "{:?}", a[11]);
    }

    #[test]
    fn reset_starts_again_from_the_first_pause() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..6 {
            b.next_pause();
        }
        b.reset();
        let p = b.next_pause();
        assert!(
            p >= Duration::from_millis(50) && p <= Duration::from_millis(100),
            "{p:?}"
        );
    }

    #[test]
    fn a_zero_pause_stays_zero() {
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
        let mut b = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(b.next_pause(), Duration::ZERO);
    }
}

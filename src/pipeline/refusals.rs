//! A once-a-minute summary of refused postbacks. Each refusal is logged at
//! debug level only (bad input must not flood the log); operators still see
//! at info level that refusals happen, how many, and why.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::info;

use crate::rejection::Rejection;

/// One gateway's refusals since its last summary, by slot ([`Rejection::slot`]).
#[derive(Debug)]
pub struct Refusals([AtomicU64; Rejection::COUNTED]);

impl Default for Refusals {
    fn default() -> Self {
        Refusals([const { AtomicU64::new(0) }; Rejection::COUNTED])
    }
}

impl Refusals {
    /// Counts one refusal, by its [`Rejection::slot`].
    pub(crate) fn count(&self, slot: usize) {
        if let Some(n) = self.0.get(slot) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs the refusals since the last call, if there were any, and starts over.
    pub(crate) fn log_summary(&self) {
        let mut seen: Vec<(u64, Rejection)> = Rejection::counted()
            .zip(self.0.iter())
            .map(|(r, c)| (c.swap(0, Ordering::Relaxed), r))
            .filter(|(n, _)| *n > 0)
            .collect();
        if seen.is_empty() {
            return;
        }
        seen.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        let total: u64 = seen.iter().map(|(n, _)| n).sum();
        let reasons = seen
            .iter()
            .map(|(n, r)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        info!(total, %reasons, "Refused postbacks since the last summary.");
    }
}

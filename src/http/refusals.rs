//! A once-a-minute summary of refused postbacks. Each refusal is logged at
//! debug level only (bad input must not flood the log); operators still see
//! at info level that refusals happen, how many, and why.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::info;

use crate::rejection::Rejection;

/// By slot ([`Rejection::slot`]).
static COUNTS: [AtomicU64; Rejection::COUNTED] = [const { AtomicU64::new(0) }; Rejection::COUNTED];

/// Counts one refusal, by its [`Rejection::slot`].
pub(crate) fn count(slot: usize) {
    if let Some(n) = COUNTS.get(slot) {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// Logs the refusals since the last call, if there were any, and starts over.
pub(crate) fn log_summary() {
    let mut seen: Vec<(u64, Rejection)> = Rejection::counted()
        .zip(COUNTS.iter())
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

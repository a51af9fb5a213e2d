//! Campaign claims: within one platform type, a campaign belongs to one source.
//! When the same `campaign_id` arrives through two sources of the same platform
//! (two Voluum accounts sending one campaign, say), the reports would count it
//! twice; it is counted in a metric and logged at most every few seconds. The
//! postback itself is still accepted: the sender did nothing wrong.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tracing::warn;

use crate::metrics as m;

/// Claims held before the map is cleared and starts over; a bound on memory.
const MAX_CLAIMS: usize = 1_000_000;
/// Seconds between two conflict warnings.
const WARN_EVERY_SECS: u64 = 10;

/// Which source first sent each (platform, campaign).
#[derive(Debug, Default)]
pub struct CampaignClaims {
    /// Keyed by a hash of (platform, campaign id), so a lookup allocates nothing.
    claims: DashMap<u64, Arc<str>>,
    hasher: std::collections::hash_map::RandomState,
    last_warning: AtomicU64,
}

impl CampaignClaims {
    /// Records that `source` (of `platform`) sent `campaign`; returns the other
    /// source's name when another one of the same platform claimed it first.
    pub(crate) fn observe(
        &self,
        platform: &str,
        source: &Arc<str>,
        campaign: &str,
        metrics: &m::Metrics,
    ) -> Option<Arc<str>> {
        let mut h = self.hasher.build_hasher();
        platform.hash(&mut h);
        campaign.hash(&mut h);
        let key = h.finish();
        if let Some(owner) = self.claims.get(&key) {
            if *owner == *source {
                return None;
            }
            let owner = owner.clone();
            metrics
                .counter_with(m::CAMPAIGN_CONFLICTS, &[("platform", platform)])
                .increment(1);
            if self.warning_allowed() {
                warn!(
                    platform,
                    campaign = %campaign.escape_debug(),
                    first = %owner,
                    second = %source,
                    "One campaign arrives through two sources of the same platform; \
                     only one of them should claim it."
                );
            }
            return Some(owner);
        }
        if self.claims.len() >= MAX_CLAIMS {
            self.claims.clear();
        }
        self.claims.entry(key).or_insert_with(|| source.clone());
        None
    }

    fn warning_allowed(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_warning.load(Ordering::Relaxed);
        now >= last + WARN_EVERY_SECS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_source_of_one_platform_conflicts() {
        let c = CampaignClaims::default();
        let metrics = m::Metrics::new();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert_eq!(c.observe("voluum", &a, "c1", &metrics), None);
        assert_eq!(c.observe("voluum", &a, "c1", &metrics), None);
        assert_eq!(
            c.observe("voluum", &b, "c1", &metrics).as_deref(),
            Some("a")
        );
        assert_eq!(
            c.observe("binom", &b, "c1", &metrics),
            None,
            "another platform is fine"
        );
        assert_eq!(c.observe("voluum", &b, "c2", &metrics), None);
    }
}

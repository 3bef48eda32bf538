//! Memory limits of instances: the plugin's own (`limits.memory_mb` per instance) and the
//! engine's total across every live instance (`plugin_engine.total_memory_mb`). Shadow
//! plugins (`mode = "shadow"`) have a share of their own beside the total, a quarter of it:
//! what they grow to is never refused to the active chain, so a leaky shadow cannot turn the
//! chain's decisions into `451`s.

use crate::state::BreakerTripped;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use wasmtime::ResourceLimiter;

/// Bytes granted against a limit.
struct Account {
    limit: usize,
    used: AtomicUsize,
}

impl Account {
    fn new(limit: usize) -> Self {
        Account {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` when they fit under the limit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Linear memory granted to all live instances of an engine: the active plugins' against the
/// engine's limit, the shadow plugins' against a quarter of it, apart.
pub(crate) struct TotalMemory {
    active: Account,
    shadow: Account,
    /// Live stores, one per instance (pooled idle ones included).
    stores: AtomicUsize,
    /// Idle instances kept in all plugins' pools, and the most that may be (half the
    /// engine's instances: the other half is always free for calls in flight).
    idle: AtomicUsize,
    idle_cap: usize,
}

impl TotalMemory {
    pub(crate) fn new(limit: usize) -> Self {
        TotalMemory {
            active: Account::new(limit),
            shadow: Account::new(limit / 4),
            stores: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            idle_cap: usize::MAX,
        }
    }

    /// At most `cap` idle pooled instances across all plugins.
    pub(crate) fn with_idle_cap(mut self, cap: usize) -> Self {
        self.idle_cap = cap;
        self
    }

    /// Counts one more idle pooled instance, if the engine-wide cap allows it.
    pub(crate) fn keep_idle(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.idle_cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// `n` idle pooled instances were taken out of a pool or dropped with it.
    pub(crate) fn unidle(&self, n: usize) {
        self.idle.fetch_sub(n, Ordering::AcqRel);
    }

    /// Idle pooled instances now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.load(Ordering::Acquire)
    }

    fn account(&self, shadow: bool) -> &Account {
        if shadow {
            &self.shadow
        } else {
            &self.active
        }
    }

    /// Bytes granted to live instances now, shadows' included.
    pub(crate) fn used(&self) -> usize {
        self.active.used().saturating_add(self.shadow.used())
    }

    /// Instances alive now (each has its store and limiter).
    pub(crate) fn instances(&self) -> usize {
        self.stores.load(Ordering::Acquire)
    }
}

/// Refuses memory growth past the plugin's limit or the engine's total, and remembers which,
/// so that the trap that follows (the guest's allocator aborts) is reported as the plugin's
/// out-of-memory or as the engine's exhaustion.
pub(crate) struct Limiter {
    memory_bytes: usize,
    total: Arc<TotalMemory>,
    /// The store is a shadow plugin's: it grows within the shadows' share.
    shadow: bool,
    /// Bytes this store holds in `total`.
    granted: usize,
    /// A growth past the plugin's own limit was refused.
    pub(crate) refused: bool,
    /// A growth within the plugin's limit was refused because the engine's total (for a
    /// shadow: the shadows' share) is spent.
    pub(crate) refused_total: bool,
    /// The largest linear memory granted (creation counts as growth from 0).
    pub(crate) peak: usize,
    /// The plugin's circuit-breaker trips, and their count when the current call started:
    /// once the breaker opened, the call's next growth stops it ([`BreakerTripped`]).
    trips: Option<Arc<AtomicU64>>,
    pub(crate) trips_seen: u64,
}

impl Limiter {
    pub(crate) fn new(memory_bytes: usize, total: Arc<TotalMemory>) -> Self {
        total.stores.fetch_add(1, Ordering::AcqRel);
        Limiter {
            memory_bytes,
            total,
            shadow: false,
            granted: 0,
            refused: false,
            refused_total: false,
            peak: 0,
            trips: None,
            trips_seen: 0,
        }
    }

    /// Refuses growth once `trips` (the plugin breaker's count) moves past its value when
    /// the current call started. The epoch callback stops such a call too, but only at the
    /// next tick: under load the calls of a plugin failing at its memory limit run side by
    /// side, each suspended between ticks, and each would resume for up to a tick of growth
    /// (tens of MiB) after the trip.
    pub(crate) fn watching(mut self, trips: Arc<AtomicU64>) -> Self {
        self.trips_seen = trips.load(Ordering::Relaxed);
        self.trips = Some(trips);
        self
    }

    /// A shadow plugin's store (`shadow`): its memory is the shadows' share, not the total.
    pub(crate) fn for_shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Whether this store counts against the shadow plugins' share.
    pub(crate) fn is_shadow(&self) -> bool {
        self.shadow
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.total.account(self.shadow).give(self.granted);
        self.total.stores.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if let Some(trips) = &self.trips {
            if trips.load(Ordering::Relaxed) != self.trips_seen {
                return Err(wasmtime::Error::new(BreakerTripped));
            }
        }
        if desired > self.memory_bytes {
            self.refused = true;
            return Ok(false);
        }
        let delta = desired.saturating_sub(current);
        if !self.total.account(self.shadow).take(delta) {
            self.refused_total = true;
            return Ok(false);
        }
        self.granted += delta;
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_instances_are_capped_engine_wide() {
        let total = TotalMemory::new(100).with_idle_cap(2);
        assert!(total.keep_idle() && total.keep_idle());
        assert!(
            !total.keep_idle(),
            "the third idle instance is over the cap"
        );
        total.unidle(1);
        assert!(total.keep_idle(), "room again after one was taken");
        assert_eq!(total.idle(), 2);
    }

    #[test]
    fn the_total_is_shared_and_given_back_on_drop() {
        let total = Arc::new(TotalMemory::new(100));
        let mut a = Limiter::new(80, total.clone());
        let mut b = Limiter::new(80, total.clone());
        assert!(a.memory_growing(0, 60, None).unwrap());
        assert!(!b.memory_growing(0, 60, None).unwrap(), "over the total");
        assert!(b.refused_total && !b.refused);
        assert!(
            !a.memory_growing(60, 90, None).unwrap(),
            "over its own limit"
        );
        assert!(a.refused);
        drop(a);
        assert_eq!(total.used(), 0);
        assert!(b.memory_growing(0, 60, None).unwrap());
    }

    #[test]
    fn growth_stops_once_the_breaker_opened_during_the_call() {
        let trips = Arc::new(AtomicU64::new(7));
        let mut l = Limiter::new(100, Arc::new(TotalMemory::new(100))).watching(trips.clone());
        assert!(l.memory_growing(0, 10, None).unwrap());
        trips.fetch_add(1, Ordering::Relaxed);
        let e = l.memory_growing(10, 20, None).expect_err("tripped");
        assert!(e.downcast_ref::<BreakerTripped>().is_some());
        // The next call starts after the trip (the probe): it grows again.
        l.trips_seen = 8;
        assert!(l.memory_growing(10, 20, None).unwrap());
    }

    /// Shadows grow within a quarter of the total, apart from it: however much they take,
    /// the active plugins still have the whole total.
    #[test]
    fn shadows_have_a_share_of_their_own() {
        let total = Arc::new(TotalMemory::new(100));
        let mut s = Limiter::new(80, total.clone()).for_shadow(true);
        assert!(s.memory_growing(0, 25, None).unwrap());
        assert!(!s.memory_growing(25, 26, None).unwrap(), "over the share");
        assert!(s.refused_total && !s.refused);
        let mut a = Limiter::new(100, total.clone());
        assert!(a.memory_growing(0, 100, None).unwrap(), "the whole total");
        assert_eq!(total.used(), 125, "both counted in what is in use");
        drop(s);
        assert_eq!(total.used(), 100);
    }
}

//! The circuit breaker of one loaded plugin: after `failures` failures (trap, CPU budget,
//! timeout, out of memory, invalid decision) within `window_ms`, the plugin is bypassed for
//! `cooldown_ms` (its failure policy applies at once, without an instance), then one
//! transaction probes it (half-open): success closes the breaker, failure opens it again.
//!
//! The closed state costs one atomic load per instance taken; the lock is taken only on a
//! failure or while the breaker is open.

use crate::manifest::BreakerConfig;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the breaker says about taking an instance now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: run the plugin.
    Run,
    /// Half-open: run it as the probe; report its outcome with `probe = true`.
    Probe,
    /// Open: bypass it (apply its failure policy, no instance).
    Bypass,
}

/// The state shown by `corvid plugins list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// The plugin runs.
    Closed,
    /// The plugin is bypassed for this much longer.
    Open { remaining: Duration },
    /// The cool-down is over; the next transaction probes the plugin.
    HalfOpen,
}

#[derive(Default)]
struct Inner {
    /// Failures within the window (closed state).
    recent: VecDeque<Instant>,
    /// Open until then (`None`: closed).
    open_until: Option<Instant>,
    /// A probe is running (half-open).
    probing: bool,
}

pub(crate) struct Breaker {
    config: BreakerConfig,
    open: AtomicBool,
    trips: AtomicU64,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            open: AtomicBool::new(false),
            trips: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn cooldown(&self) -> Duration {
        Duration::from_millis(self.config.cooldown_ms)
    }

    /// May an instance be taken now?
    pub(crate) fn admit(&self) -> Admit {
        if !self.open.load(Ordering::Acquire) {
            return Admit::Run;
        }
        let Ok(mut g) = self.inner.lock() else {
            return Admit::Run;
        };
        match g.open_until {
            None => Admit::Run,
            Some(until) if Instant::now() < until => Admit::Bypass,
            Some(_) if g.probing => Admit::Bypass,
            Some(_) => {
                g.probing = true;
                Admit::Probe
            }
        }
    }

    /// A call succeeded; a successful probe closes the breaker.
    pub(crate) fn success(&self, plugin: &str, probe: bool) {
        if !probe {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            *g = Inner::default();
            self.open.store(false, Ordering::Release);
            tracing::info!(plugin, "circuit breaker closed: the plugin works again");
        }
    }

    /// A call failed. Returns true when this failure tripped the breaker.
    pub(crate) fn failure(&self, plugin: &str, probe: bool) -> bool {
        if self.config.failures == 0 {
            return false;
        }
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        let now = Instant::now();
        if probe {
            g.probing = false;
            g.open_until = Some(now + self.cooldown());
            tracing::info!(
                plugin,
                cooldown_ms = self.config.cooldown_ms,
                "circuit breaker probe failed: the plugin stays bypassed"
            );
            return false;
        }
        if g.open_until.is_some() {
            // A call admitted before the trip: already open.
            return false;
        }
        let window = Duration::from_millis(self.config.window_ms);
        while g
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            g.recent.pop_front();
        }
        g.recent.push_back(now);
        if g.recent.len() < self.config.failures as usize {
            return false;
        }
        g.recent.clear();
        g.open_until = Some(now + self.cooldown());
        self.open.store(true, Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            plugin,
            failures = self.config.failures,
            window_ms = self.config.window_ms,
            cooldown_ms = self.config.cooldown_ms,
            "circuit breaker open: the plugin fails repeatedly and is bypassed by its failure policy"
        );
        true
    }

    /// Times the breaker opened.
    pub(crate) fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    pub(crate) fn state(&self) -> BreakerState {
        if !self.open.load(Ordering::Acquire) {
            return BreakerState::Closed;
        }
        let Ok(g) = self.inner.lock() else {
            return BreakerState::Closed;
        };
        match g.open_until {
            None => BreakerState::Closed,
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(remaining) if !remaining.is_zero() => BreakerState::Open { remaining },
                _ => BreakerState::HalfOpen,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, window_ms: u64, cooldown_ms: u64) -> Breaker {
        Breaker::new(BreakerConfig {
            failures,
            window_ms,
            cooldown_ms,
        })
    }

    #[test]
    fn trips_after_n_failures_in_the_window_then_probes() {
        let b = breaker(3, 10_000, 50);
        assert!(!b.failure("p", false));
        assert!(!b.failure("p", false));
        assert_eq!(b.admit(), Admit::Run);
        assert!(b.failure("p", false), "the third failure trips");
        assert_eq!(b.admit(), Admit::Bypass);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::Bypass, "one probe at a time");
        b.failure("p", true);
        assert_eq!(b.admit(), Admit::Bypass, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Probe);
        b.success("p", true);
        assert_eq!((b.admit(), b.state()), (Admit::Run, BreakerState::Closed));
        assert_eq!(b.trips(), 1);
    }

    #[test]
    fn old_failures_leave_the_window_and_zero_disables() {
        let b = breaker(2, 20, 1_000);
        b.failure("p", false);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!b.failure("p", false), "the first failure left the window");
        let off = breaker(0, 10_000, 1_000);
        for _ in 0..10 {
            assert!(!off.failure("p", false));
        }
        assert_eq!(off.admit(), Admit::Run);
    }
}

//! The circuit breaker of one loaded plugin: after `failures` failures (trap, CPU budget,
//! timeout, out of memory, invalid decision) within `window_ms`, or `consecutive` failures in
//! a row, the plugin is bypassed for `cooldown_ms` (its failure policy applies at once,
//! without an instance), then one transaction probes it (half-open): success closes the
//! breaker, failure opens it again.
//!
//! A trip also stops the plugin's calls already running: each call notes the trip count when
//! it starts ([`Breaker::trips`] is shared with the stores), and the epoch callback ends a call
//! that sees it change. Under load the calls of a plugin failing on every message run side by
//! side (the guest yields every tick); without this each of them would still spend its whole
//! budget (e.g. grow its memory to the limit) after the trip.
//!
//! The closed state costs one atomic load per instance taken and one per successful call; the
//! lock is taken only on a failure or while the breaker is open.

use crate::manifest::BreakerConfig;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// When the current run of failures in a row started.
    streak_since: Option<Instant>,
    /// Open until then (`None`: closed).
    open_until: Option<Instant>,
    /// A probe is running (half-open).
    probing: bool,
}

pub(crate) struct Breaker {
    config: BreakerConfig,
    open: AtomicBool,
    /// Times the breaker opened; shared with the plugin's stores (see the module docs).
    trips: Arc<AtomicU64>,
    /// Failures since the last success (lock-free so that a success costs no lock).
    streak: AtomicU32,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker counting its trips in `trips` (which the plugin's stores watch).
    pub(crate) fn new(config: BreakerConfig, trips: Arc<AtomicU64>) -> Self {
        Breaker {
            config,
            open: AtomicBool::new(false),
            trips,
            streak: AtomicU32::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// True while the breaker is open or half-open.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
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

    /// A call succeeded: it ends a run of failures; a successful probe closes the breaker.
    pub(crate) fn success(&self, plugin: &str, probe: bool) {
        // Load first: a healthy plugin's calls only read the shared line.
        if self.streak.load(Ordering::Relaxed) != 0 {
            self.streak.store(0, Ordering::Relaxed);
        }
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
        // A run of failures in a row counts within the window too: a plugin that failed
        // twice an hour ago and once now is not failing on every call.
        let mut streak = self
            .streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        match g.streak_since {
            Some(t) if streak > 1 && now.duration_since(t) <= window => {}
            _ => {
                streak = 1;
                self.streak.store(1, Ordering::Relaxed);
                g.streak_since = Some(now);
            }
        }
        let in_a_row = self.config.consecutive != 0 && streak >= self.config.consecutive;
        if g.recent.len() < self.config.failures as usize && !in_a_row {
            return false;
        }
        g.recent.clear();
        g.streak_since = None;
        self.streak.store(0, Ordering::Relaxed);
        g.open_until = Some(now + self.cooldown());
        self.open.store(true, Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            plugin,
            failures = self.config.failures,
            consecutive = self.config.consecutive,
            window_ms = self.config.window_ms,
            cooldown_ms = self.config.cooldown_ms,
            "circuit breaker open: the plugin fails repeatedly and is bypassed by its failure policy"
        );
        true
    }

    /// Times the breaker opened (the count the stores watch).
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
        in_a_row(failures, 0, window_ms, cooldown_ms)
    }

    fn in_a_row(failures: u32, consecutive: u32, window_ms: u64, cooldown_ms: u64) -> Breaker {
        let config = BreakerConfig {
            failures,
            consecutive,
            window_ms,
            cooldown_ms,
        };
        Breaker::new(config, Arc::default())
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

    #[test]
    fn failures_in_a_row_trip_before_the_window_count() {
        let b = in_a_row(5, 3, 10_000, 1_000);
        let trips = b.trips.clone();
        assert!(!b.failure("p", false));
        b.success("p", false);
        assert!(!b.failure("p", false), "a success ended the first run");
        assert!(!b.failure("p", false));
        assert_eq!(b.admit(), Admit::Run);
        assert!(
            b.failure("p", false),
            "three in a row trip (four in the window)"
        );
        assert_eq!(b.admit(), Admit::Bypass);
        assert!(b.is_open());
        assert_eq!(trips.load(Ordering::Relaxed), 1, "the stores see the trip");
        assert!(
            !b.failure("p", false),
            "calls admitted before the trip: tripped once"
        );
        assert_eq!(b.trips(), 1);
    }

    #[test]
    fn a_run_of_failures_counts_within_the_window_only() {
        let b = in_a_row(10, 2, 20, 1_000);
        assert!(!b.failure("p", false));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!b.failure("p", false), "the first failure left the window");
        assert!(b.failure("p", false), "two in a row within the window");
        let off = in_a_row(10, 0, 10_000, 1_000);
        for _ in 0..9 {
            assert!(!off.failure("p", false), "consecutive = 0: the window only");
        }
        assert!(off.failure("p", false));
    }
}

//! The time the plugins see, when the embedder sets it: `corvid plugin test` installs a
//! [`ScriptedClock`] that stands still at the script's start and moves only when the script
//! advances it, so TTLs and greylisting windows are tested without waiting.
//!
//! The clock is process-wide ([`install`], before the instances that are to read it are made):
//! it replaces the system clock in the WASI wall and monotonic clocks of every plugin granted
//! `clock` (without `clock` they stay frozen at the epoch, see the `sandbox` module). `corvid
//! plugin replay` of several captures installs each one's clock in turn. A server installs
//! nothing and its plugins read the system clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// A source of time for the plugins and for the embedder's own stores (kv TTLs).
pub trait Clock: Send + Sync {
    /// Time since the Unix epoch: WASI's wall clock and the `clock` import's `now-ms`.
    fn wall(&self) -> Duration;
    /// Nanoseconds since an arbitrary origin, never decreasing: WASI's monotonic clock.
    fn monotonic_ns(&self) -> u64;
}

/// The operating system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }

    fn monotonic_ns(&self) -> u64 {
        static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(std::time::Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that reads what it was set to: the wall clock starts at `start`, the monotonic
/// clock at 0, and both move only by [`ScriptedClock::advance`] (a plugin spinning on the
/// clock waits forever, until its hook's wall-time budget stops it).
#[derive(Debug)]
pub struct ScriptedClock {
    /// Nanoseconds since the Unix epoch (u64 lasts until the year 2554).
    wall_ns: AtomicU64,
    mono_ns: AtomicU64,
}

impl ScriptedClock {
    /// A clock standing at `start` (time since the Unix epoch).
    pub fn new(start: Duration) -> Self {
        ScriptedClock {
            wall_ns: AtomicU64::new(nanos(start)),
            mono_ns: AtomicU64::new(0),
        }
    }

    /// Sets the wall clock to `to` (time since the Unix epoch); the monotonic clock moves
    /// forward by as much when `to` is later, and stays when it is earlier (it never goes
    /// back). A replay sets the time each hook ran in the server.
    pub fn set(&self, to: Duration) {
        let old = self.wall_ns.swap(nanos(to), Ordering::SeqCst);
        let by = nanos(to).saturating_sub(old);
        let _ = self
            .mono_ns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(by))
            });
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = nanos(by);
        // Saturating: a script advancing past year 2554 pins the clock there.
        let add = |v: u64| Some(v.saturating_add(by));
        let _ = self
            .wall_ns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, add);
        let _ = self
            .mono_ns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, add);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Clock for ScriptedClock {
    fn wall(&self) -> Duration {
        Duration::from_nanos(self.wall_ns.load(Ordering::SeqCst))
    }

    fn monotonic_ns(&self) -> u64 {
        self.mono_ns.load(Ordering::SeqCst)
    }
}

/// A process-wide slot for what an embedder installs (the clock, the http answers): replaced
/// as a whole, read by each new instance or request.
pub(crate) struct Slot<T: ?Sized>(RwLock<Option<Arc<T>>>);

impl<T: ?Sized> Slot<T> {
    pub(crate) const fn new() -> Self {
        Slot(RwLock::new(None))
    }

    pub(crate) fn set(&self, v: Option<Arc<T>>) {
        // A panic elsewhere cannot leave an `Option<Arc>` half-written: the poison is moot.
        match self.0.write() {
            Ok(mut slot) => *slot = v,
            Err(p) => *p.into_inner() = v,
        }
    }

    pub(crate) fn get(&self) -> Option<Arc<T>> {
        match self.0.read() {
            Ok(slot) => slot.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

static INSTALLED: Slot<dyn Clock> = Slot::new();

/// Makes `clock` the plugins' clock for the instances made from now on (`None`: the system's
/// again), in place of any installed before.
pub fn install(clock: Option<Arc<dyn Clock>>) {
    INSTALLED.set(clock);
}

/// The installed clock, if any.
pub(crate) fn installed() -> Option<Arc<dyn Clock>> {
    INSTALLED.get()
}

/// Milliseconds since the Unix epoch on the plugins' clock (the installed one, else the
/// system's): the `clock` import's `now-ms` for a plugin granted `clock`.
pub fn now_ms() -> u64 {
    let wall = match installed() {
        Some(c) => c.wall(),
        None => SystemClock.wall(),
    };
    u64::try_from(wall.as_millis()).unwrap_or(u64::MAX)
}

/// An installed clock as WASI's wall and monotonic clocks.
pub(crate) struct Wasi(pub(crate) Arc<dyn Clock>);

impl HostWallClock for Wasi {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.0.wall()
    }
}

impl HostMonotonicClock for Wasi {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.monotonic_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scripted_clock_moves_only_when_advanced() {
        let start = Duration::from_secs(1_796_648_400);
        let c = ScriptedClock::new(start);
        assert_eq!((c.wall(), c.monotonic_ns()), (start, 0));
        c.advance(Duration::from_secs(301));
        assert_eq!(c.wall(), start + Duration::from_secs(301));
        assert_eq!(c.monotonic_ns(), 301_000_000_000);
        c.advance(Duration::MAX);
        assert_eq!(c.monotonic_ns(), u64::MAX, "saturates instead of wrapping");
    }

    #[test]
    fn a_set_clock_moves_the_monotonic_one_forward_only() {
        let start = Duration::from_secs(1_796_648_400);
        let c = ScriptedClock::new(start);
        c.set(start + Duration::from_millis(1500));
        assert_eq!(c.wall(), start + Duration::from_millis(1500));
        assert_eq!(c.monotonic_ns(), 1_500_000_000);
        c.set(start);
        assert_eq!(c.wall(), start, "the wall clock may go back");
        assert_eq!(
            c.monotonic_ns(),
            1_500_000_000,
            "the monotonic one never does"
        );
    }

    #[test]
    fn the_wasi_view_reads_the_clock() {
        let c: Arc<dyn Clock> = Arc::new(ScriptedClock::new(Duration::from_millis(1500)));
        let w = Wasi(c);
        assert_eq!(HostWallClock::now(&w), Duration::from_millis(1500));
        assert_eq!(HostMonotonicClock::now(&w), 0);
    }

    #[test]
    fn the_system_clock_is_after_2020_and_monotonic() {
        assert!(SystemClock.wall() > Duration::from_secs(1_577_836_800));
        let a = SystemClock.monotonic_ns();
        assert!(SystemClock.monotonic_ns() >= a);
    }
}

//! The key-value store behind the `kv` import: the [`KvStore`] trait of corvid-types. The binary
//! provides the sled store (corvid-queue) or the Redis one (corvid-kv-redis); [`MemoryKv`] serves
//! tests, single-process setups without persistence, and `corvid plugin test` (on the script's
//! clock).

use crate::clock::{Clock, SystemClock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use corvid_types::{KvError, KvStore};

/// A value and when it expires, on the store clock's monotonic time.
type Entry = (Vec<u8>, Option<Duration>);

/// A value and the time it has left (`None`: no expiry).
pub type Held = (Vec<u8>, Option<Duration>);

/// An in-memory [`KvStore`] (one mutex; expired entries are dropped when touched). Expiries
/// follow its [`Clock`]'s monotonic time: the system's, or a scripted one that expires keys
/// only when a test advances it.
pub struct MemoryKv {
    clock: Arc<dyn Clock>,
    map: Mutex<HashMap<(String, Vec<u8>), Entry>>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl MemoryKv {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose TTLs run on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryKv {
            clock,
            map: Mutex::default(),
        }
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.clock.monotonic_ns())
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<Duration> {
        ttl.map(|t| self.now().saturating_add(t))
    }

    /// The value under a key and the time it has left (`None`: no expiry), after expiring it
    /// if its time has come.
    pub fn held(&self, ns: &str, key: &[u8]) -> Result<Option<Held>, KvError> {
        let now = self.now();
        self.with(ns, key, |map, k, live| {
            let left = map
                .get(&k)
                .and_then(|e| e.1)
                .map(|at| at.saturating_sub(now));
            live.map(|v| (v, left))
        })
    }

    fn with<R>(
        &self,
        ns: &str,
        key: &[u8],
        f: impl FnOnce(&mut HashMap<(String, Vec<u8>), Entry>, (String, Vec<u8>), Option<Vec<u8>>) -> R,
    ) -> Result<R, KvError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| KvError::Storage("poisoned".into()))?;
        let k = (ns.to_string(), key.to_vec());
        let now = self.now();
        let live = match map.get(&k) {
            Some((_, Some(exp))) if *exp <= now => {
                map.remove(&k);
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        };
        Ok(f(&mut map, k, live))
    }
}

impl KvStore for MemoryKv {
    fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.with(ns, key, |_, _, live| live)
    }

    fn ttl(&self, ns: &str, key: &[u8]) -> Result<Option<Duration>, KvError> {
        Ok(self.held(ns, key)?.and_then(|(_, left)| left))
    }

    fn set(
        &self,
        ns: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let exp = self.expiry(ttl);
        self.with(ns, key, |map, k, _| {
            map.insert(k, (value.to_vec(), exp));
        })
    }

    fn delete(&self, ns: &str, key: &[u8]) -> Result<bool, KvError> {
        self.with(ns, key, |map, k, live| {
            map.remove(&k);
            live.is_some()
        })
    }

    fn increment(
        &self,
        ns: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        let fresh = self.expiry(ttl);
        self.with(ns, key, |map, k, live| {
            let (old, exp) = match live {
                None => (0, fresh),
                Some(v) => {
                    let n = std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or(KvError::NotANumber)?;
                    (n, map.get(&k).and_then(|e| e.1))
                }
            };
            let new = old.saturating_add(delta);
            map.insert(k, (new.to_string().into_bytes(), exp));
            Ok(new)
        })?
    }

    fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let exp = self.expiry(ttl);
        self.with(ns, key, |map, k, live| {
            if live.as_deref() != expected {
                return false;
            }
            match new {
                Some(v) => map.insert(k, (v.to_vec(), exp)),
                None => map.remove(&k),
            };
            true
        })
    }
}

/// The store a shadow plugin sees (`mode = "shadow"`): every namespace is prefixed with
/// `shadow:`, reads as well as writes, so that a shadow never changes, nor depends on, what
/// the active chain keeps. A shadow sees its own writes: a stateful plugin (greylisting,
/// rate limits) behaves as it would alone, from an empty state when it starts shadowing.
pub(crate) struct ShadowKv {
    pub(crate) inner: Arc<dyn KvStore>,
}

/// The prefix of a shadow plugin's kv namespace; no active plugin may have a name with it.
pub(crate) const SHADOW_NS: &str = "shadow:";

fn shadow_ns(ns: &str) -> String {
    format!("{SHADOW_NS}{ns}")
}

impl KvStore for ShadowKv {
    fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.inner.get(&shadow_ns(ns), key)
    }

    fn ttl(&self, ns: &str, key: &[u8]) -> Result<Option<Duration>, KvError> {
        self.inner.ttl(&shadow_ns(ns), key)
    }

    fn set(
        &self,
        ns: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        self.inner.set(&shadow_ns(ns), key, value, ttl)
    }

    fn delete(&self, ns: &str, key: &[u8]) -> Result<bool, KvError> {
        self.inner.delete(&shadow_ns(ns), key)
    }

    fn increment(
        &self,
        ns: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        self.inner.increment(&shadow_ns(ns), key, delta, ttl)
    }

    fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let ns = shadow_ns(ns);
        self.inner.compare_and_swap(&ns, key, expected, new, ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_separate_and_ops_are_atomic() {
        let kv = MemoryKv::new();
        kv.set("a", b"k", b"1", None).unwrap();
        assert_eq!(kv.get("b", b"k").unwrap(), None);
        assert_eq!(kv.increment("a", b"k", 2, None).unwrap(), 3);
        assert!(!kv
            .compare_and_swap("a", b"k", Some(b"4"), None, None)
            .unwrap());
        assert!(kv
            .compare_and_swap("a", b"k", Some(b"3"), Some(b"x"), None)
            .unwrap());
        assert_eq!(kv.increment("a", b"k", 1, None), Err(KvError::NotANumber));
        assert!(kv.delete("a", b"k").unwrap());
    }

    #[test]
    fn a_shadow_reads_and_writes_its_own_namespace() {
        let kv = Arc::new(MemoryKv::new());
        kv.set("p", b"k", b"active", None).unwrap();
        let shadow = ShadowKv { inner: kv.clone() };
        assert_eq!(shadow.get("p", b"k").unwrap(), None);
        assert_eq!(shadow.increment("p", b"n", 1, None).unwrap(), 1);
        assert_eq!(kv.get("p", b"n").unwrap(), None);
        assert_eq!(kv.get("shadow:p", b"n").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("p", b"k").unwrap(), Some(b"active".to_vec()));
    }

    #[test]
    fn ttl_reports_the_time_left() {
        let kv = MemoryKv::new();
        let ns = "m";
        kv.set(ns, b"k", b"v", Some(Duration::from_secs(60)))
            .unwrap();
        let left = kv.ttl(ns, b"k").unwrap().unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(59));
        assert_eq!(kv.ttl(ns, b"absent").unwrap(), None);
        kv.set(ns, b"k", b"v", None).unwrap();
        assert_eq!(kv.ttl(ns, b"k").unwrap(), None);
    }

    #[test]
    fn a_scripted_clock_moves_the_time_left_and_a_shadow_sees_its_own() {
        let clock = Arc::new(crate::clock::ScriptedClock::new(Duration::ZERO));
        let kv = Arc::new(MemoryKv::with_clock(clock.clone()));
        kv.set("p", b"k", b"v", Some(Duration::from_secs(10)))
            .unwrap();
        clock.advance(Duration::from_secs(4));
        assert_eq!(kv.ttl("p", b"k").unwrap(), Some(Duration::from_secs(6)));
        let shadow = ShadowKv { inner: kv.clone() };
        assert_eq!(shadow.ttl("p", b"k").unwrap(), None, "not the shadow's key");
        shadow
            .set("p", b"k", b"s", Some(Duration::from_secs(3)))
            .unwrap();
        assert_eq!(shadow.ttl("p", b"k").unwrap(), Some(Duration::from_secs(3)));
        clock.advance(Duration::from_secs(6));
        assert_eq!(kv.ttl("p", b"k").unwrap(), None, "expired");
    }

    #[test]
    fn ttl_expires() {
        let kv = MemoryKv::new();
        kv.set("a", b"k", b"v", Some(Duration::from_millis(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.get("a", b"k").unwrap(), None);
    }
}

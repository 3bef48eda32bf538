//! The kv store of `corvid plugin test`: in memory, with expiries on the script's clock (the
//! scripted one when the script has `[clock]`), so that advancing the clock expires keys.

use super::ambient::{ttl_text, KvEntry};
use super::report::{self, Outcome};
use corvid_plugin_host::clock::Clock;
use corvid_types::{KvError, KvStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

struct Entry {
    value: Vec<u8>,
    /// On the clock's wall time; `None`: kept for good.
    expires: Option<Duration>,
}

pub struct ClockedKv {
    clock: Arc<dyn Clock>,
    map: Mutex<Map>,
}

/// What the store holds under a key, as `[expect_kv]` checks it.
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    pub value: Vec<u8>,
    /// Time left before the key expires; `None`: no expiry.
    pub ttl: Option<Duration>,
}

type Key = (String, Vec<u8>);
type Map = HashMap<Key, Entry>;
/// The locked map and the key of one call.
type Live<'a> = (MutexGuard<'a, Map>, Key);

impl ClockedKv {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        ClockedKv {
            clock,
            map: Mutex::default(),
        }
    }

    /// The map with the entry under (`ns`, `key`) dropped if it has expired.
    fn live(&self, ns: &str, key: &[u8]) -> Result<Live<'_>, KvError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| KvError::Storage("poisoned".into()))?;
        let k = (ns.to_string(), key.to_vec());
        let now = self.clock.wall();
        if map
            .get(&k)
            .is_some_and(|e| e.expires.is_some_and(|at| at <= now))
        {
            map.remove(&k);
        }
        Ok((map, k))
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<Duration> {
        ttl.map(|t| self.clock.wall().saturating_add(t))
    }

    /// The value and the time left under a key (after expiring it if its time has come).
    pub fn held(&self, ns: &str, key: &[u8]) -> Result<Option<Held>, KvError> {
        let (map, k) = self.live(ns, key)?;
        let now = self.clock.wall();
        Ok(map.get(&k).map(|e| Held {
            value: e.value.clone(),
            ttl: e.expires.map(|at| at.saturating_sub(now)),
        }))
    }
}

impl KvStore for ClockedKv {
    fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let (map, k) = self.live(ns, key)?;
        Ok(map.get(&k).map(|e| e.value.clone()))
    }

    fn set(
        &self,
        ns: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let expires = self.expiry(ttl);
        let (mut map, k) = self.live(ns, key)?;
        let value = value.to_vec();
        map.insert(k, Entry { value, expires });
        Ok(())
    }

    fn delete(&self, ns: &str, key: &[u8]) -> Result<bool, KvError> {
        let (mut map, k) = self.live(ns, key)?;
        Ok(map.remove(&k).is_some())
    }

    /// A new counter takes `ttl`; an existing one keeps its expiry (a fixed window), as in
    /// the server's stores.
    fn increment(
        &self,
        ns: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        let fresh = self.expiry(ttl);
        let (mut map, k) = self.live(ns, key)?;
        let (old, expires) = match map.get(&k) {
            None => (0, fresh),
            Some(e) => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or(KvError::NotANumber)?;
                (n, e.expires)
            }
        };
        let new = old.saturating_add(delta);
        let value = new.to_string().into_bytes();
        map.insert(k, Entry { value, expires });
        Ok(new)
    }

    fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let expires = self.expiry(ttl);
        let (mut map, k) = self.live(ns, key)?;
        if map.get(&k).map(|e| e.value.as_slice()) != expected {
            return Ok(false);
        }
        match new {
            Some(v) => {
                let value = v.to_vec();
                map.insert(k, Entry { value, expires })
            }
            None => map.remove(&k),
        };
        Ok(true)
    }
}

/// `[expect_kv]`: what the store holds under `key` against the expectation. The report shows
/// the value, and the time left when the key expires (`kv "k": 3 (ttl 10m)`).
pub fn check(kv: &ClockedKv, ns: &str, key: &str, want: &KvEntry) -> anyhow::Result<Outcome> {
    let held = kv.held(ns, key.as_bytes())?;
    let value = held
        .as_ref()
        .map(|h| String::from_utf8_lossy(&h.value).into_owned());
    let ttl = held.as_ref().and_then(|h| h.ttl);
    let shown = match (&value, ttl) {
        (None, _) => "(absent)".to_string(),
        (Some(v), None) => v.clone(),
        (Some(v), Some(_)) => format!("{v} (ttl {})", ttl_text(ttl)),
    };
    let mut o = report::text(format!("kv {key:?}"), None, shown);
    if value.as_deref() != want.expected() {
        o.diff.push(format!(
            "- value: {}",
            want.expected().unwrap_or("(absent)")
        ));
        o.diff.push(format!(
            "+ value: {}",
            value.as_deref().unwrap_or("(absent)")
        ));
    }
    if let (Some(want_ttl), Some(_)) = (want.ttl(), &value) {
        if ttl_text(Some(want_ttl)) != ttl_text(ttl) {
            o.diff.push(format!("- ttl: {}", ttl_text(Some(want_ttl))));
            o.diff.push(format!("+ ttl: {}", ttl_text(ttl)));
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_host::clock::ScriptedClock;

    fn store() -> (Arc<ScriptedClock>, ClockedKv) {
        let clock = Arc::new(ScriptedClock::new(Duration::from_secs(1_000_000)));
        (clock.clone(), ClockedKv::new(clock))
    }

    #[test]
    fn keys_expire_when_the_scripted_clock_passes_their_ttl() {
        let (clock, kv) = store();
        let ten_min = Some(Duration::from_secs(600));
        kv.set("p", b"k", b"v", ten_min).unwrap();
        kv.set("p", b"forever", b"v", None).unwrap();
        clock.advance(Duration::from_secs(599));
        let held = kv.held("p", b"k").unwrap().expect("still there");
        assert_eq!(held.ttl, Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            kv.get("p", b"k").unwrap(),
            None,
            "expired at exactly its TTL"
        );
        assert!(!kv.delete("p", b"k").unwrap());
        let forever = kv.held("p", b"forever").unwrap().expect("kept");
        assert_eq!(forever.ttl, None);
    }

    #[test]
    fn a_counter_keeps_the_window_of_its_first_increment() {
        let (clock, kv) = store();
        let window = Some(Duration::from_secs(60));
        assert_eq!(kv.increment("p", b"n", 1, window).unwrap(), 1);
        clock.advance(Duration::from_secs(30));
        assert_eq!(kv.increment("p", b"n", 1, window).unwrap(), 2);
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            kv.increment("p", b"n", 1, window).unwrap(),
            1,
            "a new window"
        );
        kv.set("p", b"s", b"x", None).unwrap();
        assert_eq!(kv.increment("p", b"s", 1, None), Err(KvError::NotANumber));
    }

    #[test]
    fn compare_and_swap_sees_an_expired_key_as_absent() {
        let (clock, kv) = store();
        kv.set("p", b"k", b"old", Some(Duration::from_secs(5)))
            .unwrap();
        assert!(!kv
            .compare_and_swap("p", b"k", None, Some(b"new"), None)
            .unwrap());
        clock.advance(Duration::from_secs(5));
        assert!(kv
            .compare_and_swap("p", b"k", None, Some(b"new"), None)
            .unwrap());
        assert_eq!(kv.get("p", b"k").unwrap(), Some(b"new".to_vec()));
        assert_eq!(kv.get("q", b"k").unwrap(), None, "namespaces are separate");
    }
}

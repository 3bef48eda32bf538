//! The plugins' key-value store (greylisting triplets, rate-limit counters): one sled tree in
//! the queue's database, keys namespaced per plugin, values with an optional expiry.
//!
//! Writes are not flushed one by one: they become durable with the next group commit of the
//! queue (every accepted message flushes the whole database) and at shutdown. Losing the last
//! moments of a counter in a power cut is acceptable; losing mail is not, and mail is flushed.

use crate::QueueError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A stored value: 8 octets of expiry (unix milliseconds, 0 = never, big-endian), then the value.
const HEADER: usize = 8;
/// Longest key and value accepted; the store is for small state, not for files.
pub const MAX_KEY: usize = 1024;
pub const MAX_VALUE: usize = 64 * 1024;

#[derive(Clone)]
pub struct SledKv {
    tree: sled::Tree,
}

impl SledKv {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        SledKv { tree }
    }

    pub fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, QueueError> {
        let full = full_key(namespace, key)?;
        Ok(self
            .tree
            .get(&full)?
            .and_then(|v| live(&v).map(<[u8]>::to_vec)))
    }

    pub fn set(
        &self,
        namespace: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), QueueError> {
        let full = full_key(namespace, key)?;
        self.tree.insert(full, encode(value, ttl)?)?;
        Ok(())
    }

    /// True when a live value was removed.
    pub fn delete(&self, namespace: &str, key: &[u8]) -> Result<bool, QueueError> {
        let full = full_key(namespace, key)?;
        Ok(self.tree.remove(full)?.is_some_and(|v| live(&v).is_some()))
    }

    /// Atomically adds `delta` to the decimal integer at `key` (absent or expired = 0); `ttl`
    /// applies when the value is created, so a counter window starts at its first hit.
    pub fn increment(
        &self,
        namespace: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, QueueError> {
        let full = full_key(namespace, key)?;
        loop {
            let old = self.tree.get(&full)?;
            let (current, expiry) = match old.as_deref().and_then(|v| live(v).map(|l| (l, v))) {
                Some((value, raw)) => (parse_int(value)?, Some(raw[..HEADER].to_vec())),
                None => (0, None),
            };
            let next = current.saturating_add(delta);
            let new = match &expiry {
                Some(header) => [header.as_slice(), next.to_string().as_bytes()].concat(),
                None => encode(next.to_string().as_bytes(), ttl)?,
            };
            if self.tree.compare_and_swap(&full, old, Some(new))?.is_ok() {
                return Ok(next);
            }
        }
    }

    /// Sets `key` to `new` (`None` deletes) only if its live value is `expected`.
    pub fn compare_and_swap(
        &self,
        namespace: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, QueueError> {
        let full = full_key(namespace, key)?;
        let old = self.tree.get(&full)?;
        if old.as_deref().and_then(live) != expected {
            return Ok(false);
        }
        let new = new.map(|v| encode(v, ttl)).transpose()?;
        Ok(self.tree.compare_and_swap(&full, old, new)?.is_ok())
    }

    /// Drops expired entries; run at open.
    pub(crate) fn sweep(&self) -> Result<usize, QueueError> {
        let mut removed = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            if live(&v).is_none() {
                self.tree.remove(k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn full_key(namespace: &str, key: &[u8]) -> Result<Vec<u8>, QueueError> {
    if key.len() > MAX_KEY || namespace.contains('\0') {
        return Err(QueueError::Storage(
            "kv key too long or namespace invalid".into(),
        ));
    }
    Ok([namespace.as_bytes(), b"\0", key].concat())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode(value: &[u8], ttl: Option<Duration>) -> Result<Vec<u8>, QueueError> {
    if value.len() > MAX_VALUE {
        return Err(QueueError::Storage(format!(
            "kv value over {MAX_VALUE} octets"
        )));
    }
    let expiry = ttl.map_or(0, |t| now_ms().saturating_add(t.as_millis() as u64).max(1));
    Ok([&expiry.to_be_bytes()[..], value].concat())
}

/// The value, unless it has expired (or the record is malformed).
fn live(raw: &[u8]) -> Option<&[u8]> {
    let header: [u8; HEADER] = raw.get(..HEADER)?.try_into().ok()?;
    let expiry = u64::from_be_bytes(header);
    (expiry == 0 || expiry > now_ms()).then(|| &raw[HEADER..])
}

fn parse_int(value: &[u8]) -> Result<i64, QueueError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| QueueError::Storage("kv value is not an integer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> (tempfile::TempDir, SledKv) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let kv = SledKv::new(db.open_tree("kv").unwrap());
        (dir, kv)
    }

    #[test]
    fn namespaces_ttl_increment_and_cas() {
        let (_d, kv) = kv();
        kv.set("a", b"k", b"1", None).unwrap();
        assert_eq!(kv.get("b", b"k").unwrap(), None, "namespaces are separate");
        assert_eq!(kv.increment("a", b"k", 4, None).unwrap(), 5);
        assert_eq!(
            kv.increment("a", b"n", 1, Some(Duration::from_millis(30)))
                .unwrap(),
            1
        );
        assert_eq!(
            kv.increment("a", b"n", 1, Some(Duration::from_secs(60)))
                .unwrap(),
            2
        );
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            kv.get("a", b"n").unwrap(),
            None,
            "expired with the first hit's TTL"
        );
        assert_eq!(kv.increment("a", b"n", 1, None).unwrap(), 1);
        assert!(!kv
            .compare_and_swap("a", b"k", Some(b"9"), Some(b"x"), None)
            .unwrap());
        assert!(kv
            .compare_and_swap("a", b"k", Some(b"5"), Some(b"x"), None)
            .unwrap());
        assert!(kv
            .compare_and_swap("a", b"new", None, Some(b"y"), None)
            .unwrap());
        assert_eq!(kv.get("a", b"new").unwrap().as_deref(), Some(&b"y"[..]));
        assert!(kv.delete("a", b"k").unwrap());
        assert!(
            kv.increment("a", b"new", 1, None).is_err(),
            "not an integer"
        );
        assert_eq!(kv.sweep().unwrap(), 0);
    }

    #[test]
    fn concurrent_increments_are_not_lost() {
        let (_d, kv) = kv();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    (0..250).for_each(|_| {
                        kv.increment("p", b"c", 1, None).unwrap();
                    })
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(kv.get("p", b"c").unwrap().as_deref(), Some(&b"1000"[..]));
    }
}

//! The plugins' key-value store (greylisting triplets, rate-limit counters): one sled tree in
//! the queue's database, keys namespaced per plugin, values with an optional expiry.
//!
//! Writes are not flushed one by one: they become durable with the next group commit of the
//! queue (every accepted message flushes the whole database) and at shutdown. Losing the last
//! moments of a counter in a power cut is acceptable; losing mail is not, and mail is flushed.
//!
//! Each plugin (namespace) has a quota of keys and octets ([`KvLimits`]); a write past it
//! fails with [`KvError::QuotaExceeded`] and changes nothing. Expired entries are invisible at
//! once and removed by [`SledKv::sweep_some`], which the server runs periodically in bounded
//! steps (and [`SledKv::sweep`] at open).

mod limits;
mod store;
#[cfg(test)]
mod tests;

use crate::QueueError;
use limits::Usage;
pub use limits::{KvError, KvLimits};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A stored value: 8 octets of expiry (unix milliseconds, 0 = never, big-endian), then the value.
const HEADER: usize = 8;
/// Longest key and value accepted; the store is for small state, not for files.
pub const MAX_KEY: usize = 1024;
pub const MAX_VALUE: usize = 64 * 1024;

/// One entry as `corvid kv list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KvEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Unix milliseconds at which it expires, if it does.
    pub expires_ms: Option<u64>,
}

#[derive(Clone)]
pub struct SledKv {
    tree: sled::Tree,
    limits: KvLimits,
    /// Every write takes this lock, so that the quota check and the write are one step, and
    /// the usage stays exact. It also holds the sweep's cursor.
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    usage: HashMap<String, Usage>,
    /// Where the next bounded sweep starts.
    cursor: Vec<u8>,
}

impl SledKv {
    /// Wraps the tree and counts what each namespace holds (one scan, at open).
    pub(crate) fn new(tree: sled::Tree, limits: KvLimits) -> Result<Self, QueueError> {
        let mut usage: HashMap<String, Usage> = HashMap::new();
        for item in tree.iter() {
            let (k, v) = item?;
            if let Some(ns) = namespace_of(&k) {
                usage.entry(ns).or_default().add(k.len(), v.len());
            }
        }
        Ok(SledKv {
            tree,
            limits,
            state: Arc::new(Mutex::new(State {
                usage,
                cursor: Vec::new(),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Usage is only ever changed after a successful write, one entry at a time.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let full = full_key(namespace, key)?;
        Ok(self
            .tree
            .get(&full)?
            .and_then(|v| live(&v).map(<[u8]>::to_vec)))
    }

    /// The time the live value of `key` has left; `None` without expiry or value.
    pub fn ttl(&self, namespace: &str, key: &[u8]) -> Result<Option<Duration>, KvError> {
        let full = full_key(namespace, key)?;
        let Some(raw) = self.tree.get(&full)? else {
            return Ok(None);
        };
        let now = now_ms();
        Ok(match expiry(&raw) {
            Some(at) if at != 0 && at > now => Some(Duration::from_millis(at - now)),
            _ => None,
        })
    }

    pub fn set(
        &self,
        namespace: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let full = full_key(namespace, key)?;
        let new = encode(value, ttl)?;
        let mut state = self.lock();
        let old = self.tree.get(&full)?;
        self.admit(&state, namespace, &full, old.as_deref(), Some(&new))?;
        self.tree.insert(&full, new.as_slice())?;
        account(&mut state, namespace, &full, old.as_deref(), Some(&new));
        Ok(())
    }

    /// True when a live value was removed.
    pub fn delete(&self, namespace: &str, key: &[u8]) -> Result<bool, KvError> {
        let full = full_key(namespace, key)?;
        let mut state = self.lock();
        let old = self.tree.remove(&full)?;
        account(&mut state, namespace, &full, old.as_deref(), None);
        Ok(old.is_some_and(|v| live(&v).is_some()))
    }

    /// Atomically adds `delta` to the decimal integer at `key` (absent or expired = 0); `ttl`
    /// applies when the value is created, so a counter window starts at its first hit.
    pub fn increment(
        &self,
        namespace: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        let full = full_key(namespace, key)?;
        let mut state = self.lock();
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
        self.admit(&state, namespace, &full, old.as_deref(), Some(&new))?;
        self.tree.insert(&full, new.as_slice())?;
        account(&mut state, namespace, &full, old.as_deref(), Some(&new));
        Ok(next)
    }

    /// Sets `key` to `new` (`None` deletes) only if its live value is `expected`.
    pub fn compare_and_swap(
        &self,
        namespace: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let full = full_key(namespace, key)?;
        let new = new.map(|v| encode(v, ttl)).transpose()?;
        let mut state = self.lock();
        let old = self.tree.get(&full)?;
        if old.as_deref().and_then(live) != expected {
            return Ok(false);
        }
        self.admit(&state, namespace, &full, old.as_deref(), new.as_deref())?;
        match &new {
            Some(v) => self.tree.insert(&full, v.as_slice())?,
            None => self.tree.remove(&full)?,
        };
        account(&mut state, namespace, &full, old.as_deref(), new.as_deref());
        Ok(true)
    }

    /// Up to `limit` live entries of `namespace` whose key starts with `prefix`, in key
    /// order (`corvid kv list`).
    pub fn list(
        &self,
        namespace: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        let start = full_key(namespace, prefix)?;
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&start) {
            let (k, v) = item.map_err(QueueError::from)?;
            let Some(value) = live(&v) else { continue };
            let expiry = u64::from_be_bytes(v[..HEADER].try_into().unwrap_or_default());
            out.push(KvEntry {
                key: k[namespace.len() + 1..].to_vec(),
                value: value.to_vec(),
                expires_ms: (expiry != 0).then_some(expiry),
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Keys and octets `namespace` holds now (expired entries not yet swept included).
    pub fn usage(&self, namespace: &str) -> (u64, u64) {
        let state = self.lock();
        state
            .usage
            .get(namespace)
            .map_or((0, 0), |u| (u.keys, u.bytes))
    }

    /// Drops every expired entry; run at open.
    pub(crate) fn sweep(&self) -> Result<usize, QueueError> {
        let mut removed = 0;
        loop {
            let (n, wrapped) = self.sweep_some(10_000)?;
            removed += n;
            if wrapped {
                return Ok(removed);
            }
        }
    }

    /// Looks at up to `budget` entries from where the last call stopped and drops the expired
    /// ones; returns how many were dropped and whether the pass reached the end of the store
    /// (the next one starts over). Bounded, so that the periodic sweep never stalls plugin
    /// calls for long.
    pub fn sweep_some(&self, budget: usize) -> Result<(usize, bool), QueueError> {
        let mut state = self.lock();
        let mut removed = 0;
        let start = state.cursor.clone();
        for (seen, item) in self.tree.range(start..).enumerate() {
            let (k, v) = item?;
            if seen >= budget {
                state.cursor = k.to_vec();
                return Ok((removed, false));
            }
            if live(&v).is_none() {
                self.tree.remove(&k)?;
                if let Some(ns) = namespace_of(&k) {
                    account(&mut state, &ns, &k, Some(&v), None);
                }
                removed += 1;
            }
        }
        state.cursor.clear();
        Ok((removed, true))
    }

    /// Refuses a write that takes `namespace` past its quota. Shrinking writes always pass.
    fn admit(
        &self,
        state: &State,
        namespace: &str,
        full: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), KvError> {
        let now = state.usage.get(namespace).copied().unwrap_or_default();
        let after = now.change(full.len(), old.map(<[u8]>::len), new.map(<[u8]>::len));
        self.limits.check(namespace, &now, &after)
    }
}

fn account(
    state: &mut State,
    namespace: &str,
    full: &[u8],
    old: Option<&[u8]>,
    new: Option<&[u8]>,
) {
    let usage = state.usage.entry(namespace.to_string()).or_default();
    *usage = usage.change(full.len(), old.map(<[u8]>::len), new.map(<[u8]>::len));
}

fn namespace_of(full: &[u8]) -> Option<String> {
    let end = full.iter().position(|&b| b == 0)?;
    String::from_utf8(full[..end].to_vec()).ok()
}

fn full_key(namespace: &str, key: &[u8]) -> Result<Vec<u8>, KvError> {
    if key.len() > MAX_KEY || namespace.contains('\0') {
        return Err(KvError::Invalid(format!(
            "key over {MAX_KEY} octets or namespace with NUL"
        )));
    }
    Ok([namespace.as_bytes(), b"\0", key].concat())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode(value: &[u8], ttl: Option<Duration>) -> Result<Vec<u8>, KvError> {
    if value.len() > MAX_VALUE {
        return Err(KvError::Invalid(format!("value over {MAX_VALUE} octets")));
    }
    let expiry = ttl.map_or(0, |t| now_ms().saturating_add(t.as_millis() as u64).max(1));
    Ok([&expiry.to_be_bytes()[..], value].concat())
}

/// A record's expiry in milliseconds since the epoch (0: none); `None` when malformed.
fn expiry(raw: &[u8]) -> Option<u64> {
    let header: [u8; HEADER] = raw.get(..HEADER)?.try_into().ok()?;
    Some(u64::from_be_bytes(header))
}

/// The value, unless it has expired (or the record is malformed).
fn live(raw: &[u8]) -> Option<&[u8]> {
    let at = expiry(raw)?;
    (at == 0 || at > now_ms()).then(|| &raw[HEADER..])
}

fn parse_int(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(KvError::NotAnInteger)
}

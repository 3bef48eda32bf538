//! MTA-STS (RFC 8461): which recipient domains want their mail only over verified TLS to
//! named MX hosts.
//!
//! A policy belongs to the recipient domain, never to an MX host: two domains sharing one MX
//! each get their own policy (a destination is a recipient domain's MX set, see `route.rs`,
//! so their sessions are not shared either).
//!
//! Discovery (5.1): the `_mta-sts.<domain>` TXT record's `id`; when it differs from the cached
//! policy's, or the cached one expired (`max_age`), the policy is fetched again
//! ([`fetch`]). When the TXT lookup fails or finds nothing, or the fetch fails, a cached
//! policy that has not expired is used: a DNS outage or a missing record is not a policy
//! removal (RFC 8461 5.1 and 10.2). The cache is in the queue's store
//! ([`corvid_queue::Spool::sts_policy`]), so it outlives restarts, with a copy in memory.

pub mod fetch;
pub mod policy;
#[cfg(test)]
mod tests;

use crate::dns::{Dns, DnsError};
use corvid_queue::Spool;
pub use fetch::FetchOptions;
pub use policy::{Mode, Policy};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Domains whose policy is kept in memory at most; beyond, the expired ones go, then the
/// least recently fetched tenth (the store still has them).
const MEMORY_ENTRIES: usize = 10_000;
/// How often the memory copy drops the policies past their `max_age` even when not full.
const SWEEP_INTERVAL: u64 = 3600;

/// A policy as cached: the TXT `id` it was fetched for, and when (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    pub id: String,
    pub policy: Policy,
    pub fetched_at: u64,
}

impl Cached {
    fn fresh(&self, now: u64) -> bool {
        now < self.fetched_at.saturating_add(self.policy.max_age)
    }
}

/// The policy that applies to one delivery, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub domain: String,
    pub policy: Policy,
    /// `fetched` (just now) or `cached` (the store's copy: same id, or DNS or the fetch failed).
    pub source: &'static str,
}

/// What discovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No policy (no record, `mode: none`): deliver as without MTA-STS.
    None,
    Policy(Applied),
    /// A record was published but no policy could be had, and none is cached: deliver as
    /// without MTA-STS (5.1), but it counts as `sts-policy-fetch-error` (RFC 8460 4.3.2.1).
    FetchFailed(String),
}

/// Fetches a policy text; the network one is [`fetch::fetch`].
#[async_trait::async_trait]
pub trait Fetcher: Send + Sync {
    async fn fetch(&self, dns: &dyn Dns, domain: &str) -> Result<String, String>;
}

#[async_trait::async_trait]
impl Fetcher for FetchOptions {
    async fn fetch(&self, dns: &dyn Dns, domain: &str) -> Result<String, String> {
        fetch::fetch(dns, domain, self).await
    }
}

/// Discovery with its cache.
pub struct MtaSts {
    fetcher: Arc<dyn Fetcher>,
    store: Option<Arc<dyn Spool>>,
    memory: Mutex<Memory>,
    /// When the store's copy was last pruned of expired policies (unix seconds).
    store_swept_at: AtomicU64,
}

/// The cache's copy in memory: bounded, and without policies past their `max_age` (RFC 8461
/// 5.1: an expired policy no longer applies, so it is not worth its room).
struct Memory {
    map: HashMap<String, Cached>,
    capacity: usize,
    /// When the expired entries were last dropped (unix seconds).
    swept_at: u64,
}

impl Memory {
    fn new(capacity: usize) -> Self {
        Memory {
            map: HashMap::new(),
            capacity: capacity.max(1),
            swept_at: 0,
        }
    }

    fn insert(&mut self, domain: &str, entry: &Cached, now: u64) {
        let full = self.map.len() >= self.capacity && !self.map.contains_key(domain);
        if full || now >= self.swept_at.saturating_add(SWEEP_INTERVAL) {
            self.map.retain(|_, c| c.fresh(now));
            self.swept_at = now;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(domain) {
            // Full of live policies: the least recently fetched tenth goes (one pass to find
            // the cut, one to drop; this happens once per tenth of the capacity filled).
            let evict = (self.capacity / 10).max(1);
            let mut fetched: Vec<u64> = self.map.values().map(|c| c.fetched_at).collect();
            let cut = *fetched.select_nth_unstable(evict - 1).1;
            let mut left = evict;
            self.map.retain(|_, c| {
                let keep = c.fetched_at > cut || left == 0;
                left -= usize::from(!keep);
                keep
            });
        }
        self.map.insert(domain.to_string(), entry.clone());
    }
}

impl MtaSts {
    pub fn new(fetcher: Arc<dyn Fetcher>, store: Option<Arc<dyn Spool>>) -> Self {
        MtaSts {
            fetcher,
            store,
            memory: Mutex::new(Memory::new(MEMORY_ENTRIES)),
            store_swept_at: AtomicU64::new(0),
        }
    }

    /// The policy for mail to `domain` (lower case) at unix time `now`.
    pub async fn lookup(&self, dns: &dyn Dns, domain: &str, now: u64) -> Lookup {
        let cached = self.cached(domain, now).await.filter(|c| c.fresh(now));
        let use_cached = |why: &str| match &cached {
            Some(c) => {
                tracing::debug!(domain, why, id = %c.id, "MTA-STS: using the cached policy");
                applied(domain, c, "cached")
            }
            None => Lookup::None,
        };
        let id = match dns.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => match policy::record_id(&records) {
                Some(id) => id,
                None => return use_cached("no valid TXT record"),
            },
            Err(DnsError::Temporary(e)) => {
                tracing::info!(domain, error = %e, "MTA-STS: TXT lookup failed");
                return use_cached("TXT lookup failed");
            }
            Err(_) => return use_cached("no TXT record"),
        };
        if let Some(c) = cached.as_ref().filter(|c| c.id == id) {
            return applied(domain, c, "cached");
        }
        let fetched = self.fetcher.fetch(dns, domain).await.and_then(|text| {
            policy::parse_policy(&text).map_err(|e| format!("invalid policy: {e}"))
        });
        match fetched {
            Ok(policy) => {
                let entry = Cached {
                    id,
                    policy,
                    fetched_at: now,
                };
                tracing::info!(domain, id = %entry.id, mode = entry.policy.mode.as_str(),
                    max_age = entry.policy.max_age, "MTA-STS policy fetched");
                self.store(domain, &entry, now).await;
                applied(domain, &entry, "fetched")
            }
            Err(e) => {
                tracing::warn!(domain, error = %e, "MTA-STS policy fetch failed");
                match use_cached("fetch failed") {
                    Lookup::None => Lookup::FetchFailed(e),
                    found => found,
                }
            }
        }
    }

    async fn cached(&self, domain: &str, now: u64) -> Option<Cached> {
        if let Some(c) = lock(&self.memory).map.get(domain) {
            return Some(c.clone());
        }
        let store = Arc::clone(self.store.as_ref()?);
        let key = domain.to_string();
        let raw = crate::blocking::blocking(move || store.sts_policy(&key))
            .await?
            .map_err(|e| tracing::warn!(error = %e, "cannot read the MTA-STS cache"))
            .ok()??;
        let entry: Cached = serde_json::from_slice(&raw).ok()?;
        // An expired entry is of no use past this lookup: it must not push live ones out.
        if entry.fresh(now) {
            lock(&self.memory).insert(domain, &entry, now);
        }
        Some(entry)
    }

    async fn store(&self, domain: &str, entry: &Cached, now: u64) {
        lock(&self.memory).insert(domain, entry, now);
        let (Some(store), Ok(raw)) = (self.store.as_ref(), serde_json::to_vec(entry)) else {
            return;
        };
        let store = Arc::clone(store);
        let key = domain.to_string();
        let swept_at = self.store_swept_at.load(Ordering::Relaxed);
        let sweep = now >= swept_at.saturating_add(SWEEP_INTERVAL)
            && self
                .store_swept_at
                .compare_exchange(swept_at, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if let Some(Err(e)) = crate::blocking::blocking(move || {
            store.set_sts_policy(&key, &raw)?;
            // At most hourly: the stored copy drops what `lookup` would ignore anyway.
            if sweep {
                let gone = store.prune_sts_policies(&|raw| {
                    serde_json::from_slice::<Cached>(raw).is_ok_and(|c| c.fresh(now))
                })?;
                tracing::debug!(gone, "MTA-STS: expired policies pruned from the store");
            }
            Ok::<_, corvid_queue::QueueError>(())
        })
        .await
        {
            tracing::warn!(error = %e, "cannot store the MTA-STS policy");
        }
    }
}

fn applied(domain: &str, c: &Cached, source: &'static str) -> Lookup {
    if c.policy.mode == Mode::None {
        return Lookup::None;
    }
    Lookup::Policy(Applied {
        domain: domain.to_string(),
        policy: c.policy.clone(),
        source,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map operation: the map stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

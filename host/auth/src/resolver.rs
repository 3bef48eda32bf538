//! The DNS side: `mail-auth`'s hickory resolver on configured nameservers, and a bounded cache
//! of parsed records (on top of hickory's own answer cache), kept for the records' TTL.

use crate::{AuthChecksConfig, AuthError};
use mail_auth::hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::proto::xfer::Protocol;
use mail_auth::{MessageAuthenticator, ResolverCache, Txt, MX};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Builds the resolver: the configured nameservers (UDP, then TCP for truncated answers), or
/// the system's when none are configured.
pub(crate) fn build(cfg: &AuthChecksConfig) -> Result<MessageAuthenticator, AuthError> {
    let mut opts = ResolverOpts::default();
    opts.timeout = cfg.dns_timeout;
    opts.attempts = 2;
    // hickory's answer cache (default 32 entries) holds what our parsed-record cache does not,
    // e.g. negative answers.
    opts.cache_size = cfg.cache_entries;
    if cfg.nameservers.is_empty() {
        let (config, mut sys) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| AuthError::Resolver(e.to_string()))?;
        sys.timeout = opts.timeout;
        sys.attempts = opts.attempts;
        sys.cache_size = opts.cache_size;
        return MessageAuthenticator::new(config, sys)
            .map_err(|e| AuthError::Resolver(e.to_string()));
    }
    let mut group = NameServerConfigGroup::new();
    for addr in &cfg.nameservers {
        group.push(NameServerConfig::new(*addr, Protocol::Udp));
        group.push(NameServerConfig::new(*addr, Protocol::Tcp));
    }
    // The configured servers answer everything: no search domains, no ndots games.
    opts.ndots = 0;
    MessageAuthenticator::new(ResolverConfig::from_parts(None, vec![], group), opts)
        .map_err(|e| AuthError::Resolver(e.to_string()))
}

/// A TTL cache with a size bound: when full, expired entries go first, then everything (a
/// crude but safe bound; the cache is an optimisation, hickory caches answers too).
pub(crate) struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    max: usize,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(max: usize) -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(name) {
            Some((v, until)) if *until > Instant::now() => Some(v.clone()),
            _ => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(key, (value, valid_until));
    }
}

/// `mail-auth` call parameters with our caches.
pub(crate) type CachedParams<'x, P> = mail_auth::Parameters<
    'x,
    P,
    TtlCache<String, Txt>,
    TtlCache<String, Arc<Vec<MX>>>,
    TtlCache<String, Arc<Vec<Ipv4Addr>>>,
    TtlCache<String, Arc<Vec<Ipv6Addr>>>,
    TtlCache<IpAddr, Arc<Vec<String>>>,
>;

/// One cache per record type, as `mail-auth` wants them.
pub(crate) struct Caches {
    pub txt: TtlCache<String, Txt>,
    pub mx: TtlCache<String, Arc<Vec<MX>>>,
    pub ipv4: TtlCache<String, Arc<Vec<Ipv4Addr>>>,
    pub ipv6: TtlCache<String, Arc<Vec<Ipv6Addr>>>,
    pub ptr: TtlCache<IpAddr, Arc<Vec<String>>>,
}

impl Caches {
    pub(crate) fn new(max: usize) -> Self {
        Caches {
            txt: TtlCache::new(max),
            mx: TtlCache::new(max),
            ipv4: TtlCache::new(max),
            ipv6: TtlCache::new(max),
            ptr: TtlCache::new(max),
        }
    }

    /// `mail-auth` call parameters with every cache attached.
    pub(crate) fn params<P>(&self, p: P) -> CachedParams<'_, P> {
        mail_auth::Parameters::new(p)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

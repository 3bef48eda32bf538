//! `[kv]`: which store the plugins' `kv` import uses. `sled` (the default) is the node's own
//! database, next to its queue; `redis` is a Redis or Valkey server that several nodes share,
//! so that rate limits and greylisting hold across them (docs/scaling.md).

use anyhow::{bail, Context, Result};
use corvid_kv_redis::{RedisKv, RedisSettings};
use corvid_queue::{KvLimits, SledKv, SledSpool};
use corvid_types::KvStore;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    #[default]
    Sled,
    Redis,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvSection {
    /// `sled` or `redis`.
    pub backend: KvBackend,
    /// `redis://[user:password@]host:port/db` or `rediss://` (TLS); required with `redis`.
    pub url: Option<String>,
    /// Prefix of every key Corvid writes in Redis.
    pub key_prefix: String,
    /// Deadline of one Redis call; past it the call is a storage error for the plugin.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After a Redis failure, calls fail at once for this long before Redis is tried again.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Per-plugin quota of keys (both backends).
    pub max_keys_per_plugin: u64,
    /// Per-plugin quota of octets, keys plus values (both backends).
    pub max_bytes_per_plugin: u64,
}

impl Default for KvSection {
    fn default() -> Self {
        let limits = KvLimits::default();
        KvSection {
            backend: KvBackend::Sled,
            url: None,
            key_prefix: corvid_kv_redis::DEFAULT_PREFIX.into(),
            timeout: corvid_kv_redis::DEFAULT_TIMEOUT,
            retry_after: corvid_kv_redis::DEFAULT_RETRY_AFTER,
            max_keys_per_plugin: limits.max_keys_per_plugin,
            max_bytes_per_plugin: limits.max_bytes_per_plugin,
        }
    }
}

/// Longest `kv.timeout`: a hook's default wall-clock budget is 5 s, and a kv call blocks
/// its hook, so one call must stay well inside it.
const MAX_TIMEOUT: Duration = Duration::from_secs(2);

impl KvSection {
    /// The quotas, for the sled store in the queue.
    pub fn limits(&self) -> KvLimits {
        KvLimits {
            max_keys_per_plugin: self.max_keys_per_plugin,
            max_bytes_per_plugin: self.max_bytes_per_plugin,
        }
    }

    /// The rules serde cannot express; `Config::parse` runs them, so `check-config` and
    /// `serve` refuse the same `[kv]` tables.
    pub fn check(&self) -> Result<()> {
        if self.backend != KvBackend::Redis {
            return Ok(());
        }
        if self.url.is_none() {
            bail!("key `kv.url`: required with kv.backend = \"redis\"");
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            bail!("key `kv.timeout`: must be between 1ms and {MAX_TIMEOUT:?}");
        }
        Ok(())
    }

    /// The configured store (the plugins use [`AdminKv::store`]). With `redis` it connects
    /// lazily: a node whose Redis is down still starts and takes mail; the plugins' kv calls
    /// fail per their failure policy.
    pub fn open_admin(&self, spool: &SledSpool) -> Result<AdminKv> {
        self.check()?;
        match self.backend {
            KvBackend::Sled => Ok(AdminKv::Sled(spool.kv())),
            KvBackend::Redis => {
                let Some(url) = &self.url else {
                    bail!("key `kv.url`: required with kv.backend = \"redis\"");
                };
                let store = RedisKv::open(RedisSettings {
                    url: url.clone(),
                    key_prefix: self.key_prefix.clone(),
                    timeout: self.timeout,
                    retry_after: self.retry_after,
                    max_keys_per_plugin: self.max_keys_per_plugin,
                    max_bytes_per_plugin: self.max_bytes_per_plugin,
                })
                // The error names the key, never the URL (it may hold a password).
                .context("opening the Redis kv store")?;
                tracing::info!(server = %redacted(url), prefix = %self.key_prefix, "kv: Redis backend");
                Ok(AdminKv::Redis(Arc::new(store)))
            }
        }
    }
}

/// The configured store, concrete, for the administrator's listing (the plugins' `kv` import
/// has no listing; each backend lists its own way).
#[derive(Clone)]
pub enum AdminKv {
    Sled(SledKv),
    Redis(Arc<RedisKv>),
}

impl AdminKv {
    /// The store as the plugins use it.
    pub fn store(&self) -> Arc<dyn KvStore> {
        match self {
            AdminKv::Sled(kv) => Arc::new(kv.clone()),
            AdminKv::Redis(kv) => Arc::clone(kv) as Arc<dyn KvStore>,
        }
    }
}

/// The URL without its password, for the log.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KvSection, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_are_sled_with_the_queue_quotas() {
        let kv = parse("").unwrap();
        assert_eq!(kv.backend, KvBackend::Sled);
        assert_eq!(kv.limits(), KvLimits::default());
        assert_eq!(kv.timeout, Duration::from_millis(250));
        assert_eq!(kv.key_prefix, "corvid:kv:");
    }

    #[test]
    fn redis_settings_parse() {
        let kv = parse(
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379/2\"\ntimeout = \"100ms\"\n\
             retry_after = \"2s\"\nkey_prefix = \"mx:\"\nmax_keys_per_plugin = 7\n",
        )
        .unwrap();
        assert_eq!(kv.backend, KvBackend::Redis);
        assert_eq!(kv.url.as_deref(), Some("redis://127.0.0.1:6379/2"));
        assert_eq!(kv.timeout, Duration::from_millis(100));
        assert_eq!(kv.retry_after, Duration::from_secs(2));
        assert_eq!(kv.limits().max_keys_per_plugin, 7);
        assert!(parse("backend = \"memcached\"").is_err());
        assert!(parse("urls = \"x\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_reference_config_shows_the_defaults() {
        let c = crate::config::Config::parse(include_str!("../../../config/corvid.toml")).unwrap();
        assert_eq!(c.kv, KvSection::default());
    }

    #[test]
    fn passwords_stay_out_of_the_log() {
        assert_eq!(
            redacted("redis://user:s3cret@db.example:6379/0"),
            "redis://***@db.example:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }
}

//! The plugins' key-value store on Redis (6 or later) or Valkey, so that several Corvid nodes
//! share rate-limit counters, greylisting triplets and reputation ([`RedisKv`]).
//!
//! The [`KvStore`] semantics are the sled store's, checked by the same test table
//! (`corvid_types::kv::conformance`): TTL (Redis's own expiry, which replaces the sled sweep),
//! `increment` with the TTL set on create, compare-and-swap, one namespace per plugin (a key
//! prefix) and per-plugin quotas of keys and octets. Each write is one Lua script, so it is
//! atomic against every node (see `scripts`).
//!
//! Availability: a call never waits longer than `timeout`; a failure or timeout is a
//! [`KvError::Storage`], which the plugin's failure policy handles. After a failure the store
//! fails fast for `retry_after` instead of making every hook wait for a dead server, while the
//! connection manager reconnects in the background. Accepted mail never depends on Redis: the
//! queue is the node's own.

mod bridge;
mod list;
mod scripts;

use bridge::Bridge;
pub use corvid_types::kv::{KvError, KvStore};
pub use list::ListedEntry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::Duration;

/// `[kv]` settings for the Redis backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`, `rediss://` for TLS, `redis+unix:///path`.
    pub url: String,
    /// Prefix of every key Corvid writes, so that a Redis can be shared with other software.
    pub key_prefix: String,
    /// Deadline of one call, connecting included.
    pub timeout: Duration,
    /// How long calls fail at once after a failure, before the server is tried again.
    pub retry_after: Duration,
    /// Most keys one plugin (namespace) may hold.
    pub max_keys_per_plugin: u64,
    /// Most octets (keys plus values) one plugin may hold.
    pub max_bytes_per_plugin: u64,
}

impl RedisSettings {
    /// Settings for `url` with the defaults of `[kv]`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSettings {
            url: url.into(),
            key_prefix: DEFAULT_PREFIX.into(),
            timeout: DEFAULT_TIMEOUT,
            retry_after: DEFAULT_RETRY_AFTER,
            max_keys_per_plugin: 100_000,
            max_bytes_per_plugin: 64 * 1024 * 1024,
        }
    }
}

/// Default of `kv.key_prefix`.
pub const DEFAULT_PREFIX: &str = "corvid:kv:";
/// Default of `kv.timeout`: far inside a hook's default budget of 5 s, far above a LAN
/// round trip.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default of `kv.retry_after`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL does not parse.
    #[error("kv.url: {0}")]
    Url(#[source] redis::RedisError),
    /// The connection manager could not be built.
    #[error("kv: Redis client: {0}")]
    Client(#[source] redis::RedisError),
    /// The store's thread could not start.
    #[error("kv: starting the Redis thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A [`KvStore`] on Redis. Cheap to share behind an `Arc`; dropping it stops its thread.
pub struct RedisKv {
    bridge: Bridge,
    conn: ConnectionManager,
    settings: RedisSettings,
    write: Arc<redis::Script>,
    increment: Arc<redis::Script>,
}

impl RedisKv {
    /// Sets up the client; connects lazily, so a node starts (and its plugins fail per their
    /// policy) while Redis is down.
    pub fn open(settings: RedisSettings) -> Result<Self, OpenError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(OpenError::Url)?;
        let bridge =
            Bridge::start(settings.timeout, settings.retry_after).map_err(OpenError::Thread)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            // Reconnects are cheap and our own deadline bounds every call.
            .set_number_of_retries(2)
            .set_max_delay(settings.retry_after);
        let conn = bridge
            .enter(|| ConnectionManager::new_lazy_with_config(client, config))
            .map_err(OpenError::Client)?;
        Ok(RedisKv {
            bridge,
            conn,
            settings,
            write: Arc::new(scripts::write()),
            increment: Arc::new(scripts::increment()),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// The value key of `key` in `namespace`, and the namespace's value-key prefix.
    fn keys(&self, namespace: &str, key: &[u8]) -> (Vec<u8>, [Vec<u8>; 4]) {
        let base = format!("{}{{{}}}:", self.settings.key_prefix, escape(namespace));
        let prefix = format!("{base}k:").into_bytes();
        let value = [prefix.as_slice(), key].concat();
        let meta = |s: &str| format!("{base}{s}").into_bytes();
        (prefix, [value, meta("idx"), meta("sz"), meta("use")])
    }

    /// Runs a script with the common arguments, then `extra`.
    fn script<T: redis::FromRedisValue + Send + 'static>(
        &self,
        op: &'static str,
        script: &Arc<redis::Script>,
        namespace: &str,
        key: &[u8],
        extra: &[&[u8]],
    ) -> Result<T, KvError> {
        let (prefix, keys) = self.keys(namespace, key);
        let mut args: Vec<Vec<u8>> = vec![
            prefix,
            key.to_vec(),
            self.settings.max_keys_per_plugin.to_string().into_bytes(),
            self.settings.max_bytes_per_plugin.to_string().into_bytes(),
        ];
        args.extend(extra.iter().map(|a| a.to_vec()));
        let mut conn = self.conn.clone();
        let script = Arc::clone(script);
        self.bridge.call(op, async move {
            let mut inv = script.prepare_invoke();
            for k in &keys {
                inv.key(k.as_slice());
            }
            for a in &args {
                inv.arg(a.as_slice());
            }
            // EVALSHA, and the script itself after NOSCRIPT (a restarted server).
            inv.invoke_async(&mut conn).await
        })
    }

    fn quota(&self, status: i64, namespace: &str) -> KvError {
        let what = if status == -1 {
            format!(
                "{} keys (kv.max_keys_per_plugin)",
                self.settings.max_keys_per_plugin
            )
        } else {
            format!(
                "{} octets (kv.max_bytes_per_plugin)",
                self.settings.max_bytes_per_plugin
            )
        };
        KvError::Quota(format!("plugin {namespace}: at most {what}"))
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        op: &'static str,
        namespace: &str,
        key: &[u8],
        cas: bool,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<(bool, bool), KvError> {
        let ttl = ttl_ms(ttl);
        let flag = |b: bool| if b { &b"1"[..] } else { &b"0"[..] };
        let (status, existed): (i64, i64) = self.script(
            op,
            &self.write,
            namespace,
            key,
            &[
                if cas { b"cas" } else { b"set" },
                flag(expected.is_some()),
                expected.unwrap_or_default(),
                flag(new.is_some()),
                new.unwrap_or_default(),
                ttl.as_bytes(),
            ],
        )?;
        match status {
            1 => Ok((true, existed == 1)),
            0 => Ok((false, existed == 1)),
            s => Err(self.quota(s, namespace)),
        }
    }
}

/// Percent-escapes a namespace, so that no plugin name can reach into another's keys or out
/// of the `{...}` hash tag.
fn escape(namespace: &str) -> String {
    let mut out = String::with_capacity(namespace.len());
    for b in namespace.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// TTL in ms for `SET ... PX` (at least 1: Redis refuses 0, and the WIT's 0 s means "expire
/// at once"), or empty for none.
fn ttl_ms(ttl: Option<Duration>) -> String {
    ttl.map_or(String::new(), |t| {
        u64::try_from(t.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, i64::MAX as u64 / 2)
            .to_string()
    })
}

impl KvStore for RedisKv {
    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let (_, [value, ..]) = self.keys(namespace, key);
        let mut conn = self.conn.clone();
        self.bridge.call("get", async move {
            redis::cmd("GET").arg(value).query_async(&mut conn).await
        })
    }

    fn ttl(&self, namespace: &str, key: &[u8]) -> Result<Option<Duration>, KvError> {
        let (_, [value, ..]) = self.keys(namespace, key);
        let mut conn = self.conn.clone();
        let ms: i64 = self.bridge.call("ttl", async move {
            redis::cmd("PTTL").arg(value).query_async(&mut conn).await
        })?;
        // PTTL: -2 for no key, -1 for a key without expiry, else the milliseconds left.
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    fn set(
        &self,
        namespace: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        self.write("set", namespace, key, false, None, Some(value), ttl)
            .map(|_| ())
    }

    fn delete(&self, namespace: &str, key: &[u8]) -> Result<bool, KvError> {
        self.write("delete", namespace, key, false, None, None, None)
            .map(|(_, existed)| existed)
    }

    fn increment(
        &self,
        namespace: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        let bound = if delta >= 0 { i64::MAX } else { i64::MIN };
        let (status, value): (i64, String) = self.script(
            "increment",
            &self.increment,
            namespace,
            key,
            &[
                delta.to_string().as_bytes(),
                bound.to_string().as_bytes(),
                ttl_ms(ttl).as_bytes(),
            ],
        )?;
        match status {
            1 => value
                .parse()
                .map_err(|_| KvError::Storage(format!("increment: Redis returned {value:?}"))),
            -3 => Err(KvError::NotANumber),
            s => Err(self.quota(s, namespace)),
        }
    }

    fn compare_and_swap(
        &self,
        namespace: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        self.write("compare-and-swap", namespace, key, true, expected, new, ttl)
            .map(|(swapped, _)| swapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_escaped_into_one_hash_tag() {
        assert_eq!(escape("rate-limit_2.x"), "rate-limit_2.x");
        assert_eq!(escape("a}:k:{b"), "a%7D%3Ak%3A%7Bb");
        let kv = RedisKv::open(RedisSettings::new("redis://127.0.0.1:1/")).unwrap();
        let (prefix, [value, idx, sz, usage]) = kv.keys("grey list", b"k\0");
        assert_eq!(prefix, b"corvid:kv:{grey%20list}:k:");
        assert_eq!(value, b"corvid:kv:{grey%20list}:k:k\0");
        assert_eq!(idx, b"corvid:kv:{grey%20list}:idx");
        assert_eq!(sz, b"corvid:kv:{grey%20list}:sz");
        assert_eq!(usage, b"corvid:kv:{grey%20list}:use");
    }

    #[test]
    fn ttls_become_milliseconds_of_at_least_one() {
        assert_eq!(ttl_ms(None), "");
        assert_eq!(ttl_ms(Some(Duration::ZERO)), "1");
        assert_eq!(ttl_ms(Some(Duration::from_secs(2))), "2000");
    }

    #[test]
    fn a_bad_url_is_refused_at_open() {
        assert!(matches!(
            RedisKv::open(RedisSettings::new("http://x/")),
            Err(OpenError::Url(_))
        ));
    }
}

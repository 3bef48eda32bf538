//! The host's imports: log, config, kv, dns, clock and metrics.
//!
//! In a plugin built for `wasm32-wasip2` these call the Corvid host. In a native build (your
//! `cargo test`), they use the in-memory fake of [`crate::testing`], so policy logic can be
//! unit-tested without a server. Each import is a capability the manifest must grant
//! (`log`, `config` and `clock` are granted by default); a missing capability is a refusal
//! (`Err(denied)`, an empty config, a dropped log line), never a trap. While the SDK probes
//! the hooks at load time (see [`crate::Plugin::STAGES`]) every import answers that way (in
//! a native build, the fake answers), so a probed hook reaches no real kv store or resolver.

use crate::{ConfigTable, DnsError, KvError, LogLevel, Mx};

#[cfg(target_arch = "wasm32")]
use crate::bindings::corvid::plugin as wit;

/// Writes a line to the server log, tagged with the plugin and session.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    if !crate::runtime::probing() {
        wit::log::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| h.logs.push((level, message.to_string())));
}

/// The plugin's configuration table.
pub fn config_table() -> ConfigTable {
    #[cfg(target_arch = "wasm32")]
    return wit::config::table();
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| h.config.clone())
}

/// The value at `key` (TTL-expired keys are absent).
pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(KvError::Denied)
    } else {
        wit::kv::get(key)
    };
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| Ok(h.kv.get(key).cloned()))
}

/// Sets `key`, optionally expiring after `ttl_seconds`.
pub fn kv_set(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(KvError::Denied)
    } else {
        wit::kv::set(key, value, ttl_seconds)
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = ttl_seconds;
        crate::testing::with_host(|h| {
            h.kv.insert(key.to_string(), value.to_vec());
            Ok(())
        })
    }
}

/// Removes `key`; true when it existed.
pub fn kv_delete(key: &str) -> Result<bool, KvError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(KvError::Denied)
    } else {
        wit::kv::delete(key)
    };
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| Ok(h.kv.remove(key).is_some()))
}

/// Atomically adds `delta` to the decimal integer at `key` and returns the new value.
pub fn kv_increment(key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, KvError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(KvError::Denied)
    } else {
        wit::kv::increment(key, delta, ttl_seconds)
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = ttl_seconds;
        crate::testing::with_host(|h| {
            let old = match h.kv.get(key) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or(KvError::NotANumber)?,
            };
            let new = old.saturating_add(delta);
            h.kv.insert(key.to_string(), new.to_string().into_bytes());
            Ok(new)
        })
    }
}

/// Sets `key` to `new` when its value is `expected` (`None`: absent); true when swapped.
pub fn kv_compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
    ttl_seconds: Option<u32>,
) -> Result<bool, KvError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(KvError::Denied)
    } else {
        wit::kv::compare_and_swap(key, expected, new, ttl_seconds)
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = ttl_seconds;
        crate::testing::with_host(|h| {
            if h.kv.get(key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            match new {
                Some(v) => h.kv.insert(key.to_string(), v.to_vec()),
                None => h.kv.remove(key),
            };
            Ok(true)
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn fake_dns(kind: &str, name: &str) -> Result<Vec<String>, DnsError> {
    crate::testing::with_host(|h| {
        h.dns
            .get(&(kind.to_string(), name.to_ascii_lowercase()))
            .cloned()
            .ok_or(DnsError::NotFound)
    })
}

/// IPv4 addresses of `name`.
pub fn dns_a(name: &str) -> Result<Vec<String>, DnsError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(DnsError::Denied)
    } else {
        wit::dns::lookup_a(name)
    };
    #[cfg(not(target_arch = "wasm32"))]
    fake_dns("A", name)
}

/// IPv6 addresses of `name`.
pub fn dns_aaaa(name: &str) -> Result<Vec<String>, DnsError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(DnsError::Denied)
    } else {
        wit::dns::lookup_aaaa(name)
    };
    #[cfg(not(target_arch = "wasm32"))]
    fake_dns("AAAA", name)
}

/// Mail exchangers of `name` (the fake stores them as `"10 mx.example"`).
pub fn dns_mx(name: &str) -> Result<Vec<Mx>, DnsError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(DnsError::Denied)
    } else {
        wit::dns::lookup_mx(name)
    };
    #[cfg(not(target_arch = "wasm32"))]
    fake_dns("MX", name).map(|v| {
        v.iter()
            .filter_map(|s| {
                let (p, x) = s.split_once(' ')?;
                Some(Mx {
                    preference: p.parse().ok()?,
                    exchange: x.to_string(),
                })
            })
            .collect()
    })
}

/// TXT records of `name`.
pub fn dns_txt(name: &str) -> Result<Vec<String>, DnsError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(DnsError::Denied)
    } else {
        wit::dns::lookup_txt(name)
    };
    #[cfg(not(target_arch = "wasm32"))]
    fake_dns("TXT", name)
}

/// PTR names of the address `ip`.
pub fn dns_ptr(ip: &str) -> Result<Vec<String>, DnsError> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        Err(DnsError::Denied)
    } else {
        wit::dns::lookup_ptr(ip)
    };
    #[cfg(not(target_arch = "wasm32"))]
    fake_dns("PTR", ip)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        0
    } else {
        wit::clock::now_ms()
    };
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| h.now_ms)
}

/// The host's number for the unit of work this instance serves (a transaction, a session
/// hook call, a delivery hook call); it changes when a new one starts. The SDK uses it to
/// give every transaction a fresh plugin value, also on warm (pooled) instances (unless the
/// plugin's `reset` keeps it).
pub fn lease() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return wit::lifecycle::lease();
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| h.lease)
}

/// At the `deferred`, `bounced` and `delivered` hooks: why the message was quarantined
/// ("<plugin>: <reason>"), when the host reports it was held; `None` otherwise.
pub fn quarantined() -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        None
    } else {
        wit::lifecycle::quarantined()
    };
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| h.quarantined.clone())
}

/// Adds `value` to the counter `name`.
pub fn counter_add(name: &str, value: u64, labels: &[(String, String)]) {
    #[cfg(target_arch = "wasm32")]
    if !crate::runtime::probing() {
        wit::metrics::counter_add(name, value, labels);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = labels;
        crate::testing::with_host(|h| *h.counters.entry(name.to_string()).or_default() += value);
    }
}

/// Records an observation in the histogram `name`.
pub fn histogram_record(name: &str, value: f64, labels: &[(String, String)]) {
    #[cfg(target_arch = "wasm32")]
    if !crate::runtime::probing() {
        wit::metrics::histogram_record(name, value, labels);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = labels;
        crate::testing::with_host(|h| {
            h.histograms
                .entry(name.to_string())
                .or_default()
                .push(value)
        });
    }
}

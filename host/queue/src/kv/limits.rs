//! Per-plugin quotas and the errors a kv call can give.

use crate::QueueError;

/// Per-plugin quotas (`[kv]`): a plugin cannot fill the disk the queue lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvLimits {
    /// Most keys one plugin (namespace) may hold.
    pub max_keys_per_plugin: u64,
    /// Most octets (keys plus values) one plugin may hold.
    pub max_bytes_per_plugin: u64,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_keys_per_plugin: 100_000,
            max_bytes_per_plugin: 64 * 1024 * 1024,
        }
    }
}

impl KvLimits {
    /// Whether going from `now` to `after` is allowed: never past a limit, unless the write
    /// does not grow what is over it.
    pub(crate) fn check(&self, namespace: &str, now: &Usage, after: &Usage) -> Result<(), KvError> {
        if after.keys > self.max_keys_per_plugin && after.keys > now.keys {
            return Err(KvError::QuotaExceeded {
                namespace: namespace.to_string(),
                what: format!("{} keys (kv.max_keys_per_plugin)", self.max_keys_per_plugin),
            });
        }
        if after.bytes > self.max_bytes_per_plugin && after.bytes > now.bytes {
            return Err(KvError::QuotaExceeded {
                namespace: namespace.to_string(),
                what: format!(
                    "{} octets (kv.max_bytes_per_plugin)",
                    self.max_bytes_per_plugin
                ),
            });
        }
        Ok(())
    }
}

/// What one namespace holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) keys: u64,
    pub(crate) bytes: u64,
}

impl Usage {
    pub(crate) fn add(&mut self, key_len: usize, value_len: usize) {
        self.keys += 1;
        self.bytes += (key_len + value_len) as u64;
    }

    /// The usage after the entry at a key of `key_len` octets goes from `old` to `new` value
    /// lengths (`None`: absent).
    pub(crate) fn change(&self, key_len: usize, old: Option<usize>, new: Option<usize>) -> Usage {
        let size = |v: Option<usize>| v.map_or(0, |v| (key_len + v) as u64);
        Usage {
            keys: (self.keys + u64::from(new.is_some())).saturating_sub(u64::from(old.is_some())),
            bytes: (self.bytes + size(new)).saturating_sub(size(old)),
        }
    }
}

/// What a kv call can fail with. The plugin host maps each to the WIT's error cases.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// `increment` found a value that is not a decimal integer.
    #[error("kv value is not an integer")]
    NotAnInteger,
    /// The write would take the plugin past its quota; nothing was written.
    #[error("kv quota of plugin {namespace} exceeded: at most {what}")]
    QuotaExceeded { namespace: String, what: String },
    /// A key or value over the size limits, or a namespace with NUL.
    #[error("kv request refused: {0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] QueueError),
}

impl From<sled::Error> for KvError {
    fn from(e: sled::Error) -> Self {
        KvError::Storage(e.into())
    }
}

//! The plugins' key-value store as a trait: the `kv` import of the plugin host calls it, and
//! the binary hands in one of the stores that implement it (sled in `corvid-queue`, Redis in
//! `corvid-kv-redis`, an in-memory one in `corvid-plugin-host` for tests). Only the queue may
//! use sled and only the plugin host may use wasmtime (DESIGN.md 2), so the seam lives here.

use std::time::Duration;

/// Why a store operation failed. The plugin host maps each case to the WIT's `kv.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// `increment` found a value that is not a decimal integer; nothing changed.
    #[error("value is not a decimal integer")]
    NotANumber,
    /// The write would take the plugin's namespace past its quota (keys or octets); nothing
    /// changed. The text says which quota. Plugins see it as `error.too-large`.
    #[error("quota exceeded: {0}")]
    Quota(String),
    /// The backing store failed, timed out or is unreachable. Plugins see it as
    /// `error.storage`, so their failure policy applies.
    #[error("storage: {0}")]
    Storage(String),
}

/// A namespaced store with expiry. Every method is atomic with respect to the others on the
/// same namespace and key, across every process sharing the store. `namespace` is the
/// plugin's name: plugins never share keys.
///
/// Calls are synchronous and short: an implementation that talks to a server bounds each
/// call with a deadline well inside a hook's time budget and fails with
/// [`KvError::Storage`] when it passes.
pub trait KvStore: Send + Sync {
    /// The live value of `key`.
    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// The time `key` has left before it expires: `None` when it has no expiry or is absent
    /// (or expired). `corvid plugin replay` needs it: `[record]` keeps it with each value a
    /// plugin found, so that the replay expires the key when the server did.
    fn ttl(&self, namespace: &str, key: &[u8]) -> Result<Option<Duration>, KvError>;
    /// Sets `key`, expiring after `ttl` when given (no expiry otherwise, even if the old
    /// value had one).
    fn set(
        &self,
        namespace: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError>;
    /// Removes `key`; true when a live value existed.
    fn delete(&self, namespace: &str, key: &[u8]) -> Result<bool, KvError>;
    /// Adds `delta` to the decimal integer at `key` (absent or expired = 0, saturating at
    /// the `i64` bounds); `ttl` applies only when the value is created, so a counter's window
    /// starts at its first hit.
    fn increment(
        &self,
        namespace: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError>;
    /// Sets `key` to `new` (`None` deletes) when its live value equals `expected` (`None`:
    /// absent or expired); `ttl` applies to the new value. True when it swapped.
    fn compare_and_swap(
        &self,
        namespace: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError>;
}

#[cfg(feature = "kv-conformance")]
pub mod conformance;

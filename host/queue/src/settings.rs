//! What the spool is told by the configuration: how its own reports look and who gets them,
//! how long held mail is kept, and the plugins' key-value quotas.

use crate::dsn::DsnPolicy;
use crate::kv::KvLimits;
use serde::Deserialize;
use std::time::Duration;

/// Held mail is kept this long by default (`queue.quarantine_max_age`).
pub const DEFAULT_QUARANTINE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// sled's page cache by default (`queue.cache_mb`). sled's own default (1 GiB) would let a
/// busy server grow far beyond what the messages in flight need; a read that misses the cache
/// is served by the kernel's page cache. sled evicts in batches (64 accesses per shard), so
/// the cache may exceed this for a while.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// What becomes of held mail older than `queue.quarantine_max_age`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineExpiry {
    /// A failure report to the sender (unless the sender is `<>`), then removed.
    #[default]
    Bounce,
    /// Removed without a word.
    Discard,
}

/// The spool's settings; [`Default`] is what an empty config gives.
#[derive(Clone, Debug)]
pub struct SpoolSettings {
    /// This MTA's name, for the reports the spool composes itself (`queue bounce`, expiry).
    pub hostname: String,
    pub dsn: DsnPolicy,
    pub quarantine_max_age: Duration,
    pub quarantine_expiry: QuarantineExpiry,
    pub kv: KvLimits,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            hostname: "localhost".into(),
            dsn: DsnPolicy::default(),
            quarantine_max_age: DEFAULT_QUARANTINE_MAX_AGE,
            quarantine_expiry: QuarantineExpiry::default(),
            kv: KvLimits::default(),
        }
    }
}

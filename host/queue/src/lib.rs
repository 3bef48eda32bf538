//! Corvid's spool: where an accepted message lives until every recipient is delivered or has
//! failed.
//!
//! Owns: the [`Spool`] trait and its fsync contract, the sled implementation ([`SledSpool`],
//! which is also the server's [`corvid_types::Intake`]) with group commit, queue ids, the
//! per-recipient delivery state ([`QueuedMessage`]), the [`RetrySchedule`], and delivery status
//! notifications ([`dsn`]: which recipients need one, and the RFC 3464 `multipart/report`
//! itself, with the limits of [`dsn::DsnPolicy`]; delivery queues the composed DSN through
//! [`corvid_types::Intake`]), held mail (quarantine: [`SledSpool::hold`], `release`, `bounce`,
//! expiry), the plugins' key-value store ([`SledKv`], with per-plugin quotas) in the same
//! database, and the periodic chores the server runs ([`SledSpool::maintain`]).
//!
//! Durability: sled's own `flush` does not reach stable storage (on Linux it ends with
//! `sync_file_range`, and large values in `<dir>/blobs/` are never synced). Every change the
//! [`Spool`] and [`corvid_types::Intake`] acknowledge waits for the group commit, which after
//! the flush `fsync`s new blob files, `<dir>/blobs/` and `<dir>` when their entries changed,
//! and `fdatasync`s the log `<dir>/db`. The plugins' key-value writes are not synced one by
//! one: they ride along with the next commit.
//!
//! Must not: speak SMTP, call policy plugins, or know how mail is delivered. This is the only
//! crate that may use sled; no sled type appears in its public API.

mod commit;
mod depth;
mod disk_sync;
pub mod dsn;
mod dsn_text;
mod error;
mod etrn;
mod hold;
mod id;
mod index;
mod kv;
mod maintain;
mod message;
mod recover;
mod retry;
mod settings;
mod sled_intake;
mod sled_spool;
mod spool;
mod tlsrpt_store;

pub use depth::QueueDepth;
pub use error::QueueError;
pub use hold::printable;
pub use kv::{KvEntry, KvError, KvLimits, SledKv};
pub use maintain::{Maintenance, KV_SWEEP_BUDGET, MAINTENANCE_INTERVAL};
pub use message::{
    from_unix_secs, unix_secs, QueuedMessage, RecipientState, RecipientStatus, SuccessReport,
    TlsRecord,
};
pub use retry::RetrySchedule;
pub use settings::{
    QuarantineExpiry, SpoolSettings, DEFAULT_CACHE_BYTES, DEFAULT_QUARANTINE_MAX_AGE,
};
pub use sled_spool::SledSpool;
pub use spool::Spool;

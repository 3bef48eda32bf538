//! Corvid's spool: where an accepted message lives until every recipient is delivered or has
//! failed.
//!
//! Owns: the [`Spool`] trait and its fsync contract, the sled implementation ([`SledSpool`],
//! which is also the server's [`corvid_types::Intake`]) with group commit, queue ids, the
//! per-recipient delivery state ([`QueuedMessage`]), the [`RetrySchedule`], and delivery status
//! notifications ([`dsn`]: which recipients need one, and the RFC 3464 `multipart/report`
//! itself; delivery queues the composed DSN through [`corvid_types::Intake`]), and the plugins'
//! key-value store ([`SledKv`]) in the same database.
//!
//! Must not: speak SMTP, call policy plugins, or know how mail is delivered. This is the only
//! crate that may use sled; no sled type appears in its public API.

mod commit;
pub mod dsn;
mod dsn_text;
mod error;
mod id;
mod index;
mod kv;
mod message;
mod retry;
mod sled_spool;
mod spool;

pub use error::QueueError;
pub use kv::SledKv;
pub use message::{
    from_unix_secs, unix_secs, QueuedMessage, RecipientState, RecipientStatus, SuccessReport,
};
pub use retry::RetrySchedule;
pub use sled_spool::SledSpool;
pub use spool::Spool;

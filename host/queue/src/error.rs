//! The errors of the spool.

use corvid_types::QueueId;

/// What can go wrong in the spool. Storage details are kept as text so that no sled type leaks
/// into the public API (only this crate may depend on sled).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store could not read, write or flush.
    #[error("spool storage error: {0}")]
    Storage(String),
    /// A metadata record on disk does not decode; the record is left in place for inspection.
    #[error("corrupt metadata for {id}: {reason}")]
    Corrupt { id: String, reason: String },
    /// A message could not be encoded (should not happen for well-formed values).
    #[error("cannot encode metadata for {id}: {reason}")]
    Encode { id: QueueId, reason: String },
    /// The message is not (or no longer) in the spool.
    #[error("no message {0} in the spool")]
    NotFound(QueueId),
    /// `release` or `bounce` of a message that is not held.
    #[error("message {0} is not held")]
    NotHeld(QueueId),
    /// The spool was closed for shutdown.
    #[error("spool is closed")]
    Closed,
}

impl From<sled::Error> for QueueError {
    fn from(e: sled::Error) -> Self {
        QueueError::Storage(e.to_string())
    }
}

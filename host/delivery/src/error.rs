//! Why a local delivery failed, and whether trying again can help.

use crate::Outcome;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A local part or domain that would escape the mail root or is not a valid file name.
    #[error("refusing mailbox {name:?}: {reason}")]
    BadMailbox { name: String, reason: &'static str },
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl DeliveryError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DeliveryError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The delivery outcome this error means. I/O errors are transient: a full disk, a quota
    /// or a permission problem is fixed by an administrator, and the queue keeps retrying
    /// until `max_age`. The text has no file paths, since it may end up in a bounce.
    pub fn outcome(&self) -> Outcome {
        match self {
            DeliveryError::BadMailbox { .. } => {
                Outcome::Permanent("5.1.3 invalid local mailbox name".into())
            }
            DeliveryError::Io { source, .. } => Outcome::Transient(io_reason(source)),
        }
    }
}

/// RFC 3463: X.2.2 mailbox full (quota), X.3.1 mail system full (disk), X.3.0 other.
fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EDQUOT) => "4.2.2 mailbox over quota".into(),
        Some(libc::ENOSPC) => "4.3.1 mail system full".into(),
        _ => format!("4.3.0 local delivery failed: {}", e.kind()),
    }
}

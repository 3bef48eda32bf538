//! What a policy hook answers: a verdict and the modifications it asks for.
//!
//! The names follow Haraka and the IETF MTA Hooks draft so that plugin authors meet familiar
//! words. Policies never change host state themselves; the host validates and applies these.

use crate::{Address, Recipient, Reply};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// No opinion: the next policy in the chain (then the built-in rules) decides.
    #[default]
    Continue,
    /// Accept at this stage; the rest of the chain is skipped.
    Accept,
    /// Refuse with a 5xx reply.
    Reject(Reply),
    /// Refuse for now with a 4xx reply.
    Tempfail(Reply),
    /// Send the reply (4xx or 5xx) and close the connection.
    Disconnect(Reply),
    /// Accept the message, then drop it silently (only meaningful at DATA).
    Discard,
    /// Accept the message and hold it in the queue for an administrator.
    Quarantine(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Modification {
    ChangeSender(Option<Address>),
    AddRecipient(Address),
    /// Add a recipient with RCPT TO parameters (RFC 3461 `NOTIFY=`, `ORCPT=`): what a plugin's
    /// `add-recipient` becomes when it set DSN parameters for that address in the same
    /// decision (`wit/envelope.wit`). The plugin host checked them as a client's
    /// ([`crate::dsn_params::check`]); the session applies it like [`Self::AddRecipient`].
    AddRecipientWithParams(Recipient),
    RemoveRecipient(Address),
    /// Append a header field at the end of the header section.
    AddHeader {
        name: String,
        value: String,
    },
    /// Insert a header field before the field at `index` (0 = first).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Replace the value of the `index`-th (0-based) field called `name`.
    ChangeHeader {
        name: String,
        index: u32,
        value: String,
    },
    /// Remove the `index`-th (0-based) field called `name`.
    RemoveHeader {
        name: String,
        index: u32,
    },
    /// Replace the body (everything after the header section); granted per plugin.
    ReplaceBody(Vec<u8>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub modifications: Vec<Modification>,
}

impl Decision {
    pub fn proceed() -> Self {
        Decision::default()
    }

    pub fn accept() -> Self {
        Decision {
            verdict: Verdict::Accept,
            modifications: Vec::new(),
        }
    }

    pub fn reject(reply: Reply) -> Self {
        Decision {
            verdict: Verdict::Reject(reply),
            modifications: Vec::new(),
        }
    }

    pub fn tempfail(reply: Reply) -> Self {
        Decision {
            verdict: Verdict::Tempfail(reply),
            modifications: Vec::new(),
        }
    }

    pub fn disconnect(reply: Reply) -> Self {
        Decision {
            verdict: Verdict::Disconnect(reply),
            modifications: Vec::new(),
        }
    }
}

//! How the server hands an accepted message to the queue without knowing how it is stored.

use crate::Envelope;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A queue id: unique, sortable by arrival, short enough for log lines.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueId(pub String);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The store could not write or flush; the client gets a 451 and keeps the message.
    #[error("queue write failed: {0}")]
    Storage(String),
    /// The server is shutting down and no longer takes messages.
    #[error("queue is closed")]
    Closed,
}

/// What the queue keeps about a message besides its envelope and content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitOptions {
    /// The client authenticated (SMTP AUTH) or connected from a relay network. Delivery uses
    /// it to decide who may ask for success reports (`dsn.notify_success_from`), so that a
    /// stranger cannot turn the server into a reflector of its own mail.
    pub trusted_client: bool,
    /// Hold the message for an administrator instead of delivering it: the quarantine
    /// verdict's reason (naming the plugin that gave it). A held message is never due.
    pub hold: Option<String>,
}

#[async_trait]
pub trait Intake: Send + Sync {
    /// A fresh id for a message about to be submitted (it appears in the `Received:` header).
    fn next_id(&self) -> QueueId;

    /// Stores the message. Returns only once envelope and content are on stable storage
    /// (fsynced: in the queue, or already delivered into synced Maildirs): the server answers
    /// 250 after this and never before.
    async fn submit_with(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: &[u8],
        options: &SubmitOptions,
    ) -> Result<(), IntakeError>;

    /// [`Intake::submit_with`] for a caller that gives the content away (the server at the
    /// end of DATA): an intake that keeps it past the call (delivery at intake hands it to a
    /// blocking thread) takes it without a copy. The same promise as `submit_with`.
    async fn submit_owned(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: std::sync::Arc<Vec<u8>>,
        options: &SubmitOptions,
    ) -> Result<(), IntakeError> {
        self.submit_with(id, envelope, &content, options).await
    }

    /// [`Intake::submit_with`] with default options: an untrusted origin, not held.
    async fn submit(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<(), IntakeError> {
        self.submit_with(id, envelope, content, &SubmitOptions::default())
            .await
    }

    /// Messages accepted and not yet delivered (held mail excluded), read cheaply on every
    /// MAIL for flow control; `None` when this intake does not know (no flow control).
    fn backlog(&self) -> Option<u64> {
        None
    }
}

/// Starting queue runs on request (ETRN, RFC 1985), without knowing how the queue is stored.
pub trait QueueControl: Send + Sync {
    /// Makes the pending recipients at `node` (a domain; `@domain` includes its subdomains)
    /// due now; returns how many messages that concerns.
    fn start_run(&self, node: &str) -> Result<usize, IntakeError>;
}

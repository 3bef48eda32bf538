//! New messages into the sled spool: a fresh one from the server ([`Intake::submit_with`]),
//! or one delivery already attempted at intake ([`SledSpool::store_new`], through
//! [`crate::Spool::insert_attempted`]). Both return only once the message is on stable
//! storage, and neither leaves anything behind when the caller stops waiting.

use crate::message::unix_secs;
use crate::{QueuedMessage, SledSpool};
use async_trait::async_trait;
use corvid_types::{Envelope, Intake, IntakeError, QueueId};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Removes a message from the spool unless disarmed: a submit future dropped while waiting
/// for the fsync (the client went away) leaves nothing behind to deliver.
struct SubmitGuard<'a> {
    spool: &'a SledSpool,
    id: &'a QueueId,
    armed: bool,
}

impl Drop for SubmitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.spool.forget(self.id);
        }
    }
}

impl SledSpool {
    /// Writes `msg` (its recipients' states as they are) and its content, waits for the group
    /// commit, then makes it due by its own schedule. Refused once the spool is closed.
    pub(crate) async fn store_new(
        &self,
        msg: &QueuedMessage,
        content: &[u8],
    ) -> Result<(), IntakeError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(IntakeError::Closed);
        }
        let mut guard = SubmitGuard {
            spool: self,
            id: &msg.id,
            armed: true,
        };
        self.insert_new(msg, content)
            .map_err(|e| IntakeError::Storage(e.to_string()))?;
        self.committer
            .commit()
            .await
            .map_err(IntakeError::Storage)?;
        guard.armed = false;
        {
            let mut index = self.lock_index();
            index.set(&msg.id, msg.next_due());
            index.set_held(&msg.id, msg.held_at);
        }
        if let Some(reason) = &msg.quarantined {
            tracing::info!(queue_id = %msg.id, reason = %crate::hold::printable(reason), "message held");
        }
        if msg.next_due().is_some() {
            self.wake_runners();
        }
        Ok(())
    }
}

#[async_trait]
impl Intake for SledSpool {
    fn next_id(&self) -> QueueId {
        self.ids.next()
    }

    async fn submit_with(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: &[u8],
        options: &corvid_types::SubmitOptions,
    ) -> Result<(), IntakeError> {
        let now = unix_secs(SystemTime::now());
        let mut msg = QueuedMessage::new(id.clone(), envelope.clone(), content.len() as u64, now);
        msg.trusted_client = options.trusted_client;
        msg.is_report = crate::dsn::is_delivery_report(content);
        if let Some(reason) = &options.hold {
            msg.quarantined = Some(reason.clone());
            msg.held_at = Some(now);
        }
        self.store_new(&msg, content).await
    }

    /// Messages with recipients still to deliver, held mail excluded (an administrator's
    /// quarantine must not stop intake): a counter kept by the due index, no lock taken.
    fn backlog(&self) -> Option<u64> {
        Some(self.backlog.load(Ordering::Relaxed))
    }
}

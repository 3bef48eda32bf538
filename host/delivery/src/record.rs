//! Recording an attempt's result in the spool: the message's new state, or its removal once
//! nothing is pending.

use corvid_queue::{QueueError, QueuedMessage, RecipientStatus, Spool};

/// Stores the new state, and removes the message once nothing is pending. Local writes and
/// remote 250s happened before this: a crash before the update means the recipients are
/// attempted again after restart (a duplicate, never a loss). True when the outcome is on
/// record, so that the `delivered` stage is told only of what will not be attempted again.
///
/// The writes go into the spool on this thread and the wait for the group commit is awaited
/// (the spool's async forms), so an attempt needs no blocking thread to be recorded.
pub(crate) async fn record(spool: &dyn Spool, msg: &QueuedMessage) -> bool {
    let id = &msg.id;
    let all_delivered = msg
        .recipients
        .iter()
        .all(|r| r.status == RecipientStatus::Delivered);
    if !msg.has_pending() && all_delivered {
        // The common case: one durable removal, no update before it (a second flush on the
        // hot path). A failed message is updated first so its final state is on record; a
        // crash between that update and the removal is cleaned up when the queue is opened.
        return remove(spool, id).await;
    }
    match spool.update_async(msg).await {
        Ok(()) => {}
        Err(QueueError::NotFound(_)) => {
            tracing::warn!(queue_id = %id, "message was removed during delivery");
            return false;
        }
        Err(e) => {
            tracing::error!(queue_id = %id, error = %e,
                "cannot record delivery outcome; recipients will be attempted again");
            return false;
        }
    }
    // The outcome is on record even if the removal fails (the message is then cleaned up when
    // the queue is next opened).
    if !msg.has_pending() {
        remove(spool, id).await;
    }
    true
}

async fn remove(spool: &dyn Spool, id: &corvid_types::QueueId) -> bool {
    match spool.remove_async(id).await {
        Ok(_) => {
            tracing::debug!(queue_id = %id, "message done, removed from queue");
            true
        }
        Err(e) => {
            tracing::error!(queue_id = %id, error = %e, "cannot remove finished message");
            false
        }
    }
}

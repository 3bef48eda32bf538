//! A message's content, read from the spool the first time a delivery needs it.
//!
//! An attempt waiting for a remote permit holds only the message's envelope and state, not
//! its content: the content in memory is bounded by the deliveries actually running, not by
//! the messages queued behind a slow destination.

use crate::loops::received_count;
use crate::Outcome;
use corvid_queue::Spool;
use corvid_types::QueueId;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Messages up to this size are read on the attempt's own runtime thread (a read of sled's
/// log or cache, microseconds: a hand-off to a blocking thread and back would cost more);
/// larger ones may live in a file of their own (sled's blobs) and be read cold from disk,
/// which must not stall the other sessions on that thread.
const INLINE_READ_MAX: u64 = 64 * 1024;

pub(crate) struct LazyContent {
    spool: Arc<dyn Spool>,
    id: QueueId,
    /// The message's size as queued, which decides where it is read.
    size: u64,
    cell: OnceCell<Result<Arc<Vec<u8>>, Outcome>>,
    max_hops: usize,
}

impl LazyContent {
    pub(crate) fn new(spool: Arc<dyn Spool>, id: QueueId, size: u64, max_hops: usize) -> Self {
        LazyContent {
            spool,
            id,
            size,
            cell: OnceCell::new(),
            max_hops,
        }
    }

    /// Content already in memory (delivery at intake): never read from the spool.
    pub(crate) fn ready(
        spool: Arc<dyn Spool>,
        id: QueueId,
        content: Arc<Vec<u8>>,
        max_hops: usize,
    ) -> Self {
        LazyContent {
            spool,
            id,
            size: content.len() as u64,
            cell: OnceCell::new_with(Some(Ok(content))),
            max_hops,
        }
    }

    /// The content, if it may be delivered: a message with too many `Received:` fields is
    /// looping (RFC 5321 6.3) and fails with RFC 3463's X.4.6. The end of DATA refuses more
    /// than `max_hops` fields as they arrive; here the field this server added at intake is
    /// there too, so one more is allowed: what intake took is not bounced for its own header.
    pub(crate) async fn for_delivery(&self) -> Result<Arc<Vec<u8>>, Outcome> {
        let content = self.get().await?;
        let hops = received_count(&content);
        if hops > self.max_hops.saturating_add(1) {
            tracing::warn!(queue_id = %self.id, hops, max_hops = self.max_hops, "mail loop");
            return Err(Outcome::Permanent(format!(
                "5.4.6 routing loop detected: {hops} Received: fields (limit {} and ours)",
                self.max_hops
            )));
        }
        Ok(content)
    }

    /// The content, read once; a message without content fails permanently (RFC 3463
    /// X.3.0: nothing can ever be delivered), a read error is transient.
    pub(crate) async fn get(&self) -> Result<Arc<Vec<u8>>, Outcome> {
        self.cell
            .get_or_init(|| async {
                let read = if self.size <= INLINE_READ_MAX {
                    self.spool.content(&self.id)
                } else {
                    let (spool, id) = (Arc::clone(&self.spool), self.id.clone());
                    crate::blocking::blocking(move || spool.content(&id))
                        .await
                        .unwrap_or_else(|| {
                            Err(corvid_queue::QueueError::Storage(
                                "the content read did not finish".into(),
                            ))
                        })
                };
                match read {
                    Ok(Some(c)) => Ok(Arc::new(c)),
                    Ok(None) => Err(Outcome::Permanent("5.3.0 queued content is missing".into())),
                    Err(e) => {
                        tracing::error!(queue_id = %self.id, error = %e, "cannot read content");
                        Err(Outcome::Transient(
                            "4.3.0 cannot read queued content".into(),
                        ))
                    }
                }
            })
            .await
            .clone()
    }
}

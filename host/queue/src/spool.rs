//! The spool as the rest of Corvid sees it: delivery and the admin CLI use `Arc<dyn Spool>`.

use crate::{QueueError, QueuedMessage};
use async_trait::async_trait;
use corvid_types::QueueId;
use std::time::SystemTime;
use tokio::sync::watch;

/// A durable message store. Every method that changes state returns only once the change is on
/// stable storage (fsynced), so that a crash never loses an acknowledged message or undoes a
/// recorded delivery.
///
/// The methods are synchronous (they may block on disk I/O): async callers run the ones
/// that change state in `spawn_blocking`, or use their async forms ([`Spool::update_async`],
/// [`Spool::remove_async`]). The reads ([`Spool::get`], [`Spool::content`]) never wait for an
/// fsync, at most for a read of the log when the value left the cache, or of its own file for
/// a value too large for a log segment: delivery calls `get` and the content of small
/// messages on its runtime threads (as intake writes new messages into sled there), and reads
/// larger content on a blocking thread. New messages arrive
/// through [`corvid_types::Intake`], which the implementation also provides.
#[async_trait]
pub trait Spool: Send + Sync {
    /// Every message's metadata, in id (arrival) order.
    fn list(&self) -> Result<Vec<QueuedMessage>, QueueError>;

    /// One message's metadata.
    fn get(&self, id: &QueueId) -> Result<Option<QueuedMessage>, QueueError>;

    /// One message's content, exactly as accepted (CRLF line endings).
    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, QueueError>;

    /// Replaces a message's metadata after a delivery attempt; durable on return.
    /// [`QueueError::NotFound`] when the message was removed in the meantime (it is not
    /// brought back).
    fn update(&self, msg: &QueuedMessage) -> Result<(), QueueError>;

    /// Deletes a message and its content; durable on return. `false` when it was not there.
    fn remove(&self, id: &QueueId) -> Result<bool, QueueError>;

    /// [`Spool::update`] for async callers (delivery records each attempt with it): the same
    /// write, durable on return, but the wait for the disk does not hold a thread. The sled
    /// spool writes in memory on the caller's thread and awaits the group commit, where the
    /// blocking form needs a blocking thread and a hand-off to it and back per message. The
    /// default calls [`Spool::update`] on the caller's thread (for in-memory test spools).
    async fn update_async(&self, msg: &QueuedMessage) -> Result<(), QueueError> {
        self.update(msg)
    }

    /// [`Spool::remove`] for async callers, as [`Spool::update_async`]: durable on return.
    async fn remove_async(&self, id: &QueueId) -> Result<bool, QueueError> {
        self.remove(id)
    }

    /// Stores a message whose delivery was already attempted before it was queued (local
    /// delivery at the end of DATA), with its recipients' states as that attempt left them:
    /// the pending ones fall due by their `next_attempt`. Durable on return; nothing is left
    /// behind when it fails or the caller stops waiting. The default refuses: with such a
    /// spool, a message delivery at intake leaves anything pending for is answered 451 (and
    /// its delivered recipients get the client's retry again); leave
    /// `delivery.local_at_intake` off with it.
    async fn insert_attempted(
        &self,
        msg: &QueuedMessage,
        _content: &[u8],
    ) -> Result<(), corvid_types::IntakeError> {
        Err(corvid_types::IntakeError::Storage(format!(
            "this spool cannot store {} after an attempt",
            msg.id
        )))
    }

    /// Messages with a pending recipient whose next attempt is at or before `now`, oldest
    /// first, claimed ones included. Quarantined messages are never due.
    fn due(&self, now: SystemTime) -> Result<Vec<QueueId>, QueueError>;

    /// Claims up to `limit` due messages for a queue runner and returns them, oldest first:
    /// [`Spool::due`] without the messages claimed already, so a runner never gets one it is
    /// attempting. On the sled spool a call costs O(limit + log n), not O(backlog). A claim
    /// lasts until [`Spool::release_claim`]; it is kept in memory only, so a restart ends
    /// every claim. A claimed message may still be rescheduled, held or removed: its release
    /// applies that (held and removed mail is never due).
    ///
    /// The default, for spools that keep no claims, returns the whole [`Spool::due`] listing
    /// whatever `limit`: the caller skips the messages it is attempting itself.
    fn take_due(&self, now: SystemTime, limit: usize) -> Result<Vec<QueueId>, QueueError> {
        let _ = limit;
        self.due(now)
    }

    /// Ends the claim [`Spool::take_due`] gave on `id`, once its attempt has recorded its
    /// outcome: the message is due again at the time now recorded, if it is still scheduled.
    /// When the attempt recorded nothing (its record failed to write), a minute from now
    /// instead of at once. Nothing happens for an id not claimed. Memory only: it never
    /// waits for the disk.
    fn release_claim(&self, id: &QueueId) {
        let _ = id;
    }

    /// The earliest next attempt of any message not claimed, so a runner can sleep until
    /// then (it learns of a claimed message when the attempt ends).
    fn next_wakeup(&self) -> Option<SystemTime>;

    /// Makes every pending recipient due now (`corvid queue flush`); returns how many messages
    /// were touched. Subscribers are woken.
    fn flush_all(&self) -> Result<usize, QueueError>;

    /// A wake-up signal for queue runners: the value is a counter bumped whenever messages
    /// become due outside the schedule (a new message was accepted, or `flush_all`). Changes
    /// coalesce, and a change made before `changed()` is awaited is not lost, so a runner
    /// simply calls [`Spool::take_due`] again after each wake-up.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Flushes everything to disk; called once at shutdown after the runners stopped.
    async fn sync(&self) -> Result<(), QueueError>;

    /// Refuses further submissions (they get `IntakeError::Closed`); used at shutdown.
    fn close(&self);

    /// The limits on the DSNs composed for this spool's messages (`[dsn]`): who gets success
    /// reports and how much of the original goes back.
    fn dsn_policy(&self) -> crate::dsn::DsnPolicy {
        crate::dsn::DsnPolicy::default()
    }

    /// Delivery's cached MTA-STS policy for `domain` (RFC 8461 5.1), as delivery stored it;
    /// `None` when there is none (also for spools that keep no cache).
    fn sts_policy(&self, _domain: &str) -> Result<Option<Vec<u8>>, QueueError> {
        Ok(None)
    }

    /// Stores delivery's MTA-STS policy for `domain`. Not synced on its own: it becomes
    /// durable with the next commit (a lost entry is only fetched again).
    fn set_sts_policy(&self, _domain: &str, _policy: &[u8]) -> Result<(), QueueError> {
        Ok(())
    }

    /// Removes the cached MTA-STS policies `keep` refuses (it gets the bytes as delivery stored
    /// them) and returns how many went, so that the cache does not grow with every domain
    /// ever seen. Not synced on its own.
    fn prune_sts_policies(&self, _keep: &dyn Fn(&[u8]) -> bool) -> Result<usize, QueueError> {
        Ok(0)
    }

    /// Delivery's TLS-RPT (RFC 8460) counts of the current report period, one opaque entry
    /// per policy domain, as delivery stored them; empty for spools that keep none.
    fn tlsrpt_counts(&self) -> Result<Vec<(String, Vec<u8>)>, QueueError> {
        Ok(Vec::new())
    }

    /// Stores (replaces) the TLS-RPT counts of `domain`. Not synced on its own: it becomes
    /// durable with the next commit, like [`Spool::set_sts_policy`] (a power cut may lose the
    /// last counts, never mail).
    fn set_tlsrpt_counts(&self, _domain: &str, _counts: &[u8]) -> Result<(), QueueError> {
        Ok(())
    }

    /// Forgets every TLS-RPT count: a report period was taken. Not synced on its own either.
    fn clear_tlsrpt_counts(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

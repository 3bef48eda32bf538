//! Held mail (quarantine): a message kept for an administrator, never due and never
//! delivered, until it is released (due at once), bounced (a failure report to its sender)
//! or deleted, or until it has been held for `queue.quarantine_max_age` (bounced or discarded
//! as `queue.quarantine_expiry` says).

use crate::dsn::{self, DsnContext};
use crate::sled_spool::encode;
use crate::{
    unix_secs, QuarantineExpiry, QueueError, QueuedMessage, RecipientStatus, SledSpool, Spool,
};
use corvid_types::{Intake, QueueId, SubmitOptions};
use std::time::SystemTime;

/// `text` with control characters and non-ASCII escaped (`\n`, `\x1b`, `\u{e9}`): reasons and
/// values come from plugins and peers, and must not reach a terminal or a log line raw.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let plain = c.is_ascii_graphic() || c == ' ';
            let escaped: Vec<char> = if plain && c != '\\' {
                vec![c]
            } else {
                c.escape_default().collect()
            };
            escaped
        })
        .collect()
}

/// `msg` with the hold of the stored record (`update` from delivery, which never holds, of a
/// message held meanwhile).
pub(crate) fn keep_hold(
    spool: &SledSpool,
    msg: &QueuedMessage,
    since: u64,
) -> Result<QueuedMessage, QueueError> {
    let stored = spool.get(&msg.id)?;
    let mut out = msg.clone();
    out.quarantined = Some(
        stored
            .and_then(|m| m.quarantined)
            .unwrap_or_else(|| "held".into()),
    );
    out.held_at = Some(since);
    Ok(out)
}

impl SledSpool {
    /// Holds a queued message for an administrator (`corvid queue hold`); durable on return.
    /// A message already held keeps its hold time and gets the new reason.
    pub fn hold(&self, id: &QueueId, reason: &str) -> Result<QueuedMessage, QueueError> {
        let now = unix_secs(SystemTime::now());
        let msg = {
            let mut index = self.lock_index();
            let mut msg = self
                .get(id)?
                .ok_or_else(|| QueueError::NotFound(id.clone()))?;
            msg.quarantined = Some(reason.to_string());
            msg.held_at = Some(msg.held_at.unwrap_or(now));
            self.meta.insert(id.0.as_bytes(), encode(&msg)?)?;
            index.set(id, None);
            index.set_held(id, msg.held_at);
            msg
        };
        self.flush()?;
        tracing::info!(queue_id = %id, reason = %printable(reason), "message held");
        Ok(msg)
    }

    /// Releases a held message: every pending recipient is due now; durable on return.
    pub fn release(&self, id: &QueueId) -> Result<QueuedMessage, QueueError> {
        let now = unix_secs(SystemTime::now());
        let msg = {
            let mut index = self.lock_index();
            let mut msg = self
                .get(id)?
                .ok_or_else(|| QueueError::NotFound(id.clone()))?;
            if msg.quarantined.is_none() {
                return Err(QueueError::NotHeld(id.clone()));
            }
            msg.released_hold = msg.quarantined.take();
            msg.held_at = None;
            for r in msg.recipients.iter_mut().filter(|r| r.is_pending()) {
                r.next_attempt = now;
            }
            self.meta.insert(id.0.as_bytes(), encode(&msg)?)?;
            index.set_held(id, None);
            index.set(id, msg.next_due());
            msg
        };
        self.flush()?;
        self.wake_runners();
        tracing::info!(queue_id = %id, "message released");
        Ok(msg)
    }

    /// Returns a held message to its sender (`corvid queue bounce`): every pending recipient
    /// fails with `why` (an enhanced status code first, RFC 3463), the failure report is queued
    /// through this spool like any other DSN (as [`crate::dsn`] allows: not to `<>`, not about
    /// a report, as `NOTIFY` asks), then the message is removed. Returns the DSN's id, if one
    /// was queued.
    pub async fn bounce(&self, id: &QueueId, why: &str) -> Result<Option<QueueId>, QueueError> {
        let mut msg = self
            .get(id)?
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        if msg.quarantined.is_none() {
            return Err(QueueError::NotHeld(id.clone()));
        }
        let content = self.content(id)?.unwrap_or_default();
        for r in msg.recipients.iter_mut().filter(|r| r.is_pending()) {
            r.status = RecipientStatus::Failed;
            r.last_reply = Some(why.to_string());
            r.diagnostic = None;
            r.remote_mta = None;
        }
        let now = SystemTime::now();
        let policy = self.settings.dsn;
        let mut sent = None;
        for report in dsn::due_reports_with(&msg, unix_secs(now), None, &policy) {
            let dsn_id = self.next_id();
            let ctx = DsnContext {
                reporting_mta: &self.settings.hostname,
                dsn_id: &dsn_id.0,
                now,
                retry_until: None,
                policy,
            };
            let Some((envelope, body)) = dsn::compose(&msg, &content, &report, &ctx) else {
                continue;
            };
            self.submit_with(&dsn_id, &envelope, &body, &SubmitOptions::default())
                .await
                .map_err(|e| QueueError::Storage(format!("queueing the DSN: {e}")))?;
            tracing::info!(queue_id = %id, dsn_id = %dsn_id, "held message bounced, DSN queued");
            sent = Some(dsn_id);
        }
        Spool::remove_async(self, id).await?;
        Ok(sent)
    }

    /// Bounces or discards (as `queue.quarantine_expiry` says) every message held longer than
    /// `queue.quarantine_max_age` at `now`; returns how many went. A failure leaves the message
    /// for the next sweep.
    pub async fn expire_held(&self, now: SystemTime) -> usize {
        let cutoff = unix_secs(now).saturating_sub(self.settings.quarantine_max_age.as_secs());
        let expired = self.lock_index().held_before(cutoff);
        let mut gone = 0;
        for id in expired {
            let result = match self.settings.quarantine_expiry {
                QuarantineExpiry::Bounce => self
                    .bounce(
                        &id,
                        "5.4.7 held for an administrator and never released (quarantine expired)",
                    )
                    .await
                    .map(drop),
                QuarantineExpiry::Discard => Spool::remove_async(self, &id).await.map(drop),
            };
            match result {
                Ok(()) => {
                    tracing::info!(queue_id = %id, expiry = ?self.settings.quarantine_expiry,
                        "held message expired");
                    gone += 1;
                }
                Err(e) => tracing::error!(queue_id = %id, error = %e, "cannot expire held message"),
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_controls_and_non_ascii() {
        assert_eq!(super::printable("ok: spam 9.5"), "ok: spam 9.5");
        assert_eq!(
            super::printable("a\r\n\x1b[31mb\\é"),
            "a\\r\\n\\u{1b}[31mb\\\\\\u{e9}"
        );
    }
}

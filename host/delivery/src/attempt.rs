//! One delivery attempt of one queued message: resolve, deliver, record.
//!
//! Runs on a blocking thread (spool access and Maildir writes block on disk).

use crate::{maildir, Outcome};
use corvid_queue::{unix_secs, QueueError, QueuedMessage, RecipientStatus, RetrySchedule, Spool};
use corvid_types::{Address, Directory, Envelope, Lookup, QueueId};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// What every attempt needs.
pub(crate) struct Context {
    pub(crate) spool: Arc<dyn Spool>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) maildir_root: PathBuf,
    pub(crate) schedule: RetrySchedule,
}

/// Attempts every due recipient of message `id` and records the outcomes durably.
pub(crate) fn process(ctx: &Context, id: &QueueId) {
    let now = unix_secs(SystemTime::now());
    let mut msg = match ctx.spool.get(id) {
        Ok(Some(msg)) => msg,
        Ok(None) => return,
        Err(e) => return tracing::error!(queue_id = %id, error = %e, "cannot read message"),
    };
    // The message may have been handled since the runner listed it.
    if msg.next_due().is_none_or(|t| t > now) {
        return;
    }
    let due: Vec<usize> = due_recipients(&msg, now);
    let outcomes = match ctx.spool.content(id) {
        Ok(Some(content)) => deliver_all(ctx, &msg, &due, &content),
        Ok(None) => uniform(
            &due,
            Outcome::Permanent("5.3.0 queued content is missing".into()),
        ),
        Err(e) => uniform(
            &due,
            Outcome::Transient(format!("4.3.0 spool read error: {e}")),
        ),
    };
    apply(&mut msg, &outcomes, &ctx.schedule, now);
    record(ctx.spool.as_ref(), &msg);
}

fn due_recipients(msg: &QueuedMessage, now: u64) -> Vec<usize> {
    (0..msg.recipients.len())
        .filter(|&i| msg.recipients[i].is_pending() && msg.recipients[i].next_attempt <= now)
        .collect()
}

fn uniform(due: &[usize], outcome: Outcome) -> Vec<(usize, Outcome)> {
    due.iter().map(|&i| (i, outcome.clone())).collect()
}

/// RFC 5321 4.4: the final delivery records the reverse-path in a `Return-Path:` header at
/// the top of the message; `<>` for the null sender.
pub fn return_path(envelope: &Envelope) -> Vec<u8> {
    format!("Return-Path: <{}>\r\n", envelope.sender_text()).into_bytes()
}

/// Resolves the due recipients and writes each distinct mailbox once, even when several
/// recipients (or aliases) lead to it.
fn deliver_all(
    ctx: &Context,
    msg: &QueuedMessage,
    due: &[usize],
    content: &[u8],
) -> Vec<(usize, Outcome)> {
    let prefix = return_path(&msg.envelope);
    let mut written: HashMap<Address, Outcome> = HashMap::new();
    let mut outcomes = Vec::with_capacity(due.len());
    for &i in due {
        let rcpt = &msg.recipients[i].recipient.address;
        let outcome = match resolve(&ctx.directory, rcpt) {
            Ok(mailboxes) => mailboxes
                .into_iter()
                .map(|mb| {
                    written
                        .entry(mb)
                        .or_insert_with_key(|mb| write_one(ctx, &msg.id, mb, &prefix, content))
                        .clone()
                })
                .fold(Outcome::Delivered, Outcome::combine),
            Err(outcome) => outcome,
        };
        outcomes.push((i, outcome));
    }
    outcomes
}

/// The mailboxes of a recipient. Only local mail exists so far: an address that is not a
/// local mailbox fails permanently (outbound delivery comes in a later change).
fn resolve(directory: &Directory, rcpt: &Address) -> Result<Vec<Address>, Outcome> {
    match directory.lookup(rcpt) {
        Lookup::Mailboxes(mailboxes) => Ok(mailboxes),
        Lookup::UnknownUser | Lookup::NotLocal => {
            Err(Outcome::Permanent("5.1.1 unknown local recipient".into()))
        }
    }
}

fn write_one(
    ctx: &Context,
    id: &QueueId,
    mailbox: &Address,
    prefix: &[u8],
    content: &[u8],
) -> Outcome {
    match maildir::deliver(&ctx.maildir_root, mailbox, prefix, content) {
        Ok(path) => {
            tracing::info!(queue_id = %id, mailbox = %mailbox, outcome = "delivered",
                path = %path.display(), "maildir delivery");
            Outcome::Delivered
        }
        Err(e) => {
            let outcome = e.outcome();
            tracing::warn!(queue_id = %id, mailbox = %mailbox, outcome = outcome.label(),
                error = %e, "maildir delivery failed");
            outcome
        }
    }
}

/// Writes the outcomes into the recipients' states.
fn apply(
    msg: &mut QueuedMessage,
    outcomes: &[(usize, Outcome)],
    schedule: &RetrySchedule,
    now: u64,
) {
    let expired = schedule.expired(msg.arrived_at, now);
    for (i, outcome) in outcomes {
        let id = msg.id.clone();
        let r = &mut msg.recipients[*i];
        r.attempts = r.attempts.saturating_add(1);
        let rcpt = &r.recipient.address;
        match outcome {
            Outcome::Delivered => {
                r.status = RecipientStatus::Delivered;
                r.last_reply = Some("2.0.0 delivered".into());
                tracing::info!(queue_id = %id, rcpt = %rcpt, outcome = "delivered", "recipient done");
            }
            Outcome::Transient(reason) if expired => {
                // RFC 3463 X.4.7: delivery time expired.
                r.status = RecipientStatus::Failed;
                r.last_reply = Some(format!("4.4.7 expired in queue, last error: {reason}"));
                tracing::warn!(queue_id = %id, rcpt = %rcpt, outcome = "expired", reason = %reason,
                    "giving up on recipient");
            }
            Outcome::Transient(reason) => {
                r.next_attempt = schedule.next_attempt_at(r.attempts, now);
                r.last_reply = Some(reason.clone());
                tracing::info!(queue_id = %id, rcpt = %rcpt, outcome = "deferred", reason = %reason,
                    attempts = r.attempts, next_attempt = r.next_attempt, "recipient deferred");
            }
            Outcome::Permanent(reason) => {
                r.status = RecipientStatus::Failed;
                r.last_reply = Some(reason.clone());
                tracing::warn!(queue_id = %id, rcpt = %rcpt, outcome = "failed", reason = %reason,
                    "recipient failed");
            }
        }
    }
}

/// Stores the new state, and removes the message once nothing is pending. The Maildir writes
/// are already fsynced at this point: a crash before this update means the recipients are
/// attempted again after restart (a duplicate, never a loss).
fn record(spool: &dyn Spool, msg: &QueuedMessage) {
    let id = &msg.id;
    match spool.update(msg) {
        Ok(()) => {}
        Err(QueueError::NotFound(_)) => {
            return tracing::warn!(queue_id = %id, "message was removed during delivery");
        }
        Err(e) => {
            return tracing::error!(queue_id = %id, error = %e,
                "cannot record delivery outcome; recipients will be attempted again");
        }
    }
    if msg.has_pending() {
        return;
    }
    match spool.remove(id) {
        Ok(_) => tracing::info!(queue_id = %id, "message done, removed from queue"),
        Err(e) => tracing::error!(queue_id = %id, error = %e, "cannot remove finished message"),
    }
}

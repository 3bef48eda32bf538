//! Local delivery of one message's recipients: directory lookup, then one Maildir write per
//! distinct mailbox. Blocking (file system); run it on a blocking thread.

use crate::{maildir, Outcome, RcptReport};
use corvid_queue::QueuedMessage;
use corvid_types::{Address, Directory, Envelope, Lookup};
use std::collections::HashMap;
use std::path::Path;

/// RFC 5321 4.4: the final delivery records the reverse-path in a `Return-Path:` header at
/// the top of the message; `<>` for the null sender.
pub fn return_path(envelope: &Envelope) -> Vec<u8> {
    format!("Return-Path: <{}>\r\n", envelope.sender_text()).into_bytes()
}

/// Resolves the recipients `due` and writes each distinct mailbox once, even when several
/// recipients (or aliases) lead to it.
pub(crate) fn deliver(
    directory: &Directory,
    root: &Path,
    msg: &QueuedMessage,
    due: &[usize],
    content: &[u8],
) -> Vec<(usize, RcptReport)> {
    let prefix = return_path(&msg.envelope);
    let mut written: HashMap<Address, Outcome> = HashMap::new();
    let mut outcomes = Vec::with_capacity(due.len());
    for &i in due {
        let Some(state) = msg.recipients.get(i) else {
            continue;
        };
        let outcome = match resolve(directory, &state.recipient.address) {
            Ok(mailboxes) => mailboxes
                .into_iter()
                .map(|mb| {
                    written
                        .entry(mb)
                        .or_insert_with_key(|mb| write_one(root, msg, mb, &prefix, content))
                        .clone()
                })
                .fold(Outcome::Delivered, Outcome::combine),
            Err(outcome) => outcome,
        };
        outcomes.push((i, RcptReport::from(outcome)));
    }
    outcomes
}

/// The mailboxes of a recipient routed to local delivery.
fn resolve(directory: &Directory, rcpt: &Address) -> Result<Vec<Address>, Outcome> {
    match directory.lookup(rcpt) {
        Lookup::Mailboxes(mailboxes) => Ok(mailboxes),
        Lookup::UnknownUser | Lookup::NotLocal => {
            Err(Outcome::Permanent("5.1.1 unknown local recipient".into()))
        }
    }
}

/// Idempotent per message and mailbox ([`maildir::deliver`]): after a crash between the
/// write and the queue update, the retry finds the file instead of writing a second copy.
fn write_one(
    root: &Path,
    msg: &QueuedMessage,
    mailbox: &Address,
    prefix: &[u8],
    content: &[u8],
) -> Outcome {
    let id = &msg.id;
    match maildir::deliver(root, mailbox, &id.0, msg.arrived_at, prefix, content) {
        Ok(path) => {
            // The per-recipient outcome line is the one at info; this adds the file.
            tracing::debug!(queue_id = %id, mailbox = %mailbox, outcome = "delivered",
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

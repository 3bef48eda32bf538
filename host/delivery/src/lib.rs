//! Corvid's delivery: takes due messages from the spool and puts them where they belong.
//!
//! Owns: the queue runner ([`Dispatcher`]), local delivery into Maildir ([`maildir`]), and the
//! per-recipient [`Outcome`] (`Delivered` / `Transient` / `Permanent`). For now every recipient
//! is local: an address that is not a local mailbox fails permanently. Outbound SMTP (MX lookup,
//! the SMTP client, STARTTLS policy) and LMTP come in later changes.
//!
//! Must not: know how a message got queued (it sees only [`corvid_queue::Spool`]), or touch
//! the spool's storage directly.
//!
//! Failures are recorded on the recipient (`Failed` with the reason) and logged at warn; the
//! delivery status notification to the sender (RFC 3464) is composed by the queue in a later
//! change.
//!
//! Guarantee: at-least-once. A message is removed from the spool only after every Maildir
//! file of it was fsynced and renamed into `new/`, and the spool is updated right after the
//! writes. A crash in that short window makes the recipients be attempted again on restart,
//! so a mailbox can get a duplicate, but a message is never lost. Likewise, when an alias
//! expands to several mailboxes and one of them fails transiently, the whole recipient is
//! retried and the mailboxes that succeeded get the message again (as with Postfix's local(8)).

mod attempt;
mod dispatcher;
mod error;
pub mod maildir;
mod outcome;

pub use attempt::return_path;
pub use dispatcher::{Dispatcher, DEFAULT_CONCURRENCY, DEFAULT_POLL_INTERVAL};
pub use error::DeliveryError;
pub use outcome::Outcome;

//! Corvid's delivery: takes due messages from the spool and puts them where they belong.
//!
//! Owns: the queue runner ([`Dispatcher`]) and each recipient's pipeline in an attempt
//! (route → deliver → decide → notify → record, `attempt.rs`), with the lifecycle calls in
//! the decision (`deferred` may move a retry, `bounced` may suppress or annotate a DSN,
//! `delivered` is told once the outcome is on record); routing ([`route`]: policy seam,
//! static table, local domains, MX); DNS through hickory-resolver ([`dns`], the only crate
//! that may use hickory) and MX ordering ([`mx`]); the SMTP and LMTP client on tokio with STARTTLS
//! ([`client`]: verified or opportunistic per the destination's TLS policy, AUTH only over
//! verified TLS), per-destination session limits and connection reuse; delivery slots (local
//! delivery has permits of its own, a remote destination at most `max_per_destination` of
//! the remote ones); mail-loop checks (MX hosts leading back here, `max_hops`); local
//! delivery into Maildir ([`maildir`]); the per-recipient [`Outcome`] (`Delivered` /
//! `Transient` / `Permanent`); and sending the DSNs that `corvid_queue::dsn` composes back through
//! [`corvid_types::Intake`]. Also local delivery at intake ([`DirectIntake`], `direct.rs`):
//! an `Intake` in front of the queue's that runs the first attempt of a local-only message
//! before the 250 and hands the queue only what it left pending.
//!
//! Must not: know how a message got queued (it sees only [`corvid_queue::Spool`] and
//! `Intake`), touch the spool's storage directly, compose DSN text (the queue does), or call
//! plugins other than through [`corvid_types::DeliveryPolicy`].
//!
//! Guarantee: at-least-once. A recipient is marked delivered only after the Maildir file was
//! fsynced, or the next hop answered 2xx to the end of DATA; the spool is updated right after.
//! A crash in that window makes the recipients be attempted again on restart (a duplicate,
//! never a loss). A connection lost before the final reply is a transient failure: the
//! message is sent again later. When an alias expands to several mailboxes and one fails
//! transiently, the whole recipient is retried (as with Postfix's local(8)).
//!
//! Lines sent to a next hop always end in CRLF: the content is dot-stuffed and any bare CR or
//! LF becomes CRLF on the way out ([`corvid_smtp::encode_data`]).

mod attempt;
mod blocking;
pub mod client;
pub mod config;
mod content;
pub mod dane;
mod deliver;
mod direct;
mod dispatcher;
pub mod dns;
mod error;
mod fate;
mod local;
mod loops;
pub mod maildir;
pub mod mta_sts;
pub mod mx;
mod notify;
mod outcome;
mod pool;
mod record;
mod remote;
mod resolver;
pub mod route;
mod tls_required;
pub mod tlsrpt;
mod tlsrpt_mail;
mod tlsrpt_persist;

pub use config::{DaneSettings, DeliveryConfig, MtaStsSettings, Timeouts, TlsRptSettings};
pub use direct::{DirectHandle, DirectIntake};
pub use dispatcher::{Dispatcher, DEFAULT_CONCURRENCY, DEFAULT_POLL_INTERVAL};
pub use error::DeliveryError;
pub use local::return_path;
pub use loops::DEFAULT_MAX_HOPS;
pub use outcome::{Outcome, RcptReport};
pub use route::{Destination, NextHop};

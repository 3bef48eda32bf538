//! The vocabulary every Corvid crate shares.
//!
//! Owns: mail addresses, the envelope and its ESMTP parameters, connection facts, SMTP replies,
//! policy decisions, the local mailbox directory, and the traits that join the crates
//! (`Policy` for the SMTP stages, `DeliveryPolicy` for the delivery lifecycle, `Intake` and
//! `QueueControl` for the queue).
//!
//! Must not: do I/O, or depend on tokio's networking, wasmtime, sled, hickory or rustls. Everything
//! here is plain data and trait definitions so that every other crate can depend on it.

pub mod address;
pub mod connection;
pub mod decision;
pub mod delivery;
pub mod delivery_call;
pub mod directory;
pub mod dns;
pub mod dsn_params;
pub mod envelope;
pub mod intake;
pub mod kv;
pub mod mailauth;
pub mod metrics;
pub mod policy;
pub mod reply;

pub use address::Address;
pub use connection::{ConnectionInfo, TlsInfo};
pub use decision::{Decision, Modification, Verdict};
pub use delivery::{BounceAction, Deferral, DeliveryInfo, DeliveryPolicy, Route, RouteRequest};
pub use directory::{Directory, DomainEntry, Lookup};
pub use dns::{DnsError, DnsResolver};
pub use envelope::{BodyType, Envelope, MailParams, Notify, RcptParams, Recipient, Ret};
pub use intake::{Intake, IntakeError, QueueControl, QueueId, SubmitOptions};
pub use kv::{KvError, KvStore};
pub use mailauth::{
    ArcCheck, ArcVerdict, AuthResults, DkimCheck, DkimVerdict, DmarcCheck, DmarcPolicy,
    DmarcVerdict, MailAuth, SigningChoice, SigningRequest, SpfCheck, SpfIdentity, SpfVerdict,
};
pub use policy::{AuthCredentials, MessageView, NoPolicy, Policy, PolicySession, Stage};
pub use reply::{EnhancedCode, Reply};

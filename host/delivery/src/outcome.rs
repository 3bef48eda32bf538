//! The result of one delivery attempt to one recipient or mailbox.

/// Texts start with an enhanced status code (RFC 3463) so that they can go into a DSN as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again later (full disk, I/O error, remote 4xx).
    Transient(String),
    /// Give up (unknown user, invalid mailbox, remote 5xx).
    Permanent(String),
}

impl Outcome {
    /// The outcome of a recipient that expands to several mailboxes: a transient failure wins
    /// (the recipient is retried, so a later attempt can still succeed), then a permanent one.
    pub fn combine(self, other: Outcome) -> Outcome {
        match (self, other) {
            (t @ Outcome::Transient(_), _) | (_, t @ Outcome::Transient(_)) => t,
            (p @ Outcome::Permanent(_), _) | (_, p @ Outcome::Permanent(_)) => p,
            _ => Outcome::Delivered,
        }
    }

    /// A short word for the `outcome` log field.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Transient(_) => "deferred",
            Outcome::Permanent(_) => "failed",
        }
    }
}

use corvid_queue::SuccessReport;
use corvid_types::Reply;

/// The outcome of one recipient with what a DSN and `corvid queue show` need to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcptReport {
    pub outcome: Outcome,
    /// For a delivery: what to record as the last reply (default `2.0.0 delivered`).
    pub detail: Option<String>,
    /// The server that answered (RFC 3464 `Remote-MTA`).
    pub remote_mta: Option<String>,
    /// `smtp; <reply>` (RFC 3464 `Diagnostic-Code`).
    pub diagnostic: Option<String>,
    /// The next hop's reply itself, for the lifecycle hooks.
    pub reply: Option<Reply>,
    /// For a delivery: whether a success notice is Corvid's to send, and which.
    pub success: SuccessReport,
    /// The session's TLS, for the per-recipient log line: `TLSv1_3 verified`,
    /// `TLSv1_3 unverified (<reason>)`; `None` in clear text or for local delivery.
    pub tls: Option<String>,
    /// The attempt's TLS as recorded in the queue (version, cipher, verified, policy,
    /// failure); `None` for local delivery.
    pub tls_record: Option<corvid_queue::TlsRecord>,
}

impl From<Outcome> for RcptReport {
    fn from(outcome: Outcome) -> Self {
        RcptReport {
            outcome,
            detail: None,
            remote_mta: None,
            diagnostic: None,
            reply: None,
            success: SuccessReport::Delivered,
            tls: None,
            tls_record: None,
        }
    }
}

/// The same outcome for every recipient of a group (indexes into the message).
pub(crate) fn uniform(idx: &[usize], outcome: Outcome) -> Vec<(usize, RcptReport)> {
    idx.iter()
        .map(|&i| (i, RcptReport::from(outcome.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_beats_permanent_beats_delivered() {
        let t = Outcome::Transient("4.3.0 x".into());
        let p = Outcome::Permanent("5.1.1 y".into());
        assert_eq!(Outcome::Delivered.combine(p.clone()), p);
        assert_eq!(p.clone().combine(t.clone()), t);
        assert_eq!(t.clone().combine(Outcome::Delivered), t);
        assert_eq!(
            Outcome::Delivered.combine(Outcome::Delivered),
            Outcome::Delivered
        );
    }
}

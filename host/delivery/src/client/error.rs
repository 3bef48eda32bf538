//! Why a session or transaction with a next hop failed, and what that means for delivery.

use crate::Outcome;
use corvid_smtp::reply_parse::status_of;
use corvid_smtp::Reply;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {peer}: {detail}")]
    Connect { peer: String, detail: String },
    #[error("timeout waiting for the {stage} reply")]
    Timeout { stage: &'static str },
    #[error("connection lost during {stage}: {detail}")]
    Io { stage: &'static str, detail: String },
    #[error("protocol error during {stage}: {detail}")]
    Protocol { stage: &'static str, detail: String },
    /// A negative reply that ends the session or applies to the whole message.
    #[error("{stage} refused: {reply}")]
    Rejected { stage: &'static str, reply: Reply },
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The certificate did not verify where the policy requires it.
    #[error("TLS certificate not verified: {0}")]
    Certificate(String),
    /// The route requires TLS and the peer does not offer STARTTLS (or AUTH would go in the
    /// clear).
    #[error("{0}")]
    TlsRequired(String),
    /// DANE (RFC 7672) forbids this MX host now: its TLSA lookup was bogus or failed, or
    /// `dane-only` found no usable records.
    #[error("DANE: {0}")]
    Dane(String),
}

impl ClientError {
    /// The delivery outcome for the recipients this error leaves without a reply. Everything
    /// is transient (another MX, or a later attempt, can still work) except a 5xx reply to
    /// MAIL FROM or to DATA, which is the next hop's final word on the message. RFC 3463 codes:
    /// X.4.1 no answer, X.4.2 bad connection, X.5.0 protocol error, X.7.10 encryption needed.
    pub fn outcome(&self) -> Outcome {
        match self {
            ClientError::Rejected { stage, reply } => {
                let text = format!("{} {}", status_of(reply), self.describe(reply));
                if reply.is_permanent() && matches!(*stage, "MAIL" | "DATA") {
                    Outcome::Permanent(text)
                } else if reply.is_permanent() {
                    // A 5xx greeting, EHLO or AUTH reply: the server is unusable now, not the
                    // message undeliverable (as Postfix, which defers and tries other hosts).
                    Outcome::Transient(format!("4{}", &text[1..]))
                } else {
                    Outcome::Transient(text)
                }
            }
            ClientError::Connect { .. } => Outcome::Transient(format!("4.4.1 {self}")),
            ClientError::Timeout { .. } | ClientError::Io { .. } => {
                Outcome::Transient(format!("4.4.2 {self}"))
            }
            ClientError::Protocol { .. } => Outcome::Transient(format!("4.5.0 {self}")),
            ClientError::Tls(_) | ClientError::TlsRequired(_) => {
                Outcome::Transient(format!("4.7.10 {self}"))
            }
            // RFC 8461 4.2 (and RFC 7672's deferral): a certificate that fails a required
            // check defers with 4.7.5, "cryptographic failure".
            ClientError::Certificate(_) => Outcome::Transient(format!("4.7.5 {self}")),
            // RFC 7672 2.2: the MX host cannot be used securely now; deferred as a
            // cryptographic failure (RFC 3463 X.7.5), never sent in clear text.
            ClientError::Dane(_) => Outcome::Transient(format!("4.7.5 {self}")),
        }
    }

    fn describe(&self, reply: &Reply) -> String {
        match self {
            ClientError::Rejected { stage, .. } => format!("{stage} refused: {reply}"),
            _ => reply.to_string(),
        }
    }

    /// The server's reply, when the error is one (for `Diagnostic-Code:`).
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            ClientError::Rejected { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mail_and_data_5xx_are_permanent() {
        let r550 = Reply::new(550, "5.7.1", "no");
        let mail = ClientError::Rejected {
            stage: "MAIL",
            reply: r550.clone(),
        };
        assert_eq!(
            mail.outcome(),
            Outcome::Permanent("5.7.1 MAIL refused: 550 5.7.1 no".into())
        );
        let ehlo = ClientError::Rejected {
            stage: "EHLO",
            reply: r550,
        };
        assert!(matches!(ehlo.outcome(), Outcome::Transient(t) if t.starts_with("4.7.1 ")));
        let t = ClientError::Timeout { stage: "DATA" };
        assert!(matches!(t.outcome(), Outcome::Transient(t) if t.starts_with("4.4.2 ")));
    }
}

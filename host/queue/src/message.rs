//! What the spool keeps about each message besides its content.

use corvid_types::{Envelope, QueueId, Recipient};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where one recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not delivered yet; attempted again at `next_attempt`.
    Pending,
    Delivered,
    /// Given up on: a permanent failure, or the message outlived the retry schedule.
    Failed,
}

/// Who told, or will tell, a sender who asked for success notices (RFC 3461 `NOTIFY=SUCCESS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuccessReport {
    /// Final delivery here (Maildir, LMTP): Corvid reports `delivered` (RFC 3464 2.3.3).
    #[default]
    Delivered,
    /// Handed to a next hop that does not offer DSN: Corvid reports `relayed`.
    Relayed,
    /// Handed to a next hop that offers DSN with the parameters passed on: it reports, not
    /// Corvid (RFC 3461 5.2.2); also recipients dropped by a route decision.
    None,
}

/// The delivery state of one envelope recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    pub recipient: Recipient,
    pub status: RecipientStatus,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt (meaningful while `Pending`).
    pub next_attempt: u64,
    /// The last reply or error text, starting with an enhanced status code (RFC 3463), for
    /// `corvid queue show` and the DSN's `Status:`.
    pub last_reply: Option<String>,
    /// Where the last attempt went: `local`, `mx:example.org`, `smtp://host:port`,
    /// `lmtp://host:port` or `lmtp:unix:/path` (the route chosen for this recipient).
    #[serde(default)]
    pub route: Option<String>,
    /// The host that gave the last reply, for the DSN's `Remote-MTA:` (RFC 3464 2.3.5).
    #[serde(default)]
    pub remote_mta: Option<String>,
    /// The last reply of a remote server as `smtp; 550 5.1.1 text`, for the DSN's
    /// `Diagnostic-Code:` (RFC 3464 2.3.6).
    #[serde(default)]
    pub diagnostic: Option<String>,
    /// A failure of this recipient was reported (or needed no report, or its report was
    /// suppressed): it is never reported again.
    #[serde(default)]
    pub reported: bool,
    /// A policy (`bounced` stage) asked that this recipient's outcome is never reported: no DSN
    /// is sent whatever NOTIFY asked, and `corvid queue show` says so. `reported` is set too,
    /// so that an older Corvid reading this record never sends the report either.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dsn_suppressed: bool,
    /// The sender was warned that delivery to this recipient is delayed (RFC 3464 `delayed`).
    #[serde(default)]
    pub delay_notified: bool,
    /// For a delivered recipient: what its success notice says, if one was asked for.
    #[serde(default)]
    pub success_report: SuccessReport,
    /// Text a policy (`bounced` stage) asked to add to this recipient's DSN.
    #[serde(default)]
    pub note: Option<String>,
    /// The transport security of the last remote attempt (`corvid queue show`, TLS-RPT).
    #[serde(default)]
    pub tls: Option<TlsRecord>,
}

/// The TLS of one delivery attempt to a next hop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRecord {
    /// `TLSv1_3`, `TLSv1_2`; `None` when the session ran in clear text or never opened.
    pub version: Option<String>,
    /// The negotiated cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: Option<String>,
    /// The certificate verified for the host name connected to.
    pub verified: bool,
    /// Which policy decided: `none`, `opportunistic`, `verify` (the config's), `mta-sts`.
    pub policy: String,
    /// Where that policy came from: `config`, `default`; for MTA-STS `enforce`/`testing`
    /// and `fetched`/`cached`, e.g. `enforce, cached`.
    #[serde(default)]
    pub source: Option<String>,
    /// The domain whose policy it is (the recipient domain for MTA-STS).
    #[serde(default)]
    pub policy_domain: Option<String>,
    /// What failed, when something did (also what an MTA-STS `testing` policy would have
    /// refused).
    #[serde(default)]
    pub failure: Option<String>,
}

impl RecipientState {
    pub fn is_pending(&self) -> bool {
        self.status == RecipientStatus::Pending
    }
}

/// A queued message's metadata; shown as JSON by `corvid queue show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub id: QueueId,
    /// The envelope as accepted, with all its ESMTP parameters (needed for DSNs, RFC 3461).
    pub envelope: Envelope,
    /// Unix seconds of acceptance; the retry schedule's `max_age` counts from here.
    pub arrived_at: u64,
    /// Content size in octets.
    pub size: u64,
    pub recipients: Vec<RecipientState>,
    /// Why the message is held for an administrator (a plugin's quarantine verdict, or
    /// `corvid queue hold`); a held message is never due and never delivered.
    pub quarantined: Option<String>,
    /// Unix seconds at which the message was held; `queue.quarantine_max_age` counts from
    /// here.
    #[serde(default)]
    pub held_at: Option<u64>,
    /// The reason of a hold an administrator released (`corvid queue release`): delivery hooks
    /// still learn that the message was quarantined once.
    #[serde(default)]
    pub released_hold: Option<String>,
    /// The client authenticated or connected from a relay network (`dsn.notify_success_from`).
    #[serde(default)]
    pub trusted_client: bool,
    /// The message is itself a delivery report: it never gets one (see `dsn`).
    #[serde(default)]
    pub is_report: bool,
    /// A DSN that was due could not be queued (the intake refused it): the message stays in
    /// the queue, due again at this time (Unix seconds) for that report alone, instead of
    /// being removed with the report never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn_retry_at: Option<u64>,
}

impl QueuedMessage {
    /// A freshly accepted message: every envelope recipient pending and due at once.
    pub fn new(id: QueueId, envelope: Envelope, size: u64, arrived_at: u64) -> Self {
        let recipients = envelope
            .recipients
            .iter()
            .map(|r| RecipientState {
                recipient: r.clone(),
                status: RecipientStatus::Pending,
                attempts: 0,
                next_attempt: arrived_at,
                last_reply: None,
                route: None,
                remote_mta: None,
                diagnostic: None,
                reported: false,
                dsn_suppressed: false,
                delay_notified: false,
                success_report: SuccessReport::default(),
                note: None,
                tls: None,
            })
            .collect();
        QueuedMessage {
            id,
            envelope,
            arrived_at,
            size,
            recipients,
            quarantined: None,
            held_at: None,
            released_hold: None,
            trusted_client: false,
            is_report: false,
            dsn_retry_at: None,
        }
    }

    /// True while some recipient still waits for delivery, or a DSN still waits to be
    /// queued ([`QueuedMessage::dsn_retry_at`]): the message must stay in the queue.
    pub fn has_pending(&self) -> bool {
        self.dsn_retry_at.is_some() || self.recipients.iter().any(RecipientState::is_pending)
    }

    /// When the message is next due: the earliest `next_attempt` of a pending recipient or
    /// the retry of a DSN that could not be queued, or `None` when nothing is pending or the
    /// message is quarantined.
    pub fn next_due(&self) -> Option<u64> {
        if self.quarantined.is_some() {
            return None;
        }
        self.recipients
            .iter()
            .filter(|r| r.is_pending())
            .map(|r| r.next_attempt)
            .chain(self.dsn_retry_at)
            .min()
    }
}

/// Unix seconds of `t` (0 for times before the epoch, which a sane clock never gives).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `SystemTime` of unix seconds `secs`.
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_types::{Address, RcptParams};

    fn rcpt(l: &str) -> Recipient {
        Recipient {
            address: Address::new(l, "x.test"),
            params: RcptParams::default(),
        }
    }

    #[test]
    fn next_due_is_the_earliest_pending_recipient() {
        let env = Envelope {
            recipients: vec![rcpt("a"), rcpt("b"), rcpt("c")],
            ..Envelope::default()
        };
        let mut m = QueuedMessage::new(QueueId("1".into()), env, 10, 100);
        assert_eq!(m.next_due(), Some(100));
        m.recipients[0].status = RecipientStatus::Delivered;
        m.recipients[1].next_attempt = 300;
        m.recipients[2].next_attempt = 200;
        assert_eq!(m.next_due(), Some(200));
        m.quarantined = Some("held".into());
        assert_eq!(m.next_due(), None);
        m.quarantined = None;
        m.recipients[1].status = RecipientStatus::Failed;
        m.recipients[2].status = RecipientStatus::Delivered;
        assert!(!m.has_pending());
        assert_eq!(m.next_due(), None);
    }

    #[test]
    fn status_serializes_in_lower_case() {
        let s = serde_json::to_string(&RecipientStatus::Pending).unwrap();
        assert_eq!(s, "\"pending\"");
    }
}

//! The end of a transaction: each recipient's reply as a report, and the session back to the
//! pool or closed.

use super::{Lookup, Remote};
use crate::client::{Session, TransactionResult};
use crate::route::{Destination, NextHop};
use crate::{Outcome, RcptReport};
use corvid_queue::SuccessReport;
use corvid_smtp::reply_parse::status_of;
use corvid_smtp::Reply;

impl Remote {
    pub(super) fn finish(
        &self,
        dest: &Destination,
        sts: &Lookup,
        session: Session,
        res: TransactionResult,
        index: &[usize],
    ) -> Vec<(usize, RcptReport)> {
        let host = session.endpoint.host();
        let record = self.tls_record(dest, sts, Some(&session), None);
        self.count_tls(dest, sts, &host, &record, false);
        let peer = session.peer().to_string();
        let fallback = res.error.as_ref().map(|e| {
            tracing::info!(peer = %peer, error = %e, "transaction failed");
            (e.outcome(), e.reply().cloned())
        });
        // RFC 3461 5.2.2 and 6.2: LMTP is final delivery; an SMTP next hop that took the DSN
        // parameters reports successes itself, one that did not leaves a `relayed` notice.
        let success = match (&dest.hop, res.dsn_passed) {
            (NextHop::Lmtp(_) | NextHop::LmtpUnix(_), _) => SuccessReport::Delivered,
            (_, true) => SuccessReport::None,
            (_, false) => SuccessReport::Relayed,
        };
        let reports = index
            .iter()
            .zip(res.replies)
            .map(|(&i, reply)| {
                let report = match (reply, &fallback) {
                    (Some((stage, reply)), _) => reply_report(stage, &reply, &peer),
                    (None, Some((outcome, reply))) => RcptReport {
                        diagnostic: reply.as_ref().map(|r| format!("smtp; {r}")),
                        reply: reply.clone(),
                        ..RcptReport::from(outcome.clone())
                    },
                    (None, None) => RcptReport::from(Outcome::Transient(
                        "4.5.0 no reply for this recipient".into(),
                    )),
                };
                (
                    i,
                    RcptReport {
                        remote_mta: Some(host.clone()),
                        success,
                        tls: session.tls_summary.clone(),
                        tls_record: Some(record.clone()),
                        ..report
                    },
                )
            })
            .collect();
        if res.reusable {
            self.pool.release(dest, session);
        } else {
            tokio::spawn(session.quit());
        }
        reports
    }
}

/// A reused session that was closed meanwhile (no reply at all), or that the server no
/// longer serves (421 to MAIL, RFC 5321 3.8): the message goes on a fresh connection instead.
pub(super) fn stale(res: &TransactionResult) -> bool {
    let closed = res.error.is_some() && res.replies.iter().all(Option::is_none);
    let refused = res
        .replies
        .iter()
        .all(|r| matches!(r, Some(("MAIL", reply)) if reply.code == 421));
    closed || (refused && !res.replies.is_empty())
}

/// A recipient's final reply as a report: 2xx delivered, 4xx transient, 5xx permanent.
fn reply_report(stage: &str, reply: &Reply, peer: &str) -> RcptReport {
    let status = status_of(reply);
    let said = format!("{peer} said: {reply} (in reply to {stage})");
    let outcome = if reply.is_positive() {
        Outcome::Delivered
    } else if reply.is_transient() {
        Outcome::Transient(format!("{status} {said}"))
    } else {
        Outcome::Permanent(format!("{status} {said}"))
    };
    RcptReport {
        detail: Some(format!("{status} {said}")),
        diagnostic: Some(format!("smtp; {reply}")),
        reply: Some(reply.clone()),
        ..RcptReport::from(outcome)
    }
}

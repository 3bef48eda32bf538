//! The default policy without a plugin: what `[auth_checks] dmarc_policy` says to do with the
//! results. A decision is a value; the session applies it and a plugin may override it.

use crate::config::DmarcEnforcement;
use crate::results::{AuthResults, DmarcPolicy, DmarcVerdict};
use serde::{Deserialize, Serialize};

/// What to do with a message after the checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum AuthAction {
    Accept,
    /// Accept into the quarantine state (RFC 7489 section 6.3, `p=quarantine`).
    Quarantine {
        reason: String,
    },
    /// Refuse at end of DATA with this reply.
    Reject {
        code: u16,
        enhanced: String,
        text: String,
    },
}

/// The default decision. Only a DMARC `fail` of a record with `p=`/`sp=` quarantine or reject
/// acts, and only with `dmarc_policy = "enforce"`. `pct=` (RFC 7489 section 6.6.4): a
/// message outside the sampled percentage gets the next lower policy; `sample` is a number
/// in 0..100 the caller draws (random in production, fixed in tests).
pub fn decide(results: &AuthResults, enforcement: DmarcEnforcement, sample: u8) -> AuthAction {
    let d = &results.dmarc;
    if enforcement == DmarcEnforcement::Off || d.result != DmarcVerdict::Fail {
        return AuthAction::Accept;
    }
    let sampled = sample < d.pct;
    let policy = match (d.policy, sampled) {
        (p, true) => p,
        (DmarcPolicy::Reject, false) => DmarcPolicy::Quarantine,
        (_, false) => DmarcPolicy::None,
    };
    match policy {
        DmarcPolicy::None => AuthAction::Accept,
        DmarcPolicy::Quarantine => AuthAction::Quarantine {
            reason: format!("DMARC policy of {} (quarantine)", d.from_domain),
        },
        // 550 5.7.1: delivery not authorized, message refused (RFC 3463 section 3.8;
        // RFC 7489 section 6.6.3, SMTP-time rejection).
        DmarcPolicy::Reject => AuthAction::Reject {
            code: 550,
            enhanced: "5.7.1".into(),
            text: format!(
                "Message rejected: DMARC policy of {} (no aligned SPF or DKIM pass)",
                d.from_domain
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::*;

    fn with(result: DmarcVerdict, policy: DmarcPolicy, pct: u8) -> AuthResults {
        AuthResults {
            spf: None,
            dkim: vec![],
            dmarc: DmarcCheck {
                result,
                from_domain: "bank.test".into(),
                policy,
                pct,
                spf_aligned: false,
                dkim_aligned: false,
                reason: None,
            },
            arc: ArcCheck {
                result: ArcVerdict::None,
                sets: 0,
                reason: None,
            },
        }
    }

    #[test]
    fn reject_quarantine_none_off_and_pct() {
        let on = DmarcEnforcement::Enforce;
        let r = decide(&with(DmarcVerdict::Fail, DmarcPolicy::Reject, 100), on, 99);
        assert!(
            matches!(r, AuthAction::Reject { code: 550, ref enhanced, .. } if enhanced == "5.7.1")
        );
        let q = decide(
            &with(DmarcVerdict::Fail, DmarcPolicy::Quarantine, 100),
            on,
            0,
        );
        assert!(matches!(q, AuthAction::Quarantine { .. }));
        let n = decide(&with(DmarcVerdict::Fail, DmarcPolicy::None, 100), on, 0);
        assert_eq!(n, AuthAction::Accept);
        let pass = decide(&with(DmarcVerdict::Pass, DmarcPolicy::Reject, 100), on, 0);
        assert_eq!(pass, AuthAction::Accept);
        let tmp = decide(
            &with(DmarcVerdict::Temperror, DmarcPolicy::Reject, 100),
            on,
            0,
        );
        assert_eq!(tmp, AuthAction::Accept);
        let off = decide(
            &with(DmarcVerdict::Fail, DmarcPolicy::Reject, 100),
            DmarcEnforcement::Off,
            0,
        );
        assert_eq!(off, AuthAction::Accept);
        // pct=30: sample 29 is in, 30 is out and gets the next lower policy.
        let inside = decide(&with(DmarcVerdict::Fail, DmarcPolicy::Reject, 30), on, 29);
        assert!(matches!(inside, AuthAction::Reject { .. }));
        let outside = decide(&with(DmarcVerdict::Fail, DmarcPolicy::Reject, 30), on, 30);
        assert!(matches!(outside, AuthAction::Quarantine { .. }));
        let q_out = decide(&with(DmarcVerdict::Fail, DmarcPolicy::Quarantine, 0), on, 0);
        assert_eq!(q_out, AuthAction::Accept);
        // The decision is plain data for plugins.
        let json = serde_json::to_string(&r).expect("json");
        assert!(json.contains("\"action\":\"reject\""), "{json}");
    }
}

//! A transaction's `auth_results` in a `corvid plugin test` script: the SPF, DKIM, DMARC and
//! ARC results the server hands the plugins through the `auth-results` import
//! (wit/auth.wit), with that interface's fields. `[record]` writes the results the session
//! had in the same form, so that a replay hands the plugins what they read on the server.
//!
//! As on the server: SPF is handed over before the mail hook (the mail, rcpt and data hooks
//! see it); DKIM, DMARC and ARC before the data hook, together (they are computed together at
//! the end of DATA). Without `auth_results` the plugins read `none` and an empty DKIM list, as
//! for a client the server does not check.

use anyhow::{bail, Result};
use corvid_types::{
    ArcCheck, ArcVerdict, AuthResults, ConnectionInfo, DkimCheck, DkimVerdict, DmarcCheck,
    DmarcPolicy, DmarcVerdict, SpfCheck, SpfIdentity, SpfVerdict,
};
use serde::{Deserialize, Serialize};

/// `[transaction.auth_results]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthResultsSection {
    /// `get-spf`, from the mail hook on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<SpfSection>,
    /// `get-dkim` at the data hook, in header order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dkim: Vec<DkimSection>,
    /// `get-dmarc` at the data hook (given with `arc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc: Option<DmarcSection>,
    /// `get-arc` at the data hook (given with `dmarc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arc: Option<ArcSection>,
}

/// The WIT `spf` record: `result` is pass, fail, softfail, neutral, none, temperror or
/// permerror (RFC 7208 section 2.6); `identity` mailfrom (default) or helo.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpfSection {
    pub result: SpfVerdict,
    #[serde(default)]
    pub domain: String,
    #[serde(default = "mailfrom")]
    pub identity: SpfIdentity,
}

/// The WIT `dkim-signature` record: `result` is pass, fail, neutral, temperror, permerror or
/// not_checked (RFC 8601 section 2.7.1).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkimSection {
    pub result: DkimVerdict,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub selector: String,
    #[serde(default)]
    pub algorithm: String,
}

/// The WIT `dmarc` record (RFC 7489 sections 6.3 and 11.2).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DmarcSection {
    pub result: DmarcVerdict,
    #[serde(default = "policy_none")]
    pub policy: DmarcPolicy,
    /// The RFC 5322.From domain.
    #[serde(default)]
    pub domain: String,
    #[serde(default = "hundred")]
    pub pct: u8,
    #[serde(default)]
    pub spf_aligned: bool,
    #[serde(default)]
    pub dkim_aligned: bool,
}

/// The WIT `arc` record (RFC 8617 section 5.2).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ArcSection {
    pub result: ArcVerdict,
    #[serde(default)]
    pub sets: u32,
}

fn mailfrom() -> SpfIdentity {
    SpfIdentity::Mailfrom
}

fn policy_none() -> DmarcPolicy {
    DmarcPolicy::None
}

fn hundred() -> u8 {
    100
}

impl AuthResultsSection {
    /// What the server handed over, as the script has it (for `[record]`).
    pub fn from_session(spf: Option<&SpfCheck>, message: Option<&AuthResults>) -> Self {
        let spf = spf.or_else(|| message.and_then(|m| m.spf.as_ref()));
        AuthResultsSection {
            spf: spf.map(|s| SpfSection {
                result: s.result,
                domain: s.domain.clone(),
                identity: s.identity,
            }),
            dkim: message
                .map(|m| {
                    m.dkim
                        .iter()
                        .map(|d| DkimSection {
                            result: d.result,
                            domain: d.domain.clone(),
                            selector: d.selector.clone(),
                            algorithm: d.algorithm.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            dmarc: message.map(|m| DmarcSection {
                result: m.dmarc.result,
                policy: m.dmarc.policy,
                domain: m.dmarc.from_domain.clone(),
                pct: m.dmarc.pct,
                spf_aligned: m.dmarc.spf_aligned,
                dkim_aligned: m.dmarc.dkim_aligned,
            }),
            arc: message.map(|m| ArcSection {
                result: m.arc.result,
                sets: m.arc.sets,
            }),
        }
    }

    /// The SPF result handed over before the mail hook. The fields the import does not show
    /// (MAIL FROM, HELO, client address) come from the session.
    pub fn spf_check(&self, conn: &ConnectionInfo, mail_from: &str) -> Option<SpfCheck> {
        self.spf.as_ref().map(|s| SpfCheck {
            result: s.result,
            identity: s.identity,
            domain: s.domain.clone(),
            mail_from: mail_from.to_string(),
            helo: conn.helo.clone().unwrap_or_default(),
            client_ip: conn.peer_addr.ip(),
            explanation: None,
        })
    }

    /// The results handed over before the data hook; `None` when the script gives none of
    /// DKIM, DMARC and ARC.
    pub fn message(&self, spf: Option<&SpfCheck>) -> Result<Option<AuthResults>> {
        let (dmarc, arc) = match (&self.dmarc, &self.arc) {
            (None, None) if self.dkim.is_empty() => return Ok(None),
            (Some(d), Some(a)) => (d, a),
            _ => bail!(
                "auth_results: dkim, dmarc and arc come together (the server checks them \
                 together at the end of DATA): give dmarc and arc"
            ),
        };
        Ok(Some(AuthResults {
            spf: spf.cloned(),
            dkim: self
                .dkim
                .iter()
                .map(|d| DkimCheck {
                    result: d.result,
                    domain: d.domain.clone(),
                    selector: d.selector.clone(),
                    algorithm: d.algorithm.clone(),
                    identity: None,
                    body_length: None,
                    header_b: String::new(),
                    reason: None,
                })
                .collect(),
            dmarc: DmarcCheck {
                result: dmarc.result,
                from_domain: dmarc.domain.clone(),
                policy: dmarc.policy,
                pct: dmarc.pct,
                spf_aligned: dmarc.spf_aligned,
                dkim_aligned: dmarc.dkim_aligned,
                reason: None,
            },
            arc: ArcCheck {
                result: arc.result,
                sets: arc.sets,
                reason: None,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin_test::script::Script;

    const SCRIPT: &str = r#"
[[transaction]]
mail_from = "a@sender.example"
rcpt_to = ["b@example.org"]
data = "Subject: x\n\nhi\n"
[transaction.auth_results]
spf = { result = "softfail", domain = "sender.example" }
dkim = [{ result = "pass", domain = "sender.example", selector = "s1", algorithm = "rsa-sha256" },
        { result = "not_checked" }]
dmarc = { result = "fail", policy = "reject", domain = "sender.example", pct = 50, spf_aligned = true }
arc = { result = "none" }

[[transaction]]
mail_from = ""
rcpt_to = ["b@example.org"]
auth_results = { spf = { result = "pass", domain = "client.example", identity = "helo" } }
"#;

    fn conn() -> ConnectionInfo {
        let mut c = crate::plugin_test::script::ConnSection::default().info();
        c.helo = Some("client.example".into());
        c
    }

    #[test]
    fn parses_every_field_and_hands_them_over() {
        let s: Script = toml::from_str(SCRIPT).expect("parses");
        let a = s.transactions[0].auth_results.as_ref().expect("section");
        let spf = a.spf_check(&conn(), "a@sender.example").expect("spf");
        assert_eq!(spf.result, SpfVerdict::Softfail);
        assert_eq!(spf.identity, SpfIdentity::Mailfrom, "the default identity");
        assert_eq!(spf.helo, "client.example");
        let m = a.message(Some(&spf)).expect("valid").expect("message");
        assert_eq!(m.dkim.len(), 2);
        assert_eq!(m.dkim[1].result, DkimVerdict::NotChecked);
        assert_eq!(m.dmarc.policy, DmarcPolicy::Reject);
        assert_eq!((m.dmarc.pct, m.dmarc.spf_aligned), (50, true));
        assert!(!m.dmarc.dkim_aligned);
        assert_eq!((m.arc.result, m.arc.sets), (ArcVerdict::None, 0));
        // The round trip `[record]` makes: the session's results back to the section.
        assert_eq!(&AuthResultsSection::from_session(Some(&spf), Some(&m)), a);

        let b = s.transactions[1].auth_results.as_ref().expect("section");
        let spf = b.spf_check(&conn(), "").expect("spf");
        assert_eq!(spf.identity, SpfIdentity::Helo);
        assert!(b.message(Some(&spf)).expect("valid").is_none(), "SPF only");
    }

    #[test]
    fn refuses_half_the_message_results_and_unknown_names() {
        let half = AuthResultsSection {
            dmarc: Some(DmarcSection {
                result: DmarcVerdict::Pass,
                policy: DmarcPolicy::None,
                domain: String::new(),
                pct: 100,
                spf_aligned: false,
                dkim_aligned: false,
            }),
            ..Default::default()
        };
        assert!(half.message(None).is_err(), "dmarc without arc");
        let bad = "[[transaction]]\nmail_from = \"\"\nrcpt_to = []\n\
                   auth_results = { spf = { result = \"maybe\" } }\n";
        assert!(toml::from_str::<Script>(bad).is_err());
        let unknown = "[[transaction]]\nmail_from = \"\"\nrcpt_to = []\n\
                       auth_results = { spff = { result = \"pass\" } }\n";
        assert!(toml::from_str::<Script>(unknown).is_err());
    }
}

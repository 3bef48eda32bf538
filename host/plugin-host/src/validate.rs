//! The host's check of a plugin's decision before anything of it is applied.
//!
//! Replies must fit their verdict (reject 5xx, tempfail 4xx, disconnect 4xx/5xx), enhanced
//! codes must parse and match the code's class, text is sanitised by [`Reply::new`];
//! modifications must be allowed at the stage and well-formed (no CR/LF injection into
//! headers or addresses), and `replace-body` needs its capability. DSN parameters set for an
//! added recipient (`added-recipients`) must pass a client's RCPT rules and name a recipient
//! the decision adds.

use crate::added::Pending;
use crate::bindings::corvid::plugin::types as wit;
use crate::stats::Outcome;
use corvid_types::{dsn_params, Address, Decision, EnhancedCode, Modification, Reply, Stage};
use corvid_types::{Notify, RcptParams, Recipient, Verdict};

/// What a hook call produced: its decision, and the DSN parameters it set with
/// `added-recipients.set-dsn-params` for recipients the decision adds.
pub(crate) struct Raw {
    pub(crate) decision: wit::Decision,
    pub(crate) added: Pending,
}

impl From<wit::Decision> for Raw {
    fn from(decision: wit::Decision) -> Self {
        Raw {
            decision,
            added: Pending::default(),
        }
    }
}

const MAX_MODIFICATIONS: usize = 256;
const MAX_FIELD: usize = 998;

fn reply(r: wit::Reply, range: std::ops::RangeInclusive<u16>, what: &str) -> Result<Reply, String> {
    if !range.contains(&r.code) {
        return Err(format!("{what} with reply code {}", r.code));
    }
    if !r.enhanced.is_empty() {
        match EnhancedCode::parse(&r.enhanced) {
            Some(e) if u16::from(e.0) == r.code / 100 => {}
            _ => {
                return Err(format!(
                    "enhanced code {:?} does not fit {}",
                    r.enhanced, r.code
                ))
            }
        }
    }
    Ok(Reply::new(r.code, &r.enhanced, &r.text))
}

fn address(a: wit::Address) -> Result<Address, String> {
    let bad = |s: &str| {
        s.is_empty() || s.len() > 255 || s.chars().any(|c| c.is_control() || c == '<' || c == '>')
    };
    if bad(&a.local) || bad(&a.domain) || a.domain.contains(['@', ' ']) {
        return Err(format!("malformed address {:?}@{:?}", a.local, a.domain));
    }
    Ok(Address::new(a.local, a.domain))
}

fn field_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 76 || !n.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("malformed header name {n:?}"));
    }
    Ok(())
}

fn field_value(v: &str) -> Result<(), String> {
    if v.len() > MAX_FIELD * 4 || v.chars().any(|c| c.is_control() && c != '\t') {
        return Err("header value with control characters or too long".into());
    }
    Ok(())
}

/// Checks the decision of `raw` given at `stage`, with the DSN parameters the hook set. `Err`
/// carries the reason (for the log only).
pub(crate) fn decision(
    stage: Stage,
    raw: impl Into<Raw>,
    replace_body: bool,
) -> Result<Decision, String> {
    let Raw { decision: d, added } = raw.into();
    let mut checked = plain(stage, d, replace_body)?;
    if !added.is_empty() {
        attach(&mut checked.modifications, added)?;
    }
    Ok(checked)
}

/// The decision itself, without DSN parameters.
fn plain(stage: Stage, d: wit::Decision, replace_body: bool) -> Result<Decision, String> {
    let smtp_txn = matches!(stage, Stage::Mail | Stage::Rcpt | Stage::Data);
    let verdict = match d.verdict {
        wit::Verdict::Continue => Verdict::Continue,
        wit::Verdict::Accept => Verdict::Accept,
        wit::Verdict::Reject(r) => Verdict::Reject(reply(r, 500..=599, "reject")?),
        wit::Verdict::Tempfail(r) => Verdict::Tempfail(reply(r, 400..=499, "tempfail")?),
        wit::Verdict::Disconnect(r) => Verdict::Disconnect(reply(r, 400..=599, "disconnect")?),
        wit::Verdict::Discard if smtp_txn => Verdict::Discard,
        wit::Verdict::Quarantine(why) if smtp_txn => {
            Verdict::Quarantine(why.chars().filter(|c| !c.is_control()).take(200).collect())
        }
        wit::Verdict::Discard | wit::Verdict::Quarantine(_) => {
            return Err(format!("discard/quarantine at {}", stage.as_str()))
        }
    };
    if d.modifications.len() > MAX_MODIFICATIONS {
        return Err("too many modifications".into());
    }
    let mut mods = Vec::with_capacity(d.modifications.len());
    for m in d.modifications {
        let envelope_ok = smtp_txn;
        let data_ok = stage == Stage::Data;
        let m = match m {
            wit::Modification::ChangeSender(s) if envelope_ok => {
                Modification::ChangeSender(s.map(address).transpose()?)
            }
            wit::Modification::AddRecipient(a) if envelope_ok => {
                Modification::AddRecipient(address(a)?)
            }
            wit::Modification::RemoveRecipient(a) if envelope_ok => {
                Modification::RemoveRecipient(address(a)?)
            }
            wit::Modification::AddHeader(h) if data_ok => {
                field_name(&h.name)?;
                field_value(&h.value)?;
                Modification::AddHeader {
                    name: h.name,
                    value: h.value,
                }
            }
            wit::Modification::InsertHeader(h) if data_ok => {
                field_name(&h.name)?;
                field_value(&h.value)?;
                Modification::InsertHeader {
                    index: h.index,
                    name: h.name,
                    value: h.value,
                }
            }
            wit::Modification::ChangeHeader(h) if data_ok => {
                field_name(&h.name)?;
                field_value(&h.value)?;
                Modification::ChangeHeader {
                    name: h.name,
                    index: h.index,
                    value: h.value,
                }
            }
            wit::Modification::RemoveHeader(h) if data_ok => {
                field_name(&h.name)?;
                Modification::RemoveHeader {
                    name: h.name,
                    index: h.index,
                }
            }
            wit::Modification::ReplaceBody(b) if data_ok && replace_body => {
                Modification::ReplaceBody(b)
            }
            other => {
                return Err(format!(
                    "modification {} not allowed at {}",
                    kind(&other),
                    stage.as_str()
                ))
            }
        };
        mods.push(m);
    }
    Ok(Decision {
        verdict,
        modifications: mods,
    })
}

/// Turns each `add-recipient` of an address the hook gave DSN parameters into an
/// [`Modification::AddRecipientWithParams`], after checking the parameters as a client's RCPT
/// (RFC 3461 4.1, 4.2). Parameters for an address the decision does not add are refused: the
/// plugin meant a recipient that will not exist.
fn attach(mods: &mut [Modification], added: Pending) -> Result<(), String> {
    if added.overflow {
        return Err("DSN parameters set for too many addresses".into());
    }
    for (a, p) in added.params {
        let params = RcptParams {
            notify: p.notify.map(|n| Notify {
                never: n.never,
                success: n.success,
                failure: n.failure,
                delay: n.delay,
            }),
            orcpt: p.orcpt,
        };
        let shown = format!("{}@{}", a.local.escape_debug(), a.domain.escape_debug());
        dsn_params::check(&params).map_err(|e| format!("DSN parameters for {shown}: {e}"))?;
        let mut found = false;
        for m in mods.iter_mut() {
            let Modification::AddRecipient(to) = m else {
                continue;
            };
            if to.local == a.local && to.domain.eq_ignore_ascii_case(&a.domain) {
                *m = Modification::AddRecipientWithParams(Recipient {
                    address: to.clone(),
                    params: params.clone(),
                });
                found = true;
            }
        }
        if !found {
            return Err(format!(
                "DSN parameters for {shown}, which the decision does not add"
            ));
        }
    }
    Ok(())
}

fn kind(m: &wit::Modification) -> &'static str {
    match m {
        wit::Modification::ChangeSender(_) => "change-sender",
        wit::Modification::AddRecipient(_) => "add-recipient",
        wit::Modification::RemoveRecipient(_) => "remove-recipient",
        wit::Modification::AddHeader(_) => "add-header",
        wit::Modification::InsertHeader(_) => "insert-header",
        wit::Modification::ChangeHeader(_) => "change-header",
        wit::Modification::RemoveHeader(_) => "remove-header",
        wit::Modification::ReplaceBody(_) => "replace-body",
    }
}

/// The stats bucket of a validated verdict.
pub(crate) fn outcome(v: &Verdict) -> Outcome {
    match v {
        Verdict::Continue => Outcome::Continue,
        Verdict::Accept => Outcome::Accept,
        Verdict::Reject(_) => Outcome::Reject,
        Verdict::Tempfail(_) => Outcome::Tempfail,
        Verdict::Disconnect(_) => Outcome::Disconnect,
        Verdict::Discard => Outcome::Discard,
        Verdict::Quarantine(_) => Outcome::Quarantine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(verdict: wit::Verdict) -> wit::Decision {
        wit::Decision {
            verdict,
            modifications: Vec::new(),
        }
    }

    fn r(code: u16, enh: &str) -> wit::Reply {
        wit::Reply {
            code,
            enhanced: enh.into(),
            text: "no\r\n250 ok".into(),
        }
    }

    #[test]
    fn reply_codes_must_fit_the_verdict() {
        assert!(decision(Stage::Rcpt, d(wit::Verdict::Reject(r(250, ""))), false).is_err());
        assert!(decision(Stage::Rcpt, d(wit::Verdict::Reject(r(450, ""))), false).is_err());
        assert!(decision(Stage::Rcpt, d(wit::Verdict::Tempfail(r(550, ""))), false).is_err());
        assert!(decision(Stage::Rcpt, d(wit::Verdict::Reject(r(550, "4.7.1"))), false).is_err());
        assert!(decision(
            Stage::Rcpt,
            d(wit::Verdict::Disconnect(r(421, "4.7.0"))),
            false
        )
        .is_ok());
        let ok = decision(Stage::Rcpt, d(wit::Verdict::Reject(r(550, "5.7.1"))), false).unwrap();
        match ok.verdict {
            Verdict::Reject(reply) => {
                assert_eq!(reply.to_wire(), b"550-5.7.1 no?\r\n550 5.7.1 250 ok\r\n")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modifications_are_checked_per_stage() {
        let mut dec = d(wit::Verdict::Continue);
        dec.modifications
            .push(wit::Modification::AddHeader(wit::HeaderField {
                name: "X-Ok".into(),
                value: "1".into(),
            }));
        assert!(decision(Stage::Rcpt, dec.clone(), false).is_err());
        assert!(decision(Stage::Data, dec.clone(), false).is_ok());
        dec.modifications
            .push(wit::Modification::AddHeader(wit::HeaderField {
                name: "X-Bad".into(),
                value: "a\r\nBcc: x@y".into(),
            }));
        assert!(decision(Stage::Data, dec, false).is_err());
        let body = wit::Decision {
            verdict: wit::Verdict::Continue,
            modifications: vec![wit::Modification::ReplaceBody(b"x".to_vec())],
        };
        assert!(decision(Stage::Data, body.clone(), false).is_err());
        assert!(decision(Stage::Data, body, true).is_ok());
    }

    fn wa(local: &str, domain: &str) -> wit::Address {
        wit::Address {
            local: local.into(),
            domain: domain.into(),
        }
    }

    /// A decision adding `x@remote.test`, with `params` set for `to`.
    fn adding(to: wit::Address, params: wit::RcptParams) -> Raw {
        let mut added = Pending::default();
        added.params.push((to, params));
        Raw {
            decision: wit::Decision {
                verdict: wit::Verdict::Continue,
                modifications: vec![wit::Modification::AddRecipient(wa("x", "remote.test"))],
            },
            added,
        }
    }

    fn notify(never: bool, failure: bool) -> Option<wit::Notify> {
        Some(wit::Notify {
            never,
            success: false,
            failure,
            delay: false,
        })
    }

    #[test]
    fn dsn_params_go_with_the_added_recipient_or_refuse_the_decision() {
        let ok = wit::RcptParams {
            notify: notify(true, false),
            orcpt: Some("rfc822;orig+40a.test".into()),
        };
        let d = decision(
            Stage::Rcpt,
            adding(wa("x", "REMOTE.test"), ok.clone()),
            false,
        )
        .expect("valid");
        let [Modification::AddRecipientWithParams(r)] = d.modifications.as_slice() else {
            panic!("{:?}", d.modifications);
        };
        assert_eq!(r.address, Address::new("x", "remote.test"));
        assert!(r.params.notify.is_some_and(|n| n.never && !n.failure));
        assert_eq!(r.params.orcpt.as_deref(), Some("rfc822;orig+40a.test"));
        // A client's RCPT could not say these: the decision is invalid.
        for bad in [
            wit::RcptParams {
                notify: notify(true, true),
                orcpt: None,
            },
            wit::RcptParams {
                notify: notify(false, false),
                orcpt: None,
            },
            wit::RcptParams {
                notify: None,
                orcpt: Some("rfc822;a b".into()),
            },
            wit::RcptParams {
                notify: None,
                orcpt: Some(format!("rfc822;{}", "a".repeat(600))),
            },
        ] {
            let e = decision(Stage::Rcpt, adding(wa("x", "remote.test"), bad), false);
            assert!(
                e.as_ref().is_err_and(|e| e.contains("x@remote.test")),
                "{e:?}"
            );
        }
        // Parameters for a recipient the decision does not add.
        let e = decision(Stage::Rcpt, adding(wa("y", "remote.test"), ok), false);
        assert!(e.is_err_and(|e| e.contains("does not add")));
    }
}

//! Mapping `mail-auth`'s outputs to the crate's plain result types.

use crate::results::*;
use mail_auth::common::crypto::Algorithm;
use mail_auth::dmarc::Policy;
use mail_auth::{AuthenticatedMessage, DkimOutput, DkimResult, Error as MaError, SpfResult};

pub(crate) fn policy_of(p: Policy) -> DmarcPolicy {
    match p {
        Policy::Reject => DmarcPolicy::Reject,
        Policy::Quarantine => DmarcPolicy::Quarantine,
        Policy::None | Policy::Unspecified => DmarcPolicy::None,
    }
}

pub(crate) fn spf_verdict(r: SpfResult) -> SpfVerdict {
    match r {
        SpfResult::Pass => SpfVerdict::Pass,
        SpfResult::Fail => SpfVerdict::Fail,
        SpfResult::SoftFail => SpfVerdict::Softfail,
        SpfResult::Neutral => SpfVerdict::Neutral,
        SpfResult::TempError => SpfVerdict::Temperror,
        SpfResult::PermError => SpfVerdict::Permerror,
        SpfResult::None => SpfVerdict::None,
    }
}

pub(crate) fn spf_result(v: SpfVerdict) -> SpfResult {
    match v {
        SpfVerdict::Pass => SpfResult::Pass,
        SpfVerdict::Fail => SpfResult::Fail,
        SpfVerdict::Softfail => SpfResult::SoftFail,
        SpfVerdict::Neutral => SpfResult::Neutral,
        SpfVerdict::Temperror => SpfResult::TempError,
        SpfVerdict::Permerror => SpfResult::PermError,
        SpfVerdict::None => SpfResult::None,
    }
}

pub(crate) fn error_of(r: &DkimResult) -> Option<String> {
    match r {
        DkimResult::Pass | DkimResult::None => None,
        DkimResult::Fail(e)
        | DkimResult::Neutral(e)
        | DkimResult::PermError(e)
        | DkimResult::TempError(e) => Some(e.to_string()),
    }
}

/// RFC 6376 section 6.1: a body hash mismatch or a bad signature is a failure; anything that
/// stops verification for good (syntax, unsupported algorithm, expired, revoked key) is a
/// permanent error; DNS trouble is temporary.
pub(crate) fn dkim_check(o: &DkimOutput<'_>) -> DkimCheck {
    let verdict = match o.result() {
        DkimResult::Pass => DkimVerdict::Pass,
        DkimResult::Fail(_) | DkimResult::Neutral(MaError::FailedBodyHashMatch) => {
            DkimVerdict::Fail
        }
        DkimResult::Neutral(_) | DkimResult::PermError(_) => DkimVerdict::Permerror,
        DkimResult::TempError(_) => DkimVerdict::Temperror,
        DkimResult::None => DkimVerdict::Neutral,
    };
    dkim_check_of(verdict, o.signature(), error_of(o.result()))
}

pub(crate) fn dkim_check_of(
    result: DkimVerdict,
    sig: Option<&mail_auth::dkim::Signature>,
    reason: Option<String>,
) -> DkimCheck {
    let Some(sig) = sig else {
        return DkimCheck {
            result,
            domain: String::new(),
            selector: String::new(),
            algorithm: String::new(),
            identity: None,
            body_length: None,
            header_b: String::new(),
            reason,
        };
    };
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(&sig.b);
    DkimCheck {
        result,
        domain: sig.d.to_ascii_lowercase(),
        selector: sig.s.clone(),
        algorithm: match sig.a {
            Algorithm::RsaSha1 => "rsa-sha1",
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
        .to_string(),
        identity: (!sig.i.is_empty()).then(|| sig.i.clone()),
        body_length: (sig.l > 0).then_some(sig.l),
        header_b: b.chars().take(8).collect(),
        reason,
    }
}

pub(crate) fn empty_dmarc(result: DmarcVerdict, reason: Option<String>) -> DmarcCheck {
    DmarcCheck {
        result,
        from_domain: String::new(),
        policy: DmarcPolicy::None,
        pct: 100,
        spf_aligned: false,
        dkim_aligned: false,
        reason,
    }
}

/// A message whose header section cannot be parsed at all.
pub(crate) fn unparseable(spf: Option<&SpfCheck>) -> AuthResults {
    AuthResults {
        spf: spf.cloned(),
        dkim: Vec::new(),
        dmarc: empty_dmarc(
            DmarcVerdict::Permerror,
            Some("header section not parseable".into()),
        ),
        arc: ArcCheck {
            result: ArcVerdict::None,
            sets: 0,
            reason: None,
        },
    }
}

pub(crate) fn timed_out(msg: &AuthenticatedMessage<'_>, spf: Option<&SpfCheck>) -> AuthResults {
    let reason = Some("DNS timed out".to_string());
    AuthResults {
        spf: spf.cloned(),
        dkim: msg
            .dkim_headers
            .iter()
            .map(|h| {
                dkim_check_of(
                    DkimVerdict::Temperror,
                    h.header.as_ref().ok(),
                    reason.clone(),
                )
            })
            .collect(),
        dmarc: empty_dmarc(DmarcVerdict::Temperror, reason.clone()),
        arc: ArcCheck {
            result: if msg.as_headers.is_empty() {
                ArcVerdict::None
            } else {
                ArcVerdict::Temperror
            },
            sets: 0,
            reason,
        },
    }
}

//! ARC sealing (RFC 8617 section 5.1) of mail that Corvid forwards, for the domains in
//! `dkim.arc_seal_domains`, with their `[[dkim.key]]` keys.

use crate::map::spf_result;
use crate::sign::Signer;
use crate::verify::org_domain;
use crate::{
    ArcVerdict, AuthError, AuthResults, Authenticator, DkimCheck, DkimVerdict, DmarcCheck,
    DmarcVerdict, KeyAlgorithm, SpfIdentity,
};
use chrono::{DateTime, Utc};
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Algorithm, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, Signature};
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    Error as MaError, SpfOutput,
};
use std::net::IpAddr;

impl Authenticator {
    /// Seals `message` (as it will be forwarded) with a new ARC set. `at_receipt` are the
    /// checks of this hop, made when the message arrived (before any plugin changed it): the
    /// ARC-Authentication-Results carry them (RFC 8617 section 4.1.1: the AAR is this hop's
    /// `Authentication-Results:`), so a body a plugin rewrote does not turn a DKIM pass into a
    /// fail there, and `cv=` is the chain's validation as received (section 5.1). Returns the
    /// three fields to put in front of the message, or `None` when no sealing domain has an
    /// active RSA key, the chain already failed (section 5.1.2: a `cv=fail` chain is not
    /// sealed again), or its result at receipt was a DNS `temperror` (a seal would say
    /// `cv=fail` for good).
    ///
    /// Known gap (in `mail-auth` 0.7, which has no option for it): the ARC-Seal of a `cv=fail`
    /// set signs every earlier set too, where RFC 8617 section 5.1.2 signs only the new one.
    pub async fn arc_seal(
        &self,
        signer: &Signer,
        message: &[u8],
        at_receipt: &AuthResults,
        remote_ip: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, AuthError> {
        // RFC 8617 section 4.1.3 (a= of ARC-Seal): rsa-sha256 is the only algorithm; an
        // ed25519 key cannot seal.
        let Some(key) = signer.keys.iter().find(|k| {
            signer.arc_seal_domains.contains(&k.domain)
                && k.active(now)
                && k.key.algorithm() == KeyAlgorithm::Rsa
        }) else {
            return Ok(None);
        };
        let Some(msg) = AuthenticatedMessage::parse(message) else {
            return Err(AuthError::Sign("message not parseable".into()));
        };
        // Parses the sets the new one must follow (i=N+1); their validity is the one at
        // receipt.
        let arc = self.inner.verify_arc(self.caches.params(&msg)).await;
        let result = match at_receipt.arc.result {
            ArcVerdict::Pass => DkimResult::Pass,
            ArcVerdict::None => DkimResult::None,
            ArcVerdict::Temperror => return Ok(None),
            ArcVerdict::Fail | ArcVerdict::Permerror => {
                DkimResult::Fail(mail_auth::Error::ArcBrokenChain)
            }
        };
        // A chain too broken to parse into sets cannot be followed by set N+1.
        if arc.sets().is_empty() && !msg.as_headers.is_empty() {
            return Ok(None);
        }
        let arc = arc.with_result(result);
        if !arc.can_be_sealed() {
            return Ok(None);
        }
        // A signature over the limit was not checked: the AAR has no result for it (ours
        // says neutral with the reason, which mail-auth's AAR cannot carry).
        let checked: Vec<&DkimCheck> = at_receipt
            .dkim
            .iter()
            .filter(|c| c.result != DkimVerdict::NotChecked)
            .collect();
        let signatures: Vec<Signature> = checked.iter().map(|c| signature_of(c)).collect();
        let dkim = aar_dkim(&checked, &signatures);
        let spf = at_receipt.spf.as_ref();
        let spf_domain = spf.map(|s| s.domain.clone()).unwrap_or_default();
        let spf_out = SpfOutput::new(spf_domain.clone())
            .with_result(spf.map_or(mail_auth::SpfResult::None, |s| spf_result(s.result)));
        // The DMARC record (for policy.dmarc) comes from the cache as at receipt; the results
        // are the ones at receipt.
        let dmarc = self
            .inner
            .verify_dmarc(
                self.caches.params(
                    DmarcParameters::new(&msg, &dkim, &spf_domain, &spf_out)
                        .with_domain_suffix_fn(org_domain),
                ),
            )
            .await;
        let dmarc = with_receipt_dmarc(dmarc, &at_receipt.dmarc);
        let authserv_id = self.config().authserv_id.clone();
        let from = msg.from().to_string();
        let mut ar = AuthenticationResults::new(&authserv_id).with_dkim_results(&dkim, &from);
        if let Some(s) = spf {
            ar = match s.identity {
                SpfIdentity::Mailfrom => {
                    ar.with_spf_mailfrom_result(&spf_out, s.client_ip, &s.mail_from, &s.helo)
                }
                SpfIdentity::Helo => ar.with_spf_ehlo_result(&spf_out, s.client_ip, &s.helo),
            };
        }
        let ar = ar
            .with_arc_result(&arc, remote_ip)
            .with_dmarc_result(&dmarc);
        let headers = &signer.headers;
        let der = key.key.pkcs8_der();
        let set = match key.key.algorithm() {
            KeyAlgorithm::Ed25519 => {
                let k = Ed25519Key::from_pkcs8_maybe_unchecked_der(der)
                    .map_err(|e| AuthError::Sign(e.to_string()))?;
                ArcSealer::from_key(k)
                    .domain(key.domain.clone())
                    .selector(key.selector.clone())
                    .headers(headers.iter().map(String::as_str))
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed)
                    .seal(&msg, &ar, &arc)
                    .map(|s| s.to_header())
            }
            KeyAlgorithm::Rsa => {
                let k = RsaKey::<Sha256>::from_pkcs8_der(der)
                    .map_err(|e| AuthError::Sign(e.to_string()))?;
                ArcSealer::from_key(k)
                    .domain(key.domain.clone())
                    .selector(key.selector.clone())
                    .headers(headers.iter().map(String::as_str))
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed)
                    .seal(&msg, &ar, &arc)
                    .map(|s| s.to_header())
            }
        }
        .map_err(|e| AuthError::Sign(e.to_string()))?;
        Ok(Some(set))
    }
}

/// The signature a DKIM result at receipt was about, as far as the AAR names it (`d=`, `s=`,
/// `i=`, `a=` and the first 6 octets of `b=`, RFC 6008): a plugin may have changed or removed
/// the field since.
fn signature_of(check: &DkimCheck) -> Signature {
    use base64::Engine;
    Signature {
        d: check.domain.clone(),
        s: check.selector.clone(),
        i: check.identity.clone().unwrap_or_default(),
        a: match check.algorithm.as_str() {
            "rsa-sha1" => Algorithm::RsaSha1,
            "ed25519-sha256" => Algorithm::Ed25519Sha256,
            _ => Algorithm::RsaSha256,
        },
        // `header_b` is the first 8 base64 characters: exactly 6 octets.
        b: base64::engine::general_purpose::STANDARD
            .decode(&check.header_b)
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// A DKIM result at receipt in `mail-auth`'s terms, for the AAR.
fn dkim_output<'x>(check: &DkimCheck) -> DkimOutput<'x> {
    match check.result {
        DkimVerdict::Pass => DkimOutput::pass(),
        DkimVerdict::Fail => DkimOutput::fail(MaError::FailedVerification),
        DkimVerdict::Temperror => {
            DkimOutput::temp_err(MaError::DnsError(check.reason.clone().unwrap_or_default()))
        }
        DkimVerdict::Permerror => DkimOutput::perm_err(MaError::ParseError),
        // `mail-auth` says neutral for an expired signature; there is no other neutral.
        DkimVerdict::Neutral | DkimVerdict::NotChecked => {
            DkimOutput::neutral(MaError::SignatureExpired)
        }
    }
}

/// `dmarc` (its record and policy) with the DMARC result at receipt.
fn with_receipt_dmarc(dmarc: DmarcOutput, at_receipt: &DmarcCheck) -> DmarcOutput {
    let (spf, dkim) = match at_receipt.result {
        DmarcVerdict::Pass => {
            let aligned = |yes: bool| {
                if yes {
                    DmarcResult::Pass
                } else {
                    DmarcResult::Fail(MaError::NotAligned)
                }
            };
            // A pass with neither flag set cannot come from the checks; say pass anyway.
            let dkim = at_receipt.dkim_aligned || !at_receipt.spf_aligned;
            (aligned(at_receipt.spf_aligned), aligned(dkim))
        }
        DmarcVerdict::Fail => (
            DmarcResult::Fail(MaError::NotAligned),
            DmarcResult::Fail(MaError::NotAligned),
        ),
        DmarcVerdict::Temperror => {
            let e = || MaError::DnsError(at_receipt.reason.clone().unwrap_or_default());
            (DmarcResult::TempError(e()), DmarcResult::TempError(e()))
        }
        DmarcVerdict::Permerror => (
            DmarcResult::PermError(MaError::ParseError),
            DmarcResult::PermError(MaError::ParseError),
        ),
        DmarcVerdict::None => (DmarcResult::None, DmarcResult::None),
    };
    let dmarc = if at_receipt.from_domain.is_empty() {
        dmarc
    } else {
        dmarc.with_domain(&at_receipt.from_domain)
    };
    dmarc.with_spf_result(spf).with_dkim_result(dkim)
}

/// The AAR's DKIM results: one per checked signature, naming d= and s= only for a signature
/// that parsed (one that did not has none to name).
fn aar_dkim<'a>(checked: &[&DkimCheck], signatures: &'a [Signature]) -> Vec<DkimOutput<'a>> {
    checked
        .iter()
        .zip(signatures)
        .map(|(check, sig)| {
            let out = dkim_output(check);
            if check.domain.is_empty() {
                out
            } else {
                out.with_signature(sig)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(result: DkimVerdict, domain: &str) -> DkimCheck {
        DkimCheck {
            result,
            domain: domain.into(),
            selector: "s1".into(),
            algorithm: "rsa-sha256".into(),
            identity: None,
            body_length: None,
            header_b: "abcdEFGH".into(),
            reason: None,
        }
    }

    fn dmarc(result: DmarcVerdict, spf_aligned: bool, dkim_aligned: bool) -> DmarcCheck {
        DmarcCheck {
            result,
            from_domain: "a.test".into(),
            policy: crate::DmarcPolicy::Reject,
            pct: 100,
            spf_aligned,
            dkim_aligned,
            reason: None,
        }
    }

    /// The AAR says what the checks said at receipt, whatever the message looks like now.
    #[test]
    fn receipt_results_become_the_aar() {
        let checks = [
            check(DkimVerdict::Pass, "a.test"),
            check(DkimVerdict::Fail, "b.test"),
            check(DkimVerdict::Permerror, ""),
        ];
        let sigs: Vec<Signature> = checks.iter().map(signature_of).collect();
        assert_eq!(
            sigs[0].b.len(),
            6,
            "header.b= is 8 base64 characters, 6 octets"
        );
        let checked: Vec<&DkimCheck> = checks.iter().collect();
        let outs = aar_dkim(&checked, &sigs);
        let cases = [
            (
                dmarc(DmarcVerdict::Pass, false, true),
                "dmarc=pass header.from=a.test",
            ),
            (
                dmarc(DmarcVerdict::Pass, true, false),
                "dmarc=pass header.from=a.test",
            ),
            (
                dmarc(DmarcVerdict::Fail, false, false),
                "dmarc=fail (policy not aligned)",
            ),
            (
                dmarc(DmarcVerdict::Temperror, false, false),
                "dmarc=temperror",
            ),
            (dmarc(DmarcVerdict::None, false, false), "dmarc=none"),
        ];
        for (d, want) in cases {
            let out = with_receipt_dmarc(DmarcOutput::new("x.test".into()), &d);
            let ar = AuthenticationResults::new("mx.corvid.test")
                .with_dkim_results(&outs, "a.test")
                .with_dmarc_result(&out)
                .to_string();
            assert!(
                ar.contains("dkim=pass header.d=a.test header.s=s1 header.b=abcdEFGH"),
                "{ar}"
            );
            assert!(
                ar.contains("dkim=fail (verification failed) header.d=b.test"),
                "{ar}"
            );
            // The signature that did not parse names no domain or selector.
            let permerror = ar.split("dkim=permerror").nth(1).unwrap_or_default();
            let permerror = permerror.split(';').next().unwrap_or_default();
            assert!(ar.contains("dkim=permerror"), "{ar}");
            assert!(
                !permerror.contains("header.d=") && !permerror.contains("header.s="),
                "{ar}"
            );
            assert!(ar.contains(want), "{want}: {ar}");
        }
    }
}

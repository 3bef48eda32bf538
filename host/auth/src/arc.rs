//! ARC sealing (RFC 8617 section 5.1) of mail that Corvid forwards, for the domains in
//! `dkim.arc_seal_domains`, with their `[[dkim.key]]` keys.

use crate::map::spf_result;
use crate::sign::Signer;
use crate::verify::org_domain;
use crate::{ArcVerdict, AuthError, Authenticator, KeyAlgorithm, SpfCheck, SpfIdentity};
use chrono::{DateTime, Utc};
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::Canonicalization;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, DkimResult, SpfOutput};
use std::net::IpAddr;

impl Authenticator {
    /// Seals `message` (as it will be forwarded) with a new ARC set: the ARC-Authentication-
    /// Results carry this hop's DKIM, SPF, DMARC and ARC results (DKIM and DMARC verified
    /// again here on the content as forwarded; DNS answers come from the cache). `received`
    /// is the chain's result when the message arrived (RFC 8617 section 5.1: `cv=` is the
    /// validation of the chain as received); `None` verifies it here. Returns the three fields
    /// to put in front of the message, or `None` when no sealing domain has an active RSA
    /// key, the chain already failed (section 5.1.2: a `cv=fail` chain is not sealed again),
    /// or its result at receipt was a DNS `temperror` (a seal would say `cv=fail` for good).
    pub async fn arc_seal(
        &self,
        signer: &Signer,
        message: &[u8],
        spf: Option<&SpfCheck>,
        remote_ip: IpAddr,
        now: DateTime<Utc>,
        received: Option<ArcVerdict>,
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
        let dkim = self.inner.verify_dkim(self.caches.params(&msg)).await;
        // Verifying again also parses the sets the new one must follow (i=N+1).
        let mut arc = self.inner.verify_arc(self.caches.params(&msg)).await;
        if let Some(at_receipt) = received {
            let result = match at_receipt {
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
            arc = arc.with_result(result);
        }
        if !arc.can_be_sealed() {
            return Ok(None);
        }
        let spf_domain = spf.map(|s| s.domain.clone()).unwrap_or_default();
        let spf_out = SpfOutput::new(spf_domain.clone())
            .with_result(spf.map_or(mail_auth::SpfResult::None, |s| spf_result(s.result)));
        let dmarc = self
            .inner
            .verify_dmarc(
                self.caches.params(
                    DmarcParameters::new(&msg, &dkim, &spf_domain, &spf_out)
                        .with_domain_suffix_fn(org_domain),
                ),
            )
            .await;
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

//! Inbound checks: SPF at MAIL, DKIM, ARC and DMARC at end of DATA, all through `mail-auth`.

use crate::map::*;
use crate::resolver::{self, Caches};
use crate::results::*;
use crate::{AuthChecksConfig, AuthError};
use mail_auth::dmarc::Dmarc;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcResult, MessageAuthenticator, SpfOutput,
    SpfResult,
};
use std::net::IpAddr;

/// The inbound checker: one per server (it holds the resolver and the DNS cache), shared by
/// every session (`Arc<Authenticator>`); all methods take `&self`.
pub struct Authenticator {
    pub(crate) inner: MessageAuthenticator,
    pub(crate) caches: Caches,
    cfg: AuthChecksConfig,
}

/// RFC 7489 section 3.2: the organisational domain, from the public suffix list.
pub(crate) fn org_domain(d: &str) -> &str {
    psl::domain_str(d).unwrap_or(d)
}

impl Authenticator {
    pub fn new(cfg: AuthChecksConfig) -> Result<Self, AuthError> {
        Ok(Authenticator {
            inner: resolver::build(&cfg)?,
            caches: Caches::new(cfg.cache_entries),
            cfg,
        })
    }

    pub fn config(&self) -> &AuthChecksConfig {
        &self.cfg
    }

    /// Puts a parsed TXT record in the cache for an hour, as if DNS had answered.
    fn seed(&self, name: String, record: mail_auth::Txt) {
        use mail_auth::ResolverCache;
        self.caches.txt.insert(
            name,
            record,
            std::time::Instant::now() + std::time::Duration::from_secs(3600),
        );
    }

    /// Puts a DMARC record for `_dmarc.DOMAIN` in the cache for an hour (see
    /// [`Self::seed_dkim_key`]).
    pub fn seed_dmarc_record(&self, domain: &str, record: &str) -> Result<(), AuthError> {
        use mail_auth::common::parse::TxtRecordParser;
        let rec =
            Dmarc::parse(record.as_bytes()).map_err(|e| AuthError::InvalidKey(e.to_string()))?;
        self.seed(
            format!("_dmarc.{domain}."),
            mail_auth::Txt::Dmarc(std::sync::Arc::new(rec)),
        );
        Ok(())
    }

    /// Puts an SPF record (`v=spf1 ...`) for `DOMAIN` in the cache for an hour (see
    /// [`Self::seed_dkim_key`]).
    pub fn seed_spf_record(&self, domain: &str, record: &str) -> Result<(), AuthError> {
        use mail_auth::common::parse::TxtRecordParser;
        let rec = mail_auth::spf::Spf::parse(record.as_bytes())
            .map_err(|e| AuthError::InvalidKey(e.to_string()))?;
        self.seed(
            format!("{domain}."),
            mail_auth::Txt::Spf(std::sync::Arc::new(rec)),
        );
        Ok(())
    }

    /// Puts a DKIM key record (`v=DKIM1; k=...; p=...`) for `SELECTOR._domainkey.DOMAIN` in
    /// the cache for an hour, as if DNS had answered: for benchmarks and tests that measure
    /// the checks with DNS answered from the cache.
    pub fn seed_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        record: &str,
    ) -> Result<(), AuthError> {
        use mail_auth::common::parse::TxtRecordParser;
        let key = mail_auth::common::verify::DomainKey::parse(record.as_bytes())
            .map_err(|e| AuthError::InvalidKey(e.to_string()))?;
        self.seed(
            format!("{selector}._domainkey.{domain}."),
            mail_auth::Txt::DomainKey(std::sync::Arc::new(key)),
        );
        Ok(())
    }

    /// SPF (RFC 7208) for MAIL FROM, or for the HELO name when the reverse-path is `<>`
    /// (section 2.4). `mail_from` is the address without brackets, empty for `<>`;
    /// `local_hostname` is ours (the `%{r}` macro). Bounded by the 10-lookup limit of
    /// section 4.6.4 (in `mail-auth`) and by `auth_checks.spf_timeout`: a timeout is
    /// `temperror`.
    pub async fn check_spf(
        &self,
        client_ip: IpAddr,
        helo: &str,
        mail_from: &str,
        local_hostname: &str,
    ) -> SpfCheck {
        let helo_l = helo.to_ascii_lowercase();
        let (identity, params) = if mail_from.is_empty() {
            let p = SpfParameters::verify_ehlo(client_ip, &helo_l, local_hostname);
            (SpfIdentity::Helo, p)
        } else {
            let p = SpfParameters::verify_mail_from(client_ip, &helo_l, local_hostname, mail_from);
            (SpfIdentity::Mailfrom, p)
        };
        let domain = match identity {
            SpfIdentity::Helo => helo_l.clone(),
            SpfIdentity::Mailfrom => mail_from
                .rsplit_once('@')
                .map_or(helo_l.clone(), |(_, d)| d.to_ascii_lowercase()),
        };
        let fut = self.inner.verify_spf(self.caches.params(params));
        let (result, explanation) = match tokio::time::timeout(self.cfg.spf_timeout, fut).await {
            Ok(out) => (
                spf_verdict(out.result()),
                out.explanation().map(str::to_string),
            ),
            Err(_) => {
                tracing::warn!(target: "auth", "SPF evaluation timed out: temperror");
                (SpfVerdict::Temperror, None)
            }
        };
        SpfCheck {
            result,
            identity,
            domain,
            mail_from: mail_from.to_string(),
            helo: helo.to_string(),
            client_ip,
            explanation,
        }
    }

    /// DKIM (RFC 6376) for every signature up to `auth_checks.max_dkim_signatures`, ARC
    /// (RFC 8617) and DMARC (RFC 7489) for the complete message (header section and body,
    /// as received, CRLF line ends). `spf` is the result from MAIL. Never fails: DNS trouble
    /// gives `temperror`, malformed input `permerror`.
    pub async fn check_message(&self, message: &[u8], spf: Option<&SpfCheck>) -> AuthResults {
        let Some(mut parsed) = AuthenticatedMessage::parse(message) else {
            return unparseable(spf);
        };
        let extra = self.bound_signatures(&mut parsed);
        let parsed = parsed;
        let fut = self.check_parsed(&parsed, spf);
        let mut results = match tokio::time::timeout(self.cfg.message_timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(target: "auth", "message checks timed out: temperror");
                timed_out(&parsed, spf)
            }
        };
        results.dkim.extend(self.not_checked(&extra));
        results
    }

    /// DKIM alone (the same bound and mapping as [`Self::check_message`]).
    pub async fn check_dkim(&self, message: &[u8]) -> Vec<DkimCheck> {
        let Some(mut parsed) = AuthenticatedMessage::parse(message) else {
            return Vec::new();
        };
        let extra = self.bound_signatures(&mut parsed);
        let parsed = parsed;
        let fut = self.inner.verify_dkim(self.caches.params(&parsed));
        let mut checks: Vec<DkimCheck> =
            match tokio::time::timeout(self.cfg.message_timeout, fut).await {
                Ok(out) => out.iter().map(dkim_check).collect(),
                Err(_) => timed_out(&parsed, None).dkim,
            };
        checks.extend(self.not_checked(&extra));
        checks
    }

    /// Keeps the first `max_dkim_signatures` signatures for checking, returns the rest.
    fn bound_signatures<'x>(
        &self,
        parsed: &mut AuthenticatedMessage<'x>,
    ) -> Vec<mail_auth::common::headers::Header<'x, mail_auth::Result<mail_auth::dkim::Signature>>>
    {
        if parsed.dkim_headers.len() <= self.cfg.max_dkim_signatures {
            return Vec::new();
        }
        let extra = parsed.dkim_headers.split_off(self.cfg.max_dkim_signatures);
        tracing::warn!(
            target: "auth",
            checked = self.cfg.max_dkim_signatures,
            not_checked = extra.len(),
            "DKIM signature limit reached: further signatures not checked"
        );
        extra
    }

    fn not_checked(
        &self,
        extra: &[mail_auth::common::headers::Header<
            '_,
            mail_auth::Result<mail_auth::dkim::Signature>,
        >],
    ) -> Vec<DkimCheck> {
        extra
            .iter()
            .map(|h| {
                let mut c = dkim_check_of(DkimVerdict::NotChecked, h.header.as_ref().ok(), None);
                c.reason = Some(format!(
                    "not checked: over the limit of {} signatures",
                    self.cfg.max_dkim_signatures
                ));
                c
            })
            .collect()
    }

    async fn check_parsed<'x>(
        &self,
        msg: &'x AuthenticatedMessage<'x>,
        spf: Option<&SpfCheck>,
    ) -> AuthResults {
        let dkim_out = self.inner.verify_dkim(self.caches.params(msg)).await;
        let arc_out = self.inner.verify_arc(self.caches.params(msg)).await;
        let dkim: Vec<DkimCheck> = dkim_out.iter().map(dkim_check).collect();
        let arc = ArcCheck {
            result: match arc_out.result() {
                DkimResult::Pass => ArcVerdict::Pass,
                DkimResult::None => ArcVerdict::None,
                DkimResult::Fail(_) | DkimResult::Neutral(_) => ArcVerdict::Fail,
                DkimResult::TempError(_) => ArcVerdict::Temperror,
                DkimResult::PermError(_) => ArcVerdict::Permerror,
            },
            sets: u32::try_from(arc_out.sets().len()).unwrap_or(u32::MAX),
            reason: error_of(arc_out.result()),
        };
        let dmarc = self.check_dmarc(msg, &dkim_out, spf).await;
        AuthResults {
            spf: spf.cloned(),
            dkim,
            dmarc,
            arc,
        }
    }

    async fn check_dmarc<'x>(
        &self,
        msg: &'x AuthenticatedMessage<'x>,
        dkim_out: &'x [DkimOutput<'x>],
        spf: Option<&SpfCheck>,
    ) -> DmarcCheck {
        // RFC 7489 section 3.1.2: the SPF identity is MAIL FROM, or HELO for `<>`.
        let spf_domain = spf.map(|s| s.domain.clone()).unwrap_or_default();
        let spf_out = SpfOutput::new(spf_domain.clone())
            .with_result(spf.map_or(SpfResult::None, |s| spf_result(s.result)));
        let params =
            mail_auth::dmarc::verify::DmarcParameters::new(msg, dkim_out, &spf_domain, &spf_out)
                .with_domain_suffix_fn(org_domain);
        let out = self.inner.verify_dmarc(self.caches.params(params)).await;
        let from_domain = out.domain().to_string();
        let spf_aligned = out.spf_result() == &DmarcResult::Pass;
        let dkim_aligned = out.dkim_result() == &DmarcResult::Pass;
        let Some(record) = out.dmarc_record_cloned() else {
            let (result, reason) = match (out.spf_result(), out.dkim_result()) {
                (DmarcResult::TempError(e), _) => (DmarcVerdict::Temperror, Some(e.to_string())),
                (DmarcResult::PermError(e), _) => (DmarcVerdict::Permerror, Some(e.to_string())),
                _ => (DmarcVerdict::None, None),
            };
            return DmarcCheck {
                result,
                from_domain,
                policy: DmarcPolicy::None,
                pct: 100,
                spf_aligned,
                dkim_aligned,
                reason,
            };
        };
        // RFC 7489 section 6.6.3: `sp=` applies when the record came from the organisational
        // domain of a subdomain; an own record at the From domain means `p=`.
        let own_record = self
            .inner
            .txt_lookup::<Dmarc>(format!("_dmarc.{from_domain}."), Some(&self.caches.txt))
            .await
            .is_ok();
        let policy = policy_of(if own_record { record.p } else { record.sp });
        let pass = spf_aligned || dkim_aligned;
        DmarcCheck {
            result: if pass {
                DmarcVerdict::Pass
            } else {
                DmarcVerdict::Fail
            },
            from_domain,
            policy,
            pct: record.pct.min(100),
            spf_aligned,
            dkim_aligned,
            reason: (!pass).then(|| "no aligned SPF or DKIM pass".to_string()),
        }
    }
}

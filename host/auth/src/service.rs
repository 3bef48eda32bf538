//! [`AuthService`]: the [`corvid_types::MailAuth`] seam implemented on this crate, so that the
//! SMTP server checks and signs mail without depending on `corvid-auth` or resolving DNS.

use crate::config::{AuthChecksConfig, DmarcEnforcement};
use crate::policy::{decide, AuthAction};
use crate::results::{AuthResults, DmarcVerdict, SpfCheck};
use crate::sign::Signer;
use crate::verify::Authenticator;
use crate::AuthError;
use async_trait::async_trait;
use corvid_types::{Address, ConnectionInfo, MailAuth, Reply, SigningChoice, Verdict};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{info, warn};

/// The checker and the signer of one server, with the settings the server needs.
pub struct AuthService {
    /// `None`: `auth_checks.enabled = false` (nothing is checked).
    checker: Option<Arc<Authenticator>>,
    signer: Option<Arc<Signer>>,
    authserv_id: String,
    hostname: String,
    enforcement: DmarcEnforcement,
    /// Domains whose mail a `[[delivery.route]]` sends to an MX or a relay host, lower case.
    forward_routes: HashSet<String>,
}

impl AuthService {
    /// `hostname` is `server.hostname`: the authserv-id when `auth_checks.authserv_id` is
    /// empty, and the `%{r}` of SPF macros. `signer` is `None` without `[[dkim.key]]`.
    pub fn new(
        cfg: &AuthChecksConfig,
        hostname: &str,
        signer: Option<Arc<Signer>>,
    ) -> Result<Self, AuthError> {
        let authserv_id = if cfg.authserv_id.is_empty() {
            hostname.to_string()
        } else {
            cfg.authserv_id.clone()
        };
        let checker = if cfg.enabled {
            // The checker writes the authserv-id into ARC-Authentication-Results too.
            let cfg = AuthChecksConfig {
                authserv_id: authserv_id.clone(),
                ..cfg.clone()
            };
            Some(Arc::new(Authenticator::new(cfg)?))
        } else {
            None
        };
        Ok(AuthService {
            checker,
            signer: signer.filter(|s| !s.is_empty()),
            authserv_id,
            hostname: hostname.to_string(),
            enforcement: cfg.dmarc_policy,
            forward_routes: HashSet::new(),
        })
    }

    /// The domains that a configured route sends away from this server (to an MX or a relay
    /// host): mail for them is forwarded, and ARC-sealed, even when the domain is local.
    pub fn with_forward_routes<'a>(mut self, domains: impl IntoIterator<Item = &'a str>) -> Self {
        self.forward_routes = domains
            .into_iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        self
    }

    /// The checker, for tests and benchmarks that seed its DNS cache.
    pub fn authenticator(&self) -> Option<&Arc<Authenticator>> {
        self.checker.as_ref()
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }
}

/// The sample for `pct=` (RFC 7489 section 6.6.4): a uniform number in 0..100.
fn sample() -> u8 {
    use rand::Rng;
    rand::thread_rng().gen_range(0..100)
}

/// Where the header section ends: after the empty line (RFC 5322 section 2.1), or the whole
/// content when there is no body.
fn header_end(content: &[u8]) -> usize {
    if content.starts_with(b"\r\n") {
        return 0;
    }
    content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(content.len(), |i| i + 2)
}

#[async_trait]
impl MailAuth for AuthService {
    fn checks(&self, trusted: bool) -> bool {
        self.checker.is_some() && !trusted
    }

    fn signs(&self) -> bool {
        self.signer.is_some()
    }

    async fn check_spf(&self, conn: &ConnectionInfo, sender: Option<&Address>) -> SpfCheck {
        let helo = conn.helo.as_deref().unwrap_or("");
        let from = sender.map(|a| a.to_string()).unwrap_or_default();
        let ip = conn.peer_addr.ip();
        match &self.checker {
            Some(c) => c.check_spf(ip, helo, &from, &self.hostname).await,
            None => SpfCheck {
                result: crate::SpfVerdict::None,
                identity: crate::SpfIdentity::Mailfrom,
                domain: String::new(),
                mail_from: from,
                helo: helo.to_string(),
                client_ip: ip,
                explanation: None,
            },
        }
    }

    async fn check_message(&self, content: &[u8], spf: Option<&SpfCheck>) -> AuthResults {
        let Some(c) = &self.checker else {
            return crate::map::unparseable(spf);
        };
        let r = c.check_message(content, spf).await;
        if r.dmarc.result != DmarcVerdict::Pass && r.dmarc.result != DmarcVerdict::None {
            info!(
                target: "auth",
                from_domain = %r.dmarc.from_domain.escape_debug(),
                dmarc = r.dmarc.result.as_str(),
                policy = r.dmarc.policy.as_str(),
                "DMARC did not pass"
            );
        }
        r
    }

    fn default_verdict(&self, results: &AuthResults) -> Verdict {
        match decide(results, self.enforcement, sample()) {
            AuthAction::Accept => Verdict::Continue,
            AuthAction::Quarantine { reason } => Verdict::Quarantine(reason),
            AuthAction::Reject {
                code,
                enhanced,
                text,
            } => Verdict::Reject(Reply::new(code, &enhanced, text)),
        }
    }

    fn strip_forged(&self, content: &mut Vec<u8>) {
        let end = header_end(content);
        // The usual case (none of ours) costs a scan, no copy.
        if crate::header::has_authentication_results(&content[..end], &self.authserv_id) {
            let stripped = crate::strip_authentication_results(&content[..end], &self.authserv_id);
            content.splice(..end, stripped);
        }
    }

    fn stamp(&self, content: &[u8], results: &AuthResults) -> Vec<u8> {
        let end = header_end(content);
        let header = crate::authentication_results(&self.authserv_id, results);
        // One copy of the message: our field, the header section without forged ones, the
        // body.
        let mut out = Vec::with_capacity(header.len() + content.len());
        out.extend_from_slice(header.as_bytes());
        crate::header::strip_authentication_results_into(
            &content[..end],
            &self.authserv_id,
            &mut out,
        );
        out.extend_from_slice(&content[end..]);
        out
    }

    fn sign(&self, content: &[u8], choice: &SigningChoice) -> String {
        let Some(signer) = &self.signer else {
            return String::new();
        };
        match signer.sign(content, choice, chrono::Utc::now()) {
            Ok(out) => {
                if out.selectors.is_empty()
                    && (choice.domain.is_some() || choice.selector.is_some())
                {
                    // A plugin can only pick among the configured keys: it never signs as a
                    // domain this server holds no key for. Its text is sanitised for the log.
                    warn!(
                        target: "auth",
                        domain = %choice.domain.as_deref().unwrap_or("(From: domain)").escape_debug(),
                        selector = %choice.selector.as_deref().unwrap_or("(any)").escape_debug(),
                        "the signing domain/selector a plugin chose has no active [[dkim.key]]: message sent unsigned"
                    );
                }
                out.headers
            }
            Err(e) => {
                warn!(target: "auth", error = %e, "DKIM signing failed: message sent unsigned");
                String::new()
            }
        }
    }

    fn seals(&self) -> bool {
        self.checker.is_some() && self.signer.as_ref().is_some_and(|s| s.can_seal())
    }

    fn routes_away(&self, domain: &str) -> bool {
        self.forward_routes
            .contains(&domain.trim_end_matches('.').to_ascii_lowercase())
    }

    async fn arc_seal(&self, content: &[u8], results: &AuthResults, remote_ip: IpAddr) -> String {
        let (Some(checker), Some(signer)) = (&self.checker, &self.signer) else {
            return String::new();
        };
        let sealed = checker
            .arc_seal(signer, content, results, remote_ip, chrono::Utc::now())
            .await;
        match sealed {
            Ok(Some(set)) => set,
            Ok(None) => {
                info!(
                    target: "auth",
                    arc = results.arc.result.as_str(),
                    "forwarded message not ARC-sealed: no active RSA key of dkim.arc_seal_domains, a chain that already failed, or a DNS error at receipt"
                );
                String::new()
            }
            Err(e) => {
                warn!(target: "auth", error = %e, "ARC sealing failed: message forwarded unsealed");
                String::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::*;

    fn results(dmarc: DmarcVerdict, policy: DmarcPolicy) -> AuthResults {
        AuthResults {
            spf: None,
            dkim: vec![],
            dmarc: DmarcCheck {
                result: dmarc,
                from_domain: "bank.test".into(),
                policy,
                pct: 100,
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
    fn stamp_replaces_forged_fields_of_our_id_and_verdicts_map_to_replies() {
        let svc = AuthService::new(&AuthChecksConfig::default(), "mx.corvid.test", None)
            .expect("service");
        assert!(svc.checks(false) && !svc.checks(true) && !svc.signs());
        let msg = b"Authentication-Results: mx.corvid.test; dmarc=pass\r\nAuthentication-Results: other.test; spf=pass\r\nSubject: x\r\n\r\nAuthentication-Results: mx.corvid.test; body stays\r\n";
        let r = results(DmarcVerdict::Fail, DmarcPolicy::Reject);
        let out = String::from_utf8(svc.stamp(msg, &r)).expect("utf8");
        assert!(
            out.starts_with(
                "Authentication-Results: mx.corvid.test;\r\n\tdkim=none;\r\n\tdmarc=fail"
            ),
            "{out}"
        );
        assert_eq!(
            out.matches("mx.corvid.test; dmarc=pass").count(),
            0,
            "{out}"
        );
        assert!(out.contains("Authentication-Results: other.test; spf=pass\r\nSubject: x\r\n\r\nAuthentication-Results: mx.corvid.test; body stays\r\n"), "{out}");
        let mut bare = msg.to_vec();
        svc.strip_forged(&mut bare);
        let bare = String::from_utf8(bare).expect("utf8");
        assert_eq!(bare, "Authentication-Results: other.test; spf=pass\r\nSubject: x\r\n\r\nAuthentication-Results: mx.corvid.test; body stays\r\n");
        let mut clean =
            b"Subject: x\r\n\r\nAuthentication-Results: mx.corvid.test; body\r\n".to_vec();
        svc.strip_forged(&mut clean);
        assert_eq!(
            clean,
            b"Subject: x\r\n\r\nAuthentication-Results: mx.corvid.test; body\r\n"
        );

        match svc.default_verdict(&r) {
            Verdict::Reject(reply) => {
                assert_eq!(reply.code, 550);
                assert_eq!(
                    reply.enhanced.map(|e| e.to_string()).as_deref(),
                    Some("5.7.1")
                );
            }
            v => panic!("{v:?}"),
        }
        let q = svc.default_verdict(&results(DmarcVerdict::Fail, DmarcPolicy::Quarantine));
        assert!(matches!(q, Verdict::Quarantine(ref why) if why.contains("bank.test")));
        let pass = svc.default_verdict(&results(DmarcVerdict::Pass, DmarcPolicy::Reject));
        assert_eq!(pass, Verdict::Continue);
        let off = AuthChecksConfig {
            dmarc_policy: DmarcEnforcement::Off,
            ..Default::default()
        };
        let svc = AuthService::new(&off, "mx.corvid.test", None).expect("service");
        assert_eq!(svc.default_verdict(&r), Verdict::Continue);
        let disabled = AuthChecksConfig {
            enabled: false,
            ..Default::default()
        };
        let svc = AuthService::new(&disabled, "mx.corvid.test", None).expect("service");
        assert!(!svc.checks(false));
    }
}

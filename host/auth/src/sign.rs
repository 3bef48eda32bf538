//! Outbound DKIM signing (RFC 6376 section 5) with key rotation, on `mail-auth`'s signer.
//! The caller signs last, at queue time, after every plugin has changed the message, and
//! prepends the returned fields.

use crate::keys::DkimPrivateKey;
use crate::{AuthError, DkimConfig, KeyAlgorithm};
use chrono::{DateTime, NaiveDate, Utc};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use std::path::Path;

/// Header fields signed when present and `dkim.headers` is empty (RFC 6376 section 5.4.1's
/// recommendation, plus MIME fields).
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
];

pub(crate) enum KeySigner {
    Ed(Box<DkimSigner<Ed25519Key, Done>>),
    Rsa(Box<DkimSigner<RsaKey<Sha256>, Done>>),
}

pub(crate) struct LoadedKey {
    pub(crate) domain: String,
    pub(crate) selector: String,
    pub(crate) key: DkimPrivateKey,
    start: Option<DateTime<Utc>>,
    stop: Option<DateTime<Utc>>,
    signer: KeySigner,
}

impl LoadedKey {
    pub(crate) fn active(&self, now: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| s <= now) && self.stop.is_none_or(|s| now < s)
    }
}

/// The signing keys of `[dkim]`, ready to sign. Built once at start (and on reload).
pub struct Signer {
    pub(crate) keys: Vec<LoadedKey>,
    pub(crate) headers: Vec<String>,
    pub(crate) arc_seal_domains: Vec<String>,
}

pub use corvid_types::SigningChoice;

/// The result of [`Signer::sign`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignOutcome {
    /// `DKIM-Signature:` fields (CRLF-terminated) to put in front of the message; empty
    /// when no key applies.
    pub headers: String,
    /// The signing domain, when something was signed.
    pub domain: Option<String>,
    /// The selectors that signed.
    pub selectors: Vec<String>,
}

fn parse_date(field: &'static str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, AuthError> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(Some(t.and_utc()));
        }
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| AuthError::Date {
            field,
            value: v.clone(),
        })
}

fn signer_for(
    key: &DkimPrivateKey,
    domain: &str,
    selector: &str,
    headers: &[String],
) -> Result<KeySigner, String> {
    let der = key.pkcs8_der();
    // RFC 6376 section 3.4: relaxed/relaxed survives the usual re-folding on the way.
    Ok(match key.algorithm() {
        KeyAlgorithm::Ed25519 => {
            let k = Ed25519Key::from_pkcs8_maybe_unchecked_der(der).map_err(|e| e.to_string())?;
            KeySigner::Ed(Box::new(
                DkimSigner::from_key(k)
                    .domain(domain)
                    .selector(selector)
                    .headers(headers.iter().map(String::as_str))
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed),
            ))
        }
        KeyAlgorithm::Rsa => {
            let k = RsaKey::<Sha256>::from_pkcs8_der(der).map_err(|e| e.to_string())?;
            KeySigner::Rsa(Box::new(
                DkimSigner::from_key(k)
                    .domain(domain)
                    .selector(selector)
                    .headers(headers.iter().map(String::as_str))
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed),
            ))
        }
    })
}

impl Signer {
    /// Loads every `[[dkim.key]]`; `read_key` reads a key file (the binary's I/O).
    pub fn new(
        cfg: &DkimConfig,
        mut read_key: impl FnMut(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, AuthError> {
        let headers: Vec<String> = if cfg.headers.is_empty() {
            DEFAULT_SIGNED_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            cfg.headers.clone()
        };
        let mut keys = Vec::new();
        for k in &cfg.key {
            let err = |reason: String| AuthError::Key {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                reason,
            };
            let pem =
                read_key(&k.key_file).map_err(|e| err(format!("{}: {e}", k.key_file.display())))?;
            let key = DkimPrivateKey::from_pem(&pem).map_err(|e| err(e.to_string()))?;
            if key.algorithm() != k.algorithm {
                return Err(err(format!(
                    "the file holds an {} key, the config says {}",
                    key.algorithm().dns_k(),
                    k.algorithm.dns_k()
                )));
            }
            let domain = k.domain.trim_end_matches('.').to_ascii_lowercase();
            let signer = signer_for(&key, &domain, &k.selector, &headers).map_err(err)?;
            keys.push(LoadedKey {
                domain,
                selector: k.selector.clone(),
                key,
                start: parse_date("dkim.key.start", &k.start)?,
                stop: parse_date("dkim.key.stop", &k.stop)?,
                signer,
            });
        }
        Ok(Signer {
            keys,
            headers,
            arc_seal_domains: cfg
                .arc_seal_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether some domain of `dkim.arc_seal_domains` has an RSA key (RFC 8617 section
    /// 4.1.3: ARC has rsa-sha256 only), whatever its dates.
    pub fn can_seal(&self) -> bool {
        self.keys.iter().any(|k| {
            self.arc_seal_domains.contains(&k.domain) && k.key.algorithm() == KeyAlgorithm::Rsa
        })
    }

    /// DKIM-signs `message` (header section and body, CRLF line ends) for the From: domain,
    /// or `choice.domain`, with every key of that domain active at `now` (both keys during
    /// a rotation). No key for the domain is not an error: the outcome is empty.
    pub fn sign(
        &self,
        message: &[u8],
        choice: &SigningChoice,
        now: DateTime<Utc>,
    ) -> Result<SignOutcome, AuthError> {
        let domain = match &choice.domain {
            Some(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            None => match from_domain(message) {
                Some(d) => d,
                None => return Ok(SignOutcome::default()),
            },
        };
        let mut out = SignOutcome::default();
        for k in self.keys.iter().filter(|k| {
            k.domain == domain
                && k.active(now)
                && choice.selector.as_ref().is_none_or(|s| *s == k.selector)
        }) {
            let sig = match &k.signer {
                KeySigner::Ed(s) => s.sign(message),
                KeySigner::Rsa(s) => s.sign(message),
            }
            .map_err(|e| AuthError::Sign(e.to_string()))?;
            out.headers.push_str(&sig.to_header());
            out.selectors.push(k.selector.clone());
        }
        if !out.selectors.is_empty() {
            out.domain = Some(domain);
        }
        Ok(out)
    }
}

/// The domain of the (single) From: address, lower case.
pub(crate) fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_auth::AuthenticatedMessage::parse(message)?;
    let from = parsed.from.first()?;
    let (_, d) = from.rsplit_once('@')?;
    Some(d.trim_end_matches('.').to_ascii_lowercase())
}

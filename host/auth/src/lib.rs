//! Corvid's mail authentication, on Stalwart's `mail-auth` crate (no protocol is written here).
//!
//! Owns:
//! - inbound checks with typed, plain-data results ([`results`]): SPF (RFC 7208) at MAIL,
//!   DKIM (RFC 6376), DMARC (RFC 7489) and ARC (RFC 8617) at end of DATA ([`Authenticator`]);
//! - the `Authentication-Results:` header field (RFC 8601) and the removal of forged ones
//!   carrying our authserv-id ([`header`]);
//! - the default DMARC policy decision, returned as data ([`policy`]);
//! - outbound DKIM signing with key rotation and ARC sealing ([`sign`]);
//! - DKIM key generation and the DNS TXT record to publish ([`keys`]).
//!
//! Must not: read or write files, talk SMTP, or touch the queue. Its only I/O is DNS through
//! `mail-auth`'s hickory resolver. Key files are read by the caller (the `corvid` binary) and
//! handed in as bytes. The public API carries no `mail-auth` type, so that the WIT contract
//! can mirror the results.

mod arc;
pub mod config;
pub mod header;
pub mod keys;
mod map;
pub mod policy;
mod resolver;
pub mod results;
pub mod service;
pub mod sign;
mod verify;

pub use config::{AuthChecksConfig, DkimConfig, DkimKeyConfig, DmarcEnforcement, KeyAlgorithm};
pub use header::{authentication_results, strip_authentication_results};
pub use policy::{decide, AuthAction};
pub use results::{
    ArcCheck, ArcVerdict, AuthResults, DkimCheck, DkimVerdict, DmarcCheck, DmarcPolicy,
    DmarcVerdict, SpfCheck, SpfIdentity, SpfVerdict,
};
pub use service::AuthService;
pub use sign::{SignOutcome, Signer, SigningChoice};
pub use verify::Authenticator;

/// Errors of this crate. A failed check is never an error: it is a result value.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("DKIM key for {domain} (selector {selector}): {reason}")]
    Key {
        domain: String,
        selector: String,
        reason: String,
    },
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("invalid date `{value}` in {field}: use YYYY-MM-DD or RFC 3339")]
    Date { field: &'static str, value: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("DNS resolver: {0}")]
    Resolver(String),
}

pub use chrono::{DateTime, Utc};

/// The text of the DKIM key record at `SELECTOR._domainkey.DOMAIN` (the strings of the first
/// TXT record joined, RFC 6376 section 3.6.2.2), `None` when there is none. For
/// `corvid dkim check`.
pub async fn lookup_dkim_record(
    cfg: &AuthChecksConfig,
    domain: &str,
    selector: &str,
) -> Result<Option<String>, AuthError> {
    use mail_auth::hickory_resolver::ResolveErrorKind;
    let auth = resolver::build(cfg)?;
    let name = format!("{selector}._domainkey.{}.", domain.trim_end_matches('.'));
    match auth.resolver().txt_lookup(name).await {
        Ok(answer) => Ok(answer.iter().next().map(|txt| {
            txt.txt_data()
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<String>()
        })),
        Err(e) if matches!(e.kind(), ResolveErrorKind::Proto(p) if p.is_no_records_found()) => {
            Ok(None)
        }
        Err(e) => Err(AuthError::Resolver(e.to_string())),
    }
}

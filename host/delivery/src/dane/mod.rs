//! DANE for SMTP (RFC 7672): TLSA records of MX hosts, looked up with DNSSEC validation, decide
//! how the MX host's certificate is checked.
//!
//! Per MX host, the TLSA RRset at `_<port>._tcp.<base>` (RFC 7672 2.2.3; port 25 in
//! production) is one of the following, where the TLSA base domain `<base>` is the MX host
//! name, or first the final target of its CNAME chain when the host name is an alias
//! ([`discovery`]):
//! - **usable** (secure, with at least one DANE-TA(2) or DANE-EE(3) record with a known
//!   selector and matching type, RFC 7672 3.1): TLS is required and the certificate must match
//!   one record ([`verify`]);
//! - **unusable** (secure, but every record is PKIX-TA/PKIX-EE or of an unknown kind): TLS is
//!   still required but not authenticated (RFC 7672 2.2, as Postfix's `encrypt`): the
//!   records show the server does TLS, so clear text would be a downgrade;
//! - **none** (no records, proven or insecure): DANE does not apply; the other policies do;
//! - **failed** (a bogus answer, a SERVFAIL, a timeout): the MX host must not be used now
//!   (RFC 7672 2.2: a TLSA lookup failure is not "no records"), deferred with 4.7.5.
//!
//! TLSA records are looked up only for MX host names DNSSEC vouches for, and only when the
//! host's address records are secure too ([`discovery`], RFC 7672 2.2.1 and 2.2.2). The base
//! domain of usable records is the name sent in SNI (RFC 7672 8.1) and, with the MX host
//! name, a name a DANE-TA(2) chain may be issued for (RFC 7672 3.2.2, [`verify`]).
//!
//! TLSA answers are cached for their TTL (negative answers for the SOA's negative TTL),
//! failures not at all; MX and address answers are cached by the resolver.

#[cfg(test)]
mod cname_tests;
mod discovery;
mod lookup;
#[cfg(test)]
mod tests;
pub mod verify;

pub use discovery::MxStatus;
pub use lookup::{load_trust_anchor, HickoryDnssec};

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One TLSA record (RFC 6698 2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// RFC 7672 3.1: usages DANE-TA(2) and DANE-EE(3), selectors Cert(0) and SPKI(1), matching
/// types Full(0), SHA2-256(1) and SHA2-512(2) are usable; PKIX-TA(0) and PKIX-EE(1) are
/// not for SMTP (RFC 7672 3.1.3), nor anything unknown.
impl Tlsa {
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }
}

/// A TLSA RRset as DNS gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsaAnswer {
    /// Records that validated (`secure`) or came from an unsigned zone.
    Records {
        records: Vec<Tlsa>,
        secure: bool,
        ttl: Duration,
    },
    /// No records (NXDOMAIN or NODATA), for this long.
    NoRecords { ttl: Duration },
}

/// A validated lookup that did not give an answer: bogus DNSSEC (RFC 4033 5) or a failed
/// lookup (SERVFAIL, a timeout).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DnssecError(pub String);

/// An MX RRset as DNSSEC validation left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxAnswer {
    /// The exchanges, lower case without the trailing dot; empty: no MX records.
    pub hosts: Vec<String>,
    /// The RRset (or the proof that there is none) validated as secure; `false`: insecure.
    pub secure: bool,
}

/// The validated lookups DANE needs, behind a trait so that the policy can be tested
/// without DNS. A bogus answer is an error, never an insecure one.
#[async_trait]
pub trait SecureDns: Send + Sync {
    /// The TLSA RRset at `name`.
    async fn tlsa(&self, name: &str) -> Result<TlsaAnswer, DnssecError>;
    /// The MX RRset of `domain`.
    async fn mx(&self, domain: &str) -> Result<MxAnswer, DnssecError>;
    /// Where the address records of `host` are, when they are secure: the final target of the
    /// CNAME chain `host` starts (`host` itself when it is no alias, lower case without the
    /// trailing dot). Secure means each RRset that exists (A, and AAAA when IPv6 is used)
    /// and every CNAME on the way validated as secure, and at least one address RRset
    /// exists; `None` otherwise.
    async fn address_name(&self, host: &str) -> Result<Option<String>, DnssecError>;
}

/// What DANE says about one MX host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneState {
    /// Usable records: the certificate must match one of them.
    Usable {
        records: Arc<Vec<Tlsa>>,
        /// The TLSA base domain (RFC 7672 2.2.3): the name the records were found under
        /// (`_<port>._tcp.<base>`), lower case without the trailing dot.
        base: String,
    },
    /// Only unusable records: TLS required, not authenticated.
    Unusable,
    /// No secure records, or the MX host name or its addresses are not secure: DANE does
    /// not apply.
    None,
    /// Bogus or failed: do not use this host now.
    Failed(String),
}

/// Cache entries live at most this long, whatever the TTL (a day, like MTA-STS's cap is
/// larger, but DNS answers should be refreshed more often than that).
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Negative answers without a SOA TTL are kept this long.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most; past that the expired ones are dropped, then everything.
const MAX_ENTRIES: usize = 10_000;

/// TLSA lookups with a TTL cache.
pub struct Dane {
    dns: Arc<dyn SecureDns>,
    cache: Mutex<HashMap<String, (Instant, DaneState)>>,
}

impl Dane {
    pub fn new(dns: Arc<dyn SecureDns>) -> Self {
        Dane {
            dns,
            cache: Mutex::default(),
        }
    }

    /// The TLSA name of an SMTP server (RFC 7672 2.2.3, RFC 6698 3).
    pub fn tlsa_name(host: &str, port: u16) -> String {
        format!("_{port}._tcp.{}", host.trim_end_matches('.'))
    }

    /// What the TLSA records of base domain `host` on `port` say (the MX host name and its
    /// addresses already found secure: [`Dane::host_state`]).
    pub async fn state(&self, host: &str, port: u16) -> DaneState {
        let base = host.trim_end_matches('.').to_ascii_lowercase();
        let name = Self::tlsa_name(&base, port);
        let now = Instant::now();
        if let Some((until, state)) = self.lock().get(&name) {
            if *until > now {
                return state.clone();
            }
        }
        let (state, ttl) = match self.dns.tlsa(&name).await {
            Err(e) => (
                DaneState::Failed(format!("TLSA lookup for {name}: {e}")),
                None,
            ),
            Ok(TlsaAnswer::NoRecords { ttl }) => (DaneState::None, Some(ttl)),
            // RFC 7672 2.2: records that did not validate as secure are not used.
            Ok(TlsaAnswer::Records {
                secure: false, ttl, ..
            }) => (DaneState::None, Some(ttl)),
            Ok(TlsaAnswer::Records { records, ttl, .. }) => {
                let usable: Vec<Tlsa> = records.into_iter().filter(Tlsa::usable).collect();
                let state = match usable.is_empty() {
                    true => DaneState::Unusable,
                    false => DaneState::Usable {
                        records: Arc::new(usable),
                        base,
                    },
                };
                (state, Some(ttl))
            }
        };
        if let Some(ttl) = ttl.filter(|t| !t.is_zero()) {
            let mut cache = self.lock();
            if cache.len() >= MAX_ENTRIES {
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(name, (now + ttl.min(MAX_TTL), state.clone()));
        }
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, DaneState)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The TTL of a negative answer: the SOA's, else a short default.
pub(crate) fn negative_ttl(secs: Option<u32>) -> Duration {
    secs.map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(NEGATIVE_TTL)
}

//! Which MX hosts DANE applies to (RFC 7672 2.2): only host names and addresses that DNSSEC
//! vouches for are worth a TLSA lookup.
//!
//! - The MX RRset (RFC 7672 2.2.1): **secure**, each MX host is looked at on its own;
//!   **insecure**, the host names could have been forged, so their TLSA records prove nothing
//!   and DANE does not apply to any of them (the other policies do: MTA-STS, opportunistic
//!   TLS, or `dane-only`'s refusal). The RFC allows DANE for such hosts too (it is
//!   opportunistic security); like Postfix, Corvid does not use it. **Bogus** or a failed
//!   lookup (RFC 7672 2.1.1): no MX host may be used now, 4.7.5.
//! - No MX records (the domain itself is the host, RFC 5321 5.1): a secure denial makes the
//!   domain a non-MX destination (RFC 7672 2.2.2); an insecure one counts as an insecure MX.
//! - The host's address records (RFC 7672 2.2.2): TLSA records are looked up only when they
//!   are secure; insecure addresses, DANE does not apply; bogus ones, the host is not used.
//!   A CNAME on the way must be secure too (the lookup validates the whole chain).
//! - The TLSA base domain (RFC 7672 2.2.3): when the MX host name is an alias whose chain is
//!   secure, the TLSA records are looked up first under the chain's final target; only when
//!   there are none there (a secure NXDOMAIN or NODATA, or records that are not secure) under
//!   the MX host name. Records found at the target, usable or not, decide, and a failed
//!   lookup there is a failure: the MX host name is not tried then (as Postfix). A CNAME
//!   that is secure in front of an insecure target makes the addresses insecure, so DANE does
//!   not apply (Postfix still looks up the MX host name's TLSA records when the CNAME record
//!   itself is secure; Corvid does not).

use super::{Dane, DaneState, DnssecError, MxAnswer};

/// What the validated MX lookup of a destination domain allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxStatus {
    /// A secure MX RRset, with these host names (lower case); empty: a secure "no MX", the
    /// domain itself is the host.
    Secure(Vec<String>),
    /// An insecure MX RRset (or an insecure "no MX"): DANE does not apply.
    Insecure,
    /// Bogus or failed: no MX host of the domain is used now.
    Failed(String),
}

impl MxStatus {
    fn from_answer(domain: &str, answer: Result<MxAnswer, DnssecError>) -> Self {
        match answer {
            Ok(MxAnswer {
                secure: false,
                hosts,
            }) => {
                tracing::debug!(
                    domain,
                    ?hosts,
                    "insecure MX RRset: DANE does not apply (RFC 7672 2.2.1)"
                );
                MxStatus::Insecure
            }
            Ok(MxAnswer {
                secure: true,
                hosts,
            }) => MxStatus::Secure(hosts),
            Err(e) => MxStatus::Failed(format!("MX lookup for {domain}: {e}")),
        }
    }
}

fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

impl Dane {
    /// The validated MX lookup of `domain` (cached by the resolver).
    pub async fn mx_status(&self, domain: &str) -> MxStatus {
        MxStatus::from_answer(domain, self.dns.mx(domain).await)
    }

    /// What DANE says about MX host `host` of `domain` on `port`, given the domain's
    /// [`MxStatus`].
    pub async fn host_state(
        &self,
        mx: &MxStatus,
        domain: &str,
        host: &str,
        port: u16,
    ) -> DaneState {
        let names = match mx {
            MxStatus::Failed(why) => return DaneState::Failed(why.clone()),
            MxStatus::Insecure => return DaneState::None,
            MxStatus::Secure(names) => names,
        };
        // The host list came from a lookup without validation: a host the secure RRset does
        // not name is a forgery (or the RRset changed in between), not a host to trust.
        let listed = match names.is_empty() {
            true => same_host(host, domain),
            false => names.iter().any(|n| same_host(n, host)),
        };
        if !listed {
            return DaneState::Failed(format!(
                "MX host {host} is not in the DNSSEC-validated MX RRset of {domain}"
            ));
        }
        match self.dns.address_name(host).await {
            Err(e) => DaneState::Failed(format!("address lookup for {host}: {e}")),
            Ok(None) => {
                tracing::debug!(
                    host,
                    "insecure address records: DANE does not apply (RFC 7672 2.2.2)"
                );
                DaneState::None
            }
            Ok(Some(target)) if !same_host(&target, host) => {
                // RFC 7672 2.2.3: the expanded name first, the original name when it has no
                // records.
                match self.state(&target, port).await {
                    DaneState::None => self.state(host, port).await,
                    found => found,
                }
            }
            Ok(Some(_)) => self.state(host, port).await,
        }
    }
}

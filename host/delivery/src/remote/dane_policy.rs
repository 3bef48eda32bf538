//! Where DANE (RFC 7672) enters MX delivery: which destinations look up TLSA records, what
//! each MX host's records make of its session, and which idle sessions still fit.
//!
//! DANE applies to MX delivery whose domain has `tls = "dane"` or `"dane-only"`
//! (`delivery.tls.domains` or a route), or that the config leaves without a TLS policy when
//! `delivery.dane.enabled` is on, and then only to MX hosts whose names and addresses DNSSEC
//! vouches for (`dane::discovery`, RFC 7672 2.2.1/2.2.2: an insecure MX RRset means no TLSA
//! lookups, a bogus one defers). For an MX host with usable records DANE decides the
//! certificate check, with the records' TLSA base domain as SNI (which differs from the MX
//! host name when the records came from its CNAME target, RFC 7672 2.2.3 and 8.1), and takes
//! precedence over the domain's MTA-STS policy (RFC 8461 2: a sender that does both prefers
//! DANE); without records the other policies apply as usual.

use super::Remote;
use crate::client::{ClientError, Endpoint, Session, SessionOptions, TlsPolicy};
use crate::dane::verify::DaneVerifier;
use crate::dane::{Dane, DaneState, HickoryDnssec, MxStatus, SecureDns};
use crate::route::{Destination, NextHop, TlsMode};
use crate::Outcome;
use corvid_queue::TlsRecord;
use std::collections::HashMap;
use std::sync::Arc;

/// The DANE state of each MX host of one delivery attempt (by host name).
#[derive(Default)]
pub(crate) struct DaneHosts {
    pub(crate) only: bool,
    states: HashMap<String, DaneState>,
}

impl DaneHosts {
    pub(crate) fn get(&self, host: &str) -> &DaneState {
        self.states.get(host).unwrap_or(&DaneState::None)
    }

    /// The record of a failed attempt on `host` names DANE when DANE decided it.
    pub(crate) fn mark(&self, mut record: TlsRecord, host: Option<&str>) -> TlsRecord {
        let decided = host.is_some_and(|h| {
            self.only || matches!(self.get(h), DaneState::Usable { .. } | DaneState::Failed(_))
        });
        if decided {
            record.policy = if self.only { "dane-only" } else { "dane" }.into();
            record.source = Some("tlsa".into());
        }
        record
    }

    /// RFC 8689 4.2.1 for a REQUIRETLS message that only DANE can authenticate (`only_dane`:
    /// MX delivery without an MTA-STS policy): the MX hosts with usable TLSA records. None
    /// left: a failed TLSA lookup defers (4.7.5), otherwise the message bounces 5.7.30.
    pub(crate) fn requiretls_hosts(
        &self,
        endpoints: Vec<Endpoint>,
        only_dane: bool,
    ) -> Result<Vec<Endpoint>, Outcome> {
        if !only_dane {
            return Ok(endpoints);
        }
        let failed = endpoints
            .iter()
            .any(|e| matches!(self.get(&e.host()), DaneState::Failed(_)));
        let fit: Vec<Endpoint> = endpoints
            .into_iter()
            .filter(|e| self.usable(&e.host()))
            .collect();
        match (fit.is_empty(), failed) {
            (false, _) => Ok(fit),
            (true, true) => Err(Outcome::Transient(
                "4.7.5 REQUIRETLS: the TLSA lookup of the MX hosts failed (DANE)".into(),
            )),
            (true, false) => Err(Outcome::Permanent(
                "5.7.30 REQUIRETLS: no MTA-STS policy and no MX host with usable DANE TLSA records"
                    .into(),
            )),
        }
    }

    /// The host has usable TLSA records: its certificate is checked by DANE, whatever the
    /// MTA-STS policy lists.
    pub(crate) fn usable(&self, host: &str) -> bool {
        matches!(self.get(host), DaneState::Usable { .. })
    }
}

impl TlsMode {
    pub(crate) fn is_dane(self) -> bool {
        matches!(self, TlsMode::Dane | TlsMode::DaneOnly)
    }
}

impl Remote {
    /// Whether DANE applies to this destination, and whether only DANE will do.
    pub(crate) fn dane_wanted(&self, dest: &Destination) -> Option<bool> {
        dane_wanted(dest, self.config.dane.enabled)
    }

    /// The TLSA lookups, made on first use.
    fn dane(&self) -> Result<Arc<Dane>, String> {
        let mut dane = self.dane.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dane.as_ref() {
            return Ok(Arc::clone(d));
        }
        let dns: Arc<dyn SecureDns> = Arc::new(HickoryDnssec::new(
            &self.config.nameservers,
            self.config.dane.trust_anchor.as_deref(),
            self.config.ipv6,
        )?);
        let made = Arc::new(Dane::new(dns));
        *dane = Some(Arc::clone(&made));
        Ok(made)
    }

    /// The validated MX lookup of the destination's domain (RFC 7672 2.2.1).
    async fn mx_status(&self, dest: &Destination) -> MxStatus {
        let NextHop::Mx(domain) = &dest.hop else {
            return MxStatus::Failed(format!("{} is not MX delivery", dest.hop));
        };
        match self.dane() {
            Ok(dane) => dane.mx_status(domain).await,
            Err(e) => MxStatus::Failed(format!("no DNSSEC resolver: {e}")),
        }
    }

    async fn dane_state(
        &self,
        dest: &Destination,
        mx: &MxStatus,
        endpoint: &Endpoint,
    ) -> DaneState {
        let (Endpoint::Tcp { host, addr }, NextHop::Mx(domain)) = (endpoint, &dest.hop) else {
            return DaneState::None;
        };
        match self.dane() {
            Ok(dane) => dane.host_state(mx, domain, host, addr.port()).await,
            Err(e) => DaneState::Failed(format!("no DNSSEC resolver: {e}")),
        }
    }

    /// The DANE state of each MX host among `endpoints` (one lookup per host name).
    pub(crate) async fn dane_hosts(&self, dest: &Destination, endpoints: &[Endpoint]) -> DaneHosts {
        let Some(only) = self.dane_wanted(dest) else {
            return DaneHosts::default();
        };
        let mut hosts = DaneHosts {
            only,
            states: HashMap::new(),
        };
        let mx = self.mx_status(dest).await;
        tracing::debug!(destination = %dest.hop, mx = ?mx, "DANE MX status");
        for e in endpoints {
            if let std::collections::hash_map::Entry::Vacant(slot) = hosts.states.entry(e.host()) {
                let state = self.dane_state(dest, &mx, e).await;
                tracing::debug!(host = %e.host(), state = ?state, "DANE TLSA state");
                slot.insert(state);
            }
        }
        hosts
    }

    /// An idle session if it may carry a message to this destination (else it is closed):
    /// under usable TLSA records only a session whose certificate DANE checked, under
    /// unusable ones a TLS session.
    pub(crate) async fn dane_idle(&self, dest: &Destination, s: Session) -> Option<Session> {
        let Some(only) = self.dane_wanted(dest) else {
            return Some(s);
        };
        // The session is not Sync: only its endpoint crosses the await.
        let (endpoint, dane, tls) = (s.endpoint.clone(), s.dane, s.tls);
        let mx = self.mx_status(dest).await;
        let fits = match self.dane_state(dest, &mx, &endpoint).await {
            DaneState::Usable { .. } => dane,
            DaneState::Unusable => tls,
            DaneState::None => !only,
            DaneState::Failed(_) => false,
        };
        if fits {
            return Some(s);
        }
        tokio::spawn(s.quit());
        None
    }
}

/// Whether DANE applies to `dest` (`Some(only)`), given `delivery.dane.enabled`: MX delivery
/// without `auth` whose `tls` is `dane` or `dane-only`, or unset while DANE is enabled. A
/// plugin's `verify` (`delivery-tls.set-route-tls`) keeps DANE where it is enabled: it may
/// only make TLS stricter, so MX hosts with usable TLSA records are still checked by DANE
/// and the others by WebPKI (without this, the ask turned DANE off).
pub(crate) fn dane_wanted(dest: &Destination, dane_enabled: bool) -> Option<bool> {
    if !matches!(dest.hop, NextHop::Mx(_)) || dest.auth.is_some() {
        return None;
    }
    match dest.tls {
        Some(TlsMode::Dane) => Some(false),
        Some(TlsMode::DaneOnly) => Some(true),
        None if dane_enabled => Some(false),
        Some(TlsMode::Verify) if dest.tls_by_plugin && dane_enabled => Some(false),
        _ => None,
    }
}

/// Applies an MX host's DANE state to its session options (RFC 7672 2.2): usable records
/// require TLS and a certificate matching them (a DANE-TA(2) chain issued for their TLSA base
/// domain or the MX host name, RFC 7672 3.2.2), with the base domain sent in SNI (RFC 7672
/// 8.1); unusable ones require TLS without authentication; a failed lookup, or `dane-only`
/// without usable records, forbids the host. Returns whether the session's certificate will
/// have been checked by DANE.
pub(crate) fn apply(
    hosts: &DaneHosts,
    host: &str,
    opts: &mut SessionOptions,
) -> Result<bool, ClientError> {
    match hosts.get(host) {
        DaneState::Usable { records, base } => {
            let config = DaneVerifier::client_config(Arc::clone(records), &[base, host])
                .map_err(ClientError::Dane)?;
            opts.tls = TlsPolicy::Required;
            opts.verify = true;
            opts.tls_configs.verified = config;
            opts.tls_configs.sni = Some(base.clone());
            Ok(true)
        }
        DaneState::Failed(why) => Err(ClientError::Dane(why.clone())),
        _ if hosts.only => Err(ClientError::Dane(format!(
            "no usable DNSSEC-validated TLSA records for {host} (dane-only)"
        ))),
        DaneState::Unusable => {
            opts.tls = TlsPolicy::Required;
            Ok(false)
        }
        DaneState::None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::dane_wanted;
    use crate::route::{Destination, NextHop, TlsMode};
    use corvid_types::delivery_call::TlsPolicy;

    fn mx(tls: Option<TlsMode>) -> Destination {
        let mut d = Destination::new(NextHop::Mx("example.test".into()));
        d.tls = tls;
        d
    }

    #[test]
    fn a_plugins_verify_keeps_dane_where_it_is_enabled() {
        let asked = mx(None).with_plugin_tls(Some(TlsPolicy::Verify));
        assert_eq!(asked.tls, Some(TlsMode::Verify));
        assert_eq!(dane_wanted(&asked, true), Some(false), "DANE still applies");
        assert_eq!(dane_wanted(&asked, false), None, "DANE off: WebPKI only");
        // The defaults and the configured modes are as before.
        assert_eq!(dane_wanted(&mx(None), true), Some(false));
        assert_eq!(dane_wanted(&mx(None), false), None);
        assert_eq!(dane_wanted(&mx(Some(TlsMode::Verify)), true), None);
        assert_eq!(dane_wanted(&mx(Some(TlsMode::DaneOnly)), false), Some(true));
        let only = mx(None).with_plugin_tls(Some(TlsPolicy::DaneOnly));
        assert_eq!(dane_wanted(&only, false), Some(true));
    }
}

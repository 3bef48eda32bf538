//! Which TLS policy a delivery runs under, and the record of what it got.
//!
//! Precedence, first that applies: the config's (a route's `tls`, `delivery.tls.domains`, a
//! route with `auth` or `require_tls`), or a stricter one a plugin's `route` stage asked for;
//! the recipient domain's MTA-STS policy (RFC 8461; DANE is to come before it); opportunistic
//! TLS (`delivery.opportunistic_tls`), else none.
//! A message with `TLS-Required: No` (RFC 8689 4.2.2) skips the MTA-STS step.

use super::dane_policy::DaneHosts;
use super::Remote;
use crate::client::{Endpoint, Session, TlsPolicy};
use crate::mta_sts::{Applied, Lookup, Mode};
use crate::route::{Destination, NextHop, TlsMode};
use crate::tlsrpt::result_type;
use crate::Outcome;
use corvid_queue::{unix_secs, TlsRecord};
use std::time::SystemTime;

impl Remote {
    /// The MTA-STS policy for a destination: only MX delivery of a recipient domain whose TLS
    /// the config does not decide.
    pub(crate) async fn sts_for(&self, dest: &Destination) -> Lookup {
        let (Some(sts), Some(domain), NextHop::Mx(_)) = (&self.sts, &dest.policy_domain, &dest.hop)
        else {
            return Lookup::None;
        };
        // `dane` modes keep MTA-STS for MX hosts without TLSA records, and a plugin's
        // stricter ask keeps it altogether (it may not lose an `enforce` policy's MX list).
        let configured = dest.tls.filter(|_| !dest.tls_by_plugin);
        if configured.is_some_and(|t| !t.is_dane()) || dest.auth.is_some() {
            return Lookup::None;
        }
        let Ok(dns) = self.dns() else {
            return Lookup::None;
        };
        sts.lookup(dns.as_ref(), domain, unix_secs(SystemTime::now()))
            .await
    }

    /// The STARTTLS policy for a destination, and whether the certificate must verify.
    /// Credentials always need a verified certificate (the config insists on `verify` for
    /// them; this holds even for a route that came some other way).
    pub(crate) fn tls_policy(
        &self,
        dest: &Destination,
        endpoint: &Endpoint,
        sts: &Lookup,
        requiretls: bool,
    ) -> (TlsPolicy, bool) {
        if matches!(endpoint, Endpoint::Unix(_)) {
            return (TlsPolicy::Off, false);
        }
        // RFC 8689 4.2.1: a REQUIRETLS message goes only over verified TLS.
        if requiretls && !matches!(dest.hop, NextHop::Lmtp(_)) {
            return (TlsPolicy::Required, true);
        }
        let enforce = matches!(sts, Lookup::Policy(a) if a.policy.mode == Mode::Enforce);
        let mx = matches!(dest.hop, NextHop::Mx(_));
        // On MX delivery a `dane` mode decides per MX host (`dane_policy::apply`), over
        // what follows here for a host without TLSA records; a smart host gets `verify`.
        let mode = match dest.tls {
            Some(t) if t.is_dane() && mx => None,
            Some(t) if t.is_dane() => Some(TlsMode::Verify),
            other => other,
        };
        match mode {
            Some(TlsMode::Verify) => (TlsPolicy::Required, true),
            _ if dest.auth.is_some() => (TlsPolicy::Required, true),
            // RFC 8461 4.2: an `enforce` policy's MX must offer STARTTLS and present a
            // certificate valid for its MX host name.
            None if enforce => (TlsPolicy::Required, true),
            // `require_tls` without `verify`: TLS or nothing, any certificate (Postfix's
            // `encrypt` level).
            _ if dest.require_tls => (TlsPolicy::Required, false),
            Some(TlsMode::None) => (TlsPolicy::Off, false),
            Some(TlsMode::Opportunistic) => (TlsPolicy::Opportunistic, false),
            Some(TlsMode::Dane | TlsMode::DaneOnly) => (TlsPolicy::Required, true),
            // `testing` (RFC 8461 5): deliver as usual; whether it verified is recorded.
            None if self.config.opportunistic_tls => (TlsPolicy::Opportunistic, false),
            None => (TlsPolicy::Off, false),
        }
    }

    /// The record of an attempt's TLS: the policy that decided, and what the session got
    /// (`session` is `None` when no session opened; `failure` says why).
    pub(crate) fn tls_record(
        &self,
        dest: &Destination,
        sts: &Lookup,
        session: Option<&Session>,
        failure: Option<String>,
    ) -> TlsRecord {
        let by_dane = session.is_some_and(|s| s.dane);
        let mode_source = if dest.tls_by_plugin {
            "plugin"
        } else {
            "config"
        };
        let (policy, source, domain) = match (dest.tls, sts) {
            // RFC 7672: the certificate was checked against the MX host's TLSA records.
            _ if by_dane => ("dane", "tlsa".to_string(), dest.policy_domain.clone()),
            (Some(mode), _) => (
                mode_name(mode),
                mode_source.to_string(),
                dest.policy_domain.clone(),
            ),
            (None, _) if dest.auth.is_some() => ("verify", "config".into(), None),
            (None, Lookup::Policy(a)) => (
                "mta-sts",
                format!("{}, {}", a.policy.mode.as_str(), a.source),
                Some(a.domain.clone()),
            ),
            (None, _) if dest.require_tls => ("encrypt", "config".into(), None),
            (None, _) if self.config.opportunistic_tls => ("opportunistic", "default".into(), None),
            (None, _) => ("none", "default".into(), None),
        };
        let failure = failure.or_else(|| match (sts, session) {
            (Lookup::FetchFailed(e), _) => Some(format!("MTA-STS policy fetch failed: {e}")),
            (Lookup::Policy(a), Some(s)) if !a.policy.matches(&s.endpoint.host()) => Some(format!(
                "MX {} not in the MTA-STS policy of {} (mx: {})",
                s.endpoint.host(),
                a.domain,
                a.policy.mx.join(", ")
            )),
            _ => None,
        });
        TlsRecord {
            version: session.and_then(|s| s.tls_version.clone()),
            cipher: session.and_then(|s| s.tls_cipher.clone()),
            verified: session.is_some_and(|s| s.tls && s.verified),
            policy: policy.into(),
            source: Some(source),
            policy_domain: domain,
            failure: failure.or_else(|| {
                session.and_then(|s| match (s.tls, &s.unverified_reason) {
                    (true, Some(why)) => Some(format!("certificate not verified: {why}")),
                    (false, _) if matches!(sts, Lookup::Policy(_)) => {
                        Some("STARTTLS not offered".into())
                    }
                    _ => None,
                })
            }),
        }
    }
}

impl Remote {
    /// Counts an attempt for TLS-RPT (RFC 8460) under its policy domain: MX delivery only.
    /// Without a policy, a clear-text session is not a TLS result at all; one that failed
    /// for other reasons than TLS (`tls_failed` false, no session) neither.
    pub(crate) fn count_tls(
        &self,
        dest: &Destination,
        sts: &Lookup,
        mx: &str,
        record: &TlsRecord,
        tls_failed: bool,
    ) {
        let Some(domain) = dest.policy_domain.as_deref() else {
            return;
        };
        let opened = record.version.is_some();
        // DANE decided this MX host (its certificate, or its failed TLSA lookup).
        let tlsa = record.policy.starts_with("dane") && record.source.as_deref() == Some("tlsa");
        let failure = match sts {
            _ if tlsa && tls_failed => Some(crate::tlsrpt::dane_result_type(
                record.failure.as_deref().unwrap_or(""),
            )),
            _ if tlsa && opened => record
                .failure
                .as_deref()
                .map(crate::tlsrpt::dane_result_type),
            Lookup::FetchFailed(_) => Some("sts-policy-fetch-error"),
            Lookup::Policy(_) if opened || tls_failed => record.failure.as_deref().map(result_type),
            _ if tls_failed => Some(result_type(record.failure.as_deref().unwrap_or(""))),
            _ if opened => None,
            _ => return,
        };
        let policy = match sts {
            Lookup::Policy(a) => Some(&a.policy),
            _ => None,
        };
        self.tls_counters.count(crate::tlsrpt::Session {
            domain,
            policy,
            mx,
            failure,
            tlsa,
        });
    }
}

fn mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::None => "none",
        TlsMode::Opportunistic => "opportunistic",
        TlsMode::Verify => "verify",
        TlsMode::Dane => "dane",
        TlsMode::DaneOnly => "dane-only",
    }
}

/// Whether an idle session may carry this delivery. A REQUIRETLS message (RFC 8689 4.2.1)
/// or one under an `enforce` MTA-STS policy (RFC 8461 4.2) needs verified TLS, and under a
/// policy an MX the policy lists: the session may have been opened for a message that set the
/// policy aside (`TLS-Required: No`, RFC 8689 4.2.2).
pub(crate) fn idle_fits(sts: &Lookup, requiretls: bool, s: &Session) -> bool {
    let verified = s.tls && s.verified;
    match sts {
        Lookup::Policy(a) if requiretls || a.policy.mode == Mode::Enforce => {
            verified && a.policy.matches(&s.endpoint.host())
        }
        _ => verified || !requiretls,
    }
}

/// RFC 8689 4.2.1: where a REQUIRETLS message may go. MX delivery needs an authenticated
/// policy for the MX names (MTA-STS, or DANE when it applies: `dane` then keeps only MX hosts
/// with usable TLSA records, see `DaneHosts::requiretls_hosts`), a smart host a
/// configured `tls = "verify"` (its name is configured, not taken from DNS); LMTP to the
/// final store is not relaying. Otherwise the message bounces with 5.7.30.
pub(crate) fn requiretls_path(dest: &Destination, sts: &Lookup, dane: bool) -> Result<(), Outcome> {
    let ok = match &dest.hop {
        NextHop::Mx(_) => dane || matches!(sts, Lookup::Policy(_)),
        NextHop::Smtp(_) => dest.tls == Some(TlsMode::Verify),
        _ => true,
    };
    match ok {
        true => Ok(()),
        false => Err(Outcome::Permanent(format!(
            "5.7.30 REQUIRETLS: no authenticated TLS path to {} (no MTA-STS policy or DANE, or a route without tls = \"verify\")",
            dest.hop
        ))),
    }
}

/// The outcome of the last failed MX host. Under an `enforce` policy an MX host that does
/// not offer (or refuses) STARTTLS is a policy failure like a certificate that does not
/// verify (RFC 8461 4.2, 5: the MX must "successfully negotiate TLS"): 4.7.5, as the policy's
/// other failures, rather than the 4.7.10 a route's `require_tls` gets.
pub(crate) fn sts_outcome(sts: &Lookup, last: &crate::client::ClientError) -> Outcome {
    match (sts, last) {
        (Lookup::Policy(a), crate::client::ClientError::TlsRequired(why))
            if a.policy.mode == Mode::Enforce =>
        {
            Outcome::Transient(format!(
                "4.7.5 {why} (MTA-STS policy of {} in enforce mode)",
                a.domain
            ))
        }
        _ => last.outcome(),
    }
}

/// The MX hosts an MTA-STS policy allows (RFC 8461 4.1). `enforce` keeps only those, and
/// defers with 4.7.5 when none is left; `testing` keeps all (a mismatch is recorded for the
/// host actually used, see [`Remote::tls_record`]).
pub(crate) fn filter_mx(
    sts: &Lookup,
    endpoints: Vec<Endpoint>,
    requiretls: bool,
    dane: &DaneHosts,
) -> Result<Vec<Endpoint>, Outcome> {
    let Lookup::Policy(Applied { domain, policy, .. }) = sts else {
        return Ok(endpoints);
    };
    // RFC 8689 4.2.1: a REQUIRETLS message holds even a `testing` policy as enforced.
    if policy.mode != Mode::Enforce && !requiretls {
        return Ok(endpoints);
    }
    let mut unfit: Vec<String> = Vec::new();
    let fit: Vec<Endpoint> = endpoints
        .into_iter()
        .filter(|e| {
            // DANE takes precedence over MTA-STS for a host with usable TLSA records.
            let ok = policy.matches(&e.host()) || dane.usable(&e.host());
            if !ok && !unfit.contains(&e.host()) {
                unfit.push(e.host());
            }
            ok
        })
        .collect();
    if fit.is_empty() {
        return Err(Outcome::Transient(format!(
            "4.7.5 MX {} not in the MTA-STS policy of {domain} (mx: {})",
            unfit.join(", "),
            policy.mx.join(", ")
        )));
    }
    Ok(fit)
}

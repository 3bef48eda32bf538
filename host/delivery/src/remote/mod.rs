//! Delivery to a next hop over the network: MX hosts, a smart host, or an LMTP server.
//!
//! For one destination and the recipients of one message routed there: take a session slot
//! (per-destination limit), reuse an idle session or open one, trying the addresses in order
//! until one greets (RFC 5321 5.1: a connection failure or a refusal at setup moves on to the
//! next MX), then run one transaction for all the recipients.
//!
//! The parts: the TLS policy of a destination and its record (`tls_policy.rs`: MTA-STS,
//! REQUIRETLS, TLS-RPT counts), DANE per MX host (`dane_policy.rs`), the addresses to try
//! (`endpoints.rs`), opening a session (`open.rs`) and the replies as reports (`finish.rs`).

use crate::client::tls::TlsConfigs;
use crate::client::{ClientError, Outbound, Session};
use crate::config::DeliveryConfig;
use crate::content::LazyContent;
use crate::dns::{Dns, HickoryDns};
use crate::loops::LoopGuard;
use crate::mta_sts::{FetchOptions, Lookup, MtaSts};
use crate::outcome::uniform;
use crate::pool::Pool;
use crate::route::{Destination, NextHop};
use crate::tls_required::tls_optional;
use crate::{Outcome, RcptReport};
use corvid_queue::{Spool, TlsRecord};
use corvid_types::{Envelope, Recipient};
use finish::stale;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tls_policy::{filter_mx, idle_fits, requiretls_path};
use tokio::sync::Semaphore;

mod dane_policy;
mod endpoints;
mod finish;
mod open;
mod tls_policy;

pub(crate) struct Remote {
    pub(crate) config: DeliveryConfig,
    pub(crate) helo: String,
    pub(crate) tls: TlsConfigs,
    pub(crate) pool: Arc<Pool>,
    /// The permits all remote destinations share; a destination takes its pool slot (its
    /// capped share) first, so a destination at its cap waits without holding one.
    permits: Arc<Semaphore>,
    pub(crate) loops: LoopGuard,
    /// Made on first use, so that a host without a resolver configuration can still deliver
    /// locally.
    dns: Mutex<Option<Arc<dyn Dns>>>,
    /// MTA-STS discovery and its cache (`delivery.mta_sts.enabled`).
    pub(crate) sts: Option<MtaSts>,
    /// TLS-RPT (RFC 8460) counts by policy domain.
    pub(crate) tls_counters: Arc<crate::tlsrpt::TlsCounters>,
    /// DANE's TLSA lookups (RFC 7672), made on first use (`dane_policy.rs`).
    pub(crate) dane: Mutex<Option<Arc<crate::dane::Dane>>>,
}

impl Remote {
    pub(crate) fn new(
        config: DeliveryConfig,
        helo: String,
        tls: TlsConfigs,
        dns: Option<Arc<dyn Dns>>,
        permits: usize,
        listening: Vec<SocketAddr>,
        store: Option<Arc<dyn Spool>>,
    ) -> Self {
        let loops = LoopGuard::new(listening, config.allow_loopback_mx);
        let permits = permits.max(1);
        let pool = Pool::new(
            config
                .max_connections_per_destination
                .min(config.max_per_destination)
                .min(permits),
            config.connection_reuse_time,
            config.max_messages_per_connection,
        );
        // Kept in the store only when reports are sent: otherwise nothing ever takes (and
        // clears) them, and each attempt would write for nothing.
        let tls_counters = Arc::new(match &store {
            Some(store) if config.tls_rpt.enabled => {
                crate::tlsrpt::TlsCounters::with_store(Arc::clone(store))
            }
            _ => crate::tlsrpt::TlsCounters::default(),
        });
        let sts = config.mta_sts.enabled.then(|| {
            let fetch = FetchOptions {
                port: config.mta_sts.port,
                timeout: config.mta_sts.fetch_timeout,
                ipv6: config.ipv6,
                tls: Arc::clone(&tls.verified),
            };
            MtaSts::new(Arc::new(fetch), store)
        });
        Remote {
            sts,
            tls_counters,
            dane: Mutex::new(None),
            config,
            helo,
            tls,
            pool,
            permits: Arc::new(Semaphore::new(permits)),
            loops,
            dns: Mutex::new(dns),
        }
    }

    pub(crate) fn dns(&self) -> Result<Arc<dyn Dns>, Outcome> {
        let mut dns = self.dns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dns.as_ref() {
            return Ok(Arc::clone(d));
        }
        let made: Arc<dyn Dns> = Arc::new(
            HickoryDns::new(&self.config.nameservers)
                .map_err(|e| Outcome::Transient(format!("4.4.3 no DNS resolver: {e}")))?,
        );
        *dns = Some(Arc::clone(&made));
        Ok(made)
    }

    /// Delivers `content` to the recipients `rcpts` (index into the message, recipient) at
    /// `dest`; one report per recipient. Waits for the destination's slot, then for one of
    /// the shared remote permits, and reads the content only then.
    pub(crate) async fn deliver(
        &self,
        dest: &Destination,
        envelope: &Envelope,
        rcpts: &[(usize, &Recipient)],
        content: &LazyContent,
    ) -> Vec<(usize, RcptReport)> {
        let index: Vec<usize> = rcpts.iter().map(|(i, _)| *i).collect();
        // Before the slot and permit: a policy fetch can take seconds.
        let sts = self.sts_for(dest).await;
        let requiretls = envelope.params.requiretls;
        if requiretls {
            if let Err(outcome) = requiretls_path(dest, &sts, self.dane_wanted(dest).is_some()) {
                let record = self.tls_record(dest, &sts, None, Some(outcome_text(&outcome)));
                return with_tls(uniform(&index, outcome), record);
            }
        }
        let mut lease = self.pool.acquire(dest).await;
        // The semaphore is never closed.
        let Ok(_permit) = self.permits.acquire().await else {
            return Vec::new();
        };
        let content = match content.for_delivery().await {
            Ok(c) => c,
            Err(outcome) => return uniform(&index, outcome),
        };
        // RFC 8689 4.2.2 (and its abstract): `TLS-Required: No` sets aside what the recipient
        // domain publishes, its MTA-STS policy and DANE TLSA records found by
        // `delivery.dane.enabled`; a TLS policy this server's administrator set for the domain
        // or route still holds. A REQUIRETLS message ignores the field (4.1).
        let optional = !requiretls && tls_optional(&content);
        let sts = match sts {
            Lookup::None => Lookup::None,
            _ if optional => {
                tracing::info!(destination = %dest.hop, "TLS-Required: No: MTA-STS policy not applied");
                Lookup::None
            }
            sts => sts,
        };
        let skip_dane = optional && dest.tls.is_none();
        if skip_dane && self.dane_wanted(dest).is_some() {
            tracing::info!(destination = %dest.hop, "TLS-Required: No: DANE not applied");
        }
        let msg = Outbound {
            envelope,
            recipients: rcpts.iter().map(|(_, r)| *r).collect(),
            content: &content,
        };
        // A REQUIRETLS message, or one under an `enforce` policy, never rides on an idle
        // session that is not verified TLS (one a `TLS-Required: No` message opened, say).
        let idle = match lease.idle.take() {
            Some(s) if !idle_fits(&sts, requiretls, &s) => {
                tokio::spawn(s.quit());
                None
            }
            other => other,
        };
        let idle = match idle {
            Some(s) if skip_dane => Some(s),
            Some(s) => self.dane_idle(dest, s).await,
            None => None,
        };
        if let Some(mut session) = idle {
            match self.precheck(&session, &msg) {
                Err(outcome) => {
                    self.pool.release(dest, session);
                    return uniform(&index, outcome);
                }
                Ok(()) => {
                    let res = session.transaction(&msg).await;
                    if !stale(&res) {
                        return self.finish(dest, &sts, session, res, &index);
                    }
                    tracing::debug!(
                        peer = session.peer(),
                        "reused session was closed; reconnecting"
                    );
                }
            }
        }
        let endpoints = match self.endpoints(&dest.hop).await {
            Ok(e) => e,
            Err(outcome) => {
                let failure = Some(outcome_text(&outcome));
                let record = self.tls_record(dest, &sts, None, failure);
                return with_tls(uniform(&index, outcome), record);
            }
        };
        let dane = if skip_dane {
            dane_policy::DaneHosts::default()
        } else {
            self.dane_hosts(dest, &endpoints).await
        };
        let endpoints = match filter_mx(&sts, endpoints, requiretls, &dane)
            .and_then(|e| dane.requiretls_hosts(e, requiretls && only_dane(dest, &sts)))
        {
            Ok(e) => e,
            Err(outcome) => {
                let record = self.tls_record(dest, &sts, None, Some(outcome_text(&outcome)));
                self.count_tls(dest, &sts, "", &record, true);
                return with_tls(uniform(&index, outcome), record);
            }
        };
        let mut last: Option<ClientError> = None;
        let mut last_host: Option<String> = None;
        for endpoint in endpoints {
            last_host = Some(endpoint.host());
            let mut session = match self.open(dest, endpoint, &sts, requiretls, &dane).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(destination = %dest.hop, error = %e, "next hop unusable, trying the next");
                    last = Some(e);
                    continue;
                }
            };
            if let Err(outcome) = self.precheck(&session, &msg) {
                self.pool.release(dest, session);
                return uniform(&index, outcome);
            }
            let res = session.transaction(&msg).await;
            return self.finish(dest, &sts, session, res, &index);
        }
        let outcome = match &last {
            Some(e) => tls_policy::sts_outcome(&sts, e),
            None => Outcome::Transient(format!("4.4.4 no address to deliver to for {}", dest.hop)),
        };
        let failure = last.as_ref().map(|e| e.to_string());
        let record = self.tls_record(dest, &sts, None, failure);
        let record = dane.mark(record, last_host.as_deref());
        let tls_failed = matches!(
            last,
            Some(
                ClientError::Certificate(_)
                    | ClientError::Tls(_)
                    | ClientError::TlsRequired(_)
                    | ClientError::Dane(_)
            )
        );
        self.count_tls(
            dest,
            &sts,
            last_host.as_deref().unwrap_or(""),
            &record,
            tls_failed,
        );
        with_tls(uniform(&index, outcome), record)
    }

    /// The checks before a transaction (they need the session's capabilities).
    fn precheck(&self, session: &Session, msg: &Outbound<'_>) -> Result<(), Outcome> {
        session.precheck(msg)
    }
}

/// RFC 8689 4.2.1: MX delivery without an MTA-STS policy: only DANE can authenticate it.
fn only_dane(dest: &Destination, sts: &Lookup) -> bool {
    matches!(dest.hop, NextHop::Mx(_)) && !matches!(sts, Lookup::Policy(_))
}

/// The attempt's TLS record on every report.
fn with_tls(mut reports: Vec<(usize, RcptReport)>, record: TlsRecord) -> Vec<(usize, RcptReport)> {
    for (_, r) in reports.iter_mut() {
        r.tls_record = Some(record.clone());
    }
    reports
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Delivered => String::new(),
        Outcome::Transient(t) | Outcome::Permanent(t) => t.clone(),
    }
}

//! Opening a session to one address of a destination with the TLS policy that applies.

use super::dane_policy::{self, DaneHosts};
use super::{Lookup, Remote};
use crate::client::{ClientError, Endpoint, Protocol, Session, SessionOptions, TlsPolicy};
use crate::route::{Destination, NextHop};

impl Remote {
    /// Opens a session with the route's TLS policy. A failed opportunistic handshake is
    /// retried once without TLS (as Postfix does): clear text beats no delivery there.
    pub(super) async fn open(
        &self,
        dest: &Destination,
        endpoint: Endpoint,
        sts: &Lookup,
        requiretls: bool,
        dane: &DaneHosts,
    ) -> Result<Session, ClientError> {
        let protocol = match dest.hop {
            NextHop::Lmtp(_) | NextHop::LmtpUnix(_) => Protocol::Lmtp,
            _ => Protocol::Smtp,
        };
        let (tls, verify) = self.tls_policy(dest, &endpoint, sts, requiretls);
        let mut opts = SessionOptions {
            protocol,
            helo: self.helo.clone(),
            tls,
            tls_configs: self.tls.clone(),
            verify,
            auth: dest.auth.clone(),
            timeouts: self.config.timeouts.clone(),
        };
        let by_dane = dane_policy::apply(dane, &endpoint.host(), &mut opts)?;
        let opened = self.open_with(endpoint, &mut opts).await.map(|mut s| {
            s.dane = by_dane && s.tls;
            s
        });
        if let Ok(s) = &opened {
            match (&s.unverified_reason, s.tls) {
                (Some(why), true) => tracing::info!(peer = s.peer(), verified = false,
                    reason = %why, "TLS established, certificate not verified"),
                (None, true) => {
                    tracing::debug!(peer = s.peer(), verified = true, "TLS established")
                }
                _ => {}
            }
        }
        opened
    }

    async fn open_with(
        &self,
        endpoint: Endpoint,
        opts: &mut SessionOptions,
    ) -> Result<Session, ClientError> {
        let tls = opts.tls;
        match Session::open(endpoint.clone(), opts).await {
            Err(ClientError::Tls(e)) if tls == TlsPolicy::Opportunistic => {
                tracing::warn!(peer = %endpoint.describe(), error = %e,
                    "TLS handshake failed; retrying without TLS");
                opts.tls = TlsPolicy::Off;
                Session::open(endpoint, opts).await
            }
            other => other,
        }
    }
}

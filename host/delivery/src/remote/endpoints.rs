//! The addresses to try for a next hop: MX candidates without the ones that would loop back
//! here, a route's host, or an LMTP socket.

use super::Remote;
use crate::client::Endpoint;
use crate::dns::DnsError;
use crate::mx::{self, MxOptions};
use crate::route::{HostPort, NextHop};
use crate::Outcome;
use std::net::{IpAddr, SocketAddr};

impl Remote {
    /// The addresses to try for a next hop.
    pub(crate) async fn endpoints(&self, hop: &NextHop) -> Result<Vec<Endpoint>, Outcome> {
        let opts = MxOptions {
            port: self.config.smtp_port,
            ipv6: self.config.ipv6,
            limit: self.config.max_mx_addresses,
        };
        match hop {
            NextHop::Mx(domain) => {
                let dns = self.dns()?;
                let c = mx::candidates(dns.as_ref(), domain, opts).await?;
                let c = self.without_loops(domain, c)?;
                Ok(c.into_iter()
                    .map(|c| Endpoint::Tcp {
                        host: c.host,
                        addr: c.addr,
                    })
                    .collect())
            }
            NextHop::Smtp(hp) | NextHop::Lmtp(hp) => self.host_endpoints(hp).await,
            NextHop::LmtpUnix(path) => Ok(vec![Endpoint::Unix(path.clone())]),
            NextHop::Local | NextHop::Discard => Err(Outcome::Transient(
                "4.3.5 local route given to the network client".into(),
            )),
        }
    }

    /// Drops the MX addresses that would loop back here; when none is left, the mail cannot
    /// be delivered without a loop (RFC 3463 X.4.6, permanent: DNS says so).
    fn without_loops(
        &self,
        domain: &str,
        candidates: Vec<mx::Candidate>,
    ) -> Result<Vec<mx::Candidate>, Outcome> {
        let mut refused = None;
        let kept: Vec<_> = candidates
            .into_iter()
            .filter(|c| match self.loops.refuses(c.addr) {
                Some(why) => {
                    tracing::warn!(domain, mx = %c.host, addr = %c.addr, why, "MX refused: mail loop");
                    refused = Some(format!(
                        "5.4.6 mail for {domain} loops back: MX {} resolves to {why} ({})",
                        c.host,
                        c.addr.ip()
                    ));
                    false
                }
                None => true,
            })
            .collect();
        match refused {
            Some(reason) if kept.is_empty() => Err(Outcome::Permanent(reason)),
            _ => Ok(kept),
        }
    }

    async fn host_endpoints(&self, hp: &HostPort) -> Result<Vec<Endpoint>, Outcome> {
        if let Ok(ip) = hp.host.parse::<IpAddr>() {
            return Ok(vec![Endpoint::Tcp {
                host: hp.host.clone(),
                addr: SocketAddr::new(ip, hp.port),
            }]);
        }
        let dns = self.dns()?;
        let mut addrs = match dns.addresses(&hp.host).await {
            Ok(a) => a,
            Err(DnsError::Temporary(e)) => {
                return Err(Outcome::Transient(format!(
                    "4.4.3 cannot resolve {}: {e}",
                    hp.host
                )))
            }
            Err(e) => {
                return Err(Outcome::Transient(format!(
                    "4.4.4 cannot resolve {}: {e}",
                    hp.host
                )))
            }
        };
        addrs.sort_by_key(|a| !a.is_ipv6());
        Ok(addrs
            .into_iter()
            .filter(|a| self.config.ipv6 || a.is_ipv4())
            .map(|ip| Endpoint::Tcp {
                host: hp.host.clone(),
                addr: SocketAddr::new(ip, hp.port),
            })
            .collect())
    }
}

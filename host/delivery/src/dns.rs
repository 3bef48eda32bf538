//! DNS for delivery: MX and address lookups through hickory-resolver (this is the only crate
//! that may use hickory), behind a small trait so that the MX logic can be tested without a
//! DNS server.

use async_trait::async_trait;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A lookup that did not produce records.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist (RFC 8020).
    #[error("no such domain")]
    NoSuchDomain,
    /// The name exists but has no record of the type asked for.
    #[error("no records of that type")]
    NoData,
    /// SERVFAIL, a timeout, no server reachable: try again later.
    #[error("DNS lookup failed: {0}")]
    Temporary(String),
}

/// The lookups MX delivery needs.
#[async_trait]
pub trait Dns: Send + Sync {
    /// The MX records of `domain` as (preference, exchange) with the exchange in ASCII without
    /// the trailing dot; `"."` stays `"."`, the null MX of RFC 7505.
    async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError>;

    /// The IPv4 and IPv6 addresses of `host`.
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;

    /// TXT records of `name`, the strings of each record joined (MTA-STS's `_mta-sts` record).
    /// By default there are none.
    async fn txt(&self, _name: &str) -> Result<Vec<String>, DnsError> {
        Err(DnsError::NoData)
    }
}

/// The hickory resolver, on the system configuration or on given name servers.
pub struct HickoryDns {
    resolver: TokioResolver,
}

impl HickoryDns {
    /// Uses `nameservers` (UDP and TCP on each) when given, else `/etc/resolv.conf`.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, DnsError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| DnsError::Temporary(e.to_string()))?
        } else {
            let mut config = ResolverConfig::new();
            for &addr in nameservers {
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        // Names are looked up as given (fully qualified): no search list.
        opts.ndots = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(HickoryDns {
            resolver: builder.build(),
        })
    }
}

/// Lookups are made for the absolute name, so no search domain is ever appended.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn classify(e: ResolveError) -> DnsError {
    if e.is_nx_domain() {
        DnsError::NoSuchDomain
    } else if e.is_no_records_found() {
        DnsError::NoData
    } else {
        DnsError::Temporary(e.to_string())
    }
}

#[async_trait]
impl Dns for HickoryDns {
    async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let lookup = self
            .resolver
            .mx_lookup(absolute(domain))
            .await
            .map_err(classify)?;
        Ok(lookup
            .iter()
            .map(|mx| {
                let name = mx.exchange();
                let text = if name.is_root() {
                    ".".to_string()
                } else {
                    name.to_ascii().trim_end_matches('.').to_string()
                };
                (mx.preference(), text)
            })
            .collect())
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let lookup = self
            .resolver
            .lookup_ip(absolute(host))
            .await
            .map_err(classify)?;
        Ok(lookup.iter().collect())
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        HickoryDns::txt(self, name).await
    }
}

/// The lookups the plugins' `dns` import offers (A, AAAA, TXT, PTR), on the same resolver.
impl HickoryDns {
    /// A records (`v6 == false`) or AAAA records.
    pub async fn ips(&self, name: &str, v6: bool) -> Result<Vec<IpAddr>, DnsError> {
        let name = absolute(name);
        if v6 {
            let lookup = self.resolver.ipv6_lookup(name).await.map_err(classify)?;
            Ok(lookup.iter().map(|a| IpAddr::V6(a.0)).collect())
        } else {
            let lookup = self.resolver.ipv4_lookup(name).await.map_err(classify)?;
            Ok(lookup.iter().map(|a| IpAddr::V4(a.0)).collect())
        }
    }

    /// TXT records, the strings of each record joined.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let lookup = self
            .resolver
            .txt_lookup(absolute(name))
            .await
            .map_err(classify)?;
        Ok(lookup
            .iter()
            .map(|t| {
                t.iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>()
            })
            .collect())
    }

    /// PTR names of `ip`, without the trailing dot.
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let lookup = self.resolver.reverse_lookup(ip).await.map_err(classify)?;
        Ok(lookup
            .iter()
            .map(|n| n.to_ascii().trim_end_matches('.').to_string())
            .collect())
    }
}

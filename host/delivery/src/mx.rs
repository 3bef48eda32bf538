//! From a domain to the addresses to try, in order (RFC 5321 5.1, RFC 7505).

use crate::dns::{Dns, DnsError};
use crate::Outcome;
use rand::seq::SliceRandom;
use std::net::{IpAddr, SocketAddr};

/// One address to connect to, with the host name it belongs to (for logs and `Remote-MTA:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub addr: SocketAddr,
}

/// Options of the MX walk.
#[derive(Clone, Copy, Debug)]
pub struct MxOptions {
    pub port: u16,
    pub ipv6: bool,
    /// At most this many addresses in total.
    pub limit: usize,
}

/// The MX hosts of `domain` in the order to try: by preference, random among equal ones
/// (RFC 5321 5.1). No MX records: the domain itself is the implicit MX (RFC 5321 5.1). A null
/// MX (a single `.` exchange, RFC 7505) is a permanent failure.
pub async fn mx_hosts(dns: &dyn Dns, domain: &str) -> Result<Vec<String>, Outcome> {
    let records = match dns.mx(domain).await {
        Ok(records) => records,
        Err(DnsError::NoData) => return Ok(vec![domain.to_string()]),
        Err(DnsError::NoSuchDomain) => {
            return Err(Outcome::Permanent(format!(
                "5.1.2 domain {domain} does not exist"
            )))
        }
        Err(DnsError::Temporary(e)) => {
            return Err(Outcome::Transient(format!(
                "4.4.3 MX lookup for {domain} failed: {e}"
            )))
        }
    };
    // RFC 7505 3: a null MX means "no mail". Should one stand next to real MX records, it is
    // just skipped.
    let mut usable: Vec<(u16, String)> = records.into_iter().filter(|(_, h)| h != ".").collect();
    if usable.is_empty() {
        return Err(Outcome::Permanent(format!(
            "5.1.10 domain {domain} does not accept mail (null MX, RFC 7505)"
        )));
    }
    usable.shuffle(&mut rand::thread_rng());
    // A stable sort keeps the shuffled order among equal preferences.
    usable.sort_by_key(|(pref, _)| *pref);
    let mut hosts: Vec<String> = Vec::with_capacity(usable.len());
    for (_, h) in usable {
        if !hosts.iter().any(|x| x.eq_ignore_ascii_case(&h)) {
            hosts.push(h);
        }
    }
    Ok(hosts)
}

/// The addresses to try for `domain`: each MX host's IPv6 addresses, then its IPv4 ones, in MX
/// order, up to `opts.limit`.
pub async fn candidates(
    dns: &dyn Dns,
    domain: &str,
    opts: MxOptions,
) -> Result<Vec<Candidate>, Outcome> {
    let hosts = mx_hosts(dns, domain).await?;
    let implicit = hosts.len() == 1 && hosts[0] == domain;
    let mut out = Vec::new();
    let mut temporary = None;
    for host in hosts {
        match dns.addresses(&host).await {
            Ok(addrs) => {
                let ordered = order_addresses(addrs, opts.ipv6);
                out.extend(ordered.into_iter().map(|ip| Candidate {
                    host: host.clone(),
                    addr: SocketAddr::new(ip, opts.port),
                }));
            }
            Err(DnsError::Temporary(e)) => temporary = Some(e),
            Err(_) => {}
        }
        if out.len() >= opts.limit.max(1) {
            out.truncate(opts.limit.max(1));
            break;
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    match (temporary, implicit) {
        (Some(e), _) => Err(Outcome::Transient(format!(
            "4.4.3 address lookup for the MX hosts of {domain} failed: {e}"
        ))),
        // RFC 3463 X.4.4: unable to route.
        (None, true) => Err(Outcome::Permanent(format!(
            "5.4.4 domain {domain} has no MX and no address records"
        ))),
        (None, false) => Err(Outcome::Transient(format!(
            "4.4.4 no MX host of {domain} has an address"
        ))),
    }
}

fn order_addresses(addrs: Vec<IpAddr>, ipv6: bool) -> Vec<IpAddr> {
    let (mut v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = addrs.into_iter().partition(IpAddr::is_ipv6);
    if !ipv6 {
        v6.clear();
    }
    v6.extend(v4);
    v6
}

#[cfg(test)]
mod tests;

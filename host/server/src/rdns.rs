//! The client's forward-confirmed reverse DNS name (FCrDNS): a PTR name of the client address
//! whose own A/AAAA records contain that address. Looked up once per connection, bounded by
//! `limits.rdns_timeout`; a name that is not confirmed is not used (anyone controlling their
//! PTR could claim any name). RFC 5321 4.4 puts it in the `Received:` field's TCP-info.
//! Loopback clients are this host and are not looked up.

use corvid_types::DnsResolver;
use std::net::IpAddr;
use std::time::Duration;

/// PTR names tried at most (each costs one forward lookup).
const MAX_NAMES: usize = 4;

/// The confirmed name, lower-case without the trailing dot, or `None`.
pub(crate) async fn confirmed_name(
    dns: &dyn DnsResolver,
    ip: IpAddr,
    timeout: Duration,
) -> Option<String> {
    let ip = ip.to_canonical();
    if ip.is_loopback() || ip.is_unspecified() {
        // This host itself: nothing to learn, and no reason to wait on a resolver for it.
        return None;
    }
    let lookup = async {
        let names = dns.ptr(ip).await.ok()?;
        for name in names.iter().take(MAX_NAMES) {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !is_hostname(&name) {
                continue;
            }
            let confirmed = dns
                .ip(&name, ip.is_ipv6())
                .await
                .is_ok_and(|addrs| addrs.iter().any(|a| a.to_canonical() == ip));
            if confirmed {
                return Some(name);
            }
        }
        None
    };
    tokio::time::timeout(timeout, lookup).await.ok().flatten()
}

/// A host name of letters, digits and hyphens (RFC 1123 2.1), safe to put in a header.
fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_that_could_break_a_header_are_refused() {
        assert!(is_hostname("mail.example.org"));
        assert!(!is_hostname("a b.example"));
        assert!(!is_hostname("x\r\nBcc: y"));
        assert!(!is_hostname("a..b"));
        assert!(!is_hostname(""));
    }
}

//! Mail loops (RFC 5321 6.3, RFC 3463 X.4.6 "routing loop detected").
//!
//! Two checks:
//! - an MX host that resolves to this server's own listening address, to an unspecified
//!   address (`0.0.0.0`, `::`, which connects to this machine), or to loopback (unless
//!   `delivery.allow_loopback_mx`) is never connected to: such mail would come straight back.
//!   A route that names its host explicitly is not checked (the operator chose it);
//! - a message that carries more `Received:` fields than `max_hops`, besides the one this
//!   server added at intake, is not delivered (RFC 5321 6.3: a loop is detected by counting
//!   trace headers; Postfix's `hopcount_limit` is 50, ours defaults to 100, the RFC's
//!   minimum). The end of DATA applies the same limit to the fields as they arrive.

use std::net::{IpAddr, SocketAddr};

/// The default `max_hops`: RFC 5321 6.3 asks for a limit of at least 100 trace fields.
pub const DEFAULT_MAX_HOPS: usize = 100;

#[derive(Clone, Debug, Default)]
pub(crate) struct LoopGuard {
    /// The addresses this server's listeners are bound to.
    pub(crate) own: Vec<SocketAddr>,
    pub(crate) allow_loopback: bool,
    /// This machine's interface addresses (to recognise a listener bound to `0.0.0.0`).
    pub(crate) interfaces: Vec<IpAddr>,
}

impl LoopGuard {
    pub(crate) fn new(own: Vec<SocketAddr>, allow_loopback: bool) -> Self {
        let interfaces = if own.iter().any(|a| a.ip().is_unspecified()) {
            interface_addresses()
        } else {
            Vec::new()
        };
        LoopGuard {
            own,
            allow_loopback,
            interfaces,
        }
    }

    /// Why connecting to `addr` for an MX would loop, if it would.
    pub(crate) fn refuses(&self, addr: SocketAddr) -> Option<&'static str> {
        let ip = addr.ip().to_canonical();
        if ip.is_unspecified() {
            return Some("an unspecified address");
        }
        let own = self.own.iter().any(|l| {
            let lip = l.ip().to_canonical();
            l.port() == addr.port()
                && (lip == ip
                    || (lip.is_unspecified()
                        && (ip.is_loopback() || self.interfaces.contains(&ip))))
        });
        if own {
            return Some("this server's own listening address");
        }
        if ip.is_loopback() && !self.allow_loopback {
            return Some("a loopback address");
        }
        None
    }
}

/// The addresses of this machine's network interfaces; empty when they cannot be listed.
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and free once below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// The number of `Received:` fields in the header section of `content`.
pub(crate) fn received_count(content: &[u8]) -> usize {
    let mut n = 0;
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        // RFC 5322 4.5.3 (obsolete syntax) allows white space before the colon.
        if line[..colon]
            .trim_ascii_end()
            .eq_ignore_ascii_case(b"received")
        {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loops_are_recognised() {
        let g = LoopGuard::new(vec![sa("127.0.0.1:2525"), sa("192.0.2.7:25")], false);
        assert!(g.refuses(sa("0.0.0.0:25")).is_some());
        assert!(g.refuses(sa("[::]:25")).is_some());
        assert!(g.refuses(sa("127.0.0.1:2600")).is_some(), "loopback");
        assert!(g.refuses(sa("[::1]:25")).is_some(), "loopback");
        assert!(
            g.refuses(sa("[::ffff:127.0.0.1]:25")).is_some(),
            "mapped loopback"
        );
        assert_eq!(
            g.refuses(sa("192.0.2.7:25")),
            Some("this server's own listening address")
        );
        assert_eq!(g.refuses(sa("192.0.2.7:26")), None);
        assert_eq!(g.refuses(sa("198.51.100.1:25")), None);
        let g = LoopGuard::new(vec![sa("127.0.0.1:2525")], true);
        assert_eq!(g.refuses(sa("127.0.0.1:2600")), None);
        assert!(
            g.refuses(sa("127.0.0.1:2525")).is_some(),
            "own even when loopback is allowed"
        );
        let g = LoopGuard::new(vec![sa("0.0.0.0:2525")], true);
        assert!(
            g.refuses(sa("127.0.0.1:2525")).is_some(),
            "wildcard listener"
        );
        assert!(
            g.refuses(sa("127.0.0.2:2525")).is_some(),
            "wildcard listener, loopback net"
        );
        assert_eq!(g.refuses(sa("127.0.0.1:2526")), None);
    }

    #[test]
    fn received_fields_of_the_header_only_are_counted() {
        let m = b"Received: a\r\n\tcontinued\r\nRECEIVED : b\r\nX-Received: no\r\nSubject: s\r\n\r\nReceived: body\r\n";
        assert_eq!(received_count(m), 2);
        assert_eq!(
            received_count(b"Received: x\nReceived: y\n\nReceived: z\n"),
            2
        );
        assert_eq!(received_count(b""), 0);
    }
}

//! The PROXY protocol (HAProxy's spec, "The PROXY protocol", versions 1 and 2): a load
//! balancer in front of Corvid sends one header before the SMTP stream that names the real
//! client. With `listener.proxy_protocol = true` the listener reads it, only from the
//! `listener.proxy_from` networks, and the session uses the client address it names (logs,
//! limits, `Received:`, plugins, AUTH throttling).
//!
//! A connection from elsewhere, or with a missing or malformed header, is closed without a
//! word: it is either a misconfiguration or someone forging client addresses.
//!
//! The reader takes exactly the header's octets from the stream (v1 one octet at a time up
//! to CRLF, v2 its fixed part and then its stated length), so nothing of the SMTP stream
//! behind it is consumed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature (spec 2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (spec 2.1).
const V1_MAX: usize = 107;
/// The most v2 address and TLV octets we accept: the addresses take at most 216 (unix
/// sockets); TLVs (ALPN, authority, SSL details) are small. The spec allows 65535.
const V2_MAX_LEN: usize = 4096;

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The real client and the address it connected to.
    Proxied {
        client: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN`, v2 `LOCAL` or an address family we do not carry (unix sockets): the
    /// proxy speaks for itself (a health check); the connection's own addresses stand.
    Local,
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PROXY header")]
    Missing,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Reads one PROXY header, v1 or v2, from the start of `stream`.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut start = [0u8; 6];
    stream.read_exact(&mut start).await?;
    if &start == b"PROXY " {
        read_v1(stream).await
    } else if start == V2_SIGNATURE[..6] {
        read_v2(stream).await
    } else {
        Err(ProxyError::Missing)
    }
}

async fn read_v1<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    // "PROXY " is read; the rest up to CRLF, one octet at a time so as not to read past it.
    let mut line = Vec::with_capacity(V1_MAX);
    loop {
        let b = stream.read_u8().await?;
        line.push(b);
        if line.ends_with(b"\r\n") {
            break;
        }
        if line.len() + 6 >= V1_MAX {
            return Err(ProxyError::V1("longer than 107 octets"));
        }
    }
    line.truncate(line.len() - 2);
    let text = std::str::from_utf8(&line).map_err(|_| ProxyError::V1("not ASCII"))?;
    parse_v1(text)
}

/// The part of a v1 header after `PROXY `, without CRLF.
fn parse_v1(text: &str) -> Result<ProxyHeader, ProxyError> {
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        // "the receiver must ignore anything presented before the CRLF" after UNKNOWN.
        ["UNKNOWN", ..] => Ok(ProxyHeader::Local),
        [proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v6 = *proto == "TCP6";
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = if v6 {
                    IpAddr::V6(
                        s.parse::<Ipv6Addr>()
                            .map_err(|_| ProxyError::V1("bad IPv6 address"))?,
                    )
                } else {
                    IpAddr::V4(
                        s.parse::<Ipv4Addr>()
                            .map_err(|_| ProxyError::V1("bad IPv4 address"))?,
                    )
                };
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                // Decimal without leading zeros (spec 2.1), 0 to 65535.
                if s.is_empty()
                    || (s.len() > 1 && s.starts_with('0'))
                    || !s.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(ProxyError::V1("bad port"));
                }
                s.parse().map_err(|_| ProxyError::V1("bad port"))
            };
            Ok(ProxyHeader::Proxied {
                client: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            })
        }
        _ => Err(ProxyError::V1(
            "expected TCP4, TCP6 or UNKNOWN and four fields",
        )),
    }
}

async fn read_v2<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut fixed = [0u8; 10];
    stream.read_exact(&mut fixed).await?;
    if fixed[..6] != V2_SIGNATURE[6..] {
        return Err(ProxyError::V2("bad signature"));
    }
    let (ver_cmd, family) = (fixed[6], fixed[7]);
    let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    if len > V2_MAX_LEN {
        return Err(ProxyError::V2("longer than 4096 octets"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    match ver_cmd & 0x0F {
        // LOCAL: the proxy's own connection; the body is ignored (spec 2.2).
        0x0 => Ok(ProxyHeader::Local),
        0x1 => parse_v2_addresses(family, &body),
        _ => Err(ProxyError::V2("unknown command")),
    }
}

/// The addresses of a v2 PROXY command; TLVs after them are ignored.
fn parse_v2_addresses(family: u8, body: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family {
        // TCP over IPv4, UDP over IPv4 (SMTP is TCP; the addresses are the same either way).
        0x11 | 0x12 => {
            let a = body
                .get(..12)
                .ok_or(ProxyError::V2("short IPv4 addresses"))?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(ProxyHeader::Proxied {
                client: SocketAddr::new(ip(&a[0..4]), port(&a[8..10])),
                destination: SocketAddr::new(ip(&a[4..8]), port(&a[10..12])),
            })
        }
        0x21 | 0x22 => {
            let a = body
                .get(..36)
                .ok_or(ProxyError::V2("short IPv6 addresses"))?;
            let ip = |b: &[u8]| {
                let octets: [u8; 16] = b.try_into().unwrap_or([0; 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Ok(ProxyHeader::Proxied {
                client: SocketAddr::new(ip(&a[0..16]), port(&a[32..34])),
                destination: SocketAddr::new(ip(&a[16..32]), port(&a[34..36])),
            })
        }
        // UNSPEC and unix sockets: nothing usable; the connection's own addresses stand.
        0x00 | 0x31 | 0x32 => Ok(ProxyHeader::Local),
        _ => Err(ProxyError::V2("unknown address family")),
    }
}

/// How long a proxy may take to send its header once connected.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// For a `proxy_protocol` listener: the client address the session should use, after
/// checking that `peer` (the proxy) is in `from` and reading its header within
/// [`HEADER_TIMEOUT`]; the connection's own `peer` for a LOCAL header. `None`: close the
/// connection without a reply (logged).
pub async fn client_of<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    from: &[ipnet::IpNet],
) -> Option<SocketAddr> {
    if !allowed(peer.ip(), from) {
        tracing::warn!(peer = %peer.ip(), "PROXY listener: connection from outside proxy_from closed");
        return None;
    }
    match tokio::time::timeout(HEADER_TIMEOUT, read_header(stream)).await {
        Ok(Ok(ProxyHeader::Proxied { client, .. })) => Some(client),
        Ok(Ok(ProxyHeader::Local)) => Some(peer),
        Ok(Err(e)) => {
            tracing::warn!(peer = %peer.ip(), error = %e, "PROXY listener: bad header, connection closed");
            None
        }
        Err(_) => {
            tracing::warn!(peer = %peer.ip(), "PROXY listener: no header within 5s, connection closed");
            None
        }
    }
}

/// Whether `peer` may send PROXY headers (`listener.proxy_from`).
pub fn allowed(peer: IpAddr, from: &[ipnet::IpNet]) -> bool {
    let peer = peer.to_canonical();
    from.iter().any(|n| n.contains(&peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
        let mut r = bytes;
        let h = read_header(&mut r).await;
        (h, r.to_vec())
    }

    fn proxied(client: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            client: client.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn v1_tcp4_and_tcp6_leave_the_smtp_stream_alone() {
        let (h, rest) = parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n").await;
        assert_eq!(h.unwrap(), proxied("192.0.2.7:40000", "198.51.100.1:25"));
        assert_eq!(rest, b"EHLO x\r\n");
        let (h, _) = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 587\r\n").await;
        assert_eq!(
            h.unwrap(),
            proxied("[2001:db8::7]:65535", "[2001:db8::1]:587")
        );
        let (h, _) = parse(b"PROXY UNKNOWN ffff::1 whatever\r\n").await;
        assert_eq!(h.unwrap(), ProxyHeader::Local);
    }

    #[tokio::test]
    async fn v1_malformed_headers_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n"[..],
            b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",
            b"PROXY TCP6 192.0.2.7 198.51.100.1 1 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 040000 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 25\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
        ] {
            assert!(
                matches!(parse(bad).await.0, Err(ProxyError::V1(_))),
                "{bad:?}"
            );
        }
        let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 120], b"\r\n"].concat();
        assert!(matches!(parse(&long).await.0, Err(ProxyError::V1(_))));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4").await.0,
            Err(ProxyError::Io(_))
        ));
    }

    #[tokio::test]
    async fn no_header_is_refused() {
        assert!(matches!(
            parse(b"EHLO client.example\r\n").await.0,
            Err(ProxyError::Missing)
        ));
    }

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let len = (body.len() as u16).to_be_bytes();
        [&V2_SIGNATURE[..], &[0x20 | cmd, family], &len, body].concat()
    }

    #[tokio::test]
    async fn v2_ipv4_and_ipv6_with_tlvs_leave_the_smtp_stream_alone() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0, 25];
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xAA]); // a TLV: ignored
        let bytes = [v2(1, 0x11, &body), b"EHLO x\r\n".to_vec()].concat();
        let (h, rest) = parse(&bytes).await;
        assert_eq!(h.unwrap(), proxied("192.0.2.7:40000", "198.51.100.1:25"));
        assert_eq!(rest, b"EHLO x\r\n");
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0xff, 0xff, 0x02, 0x4b]);
        let (h, _) = parse(&v2(1, 0x21, &body)).await;
        assert_eq!(
            h.unwrap(),
            proxied("[2001:db8::7]:65535", "[2001:db8::1]:587")
        );
    }

    #[tokio::test]
    async fn v2_local_and_unspec_keep_the_connection_addresses() {
        assert_eq!(
            parse(&v2(0, 0x00, &[])).await.0.unwrap(),
            ProxyHeader::Local
        );
        assert_eq!(
            parse(&v2(0, 0x11, &[0; 12])).await.0.unwrap(),
            ProxyHeader::Local
        );
        assert_eq!(
            parse(&v2(1, 0x00, &[])).await.0.unwrap(),
            ProxyHeader::Local
        );
    }

    #[tokio::test]
    async fn v2_malformed_headers_are_refused() {
        let short = v2(1, 0x11, &[1, 2, 3]);
        assert!(matches!(parse(&short).await.0, Err(ProxyError::V2(_))));
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert!(matches!(
            parse(&bad_version).await.0,
            Err(ProxyError::V2(_))
        ));
        assert!(matches!(
            parse(&v2(2, 0x11, &[0; 12])).await.0,
            Err(ProxyError::V2(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x41, &[0; 12])).await.0,
            Err(ProxyError::V2(_))
        ));
        let mut sig = v2(1, 0x11, &[0; 12]);
        sig[8] = b'X';
        assert!(matches!(parse(&sig).await.0, Err(ProxyError::V2(_))));
        let mut huge = v2(1, 0x11, &[0; 12]);
        huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert!(matches!(parse(&huge).await.0, Err(ProxyError::V2(_))));
        // Truncated: the stream ends inside the header.
        let cut = v2(1, 0x11, &[0; 12]);
        assert!(matches!(parse(&cut[..20]).await.0, Err(ProxyError::Io(_))));
    }

    #[tokio::test]
    async fn client_of_checks_the_peer_then_reads_the_header() {
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let from: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut r = &b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\n"[..];
        assert_eq!(
            client_of(&mut r, proxy, &from).await,
            "192.0.2.7:40000".parse().ok()
        );
        let mut r = &v2(0, 0, &[])[..];
        assert_eq!(client_of(&mut r, proxy, &from).await, Some(proxy));
        let mut r = &b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\n"[..];
        let outsider: SocketAddr = "192.0.2.9:5000".parse().unwrap();
        assert_eq!(client_of(&mut r, outsider, &from).await, None);
        let mut r = &b"EHLO x\r\n"[..];
        assert_eq!(client_of(&mut r, proxy, &from).await, None);
    }

    #[test]
    fn only_listed_networks_may_send_headers() {
        let from: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(allowed("10.1.2.3".parse().unwrap(), &from));
        assert!(allowed("::ffff:10.1.2.3".parse().unwrap(), &from));
        assert!(allowed("::1".parse().unwrap(), &from));
        assert!(!allowed("192.0.2.1".parse().unwrap(), &from));
        assert!(!allowed("10.0.0.1".parse().unwrap(), &[]));
    }
}

//! Fetching a policy file: `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461 3.3).
//!
//! The host name is resolved with delivery's own resolver, the certificate must verify for it
//! against delivery's trust anchors (the Mozilla roots and `delivery.tls.ca_file`), redirects
//! are not followed (3.3: only a `200` counts), the body must be `text/plain`, and the whole
//! fetch is bounded in time and in size (64 KiB, as 3.3 suggests).

use crate::dns::Dns;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// RFC 8461 3.3: "senders SHOULD impose a limit on the response size", 64 KiB suggested.
pub const MAX_POLICY_SIZE: usize = 64 * 1024;
/// The status line and headers may take this much besides.
const MAX_HEAD: usize = 16 * 1024;

/// Where and how to fetch.
#[derive(Clone)]
pub struct FetchOptions {
    pub port: u16,
    pub timeout: Duration,
    pub ipv6: bool,
    pub tls: Arc<ClientConfig>,
}

/// The policy text of `domain`, or why there is none.
pub async fn fetch(dns: &dyn Dns, domain: &str, opts: &FetchOptions) -> Result<String, String> {
    let host = format!("mta-sts.{domain}");
    let work = async {
        let addrs = dns
            .addresses(&host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let mut last = format!("{host}: no address");
        for ip in addrs.into_iter().filter(|a| opts.ipv6 || a.is_ipv4()) {
            match get(&host, SocketAddr::new(ip, opts.port), &opts.tls).await {
                Ok(text) => return Ok(text),
                Err(e) => last = format!("{host}[{ip}]: {e}"),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(opts.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("{host}: policy fetch timed out")),
    }
}

async fn get(host: &str, addr: SocketAddr, tls: &Arc<ClientConfig>) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: corvid\r\n\
         Accept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(body) = complete(&buf)? {
            return String::from_utf8(body).map_err(|_| "policy is not UTF-8".into());
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Servers often close without close_notify; what arrived is judged as it is.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.to_string()),
        };
        if n == 0 {
            return match finish_at_eof(&buf)? {
                Some(body) => String::from_utf8(body).map_err(|_| "policy is not UTF-8".into()),
                None => Err("connection closed before the policy was complete".into()),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_POLICY_SIZE + MAX_HEAD {
            return Err(format!("policy larger than {MAX_POLICY_SIZE} octets"));
        }
    }
}

/// How the body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// The response head once complete: the body's start and framing. Errors for anything that
/// is not a `200` with `text/plain`.
fn head(buf: &[u8]) -> Result<Option<(usize, Framing)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let start = match resp
        .parse(buf)
        .map_err(|e| format!("bad HTTP response: {e}"))?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() > MAX_HEAD => {
            return Err("HTTP response head too long".into())
        }
        httparse::Status::Partial => return Ok(None),
    };
    // RFC 8461 3.3: a redirect is not followed, and only a 200 is a policy.
    match resp.code {
        Some(200) => {}
        Some(code) => return Err(format!("HTTP status {code}")),
        None => return Err("no HTTP status".into()),
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    // RFC 8461 3.2: the policy is served as text/plain.
    let media = header("content-type").unwrap_or_default();
    if media.split(';').next().map(str::trim) != Some("text/plain") {
        return Err(format!("media type {media:?}, not text/plain"));
    }
    let framing = if header("transfer-encoding").is_some_and(|t| t.ends_with("chunked")) {
        Framing::Chunked
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length".to_string())?;
        if len > MAX_POLICY_SIZE {
            return Err(format!("policy larger than {MAX_POLICY_SIZE} octets"));
        }
        Framing::Length(len)
    } else {
        Framing::Close
    };
    Ok(Some((start, framing)))
}

/// The body, once the buffer holds all of it.
fn complete(buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let Some((start, framing)) = head(buf)? else {
        return Ok(None);
    };
    let rest = &buf[start..];
    Ok(match framing {
        Framing::Length(n) if rest.len() >= n => Some(rest[..n].to_vec()),
        Framing::Chunked => dechunk(rest)?,
        _ => None,
    })
}

/// The body when the peer closed the connection.
fn finish_at_eof(buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let Some((start, framing)) = head(buf)? else {
        return Ok(None);
    };
    Ok(match framing {
        Framing::Close => Some(buf[start..].to_vec()),
        _ => None,
    })
}

/// Decodes a chunked body (RFC 9112 7.1) when it is complete; trailers are skipped.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        if body.len() + size > MAX_POLICY_SIZE {
            return Err(format!("policy larger than {MAX_POLICY_SIZE} octets"));
        }
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n";

    #[test]
    fn bodies_by_length_chunks_and_close() {
        let r = format!("{OK}Content-Length: 5\r\n\r\nhello");
        assert_eq!(complete(r.as_bytes()).unwrap().unwrap(), b"hello");
        assert_eq!(complete(&r.as_bytes()[..r.len() - 1]).unwrap(), None);
        let r =
            format!("{OK}Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n");
        assert_eq!(complete(r.as_bytes()).unwrap().unwrap(), b"hello");
        let r = format!("{OK}\r\nhello");
        assert_eq!(complete(r.as_bytes()).unwrap(), None);
        assert_eq!(finish_at_eof(r.as_bytes()).unwrap().unwrap(), b"hello");
    }

    #[test]
    fn refusals() {
        let redirect =
            "HTTP/1.1 301 Moved\r\nLocation: https://x/\r\nContent-Type: text/plain\r\n\r\n";
        assert!(complete(redirect.as_bytes()).unwrap_err().contains("301"));
        let html = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1\r\n\r\nx";
        assert!(complete(html.as_bytes()).unwrap_err().contains("text/html"));
        let big = format!("{OK}Content-Length: {}\r\n\r\n", MAX_POLICY_SIZE + 1);
        assert!(complete(big.as_bytes()).is_err());
        let chunks = format!(
            "{OK}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_POLICY_SIZE + 1
        );
        assert!(complete(chunks.as_bytes()).is_err());
    }
}

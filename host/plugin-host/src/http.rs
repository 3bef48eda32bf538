//! The `http` capability: `wasi:http` outgoing requests, only to the URL prefixes the
//! manifest lists (`http = ["http://127.0.0.1:11333/"]`).
//!
//! - A request is allowed when its scheme, host and port equal a prefix's (ports compared
//!   after the scheme's default is applied, hosts case-insensitively) and its path starts
//!   with the prefix's path. An authority with userinfo (`127.0.0.1:11333@evil`), a path
//!   with dot segments (`/../`, `%2e`) or a backslash, or any other destination is refused
//!   with `error-code.HTTP-request-denied`, before any connection is made. A plugin without
//!   prefixes has every request refused.
//! - Redirects are not followed: a 3xx reaches the plugin, and a new request to its
//!   `location` is checked again like any other.
//! - Each request has its own deadline (`limits.http_timeout_ms`, never past the hook's
//!   wall-time backstop, which also covers a plugin blocked on a response) for connecting,
//!   the headers and the whole body, and a response-size cap
//!   (`limits.http_max_response_bytes`, by `Content-Length` up front and by the bytes read).
//!   The host reads the whole body before the plugin gets the response, so the request
//!   fails with `HTTP-response-body-size` past the cap and with `HTTP-response-timeout` past
//!   the deadline (the plugin's own request options cannot extend it).
//! - Host names resolve through the system resolver when connecting; HTTPS uses the
//!   webpki roots.

use crate::manifest::Manifest;
use bytes::Bytes;
use http::uri::{Scheme, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One allowed URL prefix, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Prefix {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl Prefix {
    fn parse(text: &str) -> Result<Prefix, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("http prefix {text:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            _ => {
                return Err(format!(
                    "http prefix {text:?}: the scheme must be http or https"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("http prefix {text:?}: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("http prefix {text:?}: userinfo is not allowed"));
        }
        if uri.query().is_some() || !clean_path(uri.path()) {
            return Err(format!(
                "http prefix {text:?}: no query or dot segments in a prefix"
            ));
        }
        let path = match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        Ok(Prefix {
            https,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            path,
        })
    }

    fn permits(&self, uri: &Uri) -> bool {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return false,
        };
        let Some(authority) = uri.authority() else {
            return false;
        };
        // `127.0.0.1:11333@evil` names the host `evil`; refuse userinfo outright.
        if authority.as_str().contains('@') || https != self.https {
            return false;
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !authority.host().eq_ignore_ascii_case(&self.host) || port != self.port {
            return false;
        }
        let path = uri.path();
        if !clean_path(path) || !path.starts_with(&self.path) {
            return false;
        }
        // `/api` allows `/api`, `/api/x` and `/api?q`, not `/apix`.
        self.path.ends_with('/')
            || path.len() == self.path.len()
            || path[self.path.len()..].starts_with('/')
    }
}

/// True for an absolute path without dot segments (plain or percent-encoded) or
/// backslashes, which a server could resolve outside the prefix (RFC 3986 section 5.2.4).
fn clean_path(path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    let lower = path.to_ascii_lowercase();
    path.starts_with('/')
        && !lower.contains("%2e")
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && !path.contains('\\')
        && path.split('/').all(|seg| seg != "." && seg != "..")
}

/// What a plugin may send and how long and how much it may read.
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpPolicy {
    allow: Vec<Prefix>,
    timeout: Duration,
    max_response: u64,
}

impl HttpPolicy {
    /// The manifest's `http` prefixes and limits; `Err` names a prefix that does not parse.
    pub(crate) fn from_manifest(m: &Manifest) -> Result<HttpPolicy, String> {
        Ok(HttpPolicy {
            allow: m
                .http
                .iter()
                .map(|p| Prefix::parse(p))
                .collect::<Result<_, _>>()?,
            timeout: Duration::from_millis(m.limits.http_timeout_ms),
            max_response: m.limits.http_max_response_bytes,
        })
    }

    /// True when `uri` falls under one of the prefixes.
    pub(crate) fn permits(&self, uri: &Uri) -> bool {
        self.allow.iter().any(|p| p.permits(uri))
    }
}

/// The `wasi:http` hooks of one store: the plugin's policy and the current hook's deadline.
pub(crate) struct HttpHooks {
    pub(crate) policy: std::sync::Arc<HttpPolicy>,
    pub(crate) plugin: String,
    /// The wall-time backstop of the hook being called (refreshed before each use).
    pub(crate) deadline: Instant,
}

type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type Sent = Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), HttpError>> + Send>;

impl WasiHttpHooks for HttpHooks {
    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS
    }

    fn default_scheme(&mut self) -> Option<Scheme> {
        // A request must say its scheme, so that it is checked against what it will use.
        None
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Io,
    ) -> Sent {
        if !self.policy.permits(request.uri()) {
            // The URI may hold anything the plugin chose; log it escaped.
            let uri = request.uri().to_string().escape_debug().to_string();
            tracing::warn!(plugin = %self.plugin, %uri, "http request denied: not in the plugin's http prefixes");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        // `corvid plugin test`: the script's answers, never the network.
        if let Some(answers) = crate::http_answers::installed() {
            return crate::http_answers::send(answers.as_ref(), &self.plugin, request);
        }
        let until = (Instant::now() + self.policy.timeout).min(self.deadline);
        let left = until.saturating_duration_since(Instant::now());
        // The plugin's own request options cannot extend the deadline.
        let options = RequestOptions {
            connect_timeout: Some(left),
            first_byte_timeout: Some(left),
            between_bytes_timeout: Some(left),
        };
        let max = self.policy.max_response;
        // A recorded session keeps the answer (`[record]`); the request's headers stay out.
        let recorded = crate::record::current()
            .map(|id| (id, request.method().to_string(), request.uri().to_string()));
        Box::new(async move {
            let got = fetch(request, options, until, max).await;
            if let Some((id, method, url)) = &recorded {
                crate::record::note(*id, |a| match &got {
                    Ok((parts, body)) => a.http(method, url, parts, body),
                    Err(_) => a.http_failed(method, url),
                });
            }
            let (parts, bytes) = got?;
            let body = Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync();
            let done: Io = Box::new(async { Ok(()) });
            Ok((http::Response::from_parts(parts, body), done))
        })
    }
}

/// Sends `request` and reads its whole answer, by `until` and within `max` bytes.
async fn fetch(
    request: http::Request<WasiBody>,
    options: RequestOptions,
    until: Instant,
    max: u64,
) -> Result<(http::response::Parts, Bytes), HttpError> {
    let sent = tokio::time::timeout_at(
        until.into(),
        wasmtime_wasi_http::default_send_request(request, Some(options)),
    )
    .await;
    let (res, io) = match sent {
        Ok(r) => r?,
        Err(_) => return Err(HttpError::HttpResponseTimeout),
    };
    let declared = res
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(HttpError::HttpResponseBodySize(declared));
    }
    // The body is read here, under the deadline and the cap, so that the plugin gets a typed
    // error for both (wasmtime-wasi-http 48 hands body-stream errors to the guest without
    // their `error-code`), and the connection is driven meanwhile.
    let io = tokio::spawn(io);
    let (parts, body) = res.into_parts();
    let capped = Capped {
        inner: body.boxed_unsync(),
        read: 0,
        max,
    };
    let read = tokio::time::timeout_at(until.into(), capped.collect()).await;
    io.abort();
    match read {
        Ok(Ok(collected)) => Ok((parts, collected.to_bytes())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HttpError::HttpResponseTimeout),
    }
}

/// A response body that fails past the size cap.
struct Capped<B> {
    inner: B,
    read: u64,
    max: u64,
}

impl<B: Body<Data = Bytes, Error = HttpError> + Unpin> Body for Capped<B> {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            this.read = this.read.saturating_add(data.map_or(0, |d| d.len() as u64));
            if this.read > this.max {
                return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(this.read)))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(prefixes: &[&str]) -> HttpPolicy {
        let mut m = Manifest::new("p", "p.wasm");
        m.http = prefixes.iter().map(|s| s.to_string()).collect();
        HttpPolicy::from_manifest(&m).expect("prefixes parse")
    }

    fn ok(p: &HttpPolicy, uri: &str) -> bool {
        p.permits(&uri.parse::<Uri>().expect("uri"))
    }

    #[test]
    fn only_the_listed_prefixes_pass() {
        let p = policy(&["http://127.0.0.1:11333/", "https://Filter.example/api"]);
        assert!(ok(&p, "http://127.0.0.1:11333/checkv2"));
        assert!(ok(&p, "http://127.0.0.1:11333"));
        assert!(ok(&p, "https://filter.example:443/api/v1?x=1"));
        assert!(ok(&p, "https://filter.example/api"));
        assert!(!ok(&p, "https://filter.example/apix"), "path boundary");
        assert!(!ok(&p, "http://127.0.0.1:11334/checkv2"), "other port");
        assert!(!ok(&p, "http://127.0.0.1/checkv2"), "default port 80");
        assert!(!ok(&p, "https://127.0.0.1:11333/"), "other scheme");
        assert!(!ok(&p, "http://127.0.0.2:11333/"), "other host");
        assert!(!ok(&p, "http://127.0.0.1:11333@evil.example/"), "userinfo");
        assert!(!ok(&p, "http://user@127.0.0.1:11333/"), "userinfo");
        assert!(
            !ok(&p, "http://127.0.0.1.evil.example:11333/"),
            "host suffix"
        );
        assert!(
            !ok(&p, "https://filter.example/api/../admin"),
            "dot segment"
        );
        assert!(
            !ok(&p, "https://filter.example/api/%2E%2E/admin"),
            "encoded dots"
        );
        assert!(
            !ok(&p, "https://filter.example/api%2f..%2fadmin"),
            "encoded slash"
        );
        assert!(
            !ok(&p, "https://filter.example/api/%5c..%5cadmin"),
            "encoded backslash"
        );
        assert!(!ok(&policy(&[]), "http://127.0.0.1:11333/"), "no grant");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in [
            "ftp://x/",
            "/relative",
            "http://u@host/",
            "http://h/a/../b",
            "http://h/?q",
        ] {
            let mut m = Manifest::new("p", "p.wasm");
            m.http = vec![bad.to_string()];
            assert!(HttpPolicy::from_manifest(&m).is_err(), "{bad} accepted");
        }
    }
}

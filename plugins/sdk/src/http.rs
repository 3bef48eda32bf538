//! Outgoing HTTP requests (`wasi:http`), for plugins granted the `http` capability.
//!
//! The manifest lists the URL prefixes the plugin may reach:
//!
//! ```toml
//! [[plugin]]
//! name = "rspamd"
//! http = ["http://127.0.0.1:11333/"]
//! limits = { http_timeout_ms = 3000, http_max_response_bytes = 1048576 }
//! ```
//!
//! Any other destination (another host, port, scheme or path, userinfo in the authority,
//! dot segments in the path) fails with [`HttpError::Denied`] before a connection is made,
//! and so does every request of a plugin without prefixes. Redirects are not followed: the
//! 3xx response is returned. A request fails with [`HttpError::Timeout`] past
//! `limits.http_timeout_ms` (and never outlives the hook's wall-time limit), and with
//! [`HttpError::TooLarge`] when the response body exceeds `limits.http_max_response_bytes`.
//!
//! ```ignore
//! use corvid_plugin_sdk::http;
//! match http::post("http://127.0.0.1:11333/checkv2", &[("Pass", "all")], raw) {
//!     Ok(r) if r.status == 200 => { /* r.body */ }
//!     Ok(r) => { /* an HTTP error status */ }
//!     Err(e) => { /* denied, timed out, too large, failed */ }
//! }
//! ```
//!
//! Calls block the hook (the plugin runs one call at a time); the time counts against it.

/// A response: status, headers (in order, lower-case names) and the whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The destination is not in the manifest's `http` prefixes (or the plugin has none).
    Denied,
    /// The request's deadline passed (connecting, waiting for or reading the response).
    Timeout,
    /// The response body is larger than the manifest allows.
    TooLarge,
    /// The URL or a header could not be used.
    Invalid(String),
    /// Any other failure (connection refused, protocol error, ...), described.
    Failed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied => f.write_str("request denied by the host"),
            HttpError::Timeout => f.write_str("timed out"),
            HttpError::TooLarge => f.write_str("response too large"),
            HttpError::Invalid(s) => write!(f, "invalid request: {s}"),
            HttpError::Failed(s) => write!(f, "failed: {s}"),
        }
    }
}

/// `GET url`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
    send("GET", url, headers, &[])
}

/// `POST url` with `body`.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, HttpError> {
    send("POST", url, headers, body)
}

/// Splits `scheme://authority/path?query` without judging it: the host decides what is
/// allowed, so the authority is passed on as written.
fn split(url: &str) -> Result<(bool, &str, String), HttpError> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(HttpError::Invalid(format!("not an http(s) URL: {url}")));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok((https, authority, path))
}

#[cfg(target_arch = "wasm32")]
pub use wasm::send;

/// Sends a request and reads the whole response. `body` is sent with a `Content-Length`.
#[cfg(not(target_arch = "wasm32"))]
pub fn send(
    _method: &str,
    url: &str,
    _headers: &[(&str, &str)],
    _body: &[u8],
) -> Result<Response, HttpError> {
    split(url)?;
    Err(HttpError::Failed(
        "wasi:http is only available in wasm32".into(),
    ))
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::{split, HttpError, Response};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody,
        OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    fn code(e: ErrorCode) -> HttpError {
        match e {
            ErrorCode::HttpRequestDenied => HttpError::Denied,
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::HttpResponseTimeout => HttpError::Timeout,
            ErrorCode::HttpResponseBodySize(_) => HttpError::TooLarge,
            ErrorCode::HttpRequestUriInvalid => HttpError::Invalid("URL".into()),
            other => HttpError::Failed(format!("{other:?}")),
        }
    }

    /// Sends a request and reads the whole response. `body` is sent with a
    /// `Content-Length`.
    pub fn send(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let (https, authority, path) = split(url)?;
        let mut list: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        if !body.is_empty() || method != "GET" {
            list.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        let fields =
            Fields::from_list(&list).map_err(|e| HttpError::Invalid(format!("headers: {e:?}")))?;
        let req = OutgoingRequest::new(fields);
        let method = match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "HEAD" => Method::Head,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_string()),
        };
        let scheme = if https { Scheme::Https } else { Scheme::Http };
        let bad = |what: &str| HttpError::Invalid(what.to_string());
        req.set_method(&method).map_err(|()| bad("method"))?;
        req.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
        req.set_authority(Some(authority))
            .map_err(|()| bad("authority"))?;
        req.set_path_with_query(Some(&path))
            .map_err(|()| bad("path"))?;
        let out = req.body().map_err(|()| bad("body"))?;
        // Sent before the body is written: the host buffers little of it.
        let future = outgoing_handler::handle(req, None).map_err(code)?;
        // A write fails when the host refused or dropped the request; the response says why.
        let _ = write_body(out, body);
        read(wait(&future)?)
    }

    fn write_body(out: OutgoingBody, body: &[u8]) -> Result<(), ()> {
        {
            let stream = out.write()?;
            for chunk in body.chunks(4096) {
                stream.blocking_write_and_flush(chunk).map_err(|_| ())?;
            }
        }
        OutgoingBody::finish(out, None).map_err(|_| ())
    }

    fn wait(future: &FutureIncomingResponse) -> Result<IncomingResponse, HttpError> {
        loop {
            match future.get() {
                Some(Ok(Ok(r))) => return Ok(r),
                Some(Ok(Err(e))) => return Err(code(e)),
                Some(Err(())) => return Err(HttpError::Failed("response taken twice".into())),
                None => future.subscribe().block(),
            }
        }
    }

    fn read(resp: IncomingResponse) -> Result<Response, HttpError> {
        let status = resp.status();
        let headers = resp.headers().entries();
        let incoming = resp
            .consume()
            .map_err(|()| HttpError::Failed("no body".into()))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| HttpError::Failed("no body stream".into()))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(bytes) => body.extend_from_slice(&bytes),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(match wasip2::http::types::http_error_code(&e) {
                            Some(c) => code(c),
                            None => HttpError::Failed(e.to_debug_string()),
                        });
                    }
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_without_judging_the_authority() {
        assert_eq!(
            split("http://127.0.0.1:11333/checkv2").expect("splits"),
            (false, "127.0.0.1:11333", "/checkv2".to_string())
        );
        assert_eq!(
            split("https://h.example?x=1").expect("splits"),
            (true, "h.example", "/?x=1".to_string())
        );
        assert_eq!(
            split("http://h").expect("splits"),
            (false, "h", "/".to_string())
        );
        // The host, not the SDK, refuses this one (its host is `evil`).
        assert_eq!(
            split("http://127.0.0.1:11333@evil/").expect("splits").1,
            "127.0.0.1:11333@evil"
        );
        assert!(matches!(split("ftp://x/"), Err(HttpError::Invalid(_))));
    }
}

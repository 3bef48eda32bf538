//! Scripted `wasi:http` answers: `corvid plugin test` installs the responses its script gives
//! by URL, and a request the manifest's `http` prefixes allow is answered from them instead
//! of the network. A request with no scripted answer fails (`error-code.internal-error`,
//! with a message naming it) and never reaches the network.
//!
//! Process-wide like [`crate::clock`]: [`install`] before the requests it is to answer (each
//! capture of a `corvid plugin replay` installs its own). A server installs nothing.

use crate::clock::Slot;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// A scripted response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Where the answers come from.
pub trait HttpAnswers: Send + Sync {
    /// The response to `method` `url` from `plugin`; `None` when none is scripted.
    fn answer(&self, plugin: &str, method: &str, url: &str) -> Option<HttpAnswer>;
}

static INSTALLED: Slot<dyn HttpAnswers> = Slot::new();

/// Makes `answers` answer every allowed `wasi:http` request from now on (`None`: the network
/// again), in place of any installed before.
pub fn install(answers: Option<Arc<dyn HttpAnswers>>) {
    INSTALLED.set(answers);
}

/// The installed answers, if any.
pub(crate) fn installed() -> Option<Arc<dyn HttpAnswers>> {
    INSTALLED.get()
}

type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type Sent = Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), HttpError>> + Send>;

/// Answers `request` from `answers`, without any I/O: what `send_request` returns for it,
/// after its prefix check, when answers are installed.
pub(crate) fn send(
    answers: &dyn HttpAnswers,
    plugin: &str,
    request: http::Request<WasiBody>,
) -> Sent {
    let url = request.uri().to_string();
    let method = request.method().as_str().to_string();
    let answer = answers.answer(plugin, &method, &url);
    let (_, body) = request.into_parts();
    let plugin = plugin.to_string();
    Box::new(async move {
        // The guest may still be writing the request body: drain it so its writes succeed.
        tokio::spawn(async move {
            let _ = body.collect().await;
        });
        let Some(a) = answer else {
            tracing::warn!(%plugin, %method, url = %url.escape_debug(), "http request with no scripted answer");
            let why = format!("corvid plugin test: no scripted answer for {method} {url}");
            return Err(HttpError::InternalError(Some(why)));
        };
        let response = response(a).map_err(|e| HttpError::InternalError(Some(e)))?;
        let done: Io = Box::new(async { Ok(()) });
        Ok((response, done))
    })
}

/// The scripted answer as an HTTP response; `Err` says what in it is not valid HTTP.
pub fn response(a: HttpAnswer) -> Result<http::Response<WasiBody>, String> {
    let mut b = http::Response::builder().status(a.status);
    for (name, value) in &a.headers {
        b = b.header(name.as_str(), value.as_str());
    }
    let body = Full::new(Bytes::from(a.body))
        .map_err(|never| match never {})
        .boxed_unsync();
    b.body(body)
        .map_err(|e| format!("scripted http answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One;

    impl HttpAnswers for One {
        fn answer(&self, _: &str, method: &str, url: &str) -> Option<HttpAnswer> {
            (method == "POST" && url == "http://127.0.0.1:11333/checkv2").then(|| HttpAnswer {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: b"{\"action\":\"no action\"}".to_vec(),
            })
        }
    }

    fn request(method: &str, url: &str) -> http::Request<WasiBody> {
        let body = Full::new(Bytes::from_static(b"message"))
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::builder()
            .method(method)
            .uri(url)
            .body(body)
            .expect("valid request")
    }

    #[tokio::test]
    async fn a_scripted_url_is_answered_and_another_fails_clearly() {
        let sent = send(&One, "p", request("POST", "http://127.0.0.1:11333/checkv2"));
        let (res, _io) = Box::into_pin(sent).await.expect("answered");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let body = res.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"{\"action\":\"no action\"}");
        let sent = send(&One, "p", request("GET", "http://127.0.0.1:11333/checkv2"));
        match Box::into_pin(sent).await {
            Err(HttpError::InternalError(Some(why))) => {
                assert!(why.contains("no scripted answer for GET http://127.0.0.1:11333/checkv2"))
            }
            other => panic!("expected an internal error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn invalid_answers_are_refused() {
        let bad = |status, header: &str| {
            response(HttpAnswer {
                status,
                headers: vec![(header.into(), "v".into())],
                body: Vec::new(),
            })
        };
        assert!(bad(200, "x-ok").is_ok());
        assert!(bad(1000, "x-ok").is_err());
        assert!(bad(200, "bad header").is_err());
    }
}

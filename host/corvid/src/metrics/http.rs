//! A minimal HTTP/1.x server for two read-only paths, `GET /metrics` and `GET /healthz`. It is
//! small on purpose (no HTTP library in the tree): one request per connection, the request head
//! bounded in size and time, a cap on connections at once, `Connection: close` always.

use super::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest request head read (request line and headers); a scrape's is a few hundred octets.
const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request head and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once (a scraper opens one or two).
const MAX_CONNECTIONS: usize = 16;

/// The OpenMetrics text format (what prometheus-client writes).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "metrics accept failed");
                    // Out of file descriptors, typically: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, metrics)).await {
                Ok(Err(e)) => debug!(error = %e, "metrics request failed"),
                Err(_) => debug!("metrics request timed out"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let (status, content_type, body) = match route(&head) {
        Route::Metrics => {
            let m = Arc::clone(&metrics);
            // Encoding reads the plugin host's tables; it is short, but off the async threads.
            let body = tokio::task::spawn_blocking(move || m.encode())
                .await
                .unwrap_or_default();
            ("200 OK", OPENMETRICS, body)
        }
        Route::Health if metrics.ready() => ("200 OK", "text/plain", "ok\n".to_string()),
        Route::Health => (
            "503 Service Unavailable",
            "text/plain",
            "starting or stopping\n".to_string(),
        ),
        Route::NotFound => ("404 Not Found", "text/plain", "not found\n".to_string()),
        Route::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
        Route::Bad => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if !head.starts_with(b"HEAD ") {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Reads up to the blank line ending the request head, at most [`MAX_REQUEST`] octets; a
/// longer or unfinished head is answered 400 by `route` (it lacks the blank line).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    buf.truncate(MAX_REQUEST);
    Ok(buf)
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Health,
    NotFound,
    BadMethod,
    Bad,
}

fn route(head: &[u8]) -> Route {
    let complete =
        head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if !complete || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Route::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Route::BadMethod;
    }
    // A query string (`/metrics?x=1`, as some scrapers send) does not change the answer.
    match target.split('?').next().unwrap_or_default() {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Health,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?a=b HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"HEAD /healthz HTTP/1.1\r\n\r\n"), Route::Health);
        assert_eq!(route(b"GET /healthz HTTP/1.1\n\n"), Route::Health);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(b"GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        // No blank line: the head was cut at the size limit or the client stopped.
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Route::Bad);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::Bad);
        assert_eq!(route(b"\x16\x03\x01 TLS"), Route::Bad);
    }
}

//! The `http` capability against a hostile plugin (`tests/fixtures/httpwit`, which GETs any
//! URL it is handed as the HELO name) and a real HTTP server on loopback: only the manifest's
//! prefixes are reached, a response is capped in size and time, the hook's backstop holds,
//! and the server keeps serving.

mod common;

use common::*;
use corvid_plugin_host::{Error, Manifest, PluginHost};
use corvid_types::{Policy, Verdict};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn httpwit_wasm() -> PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("../../target/plugins");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
            .current_dir(root.join("tests/fixtures/httpwit"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building fixture httpwit failed");
        target.join("wasm32-wasip2/release/fixture_httpwit.wasm")
    })
    .clone()
}

/// A loopback HTTP/1.1 server: `/ok` (5 bytes), `/big` (2 MiB with a Content-Length),
/// `/stream` (2 MiB, close-delimited, no length), `/slow` (answers after 30 s),
/// `/redirect` (302 elsewhere). Counts the requests it read.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn server() -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s, counter.clone()));
        }
    });
    Server { port, hits }
}

async fn serve(mut s: TcpStream, hits: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let line = String::from_utf8_lossy(&buf);
    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
    let big = vec![b'x'; 2 << 20];
    let _ = match path.as_str() {
        "/ok" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .await
        }
        "/big" => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len());
            let _ = s.write_all(head.as_bytes()).await;
            s.write_all(&big).await
        }
        "/stream" => {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .await;
            s.write_all(&big).await
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
        }
        "/redirect" => {
            s.write_all(
                b"HTTP/1.1 302 Found\r\nLocation: http://evil.invalid/\r\nContent-Length: 0\r\n\r\n",
            )
            .await
        }
        _ => {
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await
        }
    };
}

fn manifest(prefixes: &[String]) -> Manifest {
    let mut m = Manifest::new("httpwit", httpwit_wasm());
    m.http = prefixes.to_vec();
    m.limits.hook_time_ms = 5_000;
    m.limits.http_timeout_ms = 500;
    m.limits.http_max_response_bytes = 64 << 10;
    m
}

async fn host_of(m: Manifest) -> PluginHost {
    let h = host();
    h.reload(vec![m]).await.expect("loads");
    h
}

/// The fixture's outcome for `url`: the reject text, or the verdict when it is not one.
async fn fetch(h: &PluginHost, url: &str) -> String {
    let mut c = conn(1);
    c.helo = Some(url.to_string());
    match h.session(&c).mail(&c, &envelope()).await.verdict {
        Verdict::Reject(r) => r.text(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_allowed_prefix_is_reached() {
    let (allowed, other) = (server().await, server().await);
    let base = format!("http://127.0.0.1:{}/", allowed.port);
    let h = host_of(manifest(std::slice::from_ref(&base))).await;

    assert_eq!(
        fetch(&h, &format!("{base}ok")).await,
        "ok status=200 len=5 location=-"
    );
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 1);

    let p = allowed.port;
    for hostile in [
        format!("http://127.0.0.1:{}/ok", other.port),
        format!("http://localhost:{p}/ok"),
        format!("http://127.0.0.1:{p}@127.0.0.1:{}/ok", other.port),
        format!("http://127.0.0.1:{p}@evil.invalid/ok"),
        format!("http://user@127.0.0.1:{p}/ok"),
        format!("https://127.0.0.1:{p}/ok"),
        format!("http://127.0.0.1:{p}/../ok"),
        format!("http://127.0.0.1.evil.invalid:{p}/ok"),
        format!("http://127.0.0.1:{}/ok", other.port),
    ] {
        assert_eq!(fetch(&h, &hostile).await, "denied", "{hostile}");
    }
    assert_eq!(other.hits.load(Ordering::SeqCst), 0, "never contacted");
    assert_eq!(
        allowed.hits.load(Ordering::SeqCst),
        1,
        "denied before sending"
    );

    // A redirect is handed to the plugin, not followed.
    assert_eq!(
        fetch(&h, &format!("{base}redirect")).await,
        "ok status=302 len=0 location=http://evil.invalid/"
    );
    assert_eq!(
        fetch(&h, &format!("{base}ok")).await,
        "ok status=200 len=5 location=-"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_grant_every_request_is_denied() {
    let s = server().await;
    let h = host_of(manifest(&[])).await;
    let url = format!("http://127.0.0.1:{}/ok", s.port);
    assert_eq!(fetch(&h, &url).await, "denied");
    assert_eq!(s.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_responses_are_capped() {
    let s = server().await;
    let base = format!("http://127.0.0.1:{}/", s.port);
    let h = host_of(manifest(std::slice::from_ref(&base))).await;
    assert_eq!(
        fetch(&h, &format!("{base}big")).await,
        "too-large",
        "by length"
    );
    assert_eq!(
        fetch(&h, &format!("{base}stream")).await,
        "too-large",
        "by bytes read"
    );
    assert_eq!(
        fetch(&h, &format!("{base}ok")).await,
        "ok status=200 len=5 location=-"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_server_times_out_and_the_server_keeps_going() {
    let s = server().await;
    let base = format!("http://127.0.0.1:{}/", s.port);
    let h = host_of(manifest(std::slice::from_ref(&base))).await;
    let t = Instant::now();
    assert_eq!(fetch(&h, &format!("{base}slow")).await, "timeout");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(
        took < Duration::from_millis(2_500),
        "http_timeout_ms: {took:?}"
    );
    assert_eq!(
        fetch(&h, &format!("{base}ok")).await,
        "ok status=200 len=5 location=-"
    );

    // A request timeout past the hook's limit is cut at the hook's limit.
    let mut m = manifest(std::slice::from_ref(&base));
    m.limits.http_timeout_ms = 60_000;
    m.limits.hook_time_ms = 700;
    let h = host_of(m).await;
    let t = Instant::now();
    let out = fetch(&h, &format!("{base}slow")).await;
    let took = t.elapsed();
    assert!(
        out == "timeout" || out.starts_with("Tempfail"),
        "the plugin's own timeout or the hook's failure policy: {out}"
    );
    assert!(
        took < Duration::from_millis(2_500),
        "hook_time_ms: {took:?}"
    );
    assert_eq!(
        fetch(&h, &format!("{base}ok")).await,
        "ok status=200 len=5 location=-"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_prefix_refuses_the_manifest() {
    let h = host();
    for bad in ["ftp://127.0.0.1/", "http://u@127.0.0.1/", "127.0.0.1:11333"] {
        let m = manifest(&[bad.to_string()]);
        match h.load(vec![m]).await {
            Err(Error::Manifest { reason, .. }) => assert!(reason.contains("prefix"), "{reason}"),
            other => panic!("{bad}: {:?}", other.map(|_| ())),
        }
    }
}

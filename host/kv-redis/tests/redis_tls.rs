//! `rediss://`: the store speaks TLS to a redis-server with a TLS port (certificates made
//! with openssl for the test), verifying the server against the trust store, which
//! rustls-native-certs reads from SSL_CERT_FILE. Its own test binary, because it sets that
//! variable for the whole process.

use corvid_kv_redis::{KvError, KvStore, RedisKv, RedisSettings};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

#[test]
fn rediss_urls_speak_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(d.join("ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "server.pem",
        ],
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args([
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "no",
                "--dir",
            ])
            .arg(d)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::env::set_var("SSL_CERT_FILE", d.join("ca.pem"));
    let mut settings = RedisSettings::new(format!("rediss://localhost:{port}/"));
    settings.timeout = Duration::from_secs(2);
    let kv = RedisKv::open(settings.clone()).unwrap();
    kv.set("p", b"k", b"over tls", None).unwrap();
    assert_eq!(
        kv.get("p", b"k").unwrap().as_deref(),
        Some(&b"over tls"[..])
    );
    assert_eq!(kv.increment("p", b"n", 2, None).unwrap(), 2);
    // The certificate is checked: it names localhost, not 127.0.0.1. A failed check is a
    // storage error, never a fall-back to plaintext.
    settings.url = format!("rediss://127.0.0.1:{port}/");
    let mismatch = RedisKv::open(settings).unwrap();
    assert!(matches!(mismatch.get("p", b"k"), Err(KvError::Storage(_))));
}

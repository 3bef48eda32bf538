//! Shared helpers of the plugin-host tests: build the fixture plugin for wasm32-wasip2 once
//! per test binary, one engine per test binary, and plain Corvid values to call hooks with.
#![allow(dead_code)]

use corvid_plugin_host::{EngineOptions, Manifest, PluginEngine, PluginHost, Services};
use corvid_types::{Address, ConnectionInfo, Envelope, Recipient};
use corvid_types::{SpfCheck, SpfIdentity, SpfVerdict};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds `tests/fixtures/<name>` (`behave`, or `behave-0.1.0`: the same idea against the
/// vendored first contract, or `authwit`: the auth-results one) with `cargo build --target wasm32-wasip2 --release` into
/// `target/plugins` and returns the component path. Each is built once per test binary.
pub fn fixture(name: &str) -> PathBuf {
    static BEHAVE: OnceLock<PathBuf> = OnceLock::new();
    static OLD: OnceLock<PathBuf> = OnceLock::new();
    static AUTHWIT: OnceLock<PathBuf> = OnceLock::new();
    let (cell, artifact) = match name {
        "behave" => (&BEHAVE, "fixture_behave.wasm"),
        "behave-0.1.0" => (&OLD, "fixture_behave_0_1_0.wasm"),
        "authwit" => (&AUTHWIT, "fixture_authwit.wasm"),
        other => panic!("no fixture {other}"),
    };
    cell.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        // The plugins' shared target dir (as `make plugins` and the e2e tests use): the
        // SDK and wit-bindgen are built for wasm32 once per checkout, not once more here.
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building fixture {name} failed (is the wasm32-wasip2 target installed?)"
        );
        target.join("wasm32-wasip2/release").join(artifact)
    })
    .clone()
}

/// Sends the host's logs to the test output (`RUST_LOG=corvid_plugin_host=debug`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn engine() -> PluginEngine {
    init_logs();
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            // CORVID_TEST_MAX_INSTANCES: a smaller pool for valgrind, which cannot reserve
            // the address space of 200 slots (callgrind on the hooks bench).
            let max_instances = std::env::var("CORVID_TEST_MAX_INSTANCES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(200);
            PluginEngine::new(EngineOptions {
                max_instances,
                ..EngineOptions::default()
            })
            .expect("engine")
        })
        .clone()
}

/// The compiled-code cache shared by the tests of this binary (compiling in a debug build
/// is slow; the cache makes it once per run).
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwasm-cache")
}

/// A host with the in-memory services and the shared cache.
pub fn host() -> PluginHost {
    PluginHost::new(&engine(), Services::in_memory(), Some(cache_dir()))
}

/// A manifest for the behave fixture with config `pairs` (`("mail", "reject")`, ...)
/// and a 5 s hook limit.
pub fn behave(name: &str, pairs: &[(&str, &str)]) -> Manifest {
    let mut m = Manifest::new(name, fixture("behave"));
    // Generous: debug builds on a loaded 2-core machine are slow. Tests of the time limit
    // set their own.
    m.limits.hook_time_ms = 5_000;
    for (k, v) in pairs {
        m.config
            .insert(k.to_string(), toml::Value::String(v.to_string()));
    }
    m
}

pub fn conn(session_id: u64) -> ConnectionInfo {
    ConnectionInfo {
        session_id,
        listener: "smtp".into(),
        local_addr: "127.0.0.1:25".parse().expect("addr"),
        peer_addr: "192.0.2.7:40000".parse().expect("addr"),
        peer_rdns: None,
        helo: Some("client.test".into()),
        esmtp: true,
        tls: None,
        auth_user: None,
    }
}

pub fn envelope() -> Envelope {
    Envelope {
        sender: Some(Address::new("alice", "sender.test")),
        ..Envelope::default()
    }
}

pub fn rcpt() -> Recipient {
    Recipient {
        address: Address::new("bob", "example.org"),
        params: Default::default(),
    }
}

/// The SPF result the server hands over at MAIL for [`envelope`] from [`conn`]'s client.
pub fn spf() -> SpfCheck {
    SpfCheck {
        result: SpfVerdict::Softfail,
        identity: SpfIdentity::Mailfrom,
        domain: "sender.test".into(),
        mail_from: "alice@sender.test".into(),
        helo: "client.test".into(),
        client_ip: "192.0.2.7".parse().expect("ip"),
        explanation: None,
    }
}

pub const MESSAGE: &[u8] =
    b"Subject: hello\r\nX-Remove: 1\r\nFrom: a@sender.test\r\n\r\nbody text\r\n";

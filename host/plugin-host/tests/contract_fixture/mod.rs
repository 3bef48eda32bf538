//! The `contract` fixture plugin (`tests/fixtures/contract`): the contract's additions
//! (DSN parameters of added recipients, delivery TLS), built once per test binary like
//! [`crate::common::fixture`] builds `behave`.

use corvid_plugin_host::Manifest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the fixture into `target/plugins` (shared with `make plugins` and the e2e tests).
pub fn wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let here = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target = here.join("../../target/plugins");
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
                .current_dir(here.join("tests/fixtures/contract"))
                .env("CARGO_TARGET_DIR", &target)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building fixture contract failed");
            target.join("wasm32-wasip2/release/fixture_contract.wasm")
        })
        .clone()
}

/// A manifest for the fixture: string settings `pairs`, and `adds` (a list) when not empty.
pub fn manifest(pairs: &[(&str, &str)], adds: &[&str]) -> Manifest {
    let mut m = Manifest::new("contract", wasm());
    m.limits.hook_time_ms = 5_000;
    for (k, v) in pairs {
        m.config
            .insert(k.to_string(), toml::Value::String(v.to_string()));
    }
    if !adds.is_empty() {
        let list = adds.iter().map(|a| toml::Value::String(a.to_string()));
        m.config
            .insert("adds".into(), toml::Value::Array(list.collect()));
    }
    m
}

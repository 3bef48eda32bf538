//! WIT changes keep compiled plugins working: the behave fixture as it was built against the
//! first `corvid:plugin@0.1.0` contract (before `lifecycle` existed and before the host
//! enforced fuel and WASI capabilities) loads and runs on this host.
//! `tests/fixtures/behave-wit-0.1.0-first.wasm` was built from commit 4ad3706~1.

mod common;

use common::*;
use corvid_plugin_host::Manifest;
use corvid_types::{MessageView, Modification, Policy, Verdict};
use std::path::Path;

fn old_behave(pairs: &[(&str, &str)]) -> Manifest {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/behave-wit-0.1.0-first.wasm");
    let mut m = Manifest::new("old", path);
    for (k, v) in pairs {
        m.config
            .insert(k.to_string(), toml::Value::String(v.to_string()));
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_the_first_contract_still_runs() {
    let host = host();
    let generation = host
        .reload(vec![old_behave(&[("mail", "reject"), ("data", "stamp")])])
        .await
        .expect("loads");
    assert!(generation.errors().is_empty(), "{:?}", generation.errors());
    let c = conn(1);
    let mut s = host.session(&c);
    assert!(matches!(
        s.mail(&c, &envelope()).await.verdict,
        Verdict::Reject(ref r) if r.code == 550
    ));
    let d = s
        .data(&c, &envelope(), MessageView { content: MESSAGE })
        .await;
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(d
        .modifications
        .iter()
        .any(|m| matches!(m, Modification::AddHeader { name, .. } if name == "X-Fixture")));
}

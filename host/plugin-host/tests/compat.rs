//! WIT changes keep compiled plugins working: the behave fixture as it was built against the
//! first `corvid:plugin@0.1.0` contract (before `lifecycle` and `context` existed and before the
//! host enforced fuel and WASI capabilities) loads and runs on this host.
//! `tests/fixtures/behave-0.1.0` is built from source here: its `wit/` is the contract as it
//! was at commit 4ad3706~1, used through wit-bindgen directly (no SDK).

mod common;

use common::*;
use corvid_plugin_host::Manifest;
use corvid_types::{MessageView, Modification, Policy, Verdict};

fn old_behave(pairs: &[(&str, &str)]) -> Manifest {
    let mut m = Manifest::new("old", fixture("behave-0.1.0"));
    for (k, v) in pairs {
        m.config
            .insert(k.to_string(), toml::Value::String(v.to_string()));
    }
    m
}

fn mentions(bytes: &[u8], name: &str) -> bool {
    bytes.windows(name.len()).any(|w| w == name.as_bytes())
}

#[test]
fn the_fixture_is_built_against_the_first_contract() {
    let bytes = std::fs::read(fixture("behave-0.1.0")).expect("built");
    assert!(mentions(&bytes, "corvid:plugin/config@0.1.0"));
    for later in [
        "corvid:plugin/lifecycle",
        "corvid:plugin/context",
        "corvid:plugin/hooks",
    ] {
        assert!(
            !mentions(&bytes, later),
            "the old fixture must not know {later}"
        );
    }
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

//! The `auth-results` import (`wit/auth.wit`): what each stage sees of the host's SPF, DKIM,
//! DMARC and ARC results, a plugin overriding the default DMARC policy by its data verdict,
//! and the signing choice (domain/selector, suppress), with the `authwit` fixture plugin.

mod common;

use common::{conn, engine, envelope, rcpt, spf, MESSAGE};
use corvid_plugin_host::{Manifest, PluginHost, Services};
use corvid_types::{
    ArcCheck, ArcVerdict, AuthResults, DkimCheck, DkimVerdict, DmarcCheck, DmarcPolicy,
    DmarcVerdict, MessageView, Policy, PolicySession, Reply, SigningChoice, SigningRequest,
    Verdict,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds `tests/fixtures/authwit` for wasm32-wasip2 (once per test binary) as the common
/// helper builds `behave`.
fn authwit_wasm() -> PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("../../target/plugins");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
            .current_dir(root.join("tests/fixtures/authwit"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building fixture authwit failed");
        target.join("wasm32-wasip2/release/fixture_authwit.wasm")
    })
    .clone()
}

fn manifest(name: &str, order: i32, pairs: &[(&str, &str)]) -> Manifest {
    let mut m = Manifest::new(name, authwit_wasm());
    m.order = order;
    m.limits.hook_time_ms = 5_000;
    for (k, v) in pairs {
        m.config
            .insert(k.to_string(), toml::Value::String(v.to_string()));
    }
    m
}

async fn host_of(manifests: Vec<Manifest>) -> PluginHost {
    let host = PluginHost::new(
        &engine(),
        Services::in_memory(),
        Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwasm-cache")),
    );
    host.reload(manifests).await.expect("loads");
    host
}

async fn host_with(pairs: &[(&str, &str)]) -> PluginHost {
    host_of(vec![manifest("authwit", 1, pairs)]).await
}

fn results(dmarc: DmarcVerdict) -> AuthResults {
    AuthResults {
        spf: Some(spf()),
        dkim: vec![
            DkimCheck {
                result: DkimVerdict::Pass,
                domain: "other.test".into(),
                selector: "s1".into(),
                algorithm: "ed25519-sha256".into(),
                identity: None,
                body_length: None,
                header_b: "abcdefgh".into(),
                reason: None,
            },
            DkimCheck {
                result: DkimVerdict::NotChecked,
                domain: "x.test".into(),
                selector: "s2".into(),
                algorithm: "rsa-sha256".into(),
                identity: None,
                body_length: None,
                header_b: "ijklmnop".into(),
                reason: None,
            },
        ],
        dmarc: DmarcCheck {
            result: dmarc,
            from_domain: "sender.test".into(),
            policy: DmarcPolicy::Reject,
            pct: 100,
            spf_aligned: false,
            dkim_aligned: false,
            reason: None,
        },
        arc: ArcCheck {
            result: ArcVerdict::None,
            sets: 0,
            reason: None,
        },
    }
}

fn text(v: &Verdict) -> String {
    match v {
        Verdict::Reject(r) => r.text().to_string(),
        other => panic!("expected a reject, got {other:?}"),
    }
}

async fn data(s: &mut Box<dyn PolicySession>) -> Verdict {
    let c = conn(1);
    s.data(&c, &envelope(), MessageView { content: MESSAGE })
        .await
        .verdict
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_and_rcpt_see_spf_only_data_sees_everything() {
    let c = conn(1);
    let host = host_with(&[
        ("report", "yes"),
        ("report_mail", "yes"),
        ("report_rcpt", "yes"),
    ])
    .await;
    let mut s = host.session(&c);
    // Not checked (or before MAIL): nothing.
    let d = s.mail(&c, &envelope()).await;
    assert_eq!(text(&d.verdict), "spf=- dkim= dmarc=- arc=-");
    s.end_transaction();

    s.auth_results(Some(&spf()), None);
    let d = s.mail(&c, &envelope()).await;
    let want_mail = "spf=softfail/mailfrom/sender.test dkim= dmarc=- arc=-";
    assert_eq!(text(&d.verdict), want_mail);
    let d = s.rcpt(&c, &envelope(), &rcpt()).await;
    assert_eq!(text(&d.verdict), want_mail);

    s.auth_results(Some(&spf()), Some(&results(DmarcVerdict::Fail)));
    assert_eq!(
        text(&data(&mut s).await),
        "spf=softfail/mailfrom/sender.test \
         dkim=pass/other.test/s1/ed25519-sha256,notchecked/x.test/s2/rsa-sha256 \
         dmarc=fail/reject/sender.test/100/00 arc=none/0"
    );
    // The next transaction starts without the previous message's results.
    s.end_transaction();
    let d = s.mail(&c, &envelope()).await;
    assert_eq!(text(&d.verdict), "spf=- dkim= dmarc=- arc=-");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_rejects_or_accepts_a_dmarc_failure() {
    let c = conn(1);
    let host = host_with(&[("dmarc", "reject")]).await;
    let mut s = host.session(&c);
    s.auth_results(Some(&spf()), None);
    s.mail(&c, &envelope()).await;
    s.auth_results(Some(&spf()), Some(&results(DmarcVerdict::Fail)));
    assert_eq!(
        data(&mut s).await,
        Verdict::Reject(Reply::new(550, "5.7.1", "DMARC policy violation"))
    );
    s.end_transaction();
    // A pass leaves the decision to the host (`continue`).
    s.auth_results(Some(&spf()), None);
    s.mail(&c, &envelope()).await;
    s.auth_results(Some(&spf()), Some(&results(DmarcVerdict::Pass)));
    assert_eq!(data(&mut s).await, Verdict::Continue);

    let host = host_with(&[("dmarc", "accept")]).await;
    let mut s = host.session(&c);
    s.auth_results(Some(&spf()), None);
    s.mail(&c, &envelope()).await;
    s.auth_results(Some(&spf()), Some(&results(DmarcVerdict::Fail)));
    assert_eq!(data(&mut s).await, Verdict::Accept);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_chooses_or_suppresses_signing() {
    let c = conn(1);
    let cases: [(&[(&str, &str)], SigningRequest); 4] = [
        (&[], SigningRequest::Default),
        (&[("signing", "suppress")], SigningRequest::Suppress),
        (
            &[
                ("signing", "choose"),
                ("sign_domain", "brand.test"),
                ("sign_selector", "k2"),
            ],
            SigningRequest::Choose(SigningChoice {
                domain: Some("brand.test".into()),
                selector: Some("k2".into()),
            }),
        ),
        (
            &[("signing", "choose"), ("sign_selector", "k3")],
            SigningRequest::Choose(SigningChoice {
                domain: None,
                selector: Some("k3".into()),
            }),
        ),
    ];
    for (pairs, want) in cases {
        let host = host_with(pairs).await;
        let mut s = host.session(&c);
        // A trusted client: no results are handed over, signing is asked after data.
        s.mail(&c, &envelope()).await;
        assert_eq!(data(&mut s).await, Verdict::Continue);
        assert_eq!(s.signing(), want, "config {pairs:?}");
        // The choice is per message.
        s.end_transaction();
        assert_eq!(s.signing(), SigningRequest::Default, "config {pairs:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_plugin_of_the_chain_to_choose_wins() {
    let c = conn(1);
    let host = host_of(vec![
        manifest("first", 1, &[("signing", "suppress")]),
        manifest(
            "second",
            2,
            &[("signing", "choose"), ("sign_domain", "brand.test")],
        ),
    ])
    .await;
    let mut s = host.session(&c);
    s.mail(&c, &envelope()).await;
    assert_eq!(data(&mut s).await, Verdict::Continue);
    assert_eq!(
        s.signing(),
        SigningRequest::Choose(SigningChoice {
            domain: Some("brand.test".into()),
            selector: None,
        })
    );
}

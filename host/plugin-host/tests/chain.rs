//! Verdicts, modifications, validation, capabilities and the message resource, through the
//! `Policy` trait with the fixture plugin built for wasm32-wasip2.

mod common;

use common::*;
use corvid_plugin_host::{Capability, FailurePolicy};
use corvid_types::{Address, Decision, MessageView, Modification, Policy, Reply, Verdict};

async fn data_decision(host: &corvid_plugin_host::PluginHost) -> Decision {
    let c = conn(1);
    let mut s = host.session(&c);
    s.data(&c, &envelope(), MessageView { content: MESSAGE })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_verdict_kind_passes_through() {
    let cases: &[(&str, Verdict)] = &[
        ("continue", Verdict::Continue),
        ("accept", Verdict::Accept),
        (
            "reject",
            Verdict::Reject(Reply::new(550, "5.7.1", "data rejected by fixture")),
        ),
        (
            "tempfail",
            Verdict::Tempfail(Reply::new(451, "4.7.1", "try later")),
        ),
        (
            "disconnect",
            Verdict::Disconnect(Reply::new(421, "4.7.0", "closing")),
        ),
        ("discard", Verdict::Discard),
        // The reason names the plugin (here "b") for the administrator.
        (
            "quarantine",
            Verdict::Quarantine("b: held by fixture".into()),
        ),
    ];
    for (action, expected) in cases {
        let host = host();
        host.reload(vec![behave("b", &[("data", action)])])
            .await
            .expect("loads");
        assert_eq!(
            &data_decision(&host).await.verdict,
            expected,
            "action {action}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_smtp_stage_is_called() {
    let host = host();
    let all = [
        ("connect", "reject"),
        ("helo", "reject"),
        ("mail", "reject"),
        ("rcpt", "reject"),
    ];
    host.reload(vec![behave("b", &all)]).await.expect("loads");
    let c = conn(1);
    let mut s = host.session(&c);
    let text = |d: Decision| match d.verdict {
        Verdict::Reject(r) => r.text(),
        other => panic!("{other:?}"),
    };
    assert_eq!(text(s.connect(&c).await), "connect rejected by fixture");
    assert_eq!(text(s.helo(&c).await), "helo rejected by fixture");
    assert_eq!(
        text(s.mail(&c, &envelope()).await),
        "mail rejected by fixture"
    );
    assert_eq!(
        text(s.rcpt(&c, &envelope(), &rcpt()).await),
        "rcpt rejected by fixture"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn modifications_are_collected_along_the_chain() {
    let host = host();
    let stamp = [("mail", "stamp"), ("rcpt", "stamp"), ("data", "stamp")];
    let mut second = behave("second", &[("data", "reject")]);
    second.order = 2;
    host.reload(vec![second, behave("first", &stamp)])
        .await
        .expect("loads");
    let c = conn(1);
    let mut s = host.session(&c);
    let d = s.mail(&c, &envelope()).await;
    assert_eq!(
        d.modifications,
        vec![Modification::ChangeSender(Some(Address::new(
            "rewritten",
            "example.org"
        )))]
    );
    let d = s.rcpt(&c, &envelope(), &rcpt()).await;
    assert_eq!(
        d.modifications,
        vec![Modification::AddRecipient(Address::new(
            "copy",
            "example.org"
        ))]
    );
    let d = s
        .data(&c, &envelope(), MessageView { content: MESSAGE })
        .await;
    assert!(
        matches!(d.verdict, Verdict::Reject(_)),
        "the second plugin decides"
    );
    assert_eq!(d.modifications.len(), 4, "{:?}", d.modifications);
    assert_eq!(
        d.modifications[0],
        Modification::AddHeader {
            name: "X-Fixture".into(),
            value: "1.0.0".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn first_non_continue_ends_the_stage() {
    let host = host();
    let mut later = behave("later", &[("mail", "trap")]);
    later.order = 5;
    host.reload(vec![later, behave("early", &[("mail", "accept")])])
        .await
        .expect("loads");
    let c = conn(1);
    let d = host.session(&c).mail(&c, &envelope()).await;
    assert_eq!(d.verdict, Verdict::Accept);
    assert!(
        host.stats().iter().all(|s| s.plugin != "later"),
        "later never ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_decisions_are_refused() {
    let host = host();
    host.reload(vec![behave("b", &[("data", "bad-reject")])])
        .await
        .expect("loads");
    let d = data_decision(&host).await;
    assert_eq!(
        d.verdict,
        Verdict::Tempfail(Reply::new(451, "4.3.0", "Temporary policy failure"))
    );

    let mut lenient = behave("b", &[("data", "bad-header")]);
    lenient.failure_policy = FailurePolicy::Continue;
    host.reload(vec![lenient]).await.expect("loads");
    let d = data_decision(&host).await;
    assert_eq!(
        d,
        Decision::proceed(),
        "header injection refused, plugin skipped"
    );
    let invalid: u64 = host.stats().iter().map(|s| s.invalid).sum();
    assert_eq!(invalid, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_gate_imports_without_trapping() {
    let host = host();
    host.reload(vec![behave("b", &[("data", "kv")])])
        .await
        .expect("loads");
    let text = |d: Decision| match d.verdict {
        Verdict::Reject(r) => r.text(),
        other => panic!("{other:?}"),
    };
    assert_eq!(text(data_decision(&host).await), "kv error Error::Denied");

    let mut granted = behave("b", &[("data", "kv")]);
    granted.capabilities.push(Capability::Kv);
    host.reload(vec![granted]).await.expect("loads");
    assert_eq!(text(data_decision(&host).await), "count=1");
    assert_eq!(
        text(data_decision(&host).await),
        "count=2",
        "kv outlives instances"
    );

    host.reload(vec![behave("b", &[("data", "dns")])])
        .await
        .expect("loads");
    assert_eq!(text(data_decision(&host).await), "dns error Error::Denied");
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_goes_through_the_resolver() {
    let dns = std::sync::Arc::new(corvid_plugin_host::StaticDns::new());
    dns.insert("A", "test.example", &["192.0.2.1", "192.0.2.2"]);
    let services = corvid_plugin_host::Services {
        kv: std::sync::Arc::new(corvid_plugin_host::MemoryKv::new()),
        dns,
    };
    let host = corvid_plugin_host::PluginHost::new(&engine(), services, Some(cache_dir()));
    let mut m = behave("b", &[("data", "dns")]);
    m.capabilities.push(Capability::Dns);
    host.reload(vec![m]).await.expect("loads");
    match data_decision(&host).await.verdict {
        Verdict::Reject(r) => assert_eq!(r.text(), "dns=192.0.2.1,192.0.2.2"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn message_resource_gives_headers_size_mime_and_body_chunks() {
    let host = host();
    host.reload(vec![behave("b", &[("data", "inspect")])])
        .await
        .expect("loads");
    match data_decision(&host).await.verdict {
        Verdict::Reject(r) => assert_eq!(
            r.text(),
            format!("subject=hello size={} parts=1 body=body", MESSAGE.len())
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_per_transaction() {
    let host = host();
    host.reload(vec![behave("b", &[("data", "count")])])
        .await
        .expect("loads");
    let c = conn(1);
    let mut s = host.session(&c);
    let text = |d: Decision| match d.verdict {
        Verdict::Reject(r) => r.text(),
        other => panic!("{other:?}"),
    };
    for _ in 0..2 {
        s.connect(&c).await;
        s.mail(&c, &envelope()).await;
        s.rcpt(&c, &envelope(), &rcpt()).await;
        let d = s
            .data(&c, &envelope(), MessageView { content: MESSAGE })
            .await;
        // `connect` had an instance of its own; MAIL, RCPT and DATA share one.
        assert_eq!(text(d), "hooks=3", "state lives for one transaction");
        s.end_transaction();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_apply_to_their_listeners_only() {
    let host = host();
    let mut m = behave("b", &[("mail", "reject")]);
    m.listeners = Some(vec!["submission".into()]);
    host.reload(vec![m]).await.expect("loads");
    let mut c = conn(1);
    assert_eq!(
        host.session(&c).mail(&c, &envelope()).await,
        Decision::proceed()
    );
    c.listener = "submission".into();
    let d = host.session(&c).mail(&c, &envelope()).await;
    assert!(matches!(d.verdict, Verdict::Reject(_)));
}

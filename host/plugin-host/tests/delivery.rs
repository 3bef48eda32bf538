//! The delivery-side hooks: route, deferred, bounced, delivered.

mod common;

use common::*;
use corvid_plugin_host::{
    BounceAction, Capability, Deferral, DeliveryInfo, DeliveryPolicy, Route, RouteRequest, Services,
};
use corvid_types::Address;
use std::sync::Arc;
use std::time::Duration;

fn request() -> RouteRequest {
    RouteRequest {
        queue_id: "q1".into(),
        sender: None,
        recipient: Address::new("bob", "example.org"),
    }
}

fn info(attempt: u32) -> DeliveryInfo {
    DeliveryInfo {
        queue_id: "q1".into(),
        sender: Some(Address::new("alice", "sender.test")),
        recipient: Address::new("bob", "example.org"),
        attempt,
        remote_host: Some("mx.example.org".into()),
        reply: Some(corvid_types::Reply::new(451, "4.2.0", "busy")),
        reason: "remote tempfail".into(),
        quarantined: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn route_answers_and_chain_order() {
    let host = host();
    let cases = [
        ("continue", Route::Continue),
        ("local", Route::Local),
        ("mx", Route::Mx("example.org".into())),
        (
            "relay",
            Route::Relay {
                host: "smarthost.example".into(),
                port: 587,
            },
        ),
        ("drop", Route::Drop),
        ("bad", Route::Continue),
        ("trap", Route::Continue),
    ];
    for (action, expected) in cases {
        host.reload(vec![behave("b", &[("route", action)])])
            .await
            .expect("loads");
        assert_eq!(host.route(&request()).await, expected, "route = {action}");
    }
    let mut second = behave("second", &[("route", "local")]);
    second.order = 1;
    host.reload(vec![behave("first", &[("route", "trap")]), second])
        .await
        .expect("loads");
    assert_eq!(
        host.route(&request()).await,
        Route::Local,
        "a failing plugin is skipped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deferred_bounced_and_delivered() {
    let kv = Arc::new(corvid_plugin_host::MemoryKv::new());
    let services = Services {
        kv: kv.clone(),
        dns: Arc::new(corvid_plugin_host::StaticDns::new()),
    };
    let host = corvid_plugin_host::PluginHost::new(&engine(), services, Some(cache_dir()));
    let mut m = behave("b", &[("deferred", "retry"), ("bounced", "annotate")]);
    m.capabilities.push(Capability::Kv);
    host.reload(vec![m]).await.expect("loads");
    assert_eq!(
        host.deferred(&info(3)).await,
        Deferral::RetryAfter(Duration::from_secs(180))
    );
    assert_eq!(
        host.bounced(&info(1)).await,
        BounceAction::Annotate("see q1".into())
    );
    host.delivered(&info(1)).await;
    host.delivered(&info(1)).await;
    use corvid_plugin_host::KvStore;
    assert_eq!(kv.get("b", b"delivered").expect("kv"), Some(b"2".to_vec()));

    host.reload(vec![behave(
        "b",
        &[("deferred", "bounce"), ("bounced", "suppress")],
    )])
    .await
    .expect("loads");
    assert_eq!(host.deferred(&info(1)).await, Deferral::Bounce);
    assert_eq!(host.bounced(&info(1)).await, BounceAction::Suppress);
}

/// The quarantine reason of a held message reaches the delivery hooks; other messages and
/// warm instances reused afterwards see none.
#[tokio::test(flavor = "multi_thread")]
async fn delivery_hooks_see_whether_the_message_was_quarantined() {
    let host = host();
    let mut m = behave("b", &[]);
    m.config
        .insert("bounced".into(), toml::Value::String("quarantined".into()));
    m.instance = corvid_plugin_host::InstanceMode::Pool;
    host.reload(vec![m]).await.expect("loads");
    let held = DeliveryInfo {
        quarantined: Some("spam-check: too spammy".into()),
        ..info(1)
    };
    assert_eq!(
        host.bounced(&held).await,
        BounceAction::Annotate(r#"quarantined=Some("spam-check: too spammy")"#.into())
    );
    assert_eq!(
        host.bounced(&info(1)).await,
        BounceAction::Annotate("quarantined=None".into())
    );
}

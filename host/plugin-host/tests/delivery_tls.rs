//! TLS at the delivery stages (`wit/delivery-tls.wit`): the `contract` fixture reads the
//! attempt's TLS the delivery hands over (`corvid_types::delivery_call`) and asks for a TLS
//! policy at `route`, through `PluginHost`'s `DeliveryPolicy`.

mod common;
mod contract_fixture;

use common::*;
use corvid_plugin_host::{BounceAction, DeliveryInfo, DeliveryPolicy, Route, RouteRequest};
use corvid_types::delivery_call::{within, CallFacts, DeliveryTls, TlsPolicy};
use corvid_types::Address;
use std::sync::Arc;

fn info() -> DeliveryInfo {
    DeliveryInfo {
        queue_id: "q1".into(),
        sender: Some(Address::new("alice", "sender.test")),
        recipient: Address::new("bob", "example.org"),
        attempt: 1,
        remote_host: Some("mx.example.org".into()),
        reply: Some(corvid_types::Reply::new(550, "5.1.1", "no such user")),
        reason: "5.1.1 no such user".into(),
        quarantined: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bounced_hook_reads_the_attempt_tls() {
    let host = host();
    let m = contract_fixture::manifest(&[("bounced", "annotate")], &[]);
    host.reload(vec![m]).await.expect("loads");
    let tls = DeliveryTls {
        version: Some("TLSv1_3".into()),
        cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
        verified: false,
        policy: "verify".into(),
        source: Some("plugin".into()),
        policy_domain: Some("example.org".into()),
        failure: Some("certificate not verified: UnknownIssuer".into()),
    };
    let told = within(CallFacts::attempt(Some(tls)), host.bounced(&info())).await;
    assert_eq!(
        told,
        BounceAction::Annotate(
            "attempt-tls bounced bob@example.org version=TLSv1_3 cipher=TLS13_AES_256_GCM_SHA384 \
             verified=false policy=verify source=plugin domain=example.org \
             failure=certificate not verified: UnknownIssuer"
                .into()
        )
    );
    // Local delivery, or a caller that hands nothing over: `none`.
    let none = host.bounced(&info()).await;
    assert_eq!(
        none,
        BounceAction::Annotate("attempt-tls bounced bob@example.org none".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_route_hook_asks_for_a_tls_policy() {
    let host = host();
    let m = contract_fixture::manifest(&[("route_tls", "dane-only")], &[]);
    host.reload(vec![m]).await.expect("loads");
    let req = RouteRequest {
        queue_id: "q1".into(),
        sender: None,
        recipient: Address::new("bob", "example.org"),
    };
    let facts = CallFacts::attempt(None);
    let route = within(Arc::clone(&facts), host.route(&req)).await;
    assert_eq!(route, Route::Continue);
    assert_eq!(facts.route_tls(), Some(TlsPolicy::DaneOnly));
    // Without facts to write into, the ask goes nowhere and nothing fails.
    assert_eq!(host.route(&req).await, Route::Continue);
}

//! DSN parameters for recipients a plugin adds (`wit/dsn.wit`): the SDK's
//! `add_recipient_with`, through the host's `added-recipients` import, becomes an
//! `AddRecipientWithParams` modification; parameters a client could not send, or for a
//! recipient the decision does not add, refuse the decision (failure policy).

mod common;
mod contract_fixture;

use common::*;
use corvid_types::{Address, Modification, Notify, Policy, Reply, Verdict};

async fn rcpt_decision(pairs: &[(&str, &str)], adds: &[&str]) -> corvid_types::Decision {
    let host = host();
    host.reload(vec![contract_fixture::manifest(pairs, adds)])
        .await
        .expect("loads");
    let c = conn(1);
    let mut s = host.session(&c);
    s.mail(&c, &envelope()).await;
    s.rcpt(&c, &envelope(), &rcpt()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn added_recipients_carry_their_dsn_parameters() {
    let d = rcpt_decision(
        &[],
        &[
            "quiet@remote.test NOTIFY=NEVER ORCPT=rfc822;orig+40remote.test",
            "loud@remote.test NOTIFY=SUCCESS,FAILURE",
            "plain@remote.test",
        ],
    )
    .await;
    assert_eq!(d.verdict, Verdict::Continue);
    let [Modification::AddRecipientWithParams(quiet), Modification::AddRecipientWithParams(loud), Modification::AddRecipientWithParams(plain)] =
        d.modifications.as_slice()
    else {
        panic!("{:?}", d.modifications);
    };
    assert_eq!(quiet.address, Address::new("quiet", "remote.test"));
    assert_eq!(
        quiet.params.notify,
        Some(Notify {
            never: true,
            ..Notify::default()
        })
    );
    assert_eq!(
        quiet.params.orcpt.as_deref(),
        Some("rfc822;orig+40remote.test")
    );
    assert!(loud
        .params
        .notify
        .is_some_and(|n| n.success && n.failure && !n.delay));
    assert_eq!(plain.params, Default::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_a_client_could_not_send_refuse_the_decision() {
    let policy_failure = Verdict::Tempfail(Reply::new(451, "4.3.0", "Temporary policy failure"));
    for bad in [
        "x@remote.test NOTIFY=NEVER,FAILURE",
        "x@remote.test NOTIFY=",
        "x@remote.test ORCPT=rfc822",
        "x@remote.test ORCPT=rfc822;a+4",
    ] {
        let d = rcpt_decision(&[], &[bad]).await;
        assert_eq!(d.verdict, policy_failure, "{bad}");
        assert!(d.modifications.is_empty(), "{bad}: {:?}", d.modifications);
    }
    // Parameters for a recipient the decision does not add.
    let d = rcpt_decision(&[("stray", "other@remote.test")], &["x@remote.test"]).await;
    assert_eq!(d.verdict, policy_failure);
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_belong_to_one_hook_call() {
    // Set at MAIL with the decision that adds the recipient; the RCPT hook's decision of the
    // same instance adds nothing and carries nothing.
    let host = host();
    let adds = ["x@remote.test NOTIFY=NEVER"];
    host.reload(vec![contract_fixture::manifest(
        &[("add_at", "mail")],
        &adds,
    )])
    .await
    .expect("loads");
    let c = conn(1);
    let mut s = host.session(&c);
    let d = s.mail(&c, &envelope()).await;
    assert!(matches!(
        d.modifications.as_slice(),
        [Modification::AddRecipientWithParams(_)]
    ));
    let d = s.rcpt(&c, &envelope(), &rcpt()).await;
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(d.modifications.is_empty());
}

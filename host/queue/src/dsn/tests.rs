use super::*;
use corvid_types::{Notify, QueueId};

fn rcpt(local: &str, notify: Option<Notify>, orcpt: Option<&str>) -> Recipient {
    Recipient {
        address: Address::new(local, "far.test"),
        params: RcptParams {
            notify,
            orcpt: orcpt.map(String::from),
        },
    }
}

fn message(sender: Option<Address>, rcpts: Vec<Recipient>, ret: Option<Ret>) -> QueuedMessage {
    let env = Envelope {
        sender,
        params: MailParams {
            ret,
            envid: Some("env-1".into()),
            ..MailParams::default()
        },
        recipients: rcpts,
    };
    QueuedMessage::new(QueueId("0ABC".into()), env, 10, 1_000)
}

fn fail(m: &mut QueuedMessage, i: usize, reply: &str) {
    let r = &mut m.recipients[i];
    r.status = RecipientStatus::Failed;
    r.attempts = 1;
    r.last_reply = Some(reply.into());
    r.remote_mta = Some("mx.far.test".into());
    r.diagnostic = Some(format!("smtp; 550 {reply}"));
}

const ORIGINAL: &[u8] = b"Subject: hi\r\nFrom: a@b\r\n\r\nbody line\r\n";

fn ctx() -> DsnContext<'static> {
    DsnContext {
        reporting_mta: "mx.corvid.test",
        dsn_id: "0DSN",
        now: crate::from_unix_secs(2_000),
        retry_until: Some(500_000),
        policy: DsnPolicy::default(),
    }
}

fn sender() -> Option<Address> {
    Some(Address::new("bob", "corvid.test"))
}

#[test]
fn one_report_for_all_failures_and_none_twice() {
    let mut m = message(
        sender(),
        vec![
            rcpt("a", None, None),
            rcpt("b", None, None),
            rcpt("c", None, None),
        ],
        None,
    );
    fail(&mut m, 0, "5.1.1 no such user");
    fail(&mut m, 2, "5.7.1 refused");
    let reports = due_reports(&m, 2_000, None);
    assert_eq!(
        reports,
        [DsnReport {
            action: DsnAction::Failed,
            recipients: vec![0, 2]
        }]
    );
    mark_reported(&mut m, &reports);
    assert!(due_reports(&m, 2_000, None).is_empty());
}

#[test]
fn a_suppressed_recipient_is_never_reported_nor_marked_as_reported() {
    let mut m = message(
        sender(),
        vec![rcpt("a", None, None), rcpt("b", None, None)],
        None,
    );
    fail(&mut m, 0, "5.1.1 no such user");
    fail(&mut m, 1, "5.1.1 no such user");
    m.recipients[0].dsn_suppressed = true;
    let reports = due_reports(&m, 2_000, None);
    assert_eq!(
        reports,
        [DsnReport {
            action: DsnAction::Failed,
            recipients: vec![1]
        }]
    );
    mark_reported(&mut m, &reports);
    assert!(!m.recipients[0].reported, "suppressed is not sent");
    assert!(m.recipients[1].reported);
    assert!(due_reports(&m, 2_000, None).is_empty());
}

#[test]
fn null_sender_and_notify_never_get_nothing() {
    let mut m = message(None, vec![rcpt("a", None, None)], None);
    fail(&mut m, 0, "5.1.1 x");
    assert!(due_reports(&m, 2_000, None).is_empty());
    let never = Notify {
        never: true,
        ..Notify::default()
    };
    let delay_only = Notify {
        delay: true,
        ..Notify::default()
    };
    let mut m = message(
        sender(),
        vec![
            rcpt("a", Some(never), None),
            rcpt("b", Some(delay_only), None),
        ],
        None,
    );
    fail(&mut m, 0, "5.1.1 x");
    fail(&mut m, 1, "5.1.1 x");
    assert!(due_reports(&m, 2_000, None).is_empty());
}

#[test]
fn delay_warning_only_when_asked_and_late() {
    let delay = Notify {
        delay: true,
        failure: true,
        ..Notify::default()
    };
    let mut m = message(
        sender(),
        vec![rcpt("a", Some(delay), None), rcpt("b", None, None)],
        None,
    );
    for r in &mut m.recipients {
        r.attempts = 2;
    }
    let four_h = Some(Duration::from_secs(4 * 3600));
    assert!(due_reports(&m, 1_000 + 3600, four_h).is_empty());
    let reports = due_reports(&m, 1_000 + 4 * 3600, four_h);
    assert_eq!(
        reports,
        [DsnReport {
            action: DsnAction::Delayed,
            recipients: vec![0]
        }]
    );
    assert!(due_reports(&m, 1_000 + 4 * 3600, None).is_empty());
    mark_reported(&mut m, &reports);
    assert!(due_reports(&m, 1_000 + 5 * 3600, four_h).is_empty());
}

#[test]
fn composes_a_multipart_report() {
    let mut m = message(
        sender(),
        vec![
            rcpt("a", None, Some("rfc822;A+40far.test")),
            rcpt("b", None, None),
        ],
        None,
    );
    fail(&mut m, 0, "5.1.1 no such user");
    let report = DsnReport {
        action: DsnAction::Failed,
        recipients: vec![0],
    };
    let (env, content) = compose(&m, ORIGINAL, &report, &ctx()).unwrap();
    assert_eq!(env.sender, None);
    assert_eq!(
        env.recipients[0].address,
        Address::new("bob", "corvid.test")
    );
    let text = String::from_utf8(content.clone()).unwrap();
    for want in [
        "To: <bob@corvid.test>\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "Content-Type: multipart/report; report-type=delivery-status;\r\n",
        "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.corvid.test\r\n",
        "Original-Envelope-Id: env-1\r\n",
        "Arrival-Date: Thu, 1 Jan 1970 00:16:40 +0000\r\n",
        "\r\nFinal-Recipient: rfc822; a@far.test\r\nOriginal-Recipient: rfc822; A@far.test\r\n\
         Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.far.test\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
        "<a@far.test>: 550 5.1.1 no such user (reported by mx.far.test)\r\n",
        "Content-Type: message/rfc822\r\n\r\nSubject: hi\r\nFrom: a@b\r\n\r\nbody line\r\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("b@far.test"), "only the reported recipient");
    assert!(text.ends_with("--\r\n"));
    for (i, &b) in content.iter().enumerate() {
        if b == b'\n' {
            assert_eq!(content[i - 1], b'\r', "bare LF at {i}");
        }
    }
}

#[test]
fn ret_hdrs_and_delays_return_only_headers() {
    let mut m = message(sender(), vec![rcpt("a", None, None)], Some(Ret::Headers));
    fail(&mut m, 0, "5.1.1 x");
    let report = DsnReport {
        action: DsnAction::Failed,
        recipients: vec![0],
    };
    let text = String::from_utf8(compose(&m, ORIGINAL, &report, &ctx()).unwrap().1).unwrap();
    assert!(
        text.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nFrom: a@b\r\n\r\n")
    );
    assert!(!text.contains("body line"));

    let mut m = message(sender(), vec![rcpt("a", None, None)], None);
    m.recipients[0].attempts = 3;
    m.recipients[0].last_reply = Some("4.4.1 connection refused".into());
    let report = DsnReport {
        action: DsnAction::Delayed,
        recipients: vec![0],
    };
    let text = String::from_utf8(compose(&m, ORIGINAL, &report, &ctx()).unwrap().1).unwrap();
    assert!(
        text.contains("Action: delayed\r\nStatus: 4.4.1\r\n"),
        "{text}"
    );
    assert!(text.contains("Diagnostic-Code: x-corvid; 4.4.1 connection refused\r\n"));
    assert!(text.contains("Will-Retry-Until: "));
    assert!(!text.contains("body line"));
}

#[test]
fn null_sender_is_never_composed_for() {
    let m = message(None, vec![rcpt("a", None, None)], None);
    let report = DsnReport {
        action: DsnAction::Failed,
        recipients: vec![0],
    };
    assert!(compose(&m, ORIGINAL, &report, &ctx()).is_none());
}

fn deliver(m: &mut QueuedMessage, i: usize, kind: SuccessReport) {
    let r = &mut m.recipients[i];
    r.status = RecipientStatus::Delivered;
    r.attempts = 1;
    r.last_reply = Some("2.0.0 delivered".into());
    r.success_report = kind;
}

fn success_only() -> Option<Notify> {
    Some(Notify {
        never: false,
        success: true,
        failure: false,
        delay: false,
    })
}

#[test]
fn success_notices_only_when_asked_and_ours_to_send() {
    let mut m = message(
        sender(),
        vec![
            rcpt("asked", success_only(), None),
            rcpt("relayed", success_only(), None),
            rcpt("passed-on", success_only(), None),
            rcpt("silent", None, None),
        ],
        None,
    );
    deliver(&mut m, 0, SuccessReport::Delivered);
    deliver(&mut m, 1, SuccessReport::Relayed);
    deliver(&mut m, 2, SuccessReport::None);
    deliver(&mut m, 3, SuccessReport::Delivered);
    m.trusted_client = true;
    let reports = due_reports(&m, 2_000, None);
    assert_eq!(
        reports,
        vec![
            DsnReport {
                action: DsnAction::Delivered,
                recipients: vec![0]
            },
            DsnReport {
                action: DsnAction::Relayed,
                recipients: vec![1]
            },
        ]
    );
    let (_, content) = compose(&m, ORIGINAL, &reports[0], &ctx()).expect("composed");
    let text = String::from_utf8(content).expect("utf-8");
    assert!(
        text.contains("Subject: Successful Mail Delivery Report\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Action: delivered\r\nStatus: 2.0.0\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: text/rfc822-headers"),
        "headers only: {text}"
    );
    mark_reported(&mut m, &reports);
    assert!(due_reports(&m, 2_000, None).is_empty(), "never twice");
}

#[test]
fn a_policy_note_appears_in_the_human_readable_part() {
    let mut m = message(sender(), vec![rcpt("a", None, None)], None);
    fail(&mut m, 0, "5.1.1 no such user");
    m.recipients[0].note = Some("Ask the helpdesk about ticket 42.".into());
    let report = &due_reports(&m, 2_000, None)[0];
    let (_, content) = compose(&m, ORIGINAL, report, &ctx()).expect("composed");
    let text = String::from_utf8(content).expect("utf-8");
    assert!(
        text.contains("    Ask the helpdesk about ticket 42.\r\n"),
        "{text}"
    );
}

//! The reflection limits (issue: a forged sender got a 1.8 MB message back as a success
//! report): caps on what goes back, success reports by origin, no report about a report.

use super::*;
use corvid_types::{Notify, QueueId};

fn message(notify: Notify, size: usize) -> QueuedMessage {
    let env = Envelope {
        sender: Some(Address::new("forged", "victim.test")),
        params: MailParams::default(),
        recipients: vec![Recipient {
            address: Address::new("postmaster", "corvid.test"),
            params: RcptParams {
                notify: Some(notify),
                orcpt: None,
            },
        }],
    };
    QueuedMessage::new(QueueId("0REF".into()), env, size as u64, 1_000)
}

fn notify(success: bool, failure: bool) -> Notify {
    Notify {
        never: false,
        success,
        failure,
        delay: false,
    }
}

fn ctx(policy: DsnPolicy) -> DsnContext<'static> {
    DsnContext {
        reporting_mta: "mx.corvid.test",
        dsn_id: "0DSN",
        now: crate::from_unix_secs(2_000),
        retry_until: None,
        policy,
    }
}

fn delivered(m: &mut QueuedMessage) {
    let r = &mut m.recipients[0];
    r.status = RecipientStatus::Delivered;
    r.attempts = 1;
    r.success_report = SuccessReport::Delivered;
}

fn failed(m: &mut QueuedMessage) {
    let r = &mut m.recipients[0];
    r.status = RecipientStatus::Failed;
    r.attempts = 1;
    r.last_reply = Some("5.1.1 no such user".into());
}

/// 1.8 MB of header-like lines and no blank line: all of it is "header section".
fn no_blank_line() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < 1_800_000 {
        out.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "z".repeat(60)).as_bytes());
        i += 1;
    }
    out
}

fn returned_part(dsn: &[u8]) -> &[u8] {
    let text = dsn;
    let marker =
        b"Content-Description: Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n";
    let start = text
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("a headers part")
        + marker.len();
    let end = text.len()
        - text[start..]
            .windows(4)
            .rev()
            .position(|w| w == b"--=_")
            .map_or(0, |p| p + 4);
    &text[start..end.max(start)]
}

#[test]
fn a_huge_message_without_a_blank_line_returns_at_most_64_kib_of_whole_lines() {
    let original = no_blank_line();
    let mut m = message(notify(true, true), original.len());
    m.trusted_client = true;
    delivered(&mut m);
    let report = &due_reports_with(&m, 2_000, None, &DsnPolicy::default())[0];
    let (_, dsn) = compose(&m, &original, report, &ctx(DsnPolicy::default())).expect("composed");
    assert!(
        dsn.len() < MAX_RETURNED_HEADERS + 4096,
        "DSN of {} octets",
        dsn.len()
    );
    let back = returned_part(&dsn);
    assert!(
        back.len() <= MAX_RETURNED_HEADERS + 64,
        "{} octets returned",
        back.len()
    );
    assert!(
        back.len() > MAX_RETURNED_HEADERS / 2,
        "too little: {}",
        back.len()
    );
    let last_line = back
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.is_empty() && *l != b"\r" && !l.starts_with(b"--"))
        .expect("a line");
    assert!(
        last_line.ends_with(b"z\r"),
        "cut mid-line: {:?}",
        String::from_utf8_lossy(last_line)
    );

    // The same as a failure: too big to return whole, so headers only, capped the same way.
    let mut m = message(notify(false, true), original.len());
    failed(&mut m);
    let report = &due_reports_with(&m, 2_000, None, &DsnPolicy::default())[0];
    let (_, dsn) = compose(&m, &original, report, &ctx(DsnPolicy::default())).expect("composed");
    assert!(
        dsn.len() < MAX_RETURNED_HEADERS + 4096,
        "failure DSN of {} octets",
        dsn.len()
    );
}

#[test]
fn a_failure_returns_the_whole_message_only_under_max_return_size() {
    let original = b"Subject: small\r\n\r\nthe body\r\n".to_vec();
    let mut m = message(notify(false, true), original.len());
    failed(&mut m);
    let report = &due_reports(&m, 2_000, None)[0];
    let (_, dsn) = compose(&m, &original, report, &ctx(DsnPolicy::default())).expect("composed");
    let text = String::from_utf8_lossy(&dsn);
    assert!(
        text.contains("Content-Type: message/rfc822\r\n\r\nSubject: small\r\n\r\nthe body\r\n"),
        "{text}"
    );

    let tight = DsnPolicy {
        max_return_size: original.len() - 1,
        ..DsnPolicy::default()
    };
    let (_, dsn) = compose(&m, &original, report, &ctx(tight)).expect("composed");
    let text = String::from_utf8_lossy(&dsn);
    assert!(
        text.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: small\r\n\r\n"),
        "{text}"
    );
    assert!(!text.contains("the body"), "{text}");
}

#[test]
fn success_reports_follow_notify_success_from() {
    let mut m = message(notify(true, false), 30);
    delivered(&mut m);
    let original = b"Subject: x\r\n\r\nbody\r\n";
    let policy = |p| DsnPolicy {
        notify_success_from: p,
        ..DsnPolicy::default()
    };
    // Untrusted origin, default policy: nothing is due, and compose refuses too.
    assert!(due_reports_with(&m, 2_000, None, &DsnPolicy::default()).is_empty());
    let candidate = &due_reports(&m, 2_000, None)[0];
    assert_eq!(candidate.action, DsnAction::Delivered);
    assert!(compose(&m, original, candidate, &ctx(DsnPolicy::default())).is_none());
    // `anyone` sends it; `nobody` refuses even a trusted origin.
    let anyone = policy(NotifySuccessFrom::Anyone);
    assert_eq!(due_reports_with(&m, 2_000, None, &anyone).len(), 1);
    assert!(compose(&m, original, candidate, &ctx(anyone)).is_some());
    m.trusted_client = true;
    assert_eq!(
        due_reports_with(&m, 2_000, None, &DsnPolicy::default()).len(),
        1
    );
    let nobody = policy(NotifySuccessFrom::Nobody);
    assert!(due_reports_with(&m, 2_000, None, &nobody).is_empty());
    assert!(compose(&m, original, candidate, &ctx(nobody)).is_none());
}

#[test]
fn no_report_about_a_report() {
    // A DSN Corvid composed, sent back in with a (forged) non-null sender.
    let mut first = message(notify(false, true), 30);
    failed(&mut first);
    let report = &due_reports(&first, 2_000, None)[0];
    let (_, dsn) = compose(
        &first,
        b"Subject: a\r\n\r\nb\r\n",
        report,
        &ctx(DsnPolicy::default()),
    )
    .expect("composed");
    assert!(is_delivery_report(&dsn));

    let mut second = message(notify(true, true), dsn.len());
    second.trusted_client = true;
    failed(&mut second);
    let report = &due_reports(&second, 2_000, None)[0];
    assert!(
        compose(&second, &dsn, report, &ctx(DsnPolicy::default())).is_none(),
        "a report about a report"
    );
    second.is_report = true;
    assert!(due_reports(&second, 2_000, None).is_empty());
}

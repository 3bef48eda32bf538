use super::*;
use corvid_queue::dsn;
use corvid_types::{Address, Envelope, QueueId, RcptParams, Recipient};
use std::time::Duration;

const NOW: u64 = 1_000_000;

fn message(arrived_at: u64) -> QueuedMessage {
    let envelope = Envelope {
        sender: Some(Address::new("bob", "sender.test")),
        recipients: ["a", "b", "c"]
            .iter()
            .map(|l| Recipient {
                address: Address::new(*l, "far.test"),
                params: RcptParams::default(),
            })
            .collect(),
        ..Envelope::default()
    };
    QueuedMessage::new(QueueId("q1".into()), envelope, 10, arrived_at)
}

fn schedule() -> RetrySchedule {
    RetrySchedule {
        delays: vec![Duration::from_secs(300)],
        max_age: Duration::from_secs(3600),
        jitter: 0.0,
    }
}

fn reports() -> Vec<(usize, RcptReport)> {
    vec![
        (0, RcptReport::from(Outcome::Delivered)),
        (
            1,
            RcptReport::from(Outcome::Transient("4.4.1 no answer".into())),
        ),
        (
            2,
            RcptReport::from(Outcome::Permanent("5.1.1 no such user".into())),
        ),
    ]
}

#[tokio::test]
async fn without_a_policy_the_outcome_and_the_schedule_decide() {
    let msg = message(NOW - 10);
    let fates = decide(Hooks::new(None), &schedule(), &msg, reports(), NOW).await;
    let verdicts: Vec<&Verdict> = fates.iter().map(|f| &f.verdict).collect();
    assert_eq!(
        verdicts,
        [
            &Verdict::Delivered,
            &Verdict::Deferred {
                reason: "4.4.1 no answer".into(),
                at: NOW + 300
            },
            &Verdict::Failed {
                reason: "5.1.1 no such user".into()
            },
        ]
    );
    assert!(fates.iter().all(|f| f.notice == Notice::AsAsked));
}

#[tokio::test]
async fn a_transient_failure_past_max_age_expires() {
    let msg = message(NOW - 3600);
    let fates = decide(Hooks::new(None), &schedule(), &msg, reports(), NOW).await;
    assert_eq!(
        fates[1].verdict,
        Verdict::Expired {
            last_error: "4.4.1 no answer".into()
        }
    );
    let mut msg = msg;
    write(&mut msg, &fates);
    let r = &msg.recipients[1];
    assert_eq!(r.status, RecipientStatus::Failed);
    assert_eq!(
        r.last_reply.as_deref(),
        Some("4.4.7 expired in queue, last error: 4.4.1 no answer")
    );
}

#[test]
fn written_states_and_a_suppressed_dsn() {
    let mut msg = message(NOW - 10);
    let fate = |index, verdict, notice| Fate {
        index,
        report: RcptReport::from(Outcome::Delivered),
        verdict,
        notice,
        told: None,
    };
    let fates = [
        fate(0, Verdict::Delivered, Notice::AsAsked),
        fate(
            1,
            Verdict::Failed {
                reason: "5.7.1 refused".into(),
            },
            Notice::Suppressed,
        ),
        fate(
            2,
            Verdict::Failed {
                reason: "5.1.1 unknown".into(),
            },
            Notice::Annotated("call us".into()),
        ),
    ];
    write(&mut msg, &fates);
    let r = &msg.recipients;
    assert_eq!(r[0].status, RecipientStatus::Delivered);
    assert_eq!(r[0].last_reply.as_deref(), Some("2.0.0 delivered"));
    assert!(r.iter().all(|r| r.attempts == 1));
    assert_eq!(r[1].status, RecipientStatus::Failed);
    assert_eq!(r[2].note.as_deref(), Some("call us"));
    // The failure DSN covers the annotated recipient only, never the suppressed one.
    let due = dsn::due_reports(&msg, NOW, None);
    let failed: Vec<&Vec<usize>> = due
        .iter()
        .filter(|d| d.action == dsn::DsnAction::Failed)
        .map(|d| &d.recipients)
        .collect();
    assert_eq!(failed, [&vec![2]]);
}

//! Held mail (quarantine): never due, listed, released, bounced, expired; and what a submit
//! records about its origin.

use corvid_queue::{QuarantineExpiry, QueueError, SledSpool, Spool, SpoolSettings};
use corvid_types::{Address, Envelope, Intake, QueueId, RcptParams, Recipient, SubmitOptions};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn envelope() -> Envelope {
    Envelope {
        sender: Some(Address::new("alice", "sender.test")),
        recipients: vec![Recipient {
            address: Address::new("bob", "x.test"),
            params: RcptParams::default(),
        }],
        ..Envelope::default()
    }
}

const BODY: &[u8] = b"Subject: suspicious\r\n\r\nbuy now\r\n";

async fn submit(spool: &SledSpool, options: SubmitOptions) -> QueueId {
    let id = spool.next_id();
    spool
        .submit_with(&id, &envelope(), BODY, &options)
        .await
        .unwrap();
    id
}

fn held(reason: &str) -> SubmitOptions {
    SubmitOptions {
        trusted_client: false,
        hold: Some(reason.into()),
    }
}

fn soon() -> SystemTime {
    SystemTime::now() + Duration::from_secs(5)
}

/// The DSNs in the spool: messages from `<>`.
fn reports(spool: &SledSpool) -> Vec<(QueueId, String)> {
    spool
        .list()
        .unwrap()
        .into_iter()
        .filter(|m| m.envelope.sender.is_none())
        .map(|m| {
            let text = spool.content(&m.id).unwrap().unwrap();
            (m.id, String::from_utf8_lossy(&text).into_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_held_message_is_never_due_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let id = submit(&spool, held("spamcheck: score 12")).await;
    let normal = submit(&spool, SubmitOptions::default()).await;
    assert_eq!(spool.due(soon()).unwrap(), std::slice::from_ref(&normal));
    let msg = spool.get(&id).unwrap().unwrap();
    assert_eq!(msg.quarantined.as_deref(), Some("spamcheck: score 12"));
    assert!(msg.held_at.is_some());
    drop(spool);

    let spool = SledSpool::open(dir.path()).unwrap();
    assert_eq!(
        spool.due(soon()).unwrap(),
        std::slice::from_ref(&normal),
        "still held after reopen"
    );
    assert!(matches!(
        spool.release(&normal),
        Err(QueueError::NotHeld(_))
    ));
    let mut rx = spool.subscribe();
    rx.borrow_and_update();
    let released = spool.release(&id).unwrap();
    assert!(released.quarantined.is_none() && released.held_at.is_none());
    // Delivery hooks still learn why it was held.
    assert_eq!(
        released.released_hold.as_deref(),
        Some("spamcheck: score 12")
    );
    assert!(rx.has_changed().unwrap(), "runners woken");
    assert_eq!(spool.due(soon()).unwrap().len(), 2);
    drop(spool);
    let spool = SledSpool::open(dir.path()).unwrap();
    assert_eq!(spool.due(soon()).unwrap().len(), 2, "release is durable");
}

#[tokio::test]
async fn hold_survives_a_delivery_update_made_from_an_older_copy() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let id = submit(&spool, SubmitOptions::default()).await;
    let delivery_copy = spool.get(&id).unwrap().unwrap();
    spool.hold(&id, "admin: looks odd").unwrap();
    assert!(spool.due(soon()).unwrap().is_empty());
    // Delivery finishes its attempt and records it with the copy it had.
    let mut after = delivery_copy;
    after.recipients[0].attempts = 1;
    after.recipients[0].next_attempt = 0;
    spool.update(&after).unwrap();
    let stored = spool.get(&id).unwrap().unwrap();
    assert_eq!(stored.quarantined.as_deref(), Some("admin: looks odd"));
    assert_eq!(stored.recipients[0].attempts, 1);
    assert!(spool.due(soon()).unwrap().is_empty(), "still held");
    assert!(matches!(
        spool.hold(&QueueId("NOPE".into()), "x"),
        Err(QueueError::NotFound(_))
    ));
}

#[tokio::test]
async fn bounce_sends_a_failure_report_through_the_spool_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SpoolSettings {
        hostname: "mx.corvid.test".into(),
        ..SpoolSettings::default()
    };
    let spool = SledSpool::open_with(dir.path(), settings).unwrap();
    let id = submit(&spool, held("virus: Eicar")).await;
    let dsn_id = spool
        .bounce(&id, "5.7.1 refused by the administrator")
        .await
        .unwrap()
        .expect("a DSN");
    assert!(spool.get(&id).unwrap().is_none(), "removed");
    let [(rid, text)] = &reports(&spool)[..] else {
        panic!("one DSN expected: {:?}", reports(&spool))
    };
    assert_eq!(rid, &dsn_id);
    let dsn = spool.get(&dsn_id).unwrap().unwrap();
    assert_eq!(
        dsn.recipients[0].recipient.address,
        Address::new("alice", "sender.test")
    );
    assert!(dsn.is_report, "the DSN is marked as a report");
    assert!(
        text.contains("Action: failed\r\nStatus: 5.7.1\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Reporting-MTA: dns; mx.corvid.test"),
        "{text}"
    );
    assert!(text.contains("Subject: suspicious"), "{text}");
    assert!(
        spool.due(soon()).unwrap().contains(&dsn_id),
        "the DSN is delivered"
    );
    // Not held: refused.
    assert!(matches!(
        spool.bounce(&dsn_id, "5.7.1 x").await,
        Err(QueueError::NotHeld(_))
    ));
}

async fn expiry(expiry: QuarantineExpiry) -> (Arc<SledSpool>, tempfile::TempDir, QueueId) {
    let dir = tempfile::tempdir().unwrap();
    let settings = SpoolSettings {
        quarantine_max_age: Duration::from_secs(3600),
        quarantine_expiry: expiry,
        ..SpoolSettings::default()
    };
    let spool = SledSpool::open_with(dir.path(), settings).unwrap();
    let id = submit(&spool, held("spam")).await;
    let pass = spool.maintain_once(SystemTime::now()).await;
    assert_eq!(pass.held_expired, 0, "not yet");
    assert!(spool.get(&id).unwrap().is_some());
    (spool, dir, id)
}

#[tokio::test]
async fn held_mail_expires_as_a_bounce() {
    let (spool, _dir, id) = expiry(QuarantineExpiry::Bounce).await;
    let later = SystemTime::now() + Duration::from_secs(3601);
    assert_eq!(spool.maintain_once(later).await.held_expired, 1);
    assert!(spool.get(&id).unwrap().is_none());
    let dsns = reports(&spool);
    assert_eq!(dsns.len(), 1);
    assert!(dsns[0].1.contains("Status: 5.4.7"), "{}", dsns[0].1);
}

#[tokio::test]
async fn held_mail_expires_silently_with_discard() {
    let (spool, _dir, id) = expiry(QuarantineExpiry::Discard).await;
    let later = SystemTime::now() + Duration::from_secs(3601);
    assert_eq!(spool.maintain_once(later).await.held_expired, 1);
    assert!(spool.get(&id).unwrap().is_none());
    assert!(spool.list().unwrap().is_empty(), "no DSN");
}

#[tokio::test]
async fn the_origin_and_report_nature_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let trusted = submit(
        &spool,
        SubmitOptions {
            trusted_client: true,
            hold: None,
        },
    )
    .await;
    let untrusted = submit(&spool, SubmitOptions::default()).await;
    assert!(spool.get(&trusted).unwrap().unwrap().trusted_client);
    let m = spool.get(&untrusted).unwrap().unwrap();
    assert!(!m.trusted_client && !m.is_report && m.quarantined.is_none());
    let id = spool.next_id();
    let dsn =
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x--\r\n";
    spool.submit(&id, &envelope(), dsn).await.unwrap();
    assert!(spool.get(&id).unwrap().unwrap().is_report);
}

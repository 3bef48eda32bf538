//! The backlog that flow control reads (`Intake::backlog`): messages still to deliver, up at
//! submit, down when delivered or removed, held mail not counted, rebuilt at open.

use corvid_queue::{RecipientStatus, SledSpool, Spool};
use corvid_types::{Address, Envelope, Intake, QueueId, RcptParams, Recipient, SubmitOptions};

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

async fn submit(spool: &SledSpool, options: SubmitOptions) -> QueueId {
    let id = spool.next_id();
    spool
        .submit_with(&id, &envelope(), b"Subject: x\r\n\r\nhi\r\n", &options)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn backlog_counts_messages_until_delivered_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    assert_eq!(spool.backlog(), Some(0));
    let a = submit(&spool, SubmitOptions::default()).await;
    let b = submit(&spool, SubmitOptions::default()).await;
    let c = submit(&spool, SubmitOptions::default()).await;
    assert_eq!(spool.backlog(), Some(3));

    // Delivered: the outcome is recorded, nothing pending is left.
    let mut msg = spool.get(&a).unwrap().unwrap();
    for r in &mut msg.recipients {
        r.status = RecipientStatus::Delivered;
    }
    spool.update(&msg).unwrap();
    assert_eq!(spool.backlog(), Some(2));
    assert!(spool.remove(&a).unwrap());
    assert_eq!(spool.backlog(), Some(2));

    // Removed while still pending (e.g. `queue delete`).
    assert!(spool.remove(&b).unwrap());
    assert_eq!(spool.backlog(), Some(1));

    // Held mail is not delivery's backlog: a quarantine must not slow intake.
    let held = SubmitOptions {
        hold: Some("scan: suspicious".into()),
        ..SubmitOptions::default()
    };
    submit(&spool, held).await;
    assert_eq!(spool.backlog(), Some(1));

    // Rebuilt from the metadata at open.
    drop(spool);
    let spool = SledSpool::open(dir.path()).unwrap();
    assert_eq!(spool.backlog(), Some(1));
    assert!(spool.remove(&c).unwrap());
    assert_eq!(spool.backlog(), Some(0));
}

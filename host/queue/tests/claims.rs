//! `Spool::take_due` and `release_claim` on a real sled spool: a runner gets each due message
//! once until it releases it, in due order, never a held one, and the claims follow every
//! change made meanwhile (retry, hold, release, ETRN, removal, restart).

use corvid_queue::{unix_secs, SledSpool, Spool};
use corvid_types::{
    Address, Envelope, Intake, QueueControl, QueueId, RcptParams, Recipient, SubmitOptions,
};
use std::time::{Duration, SystemTime};

fn envelope(domain: &str) -> Envelope {
    Envelope {
        sender: Some(Address::new("from", "sender.test")),
        recipients: vec![Recipient {
            address: Address::new("rcpt", domain),
            params: RcptParams::default(),
        }],
        ..Envelope::default()
    }
}

async fn submit_to(spool: &SledSpool, domain: &str, hold: Option<&str>) -> QueueId {
    let id = spool.next_id();
    let options = SubmitOptions {
        trusted_client: false,
        hold: hold.map(String::from),
    };
    spool
        .submit_with(&id, &envelope(domain), b"x\r\n", &options)
        .await
        .unwrap();
    id
}

async fn submit(spool: &SledSpool) -> QueueId {
    submit_to(spool, "x.test", None).await
}

fn soon() -> SystemTime {
    SystemTime::now() + Duration::from_secs(5)
}

/// Records a failed attempt of `id`: retried in an hour.
fn retry_later(spool: &SledSpool, id: &QueueId) {
    let mut msg = spool.get(id).unwrap().unwrap();
    msg.recipients[0].attempts += 1;
    msg.recipients[0].next_attempt = unix_secs(SystemTime::now()) + 3600;
    spool.update(&msg).unwrap();
}

#[tokio::test]
async fn claims_come_in_due_order_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&spool).await);
    }
    assert_eq!(spool.take_due(soon(), 2).unwrap(), ids[..2]);
    assert_eq!(spool.take_due(soon(), 10).unwrap(), ids[2..]);
    assert!(spool.take_due(soon(), 10).unwrap().is_empty());
    // The listing still shows them: they are due, only claimed.
    assert_eq!(spool.due(soon()).unwrap(), ids);

    spool.release_claim(&ids[3]);
    spool.release_claim(&ids[3]);
    spool.release_claim(&QueueId("not-there".into()));
    // Its attempt recorded nothing (as when a record fails to write): due again in a
    // minute, not at once.
    assert!(spool.take_due(soon(), 10).unwrap().is_empty());
    let minute = SystemTime::now() + Duration::from_secs(61);
    assert_eq!(
        spool.take_due(minute, 10).unwrap(),
        std::slice::from_ref(&ids[3])
    );
    assert!(spool.take_due(minute, 10).unwrap().is_empty());
}

#[tokio::test]
async fn a_released_claim_is_due_at_the_time_its_attempt_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let a = submit(&spool).await;
    let b = submit(&spool).await;
    assert_eq!(spool.take_due(soon(), 10).unwrap(), [a.clone(), b.clone()]);
    retry_later(&spool, &a);
    assert!(spool.remove(&b).unwrap());
    spool.release_claim(&a);
    spool.release_claim(&b);
    assert!(spool.take_due(soon(), 10).unwrap().is_empty());
    let later = SystemTime::now() + Duration::from_secs(3700);
    assert_eq!(spool.take_due(later, 10).unwrap(), [a]);
    assert!(spool.take_due(later, 10).unwrap().is_empty(), "b is gone");
}

#[tokio::test]
async fn a_held_message_is_never_taken() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let held = submit_to(&spool, "x.test", Some("spamcheck")).await;
    let normal = submit(&spool).await;
    let later = SystemTime::now() + Duration::from_secs(365 * 86_400);
    assert_eq!(
        spool.take_due(later, 10).unwrap(),
        std::slice::from_ref(&normal)
    );

    // Held while its attempt runs: delivery's record keeps the hold, the release of the
    // claim does not make it due.
    spool.hold(&normal, "admin").unwrap();
    retry_later(&spool, &normal);
    spool.release_claim(&normal);
    spool.release_claim(&held);
    assert!(spool.take_due(later, 10).unwrap().is_empty());
    assert!(spool.next_wakeup().is_none());

    // Released by the administrator: due at once, and taken once.
    spool.release(&held).unwrap();
    assert_eq!(spool.take_due(soon(), 10).unwrap(), [held]);
    assert!(spool.take_due(later, 10).unwrap().is_empty());
}

#[tokio::test]
async fn etrn_and_flush_make_retries_due_but_not_claims() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let waiting = submit_to(&spool, "etrn.test", None).await;
    let running = submit_to(&spool, "etrn.test", None).await;
    let other = submit_to(&spool, "other.test", None).await;
    assert_eq!(spool.take_due(soon(), 10).unwrap().len(), 3);
    retry_later(&spool, &waiting);
    retry_later(&spool, &other);
    spool.release_claim(&waiting);
    spool.release_claim(&other);
    assert!(spool.take_due(soon(), 10).unwrap().is_empty());

    // RFC 1985: a queue run for etrn.test starts the waiting message; the one in progress
    // stays with its runner.
    assert_eq!(spool.start_run("etrn.test").unwrap(), 2);
    assert_eq!(spool.take_due(soon(), 10).unwrap(), [waiting]);
    spool.release_claim(&running);
    assert_eq!(spool.take_due(soon(), 10).unwrap(), [running]);

    assert_eq!(spool.flush_all().unwrap(), 3);
    assert_eq!(spool.take_due(soon(), 10).unwrap(), [other]);
}

#[tokio::test]
async fn claims_end_with_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let a = submit(&spool).await;
    let b = submit(&spool).await;
    assert_eq!(spool.take_due(soon(), 10).unwrap().len(), 2);
    retry_later(&spool, &b);
    drop(spool);

    // Restarted mid-attempt: nothing is in progress, the index is rebuilt from the records.
    let spool = SledSpool::open(dir.path()).unwrap();
    assert_eq!(spool.take_due(soon(), 10).unwrap(), [a]);
    let later = SystemTime::now() + Duration::from_secs(3700);
    assert_eq!(spool.take_due(later, 10).unwrap(), [b]);
}

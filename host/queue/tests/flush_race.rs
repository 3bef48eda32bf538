//! `queue flush` and ETRN against deliveries recorded at the same time: the scan runs without
//! the index lock, so each message must be read again under the lock before it is rewritten.
//! Rewriting the scan's copy would put a recipient recorded delivered meanwhile back to
//! pending (delivered twice).

use corvid_queue::{QueuedMessage, RecipientStatus, SledSpool, Spool};
use corvid_types::{Address, Envelope, Intake, QueueControl, QueueId, RcptParams, Recipient};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const MESSAGES: usize = 300;

fn envelope(n: usize) -> Envelope {
    let rcpt = Recipient {
        address: Address::new(format!("r{n}"), "x.test"),
        params: RcptParams::default(),
    };
    Envelope {
        sender: Some(Address::new("from", "sender.test")),
        recipients: vec![rcpt],
        ..Envelope::default()
    }
}

fn status(msg: &QueuedMessage) -> RecipientStatus {
    msg.recipients[0].status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_recorded_during_a_flush_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let mut submits = Vec::new();
    for n in 0..MESSAGES {
        let spool = Arc::clone(&spool);
        submits.push(tokio::spawn(async move {
            let id = spool.next_id();
            spool.submit(&id, &envelope(n), b"x\r\n").await.map(|()| id)
        }));
    }
    let mut ids: Vec<QueueId> = Vec::new();
    for s in submits {
        ids.push(s.await.unwrap().unwrap());
    }

    // Flushes (`queue flush` and ETRN for the recipients' domain, in turn) run one after
    // another while the deliveries are recorded.
    let recording = Arc::new(AtomicBool::new(true));
    let flushing = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (spool, recording, flushing) = (
            Arc::clone(&spool),
            Arc::clone(&recording),
            Arc::clone(&flushing),
        );
        std::thread::spawn(move || {
            let (mut passes, mut touched_during) = (0, 0);
            while recording.load(Ordering::SeqCst) {
                flushing.store(true, Ordering::SeqCst);
                let touched = if passes % 2 == 0 {
                    spool.flush_all().unwrap()
                } else {
                    spool.start_run("x.test").unwrap()
                };
                passes += 1;
                touched_during += usize::from(touched > 0);
            }
            touched_during
        })
    };
    // Each message's delivery is recorded once, as the runner does: read, mark, write. In the
    // opposite order to the scan's, so that the message just recorded is one a flush running
    // now has still to rewrite.
    let recorder = {
        let (spool, recording, ids) = (Arc::clone(&spool), Arc::clone(&recording), ids.clone());
        std::thread::spawn(move || {
            while !flushing.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            for id in ids.iter().rev() {
                let mut msg = spool.get(id).unwrap().expect("queued");
                msg.recipients[0].status = RecipientStatus::Delivered;
                spool.update(&msg).unwrap();
            }
            recording.store(false, Ordering::SeqCst);
        })
    };
    recorder.join().unwrap();
    let flushes = flusher.join().unwrap();
    // The race really ran: flushes found pending messages while deliveries were recorded.
    assert!(flushes >= 1, "no flush overlapped the deliveries");

    let undone: Vec<&QueueId> = ids
        .iter()
        .filter(|id| spool.get(id).unwrap().map(|m| status(&m)) != Some(RecipientStatus::Delivered))
        .collect();
    assert!(
        undone.is_empty(),
        "{} of {MESSAGES} deliveries overwritten by a flush, first {:?}",
        undone.len(),
        undone.first()
    );
    // Nothing is due again: a flush after the last delivery finds nothing pending.
    assert_eq!(spool.flush_all().unwrap(), 0);
    assert!(spool.due(std::time::SystemTime::now()).unwrap().is_empty());
}

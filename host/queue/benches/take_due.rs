//! The queue runner's pass at a backlog of 1k, 10k and 50k due messages with 1,000 in
//! progress: the listing it used to do (`Spool::due`, every due id copied, then the ids in
//! progress filtered out as `Running::claim_all` did) against `Spool::take_due` (one attempt
//! ended: its claim released, one message taken).
//!
//! `cargo bench -p corvid-queue --bench take_due` prints nanoseconds per pass (wall clock:
//! write the load average next to them). For instruction counts, run the built binary under
//! callgrind with `TAKE_DUE_CALLGRIND=1` (a few calls each) and
//! `--toggle-collect='*list_pass*' --toggle-collect='*take_pass*'` (and `TAKE_DUE_BACKLOG=N`
//! for one backlog a run), then divide each function's inclusive count by the calls printed.

use corvid_queue::{SledSpool, Spool};
use corvid_types::{Address, Envelope, Intake, QueueId, RcptParams, Recipient};
use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const BACKLOGS: [usize; 3] = [1_000, 10_000, 50_000];
const IN_PROGRESS: usize = 1_000;

fn envelope() -> Envelope {
    Envelope {
        sender: Some(Address::new("from", "sender.test")),
        recipients: vec![Recipient {
            address: Address::new("rcpt", "x.test"),
            params: RcptParams::default(),
        }],
        ..Envelope::default()
    }
}

/// A spool with `n` due messages, in `/dev/shm` when there is one (the fsyncs of the set-up
/// are not what is measured).
fn fill(n: usize) -> (tempfile::TempDir, Arc<SledSpool>) {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    let spool = SledSpool::open(dir.path()).expect("spool");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in 0..n.div_ceil(500) {
            for _ in 0..500.min(n - chunk * 500) {
                let spool = Arc::clone(&spool);
                tasks.spawn(async move {
                    let id = spool.next_id();
                    spool
                        .submit(&id, &envelope(), b"x\r\n")
                        .await
                        .expect("submit");
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    });
    (dir, spool)
}

/// The old pass: every due id listed, those in progress skipped. Returns how many were new.
#[inline(never)]
fn list_pass(spool: &SledSpool, running: &HashSet<QueueId>, now: SystemTime) -> usize {
    let due = spool.due(now).expect("due");
    due.into_iter().filter(|id| !running.contains(id)).count()
}

/// The pass now: one attempt ended (its claim released), one message taken.
#[inline(never)]
fn take_pass(spool: &SledSpool, ended: &QueueId, now: SystemTime) -> usize {
    spool.release_claim(ended);
    spool.take_due(now, 1).expect("take_due").len()
}

/// Nanoseconds per call of `f`: the best of 5 rounds of `calls` calls.
fn ns_per_call(calls: usize, mut f: impl FnMut() -> usize) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let callgrind = std::env::var_os("TAKE_DUE_CALLGRIND").is_some();
    // One backlog only (`TAKE_DUE_BACKLOG=10000`): callgrind's counts are then its own.
    let only: Option<usize> = std::env::var("TAKE_DUE_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok());
    println!("backlog  in progress  listing pass (ns)  take_due pass (ns)");
    for n in BACKLOGS
        .into_iter()
        .filter(|n| only.is_none_or(|o| o == *n))
    {
        let (_dir, spool) = fill(n);
        // Every message is due: the set-up may take longer than a second.
        let now = SystemTime::now() + Duration::from_secs(5);
        let taken = spool.take_due(now, IN_PROGRESS).expect("take_due");
        let running: HashSet<QueueId> = taken.iter().cloned().collect();
        // The listing as it was: no claims in the index.
        for id in &taken {
            spool.release_claim(id);
        }
        let list_calls = if callgrind {
            3
        } else {
            (2_000_000 / n).max(20)
        };
        let list = ns_per_call(list_calls, || list_pass(&spool, &running, now));
        let taken = spool.take_due(now, IN_PROGRESS).expect("take_due");
        let ended = &taken[taken.len() / 2];
        let take_calls = if callgrind { 30 } else { 200_000 };
        let take = ns_per_call(take_calls, || take_pass(&spool, ended, now));
        println!("{n:>7}  {IN_PROGRESS:>11}  {list:>17.0}  {take:>18.0}");
        if callgrind {
            println!(
                "  calls: list_pass {} take_pass {}",
                list_calls * 5,
                take_calls * 5
            );
        }
    }
}

//! Group commit of directory fsyncs: concurrent deliveries into one Maildir share the fsync of
//! its `new/` instead of paying one each.
//!
//! The rule that keeps each delivery as durable as with its own fsync: a caller that renamed
//! its file into a directory returns only after an fsync of that directory that STARTED after
//! its rename and completed. A sync already running may have started before the rename, so a
//! caller arriving during one waits for the next round; one caller (the leader) runs that round
//! for everyone who arrived while the previous one ran. With N deliveries in flight, a directory
//! gets about one fsync per round instead of N, and no caller waits more than two rounds.
//! A caller sleeps on its own round's condition: it is woken when that round ends, or (one
//! caller of the next round) to lead it, not at the end of every round.
//!
//! The deliveries run on tokio's blocking threads (see `crate::blocking`), so waiting here
//! blocks a thread, never the runtime.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// Which directory: its device and inode, so two paths to one directory share rounds and a
/// directory replaced under the same path never shares a round with the old one.
pub(crate) type DirKey = (u64, u64);

/// The outcome of one round, for every caller that waited on it. `io::Error` is not `Clone`,
/// so the error is kept as what the callers need: the OS error code when there is one (the
/// bounce text depends on it, see `crate::error`), else its kind and message.
#[derive(Clone, Debug)]
enum RoundError {
    Os(i32),
    Other(io::ErrorKind, String),
}

impl RoundError {
    fn of(e: &io::Error) -> RoundError {
        match e.raw_os_error() {
            Some(code) => RoundError::Os(code),
            None => RoundError::Other(e.kind(), e.to_string()),
        }
    }

    fn to_io(&self) -> io::Error {
        match self {
            RoundError::Os(code) => io::Error::from_raw_os_error(*code),
            RoundError::Other(kind, msg) => io::Error::new(*kind, msg.clone()),
        }
    }
}

/// One fsync of a directory; its result is set once, when the fsync has returned.
#[derive(Default)]
struct Round {
    result: OnceLock<Result<(), RoundError>>,
    /// Signalled (with the group's lock) when the result is set, and to hand the lead of a
    /// round that has not started to one of its callers. A condition per round: a caller
    /// sleeps until its own round ends, not woken at the end of every round before it.
    turn: Condvar,
}

/// The rounds of one directory.
struct State {
    /// A round is being synced (by its leader, outside the lock).
    running: bool,
    /// The round that has not started yet: callers arriving now join it.
    next: Arc<Round>,
    /// Callers waiting in `next`: when the running round ends, one of them is woken to lead.
    next_waiting: usize,
}

struct Group {
    state: Mutex<State>,
}

/// The groups of directories with a caller in flight; a directory's entry goes away with its
/// last caller, so the map holds no more entries than there are deliveries at once.
#[derive(Default)]
pub(crate) struct DirSync {
    groups: Mutex<HashMap<DirKey, (Arc<Group>, usize)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks can panic halfway through an update.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DirSync {
    /// Call after the rename into the directory `key`: returns once a `sync` of that directory
    /// that started after this call began has completed, with that sync's result. `sync` is
    /// this caller's way to fsync the directory; it runs only if this caller leads a round.
    pub(crate) fn sync_after(
        &self,
        key: DirKey,
        sync: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let group = {
            let mut groups = lock(&self.groups);
            let entry = groups.entry(key).or_insert_with(|| {
                let group = Group {
                    state: Mutex::new(State {
                        running: false,
                        next: Arc::default(),
                        next_waiting: 0,
                    }),
                };
                (Arc::new(group), 0)
            });
            entry.1 += 1;
            entry.0.clone()
        };
        let result = group.join(sync);
        let mut groups = lock(&self.groups);
        if let Some(entry) = groups.get_mut(&key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                groups.remove(&key);
            }
        }
        result
    }
}

impl Group {
    fn join(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut state = lock(&self.state);
        // `next` has not started, so it starts after this caller's rename (which came before
        // this call): it is the round that covers this caller.
        let mine = state.next.clone();
        let mut counted = false;
        loop {
            if let Some(result) = mine.result.get() {
                return result.clone().map_err(|e| e.to_io());
            }
            if !state.running {
                // No round runs and ours has no result, so ours has not started: lead it.
                // Callers arriving from now on join the round after it.
                state.running = true;
                state.next = Arc::default();
                state.next_waiting = 0;
                drop(state);
                // A panic here would leave the round running with no result: every waiter,
                // and every later delivery into this directory, would wait for ever.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(sync))
                    .unwrap_or_else(|_| Err(io::Error::other("the directory fsync panicked")));
                let shared = result.as_ref().map(|_| ()).map_err(RoundError::of);
                let mut state = lock(&self.state);
                let _ = mine.result.set(shared);
                state.running = false;
                mine.turn.notify_all();
                if state.next_waiting > 0 {
                    // The next round has callers: one of them leads it.
                    state.next.turn.notify_one();
                }
                return result;
            }
            if !counted {
                // `mine` is `next` here: a running round was led by someone else, and ours
                // was the next one when this caller arrived and has not started since.
                state.next_waiting += 1;
                counted = true;
            }
            state = mine
                .turn
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_sync_fails_its_round_and_the_next_one_runs() {
        let dirs = DirSync::default();
        let got = dirs.sync_after((1, 1), || panic!("injected"));
        assert!(got.is_err_and(|e| e.to_string().contains("panicked")));
        assert!(dirs.sync_after((1, 1), || Ok(())).is_ok());
    }
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::thread;
    use std::time::Duration;

    const THREADS: u64 = 32;
    const PER_THREAD: u64 = 5;

    /// Every caller returns only after a sync that started after its rename and ended before it
    /// returned; rounds of one directory never overlap; concurrent callers share rounds.
    #[test]
    fn each_caller_is_covered_by_a_sync_started_after_its_rename() {
        let dirs = DirSync::default();
        let clock = AtomicU64::new(0);
        let running = AtomicBool::new(false);
        let rounds: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
        let checks: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..PER_THREAD {
                        let renamed = clock.fetch_add(1, Ordering::SeqCst);
                        dirs.sync_after((1, 2), || {
                            assert!(!running.swap(true, Ordering::SeqCst), "rounds overlap");
                            let start = clock.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(3));
                            let end = clock.fetch_add(1, Ordering::SeqCst);
                            running.store(false, Ordering::SeqCst);
                            lock(&rounds).push((start, end));
                            Ok(())
                        })
                        .unwrap();
                        let returned = clock.fetch_add(1, Ordering::SeqCst);
                        lock(&checks).push((renamed, returned));
                    }
                });
            }
        });
        let rounds = rounds.into_inner().unwrap();
        let checks = checks.into_inner().unwrap();
        assert_eq!(checks.len() as u64, THREADS * PER_THREAD);
        for (renamed, returned) in checks {
            assert!(
                rounds.iter().any(|&(s, e)| s > renamed && e < returned),
                "no sync between rename at {renamed} and return at {returned}: {rounds:?}"
            );
        }
        assert!(
            (rounds.len() as u64) < THREADS * PER_THREAD / 2,
            "{} rounds for {} callers: not shared",
            rounds.len(),
            THREADS * PER_THREAD
        );
        assert!(lock(&dirs.groups).is_empty(), "groups left behind");
    }

    /// A failed sync fails every caller that waited on that round, with the same OS error.
    #[test]
    fn a_failed_sync_reaches_every_waiter_of_its_round() {
        let dirs = DirSync::default();
        let syncs = AtomicU64::new(0);
        let failed = AtomicU64::new(0);
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let r = dirs.sync_after((1, 2), || {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(5));
                        Err(io::Error::from_raw_os_error(libc::EIO))
                    });
                    let e = r.expect_err("a waiter of a failed round succeeded");
                    assert_eq!(e.raw_os_error(), Some(libc::EIO));
                    failed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(failed.load(Ordering::SeqCst), THREADS);
        assert!(
            syncs.load(Ordering::SeqCst) < THREADS,
            "no waiter shared a round"
        );
    }

    /// An error without an OS code keeps its kind; a later round is not failed by an earlier
    /// one; separate directories never share a round.
    #[test]
    fn errors_keep_their_kind_and_rounds_are_per_directory() {
        let dirs = DirSync::default();
        let e = dirs
            .sync_after((1, 1), || Err(io::Error::other("boom")))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert!(e.to_string().contains("boom"));
        assert!(dirs.sync_after((1, 1), || Ok(())).is_ok());
        let synced = AtomicU64::new(0);
        thread::scope(|s| {
            for dir in 0..8 {
                let (dirs, synced) = (&dirs, &synced);
                s.spawn(move || {
                    dirs.sync_after((2, dir), || {
                        synced.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap()
                });
            }
        });
        assert_eq!(synced.load(Ordering::SeqCst), 8);
    }
}

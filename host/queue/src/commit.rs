//! Group commit: many sessions submit at once, and one fsync makes a whole batch durable.
//!
//! Each submitter inserts its records into sled (memory and the write-ahead log buffer), then
//! asks for a flush *generation*: the number of the first flush that will start after its
//! insert. A single flusher thread runs `sled::Db::flush` (which only writes the log) followed
//! by [`DiskSync::sync`] (`fdatasync` of the log, `fsync` of new blob files and directories)
//! over and over while anyone waits; a generation whose write or sync failed fails every
//! submitter of it (the client gets a 451, it was not told 250); submitters that arrive while a flush is running all get
//! the next generation, so they share the next fsync. A submitter is released when a flush of
//! its generation (or a later one) succeeded: a flush covers every insert that preceded it.
//!
//! The flusher is one long-lived plain thread, woken when a flush is wanted, not a tokio task:
//! it does not depend on the runtime still running, and a submit future dropped mid-wait
//! (client gone) cannot strand the rest of its batch. (A thread per busy period cost a thread
//! start per message at low concurrency.)

use crate::disk_sync::DiskSync;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use tokio::sync::watch;

/// Generations are numbered from 1; 0 means "none yet".
#[derive(Clone, Debug, Default)]
struct CommitState {
    /// The generation of the flush running (or last run).
    started: u64,
    /// The highest generation any submitter waits for.
    wanted: u64,
    /// The last generation that finished, successfully or not.
    completed: u64,
    /// The last generation that finished successfully.
    last_ok: u64,
    /// The error of the last failed flush.
    last_error: Option<String>,
    /// True while the flusher thread runs.
    flushing: bool,
}

pub(crate) struct Committer {
    db: sled::Db,
    disk: DiskSync,
    /// Both the lock (`send_if_modified`/`send_modify` run under the channel's lock) and the
    /// condition submitters wait on.
    state: watch::Sender<CommitState>,
    flushes: AtomicU64,
    /// The flusher thread, joined when the spool is dropped, so that no thread keeps the
    /// database open (sled locks it) after that.
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// Wakes the flusher: `(kicked, stop)`.
    kick: Mutex<(bool, bool)>,
    kicked: Condvar,
    /// Signalled after every finished flush, for [`Committer::commit_blocking`].
    done_lock: Mutex<()>,
    done: Condvar,
}

impl Committer {
    pub(crate) fn new(db: sled::Db, disk: DiskSync) -> Arc<Self> {
        Arc::new(Committer {
            db,
            disk,
            state: watch::Sender::new(CommitState::default()),
            flushes: AtomicU64::new(0),
            flusher: Mutex::new(None),
            kick: Mutex::new((false, false)),
            kicked: Condvar::new(),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
        })
    }

    /// How many flushes the group committer ran.
    pub(crate) fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// How many times the log was fdatasynced, and how many blob files were fsynced.
    pub(crate) fn sync_counts(&self) -> (u64, u64) {
        (self.disk.log_syncs(), self.disk.blob_syncs())
    }

    /// Waits until everything inserted before this call is on stable storage.
    pub(crate) async fn commit(self: &Arc<Self>) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let (generation, start) = self.request();
        if start {
            self.start_flusher();
        }
        let state = rx
            .wait_for(|s| s.completed >= generation)
            .await
            .map_err(|_| "group committer stopped".to_string())?;
        if state.last_ok >= generation {
            Ok(())
        } else {
            Err(state.last_error.clone().unwrap_or_default())
        }
    }

    /// [`Committer::commit`] for synchronous callers (queue updates from delivery threads, the
    /// admin commands): they share the flushes of concurrent submits instead of each running
    /// an fsync of its own.
    pub(crate) fn commit_blocking(self: &Arc<Self>) -> Result<(), String> {
        let (generation, start) = self.request();
        if start {
            self.start_flusher();
        }
        let mut guard = self.done_lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            {
                let state = self.state.borrow();
                if state.completed >= generation {
                    return if state.last_ok >= generation {
                        Ok(())
                    } else {
                        Err(state.last_error.clone().unwrap_or_default())
                    };
                }
            }
            guard = self.done.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Registers a waiter; returns its generation and whether the caller must start the
    /// flusher (none is running).
    fn request(&self) -> (u64, bool) {
        let mut generation = 0;
        let mut start = false;
        self.state.send_if_modified(|s| {
            generation = s.started + 1;
            s.wanted = s.wanted.max(generation);
            if !s.flushing {
                s.flushing = true;
                s.started = generation;
                start = true;
            }
            // Nothing completed: waiters need not wake.
            false
        });
        (generation, start)
    }

    /// Wakes the flusher thread, starting it the first time.
    fn start_flusher(self: &Arc<Self>) {
        {
            let mut kick = self.kick.lock().unwrap_or_else(|p| p.into_inner());
            kick.0 = true;
        }
        self.kicked.notify_one();
        let mut flusher = self.lock_flusher();
        if flusher.is_some() {
            return;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("corvid-spool-flush".into())
            .spawn(move || me.run());
        match spawned {
            Ok(handle) => *flusher = Some(handle),
            Err(e) => {
                drop(flusher);
                // Without a thread no flush happens: fail every waiting generation so that
                // nobody hangs.
                let reason = format!("cannot start flusher: {e}");
                while self.finish(Err(reason.clone())) {}
            }
        }
    }

    /// Stops the flusher thread, if any, and waits for it to end.
    pub(crate) fn join_flusher(&self) {
        {
            let mut kick = self.kick.lock().unwrap_or_else(|p| p.into_inner());
            kick.1 = true;
        }
        self.kicked.notify_one();
        let handle = self.lock_flusher().take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("spool flusher thread panicked");
            }
        }
    }

    /// The flusher thread: sleeps until kicked, then flushes while anyone waits.
    fn run(&self) {
        loop {
            {
                let mut kick = self.kick.lock().unwrap_or_else(|p| p.into_inner());
                while !kick.0 && !kick.1 {
                    kick = self.kicked.wait(kick).unwrap_or_else(|p| p.into_inner());
                }
                if !kick.0 && kick.1 {
                    return;
                }
                kick.0 = false;
            }
            self.flush_loop();
        }
    }

    fn lock_flusher(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.flusher.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush_loop(&self) {
        loop {
            let result = self.flush_durably();
            self.flushes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = &result {
                tracing::error!(error = %e, "spool flush failed");
            }
            if !self.finish(result) {
                return;
            }
        }
    }

    /// One generation: the blobs present before the flush are whole after it (see
    /// `disk_sync`), then everything is synced.
    fn flush_durably(&self) -> Result<(), String> {
        let listed = self.disk.list_blobs().map_err(|e| e.to_string())?;
        self.db.flush().map_err(|e| e.to_string())?;
        self.disk.sync(&listed).map_err(|e| e.to_string())
    }

    /// Records the result of the running generation; returns true when another flush must
    /// run for submitters that arrived meanwhile.
    fn finish(&self, result: Result<(), String>) -> bool {
        let mut more = false;
        self.state.send_modify(|s| {
            let generation = s.started;
            s.completed = generation;
            match result {
                Ok(()) => s.last_ok = generation,
                Err(e) => s.last_error = Some(e),
            }
            if s.wanted > generation {
                s.started = s.wanted;
                more = true;
            } else {
                s.flushing = false;
            }
        });
        // Taking the lock orders this after any blocking waiter's check of the state.
        drop(self.done_lock.lock().unwrap_or_else(|p| p.into_inner()));
        self.done.notify_all();
        more
    }
}

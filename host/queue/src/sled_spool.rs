//! The spool on sled: one tree of JSON metadata, one tree of raw content, both keyed by id.

use crate::commit::Committer;
use crate::id::IdGenerator;
use crate::index::DueIndex;
use crate::message::{from_unix_secs, unix_secs};
use crate::{QueueError, QueuedMessage, Spool};
use async_trait::async_trait;
use corvid_types::{Envelope, Intake, IntakeError, QueueId};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// The sled-backed spool. Open it once per process (sled locks the directory) and share the
/// `Arc` as `Arc<dyn Spool>` and `Arc<dyn Intake>`.
pub struct SledSpool {
    kv: crate::SledKv,
    db: sled::Db,
    meta: sled::Tree,
    content: sled::Tree,
    committer: Arc<Committer>,
    /// Also serialises metadata writes, so a read-modify-write (`flush_all`) cannot interleave
    /// with an `update` or `remove` of the same message.
    index: Mutex<DueIndex>,
    ids: IdGenerator,
    wake: watch::Sender<u64>,
    closed: AtomicBool,
}

impl SledSpool {
    /// Opens (or creates) the spool in `dir` and picks up every message already there.
    pub fn open(dir: &Path) -> Result<Arc<SledSpool>, QueueError> {
        let db = open_db(dir)?;
        let meta = db.open_tree("meta")?;
        let content = db.open_tree("content")?;
        remove_orphan_content(&meta, &content)?;
        remove_finished(&meta, &content)?;
        db.flush()?;
        let index = load_index(&meta);
        let kv = crate::SledKv::new(db.open_tree("kv")?);
        kv.sweep()?;
        Ok(Arc::new(SledSpool {
            kv,
            committer: Committer::new(db.clone()),
            db,
            meta,
            content,
            index: Mutex::new(index),
            ids: IdGenerator::default(),
            wake: watch::Sender::new(0),
            closed: AtomicBool::new(false),
        }))
    }

    /// Makes every pending recipient for which `wanted` holds due now; returns the number of
    /// messages touched.
    fn flush_matching(
        &self,
        wanted: impl Fn(&corvid_types::Address) -> bool,
    ) -> Result<usize, QueueError> {
        let now = unix_secs(SystemTime::now());
        let mut touched = 0;
        {
            let mut index = self.lock_index();
            for mut msg in self.list()? {
                let mut hit = false;
                for r in msg
                    .recipients
                    .iter_mut()
                    .filter(|r| r.is_pending() && wanted(&r.recipient.address))
                {
                    r.next_attempt = now;
                    hit = true;
                }
                if !hit {
                    continue;
                }
                self.meta.insert(msg.id.0.as_bytes(), encode(&msg)?)?;
                index.set(&msg.id, msg.next_due());
                touched += 1;
            }
        }
        self.flush()?;
        self.wake_runners();
        Ok(touched)
    }

    /// The plugins' key-value store, in the same database.
    pub fn kv(&self) -> crate::SledKv {
        self.kv.clone()
    }

    /// How many group-commit flushes ran (for tests and metrics).
    pub fn flush_count(&self) -> u64 {
        self.committer.flush_count()
    }

    fn lock_index(&self) -> MutexGuard<'_, DueIndex> {
        // The guarded data stays consistent even if a holder panicked: every update is a
        // single `set`.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every write so far durable, sharing the fsync with concurrent submits.
    fn flush(&self) -> Result<(), QueueError> {
        self.committer
            .commit_blocking()
            .map_err(QueueError::Storage)
    }

    fn wake_runners(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Writes a new message: content first, then metadata, so that a crash in between leaves
    /// only orphan content, which `open` deletes.
    fn insert_new(&self, msg: &QueuedMessage, content: &[u8]) -> Result<(), QueueError> {
        let key = msg.id.0.as_bytes();
        self.content.insert(key, content)?;
        self.meta.insert(key, encode(msg)?)?;
        Ok(())
    }

    /// Drops a message whose submission did not complete (best effort, not flushed): the
    /// client was not told 250, so it keeps and retries the message.
    fn forget(&self, id: &QueueId) {
        let mut index = self.lock_index();
        let key = id.0.as_bytes();
        if let Err(e) = self.meta.remove(key).and(self.content.remove(key)) {
            tracing::error!(queue_id = %id, error = %e, "cannot drop unacknowledged message");
        }
        index.set(id, None);
    }
}

impl Drop for SledSpool {
    fn drop(&mut self) {
        // Every submitter has been answered (they borrow the spool), so the flusher is done
        // or about to return; after this the database can be opened again.
        self.committer.join_flusher();
    }
}

/// Removes a message from the spool unless `disarm` is called: a submit future dropped while
/// waiting for the fsync (the client went away) leaves nothing behind to deliver.
struct SubmitGuard<'a> {
    spool: &'a SledSpool,
    id: &'a QueueId,
    armed: bool,
}

impl Drop for SubmitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.spool.forget(self.id);
        }
    }
}

#[async_trait]
impl Intake for SledSpool {
    fn next_id(&self) -> QueueId {
        self.ids.next()
    }

    async fn submit_with(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: &[u8],
        _options: &corvid_types::SubmitOptions,
    ) -> Result<(), IntakeError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(IntakeError::Closed);
        }
        let now = unix_secs(SystemTime::now());
        let msg = QueuedMessage::new(id.clone(), envelope.clone(), content.len() as u64, now);
        let mut guard = SubmitGuard {
            spool: self,
            id,
            armed: true,
        };
        self.insert_new(&msg, content)
            .map_err(|e| IntakeError::Storage(e.to_string()))?;
        self.committer
            .commit()
            .await
            .map_err(IntakeError::Storage)?;
        guard.armed = false;
        self.lock_index().set(id, msg.next_due());
        self.wake_runners();
        Ok(())
    }
}

#[async_trait]
impl Spool for SledSpool {
    fn list(&self) -> Result<Vec<QueuedMessage>, QueueError> {
        let mut out = Vec::new();
        for item in self.meta.iter() {
            let (key, value) = item?;
            match decode(&key, &value) {
                Ok(msg) => out.push(msg),
                Err(e) => tracing::error!(error = %e, "skipping unreadable queue entry"),
            }
        }
        Ok(out)
    }

    fn get(&self, id: &QueueId) -> Result<Option<QueuedMessage>, QueueError> {
        match self.meta.get(id.0.as_bytes())? {
            Some(value) => decode(id.0.as_bytes(), &value).map(Some),
            None => Ok(None),
        }
    }

    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, QueueError> {
        Ok(self.content.get(id.0.as_bytes())?.map(|v| v.to_vec()))
    }

    fn update(&self, msg: &QueuedMessage) -> Result<(), QueueError> {
        {
            let mut index = self.lock_index();
            let key = msg.id.0.as_bytes();
            if !self.meta.contains_key(key)? {
                return Err(QueueError::NotFound(msg.id.clone()));
            }
            self.meta.insert(key, encode(msg)?)?;
            index.set(&msg.id, msg.next_due());
        }
        self.flush()
    }

    fn remove(&self, id: &QueueId) -> Result<bool, QueueError> {
        let existed = {
            let mut index = self.lock_index();
            let key = id.0.as_bytes();
            // Metadata first: a crash in between leaves orphan content, cleaned at open.
            let existed = self.meta.remove(key)?.is_some();
            self.content.remove(key)?;
            index.set(id, None);
            existed
        };
        self.flush()?;
        Ok(existed)
    }

    fn due(&self, now: SystemTime) -> Result<Vec<QueueId>, QueueError> {
        Ok(self.lock_index().due(unix_secs(now)))
    }

    fn next_wakeup(&self) -> Option<SystemTime> {
        self.lock_index().earliest().map(from_unix_secs)
    }

    fn flush_all(&self) -> Result<usize, QueueError> {
        self.flush_matching(|_| true)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    async fn sync(&self) -> Result<(), QueueError> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// How long `open` waits for a database this process just closed.
const REOPEN_PATIENCE: Duration = Duration::from_secs(3);

/// Opens the database. Durability comes from our explicit flushes only (see `commit`), so
/// sled's periodic background flush is switched off.
///
/// sled locks the directory (`flock`) and its internal thread pool may hold the file for a few
/// milliseconds after the last handle is dropped; reopening in the same process (tests, a
/// reload) then sees the lock taken. Another process holding it fails after the wait too.
/// sled's page cache; its default (1 GiB) would let a busy server grow far beyond what a
/// queue of messages in flight needs.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn open_db(dir: &Path) -> Result<sled::Db, QueueError> {
    let started = Instant::now();
    loop {
        match sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Err(sled::Error::Io(e)) if is_lock_busy(&e) && started.elapsed() < REOPEN_PATIENCE => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// sled 0.34.7 (pinned) reports a taken lock only as an `Other` error with this text.
fn is_lock_busy(e: &io::Error) -> bool {
    e.to_string().starts_with("could not acquire lock")
}

fn encode(msg: &QueuedMessage) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(msg).map_err(|e| QueueError::Encode {
        id: msg.id.clone(),
        reason: e.to_string(),
    })
}

fn decode(key: &[u8], value: &[u8]) -> Result<QueuedMessage, QueueError> {
    serde_json::from_slice(value).map_err(|e| QueueError::Corrupt {
        id: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// Builds the schedule from what is on disk. Unreadable records are logged and left alone.
fn load_index(meta: &sled::Tree) -> DueIndex {
    let mut index = DueIndex::default();
    for item in meta.iter() {
        let decoded = item
            .map_err(QueueError::from)
            .and_then(|(k, v)| decode(&k, &v));
        match decoded {
            Ok(msg) => index.set(&msg.id, msg.next_due()),
            Err(e) => tracing::error!(error = %e, "unreadable queue entry at open"),
        }
    }
    index
}

/// Deletes messages with no recipient left to attempt: left by a crash between recording the
/// last outcome and removing the message.
fn remove_finished(meta: &sled::Tree, content: &sled::Tree) -> Result<(), QueueError> {
    for item in meta.iter() {
        let (key, value) = item?;
        if let Ok(msg) = decode(&key, &value) {
            if !msg.has_pending() {
                tracing::info!(queue_id = %msg.id, "removing finished message left by an interrupted run");
                meta.remove(&key)?;
                content.remove(&key)?;
            }
        }
    }
    Ok(())
}

/// Deletes content with no metadata: left by a crash in the middle of a submit or remove.
fn remove_orphan_content(meta: &sled::Tree, content: &sled::Tree) -> Result<(), QueueError> {
    for key in content.iter().keys() {
        let key = key?;
        if !meta.contains_key(&key)? {
            tracing::warn!(queue_id = %String::from_utf8_lossy(&key), "removing orphan content");
            content.remove(&key)?;
        }
    }
    Ok(())
}

/// ETRN (RFC 1985): a queue run for one domain, or with `@` for it and its subdomains.
impl corvid_types::QueueControl for SledSpool {
    fn start_run(&self, node: &str) -> Result<usize, corvid_types::IntakeError> {
        let (domain, subdomains) = match node.strip_prefix('@') {
            Some(d) => (d.to_ascii_lowercase(), true),
            None => (node.to_ascii_lowercase(), false),
        };
        let suffix = format!(".{domain}");
        self.flush_matching(|a| {
            let d = a.domain_lower();
            d == domain || (subdomains && d.ends_with(&suffix))
        })
        .map_err(|e| corvid_types::IntakeError::Storage(e.to_string()))
    }
}

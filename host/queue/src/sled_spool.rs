//! The spool on sled: one tree of JSON metadata, one tree of raw content, both keyed by id.

use crate::commit::Committer;
use crate::id::IdGenerator;
use crate::index::DueIndex;
use crate::message::{from_unix_secs, unix_secs};
pub(crate) use crate::recover::{decode, encode};
use crate::recover::{load_index, open_db, remove_finished, remove_orphan_content};
use crate::{QueueError, QueuedMessage, Spool, SpoolSettings};
use async_trait::async_trait;
use corvid_types::{IntakeError, QueueId};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::watch;

/// The sled-backed spool. Open it once per process (sled locks the directory) and share the
/// `Arc` as `Arc<dyn Spool>` and `Arc<dyn Intake>`.
pub struct SledSpool {
    pub(crate) kv: crate::SledKv,
    pub(crate) meta: sled::Tree,
    pub(crate) content: sled::Tree,
    /// Delivery's MTA-STS policy cache, by recipient domain (opaque to the spool).
    sts: sled::Tree,
    /// Delivery's TLS-RPT counts, by policy domain (`tlsrpt_store.rs`).
    pub(crate) tlsrpt: sled::Tree,
    pub(crate) committer: Arc<Committer>,
    /// Also serialises metadata writes, so a read-modify-write (`flush_all`, `hold`) cannot
    /// interleave with an `update` or `remove` of the same message.
    index: Mutex<DueIndex>,
    /// The index's count of messages still to deliver ([`Intake::backlog`]).
    pub(crate) backlog: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) ids: IdGenerator,
    wake: watch::Sender<u64>,
    pub(crate) closed: AtomicBool,
    pub(crate) settings: SpoolSettings,
}

impl SledSpool {
    /// Opens (or creates) the spool in `dir` with default settings.
    pub fn open(dir: &Path) -> Result<Arc<SledSpool>, QueueError> {
        Self::open_with(dir, SpoolSettings::default())
    }

    /// Opens (or creates) the spool in `dir` and picks up every message already there.
    pub fn open_with(dir: &Path, settings: SpoolSettings) -> Result<Arc<SledSpool>, QueueError> {
        Self::open_with_cache(dir, settings, crate::DEFAULT_CACHE_BYTES)
    }

    /// [`SledSpool::open_with`] with sled's page cache set to `cache_bytes` (`queue.cache_mb`,
    /// at least 256: sled panics below).
    pub fn open_with_cache(
        dir: &Path,
        settings: SpoolSettings,
        cache_bytes: u64,
    ) -> Result<Arc<SledSpool>, QueueError> {
        let db = open_db(dir, cache_bytes)?;
        let meta = db.open_tree("meta")?;
        let content = db.open_tree("content")?;
        let sts = db.open_tree("mta_sts")?;
        let tlsrpt = db.open_tree("tlsrpt")?;
        remove_orphan_content(&meta, &content)?;
        remove_finished(&meta, &content)?;
        db.flush()?;
        let disk = crate::disk_sync::DiskSync::open(dir)
            .map_err(|e| QueueError::Storage(format!("cannot sync the spool: {e}")))?;
        let index = load_index(&meta);
        let backlog = index.backlog_counter();
        let kv = crate::SledKv::new(db.open_tree("kv")?, settings.kv)?;
        kv.sweep()?;
        Ok(Arc::new(SledSpool {
            kv,
            committer: Committer::new(db, disk),
            meta,
            content,
            sts,
            tlsrpt,
            index: Mutex::new(index),
            backlog,
            ids: IdGenerator::default(),
            wake: watch::Sender::new(0),
            closed: AtomicBool::new(false),
            settings,
        }))
    }

    /// Makes every pending recipient for which `wanted` holds due now; returns the number of
    /// messages touched.
    pub(crate) fn flush_matching(
        &self,
        wanted: impl Fn(&corvid_types::Address) -> bool,
    ) -> Result<usize, QueueError> {
        let now = unix_secs(SystemTime::now());
        let mut touched = 0;
        // The listing runs without the index lock, which intake and every delivery record take
        // on runtime threads: a long queue must not stall them for a whole scan. Each message
        // is then read again and rewritten under the lock, so a delivery recorded meanwhile
        // is not overwritten with the listing's older state.
        let candidates: Vec<QueueId> = self
            .list()?
            .into_iter()
            .filter(|m| {
                m.recipients
                    .iter()
                    .any(|r| r.is_pending() && wanted(&r.recipient.address))
            })
            .map(|m| m.id)
            .collect();
        for id in candidates {
            let mut index = self.lock_index();
            let Some(mut msg) = self.get(&id)? else {
                continue;
            };
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

    /// How many times sled's log was fdatasynced and how many blob files (large values, in
    /// `<dir>/blobs/`) were fsynced, since open (for tests and metrics).
    pub fn sync_counts(&self) -> (u64, u64) {
        self.committer.sync_counts()
    }

    pub(crate) fn lock_index(&self) -> MutexGuard<'_, DueIndex> {
        // The guarded data stays consistent even if a holder panicked: every update is a
        // single `set`.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every write so far durable, sharing the fsync with concurrent submits.
    pub(crate) fn flush(&self) -> Result<(), QueueError> {
        self.committer
            .commit_blocking()
            .map_err(QueueError::Storage)
    }

    pub(crate) fn wake_runners(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Writes a new message: content first, then metadata, so that a crash in between leaves
    /// only orphan content, which `open` deletes.
    pub(crate) fn insert_new(&self, msg: &QueuedMessage, content: &[u8]) -> Result<(), QueueError> {
        let key = msg.id.0.as_bytes();
        self.content.insert(key, content)?;
        self.meta.insert(key, encode(msg)?)?;
        Ok(())
    }

    /// Writes a delivery attempt's new metadata, not yet durably (see [`Spool::update`]).
    fn write_update(&self, msg: &QueuedMessage) -> Result<(), QueueError> {
        let mut index = self.lock_index();
        let key = msg.id.0.as_bytes();
        if !self.meta.contains_key(key)? {
            return Err(QueueError::NotFound(msg.id.clone()));
        }
        // Held while delivery had its copy: the hold stays.
        let held;
        let msg = match (index.held_since(&msg.id), &msg.quarantined) {
            (Some(since), None) => {
                held = crate::hold::keep_hold(self, msg, since)?;
                &held
            }
            _ => msg,
        };
        self.meta.insert(key, encode(msg)?)?;
        index.set(&msg.id, msg.next_due());
        Ok(())
    }

    /// Deletes a message and its content, not yet durably.
    fn unlink(&self, id: &QueueId) -> Result<bool, QueueError> {
        let mut index = self.lock_index();
        let key = id.0.as_bytes();
        // Metadata first: a crash in between leaves orphan content, cleaned at open.
        let existed = self.meta.remove(key)?.is_some();
        let content = self.content.remove(key)?;
        index.set(id, None);
        index.set_held(id, None);
        if content.is_some_and(|c| c.len() >= GARBAGE_FLUSH_BYTES) {
            release_garbage();
        }
        Ok(existed)
    }

    /// Drops a message whose submission did not complete (best effort, not flushed): the
    /// client was not told 250, so it keeps and retries the message.
    pub(crate) fn forget(&self, id: &QueueId) {
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

/// Removed content from this size on is freed at once ([`release_garbage`]); smaller content
/// waits for the collector (64 versions x a few dozen threads x a few KB is little).
const GARBAGE_FLUSH_BYTES: usize = 8 * 1024;

/// Frees what this thread's sled operations left for later. sled replaces a page by a new
/// version and hands the old one, which still holds removed values, to the epoch collector;
/// each thread keeps up to 64 such versions before passing them on. With dozens of runtime
/// and blocking threads touching the queue, that kept the content of hundreds of delivered
/// messages in memory (at concurrency 50 with 100 KB messages, about 80 MB).
fn release_garbage() {
    sled::pin().flush();
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

    async fn insert_attempted(
        &self,
        msg: &QueuedMessage,
        content: &[u8],
    ) -> Result<(), IntakeError> {
        self.store_new(msg, content).await
    }

    fn update(&self, msg: &QueuedMessage) -> Result<(), QueueError> {
        self.write_update(msg)?;
        self.flush()
    }

    async fn update_async(&self, msg: &QueuedMessage) -> Result<(), QueueError> {
        self.write_update(msg)?;
        self.committer.commit().await.map_err(QueueError::Storage)
    }

    /// Waits for the group commit without blocking a runtime thread.
    async fn remove_async(&self, id: &QueueId) -> Result<bool, QueueError> {
        let existed = self.unlink(id)?;
        self.committer.commit().await.map_err(QueueError::Storage)?;
        Ok(existed)
    }

    fn remove(&self, id: &QueueId) -> Result<bool, QueueError> {
        let existed = self.unlink(id)?;
        self.flush()?;
        Ok(existed)
    }

    fn due(&self, now: SystemTime) -> Result<Vec<QueueId>, QueueError> {
        Ok(self.lock_index().due(unix_secs(now)))
    }

    fn take_due(&self, now: SystemTime, limit: usize) -> Result<Vec<QueueId>, QueueError> {
        Ok(self.lock_index().take(unix_secs(now), limit))
    }

    fn release_claim(&self, id: &QueueId) {
        let now = unix_secs(SystemTime::now());
        self.lock_index().release(id, now);
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
        // The same durable flush as a submit's (log fdatasync, blob and directory fsyncs).
        self.committer.commit().await.map_err(QueueError::Storage)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn dsn_policy(&self) -> crate::dsn::DsnPolicy {
        self.settings.dsn
    }

    fn sts_policy(&self, domain: &str) -> Result<Option<Vec<u8>>, QueueError> {
        Ok(self.sts.get(domain.as_bytes())?.map(|v| v.to_vec()))
    }

    fn set_sts_policy(&self, domain: &str, policy: &[u8]) -> Result<(), QueueError> {
        self.sts.insert(domain.as_bytes(), policy)?;
        Ok(())
    }

    fn prune_sts_policies(&self, keep: &dyn Fn(&[u8]) -> bool) -> Result<usize, QueueError> {
        crate::tlsrpt_store::prune(&self.sts, keep)
    }

    fn tlsrpt_counts(&self) -> Result<Vec<(String, Vec<u8>)>, QueueError> {
        self.tlsrpt_entries()
    }

    fn set_tlsrpt_counts(&self, domain: &str, counts: &[u8]) -> Result<(), QueueError> {
        self.put_tlsrpt_entry(domain, counts)
    }

    fn clear_tlsrpt_counts(&self) -> Result<(), QueueError> {
        self.clear_tlsrpt_entries()
    }
}

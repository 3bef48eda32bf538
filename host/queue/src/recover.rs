//! Opening the sled database and putting it in order after a crash: the records and the
//! schedule as the last run left them.

use crate::index::DueIndex;
use crate::{QueueError, QueuedMessage};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long `open` waits for a database this process just closed.
const REOPEN_PATIENCE: Duration = Duration::from_secs(3);

/// Opens the database. Durability comes from our explicit flushes and syncs only (see
/// `commit` and `disk_sync`), so sled's periodic background flush is switched off.
///
/// sled locks the directory (`flock`) and its internal thread pool may hold the file for a few
/// milliseconds after the last handle is dropped; reopening in the same process (tests, a
/// reload) then sees the lock taken. Another process holding it fails after the wait too.
/// `cache_bytes` is sled's page cache (see [`crate::DEFAULT_CACHE_BYTES`]).
pub(crate) fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db, QueueError> {
    let started = Instant::now();
    loop {
        match sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .cache_capacity(cache_bytes)
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

pub(crate) fn encode(msg: &QueuedMessage) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(msg).map_err(|e| QueueError::Encode {
        id: msg.id.clone(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<QueuedMessage, QueueError> {
    serde_json::from_slice(value).map_err(|e| QueueError::Corrupt {
        id: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// Builds the schedule from what is on disk. Unreadable records are logged and left alone.
pub(crate) fn load_index(meta: &sled::Tree) -> DueIndex {
    let mut index = DueIndex::default();
    for item in meta.iter() {
        let decoded = item
            .map_err(QueueError::from)
            .and_then(|(k, v)| decode(&k, &v));
        match decoded {
            Ok(msg) => {
                index.set(&msg.id, msg.next_due());
                if msg.quarantined.is_some() {
                    index.set_held(&msg.id, Some(msg.held_at.unwrap_or(msg.arrived_at)));
                }
            }
            Err(e) => tracing::error!(error = %e, "unreadable queue entry at open"),
        }
    }
    index
}

/// Deletes messages with no recipient left to attempt: left by a crash between recording the
/// last outcome and removing the message.
pub(crate) fn remove_finished(meta: &sled::Tree, content: &sled::Tree) -> Result<(), QueueError> {
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
pub(crate) fn remove_orphan_content(
    meta: &sled::Tree,
    content: &sled::Tree,
) -> Result<(), QueueError> {
    for key in content.iter().keys() {
        let key = key?;
        if !meta.contains_key(&key)? {
            tracing::warn!(queue_id = %String::from_utf8_lossy(&key), "removing orphan content");
            content.remove(&key)?;
        }
    }
    Ok(())
}

//! Capture files: written (owner-only) when a kept session ends, removed after the
//! retention period.

use super::{RecordOnly, RecordSession};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::warn;

/// Writes a capture readable by its owner only (it holds mail).
pub fn write_capture(path: &Path, capture: &Value) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(capture)?)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Creates the capture directory (owner-only).
pub fn prepare(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Removes the captures older than `retention`; the number removed.
pub fn sweep(dir: &Path, retention: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        // A `.tmp` is a capture whose writing was cut short (a crash).
        if path.extension().is_none_or(|x| x != "json" && x != "tmp") {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > retention));
        if old && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The retention sweep: at start, then hourly, until `stop`.
pub async fn retain(dir: PathBuf, retention: Duration, stop: tokio_util::sync::CancellationToken) {
    loop {
        let d = dir.clone();
        let _ = tokio::task::spawn_blocking(move || sweep(&d, retention)).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

impl Drop for RecordSession {
    fn drop(&mut self) {
        let answers = corvid_plugin_host::record::finish(self.session_id);
        let refused_by = answers.as_ref().map_or(&[][..], |a| &a.refused_by[..]);
        let kept = match &self.rec.plugin {
            Some(p) => refused_by.contains(p),
            None => self.rec.only == RecordOnly::All || self.refused,
        };
        if !kept {
            return;
        }
        let capture = self.capture(answers);
        let millis = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let path = self
            .rec
            .dir
            .join(format!("{millis}-{}.json", self.session_id));
        let write = move || {
            if let Err(e) = write_capture(&path, &capture) {
                warn!(path = %path.display(), error = %e, "record: cannot write the capture");
            }
        };
        // Off the SMTP task: the file is written on the blocking pool.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

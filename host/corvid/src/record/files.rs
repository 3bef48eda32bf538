//! Capture files: written owner-only, removed after the retention period.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

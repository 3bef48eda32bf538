//! What `sled::Db::flush` does not do: put the queue's files on stable storage.
//!
//! sled 0.34.7 writes its log (`<dir>/db`) with `pwrite` and, on Linux, follows it only with
//! `sync_file_range(2)`, which neither writes the file's metadata nor flushes the disk's write
//! cache; values too large for a log segment go to their own files in `<dir>/blobs/`, which it
//! never syncs at all. A message answered 250 could vanish in a power cut. So after every
//! flush the group committer calls [`DiskSync::sync`]:
//!
//! 1. `fsync` of every blob file not synced before (each blob is written once, whole, and
//!    named by its log sequence number), then of `<dir>/blobs/` itself when its entries
//!    changed, so that the new names survive too;
//! 2. `fsync` of `<dir>` when its entries changed (sled's `conf`, snapshots);
//! 3. `fdatasync` of `<dir>/db` through a descriptor of our own on the same inode (POSIX
//!    syncs the file, not the descriptor). Last, so that a log that reaches the disk never
//!    points at a blob that did not.
//!
//! Which blobs are complete: sled writes a blob inside the insert that reserved it, before
//! that reservation ends, and a flush waits for every reservation made before it started.
//! So a blob listed *before* `flush` (see [`DiskSync::list_blobs`]) is whole once the flush
//! returned and is synced for good. A blob that appears only after the flush started may still
//! be half-written; it is synced now (it may belong to a reservation the flush covered) and
//! synced again by the next generation, which lists it before its own flush.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Names in a directory, as last made durable.
type Names = HashSet<OsString>;

pub(crate) struct DiskSync {
    dir: PathBuf,
    /// `<dir>/db`, sled's log, opened read-only: `fdatasync` needs no write access.
    log: File,
    state: Mutex<Synced>,
    blob_syncs: AtomicU64,
    log_syncs: AtomicU64,
}

#[derive(Default)]
struct Synced {
    /// Blob files known whole and fsynced.
    blobs: Names,
    /// The entries of `<dir>/blobs/` as of its last fsync.
    blob_dir: Names,
    /// The entries of `<dir>` as of its last fsync.
    dir: Names,
}

impl DiskSync {
    /// Opens the log and makes everything already in `dir` durable, including `dir`'s own
    /// entry in its parent (the queue directory may just have been created).
    pub(crate) fn open(dir: &Path) -> io::Result<DiskSync> {
        let log = File::open(dir.join("db")).map_err(|e| context(e, "open", &dir.join("db")))?;
        let disk = DiskSync {
            dir: dir.to_path_buf(),
            log,
            state: Mutex::new(Synced::default()),
            blob_syncs: AtomicU64::new(0),
            log_syncs: AtomicU64::new(0),
        };
        // sled writes its `conf` once, at creation, and never syncs it: a power cut soon
        // after could leave it empty (sled then warns and rewrites it, but do not rely on it).
        let conf = dir.join("conf");
        match File::open(&conf) {
            Ok(f) => f.sync_all().map_err(|e| context(e, "fsync", &conf))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context(e, "open", &conf)),
        }
        let listed = disk.list_blobs()?;
        disk.sync(&listed)?;
        match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => fsync_path(Path::new("."))?,
            Some(p) => fsync_path(p)?,
            None => {}
        }
        Ok(disk)
    }

    /// The blob files present now; call it before `sled::Db::flush` and pass the result to
    /// [`DiskSync::sync`] after it.
    pub(crate) fn list_blobs(&self) -> io::Result<Names> {
        names(&self.dir.join("blobs"))
    }

    /// Makes the log and every blob durable (see the module documentation).
    pub(crate) fn sync(&self, listed_before_flush: &Names) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let blob_dir = self.dir.join("blobs");
        let now = names(&blob_dir)?;
        let unsynced: Vec<&OsString> = now.iter().filter(|n| !state.blobs.contains(*n)).collect();
        for (name, synced) in fsync_all(&blob_dir, &unsynced)? {
            if synced {
                self.blob_syncs.fetch_add(1, Ordering::Relaxed);
                if listed_before_flush.contains(name) {
                    state.blobs.insert(name.to_os_string());
                }
            }
        }
        state.blobs.retain(|n| now.contains(n));
        if now != state.blob_dir {
            fsync_path(&blob_dir)?;
            state.blob_dir = now;
        }
        let entries = names(&self.dir)?;
        if entries != state.dir {
            fsync_path(&self.dir)?;
            state.dir = entries;
        }
        self.log
            .sync_data()
            .map_err(|e| context(e, "fdatasync", &self.dir.join("db")))?;
        self.log_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many blob files were fsynced.
    pub(crate) fn blob_syncs(&self) -> u64 {
        self.blob_syncs.load(Ordering::Relaxed)
    }

    /// How many times the log was fdatasynced.
    pub(crate) fn log_syncs(&self) -> u64 {
        self.log_syncs.load(Ordering::Relaxed)
    }
}

/// Most threads one generation uses to fsync blob files.
const SYNC_THREADS: usize = 8;

/// `fsync`s the files `names` in `dir`, several at once when there are several: concurrent
/// fsyncs share the file system's journal commits and overlap their writes, where one after
/// the other each waits for its own. Returns each name with whether it was synced (`false`:
/// removed meanwhile by sled's clean-up, nothing left to keep); any other failure fails all.
fn fsync_all<'a>(dir: &Path, names: &[&'a OsString]) -> io::Result<Vec<(&'a OsString, bool)>> {
    let one = |name: &OsString| -> io::Result<bool> {
        let path = dir.join(name);
        match File::open(&path) {
            Ok(f) => f
                .sync_all()
                .map(|()| true)
                .map_err(|e| context(e, "fsync", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(context(e, "open", &path)),
        }
    };
    if names.len() <= 1 {
        return names.iter().map(|n| Ok((*n, one(n)?))).collect();
    }
    let per_thread = names.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|n| Ok((*n, one(n)?)))
                        .collect::<io::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for w in workers {
            let done = w
                .join()
                .map_err(|_| io::Error::other("blob fsync thread panicked"))??;
            out.extend(done);
        }
        Ok(out)
    })
}

fn names(dir: &Path) -> io::Result<Names> {
    let mut out = Names::new();
    for entry in std::fs::read_dir(dir).map_err(|e| context(e, "list", dir))? {
        out.insert(entry.map_err(|e| context(e, "list", dir))?.file_name());
    }
    Ok(out)
}

/// `fsync` of a directory: its entries (names created, renamed or removed) become durable.
fn fsync_path(path: &Path) -> io::Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| context(e, "fsync", path))
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_new_blobs_once_and_fails_without_the_blob_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let disk = DiskSync::open(dir.path()).unwrap();
        assert_eq!(disk.blob_syncs(), 0);
        assert_eq!(disk.log_syncs(), 1);

        std::fs::write(dir.path().join("blobs/7"), b"blob").unwrap();
        let listed = disk.list_blobs().unwrap();
        disk.sync(&listed).unwrap();
        assert_eq!(disk.blob_syncs(), 1);
        disk.sync(&disk.list_blobs().unwrap()).unwrap();
        assert_eq!(disk.blob_syncs(), 1, "a whole blob is synced once");

        // Appeared after the listing: synced now and again next time.
        std::fs::write(dir.path().join("blobs/9"), b"late").unwrap();
        disk.sync(&listed).unwrap();
        assert_eq!(disk.blob_syncs(), 2);
        disk.sync(&disk.list_blobs().unwrap()).unwrap();
        assert_eq!(disk.blob_syncs(), 3);
        assert_eq!(disk.log_syncs(), 5);

        // Several new blobs at once go through the parallel path; one that vanished (sled's
        // clean-up) is skipped, not an error.
        for i in 20..30 {
            std::fs::write(dir.path().join(format!("blobs/{i}")), b"b").unwrap();
        }
        disk.sync(&disk.list_blobs().unwrap()).unwrap();
        assert_eq!(disk.blob_syncs(), 13);
        let gone = OsString::from("404");
        let seven = OsString::from("7");
        let done = fsync_all(&dir.path().join("blobs"), &[&gone, &seven]).unwrap();
        assert_eq!(done, [(&gone, false), (&seven, true)]);

        std::fs::remove_dir_all(dir.path().join("blobs")).unwrap();
        let err = disk.sync(&listed).unwrap_err();
        assert!(err.to_string().contains("blobs"), "{err}");
    }
}

//! The directories of a Maildir, opened without following symlinks, and a small cache of
//! them: a delivery into a mailbox used recently reuses its open `tmp/`, `new/` and `cur/`
//! instead of opening the root and six directories again (seven `openat` and seven `close`
//! per message, and a `stat` of `new/`).
//!
//! A cached entry is checked on each use with an `lstat` of each directory below the root by
//! path (the domain, the user, `Maildir`, `tmp/`, `new/`, `cur/`; six `lstat` calls against the
//! seven `openat` and seven `close` they save): if any is no longer the directory that was
//! opened (removed, moved, replaced, or a symlink now, at any level: an `lstat` sees a symlink
//! in the last component and the earlier ones were checked before it), the directories are
//! opened again, one component at a time with `O_NOFOLLOW`, which refuses a symlink. So a
//! cached entry leads exactly where a fresh open would. The open descriptors themselves never
//! lead anywhere a symlink points: files are only created and renamed relative to them. A
//! change between the check and the use, or an inode number reused, makes the delivery fail
//! before its rename, and [`super::deliver`] then forgets the entry and delivers once more
//! through freshly opened directories.

use super::dirsync::DirKey;
use super::{cstring, DeliveryError, DIR_MODE};
use corvid_types::Address;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

/// Mailboxes whose directories stay open, at most. Three descriptors each; when full, the
/// cache starts over (a server delivering to more mailboxes than this at once pays the
/// opens, as without a cache).
const CACHED_MAILBOXES: usize = 64;

type Key = (PathBuf, String, String);

static CACHE: LazyLock<Mutex<HashMap<Key, Arc<Dirs>>>> = LazyLock::new(Default::default);

fn cache() -> MutexGuard<'static, HashMap<Key, Arc<Dirs>>> {
    // Each critical section is one map operation: the map stays consistent.
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(root: &Path, mailbox: &Address) -> Key {
    (
        root.to_path_buf(),
        mailbox.domain.clone(),
        mailbox.local.clone(),
    )
}

/// The directories of `mailbox`'s Maildir (`maildir`, below `root`), and whether they came
/// from the cache (checked as the module documentation says) rather than opened now.
pub(super) fn get(
    root: &Path,
    mailbox: &Address,
    maildir: &Path,
) -> Result<(Arc<Dirs>, bool), DeliveryError> {
    let key = key(root, mailbox);
    let cached = cache().get(&key).cloned();
    if let Some(dirs) = cached {
        if still_there(maildir, &dirs.chain) {
            return Ok((dirs, true));
        }
    }
    let dirs = Arc::new(Dirs::open(root, mailbox)?);
    let mut map = cache();
    if map.len() >= CACHED_MAILBOXES && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, Arc::clone(&dirs));
    Ok((dirs, false))
}

/// Drops `mailbox`'s cached directories: a delivery through them failed.
pub(super) fn forget(root: &Path, mailbox: &Address) {
    cache().remove(&key(root, mailbox));
}

/// Whether `path`, not followed if it is a symlink, is the directory `id`.
fn same_dir(path: &Path, id: DirKey) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.is_dir() && (m.dev(), m.ino()) == id,
        Err(_) => false,
    }
}

/// The directories below the root, in the order they are opened: the domain, the user,
/// `Maildir`, then `tmp/`, `new/`, `cur/`.
fn chain_paths(maildir: &Path) -> [PathBuf; 6] {
    let user = maildir.parent().unwrap_or(maildir);
    let domain = user.parent().unwrap_or(user);
    [
        domain.to_path_buf(),
        user.to_path_buf(),
        maildir.to_path_buf(),
        maildir.join("tmp"),
        maildir.join("new"),
        maildir.join("cur"),
    ]
}

/// Whether each directory from the domain down is still, by path and without following a
/// symlink, the one that was opened (in order, so a symlink above a later one is caught
/// first).
fn still_there(maildir: &Path, chain: &[DirKey; 6]) -> bool {
    chain_paths(maildir)
        .iter()
        .zip(chain)
        .all(|(path, id)| same_dir(path, *id))
}

/// A directory descriptor's device and inode.
fn id_of(fd: &impl AsRawFd, path: &Path) -> Result<DirKey, DeliveryError> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, `st` valid for writes.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(DeliveryError::io("stat", path, io::Error::last_os_error()));
    }
    Ok((st.st_dev, st.st_ino))
}

/// The Maildir's `tmp/`, `new/` and `cur/`, each reached from the mail root one component at
/// a time with `O_NOFOLLOW`: a symlink anywhere below the root (a domain, a user, `Maildir`
/// or one of its subdirectories) makes the delivery fail instead of writing elsewhere.
pub(super) struct Dirs {
    pub(super) tmp: OwnedFd,
    pub(super) new: File,
    pub(super) cur: OwnedFd,
    /// `new/`'s device and inode: the key of its fsync rounds.
    pub(super) new_id: DirKey,
    /// The device and inode of each directory from the domain down ([`chain_paths`]), what
    /// a cached entry is checked against.
    chain: [DirKey; 6],
}

impl Dirs {
    fn open(root: &Path, mailbox: &Address) -> Result<Dirs, DeliveryError> {
        // The root itself is the administrator's choice and may be a symlink.
        let root_fd: OwnedFd = File::open(root)
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    create_root(root)?;
                    File::open(root)
                }
                _ => Err(e),
            })
            .map_err(|e| DeliveryError::io("open", root, e))?
            .into();
        let mut path = root.to_path_buf();
        let mut dir = root_fd;
        let mut chain = [(0, 0); 6];
        for (i, part) in [mailbox.domain.as_str(), mailbox.local.as_str(), "Maildir"]
            .into_iter()
            .enumerate()
        {
            path.push(part);
            dir = open_dir(&dir, part, &path)?;
            chain[i] = id_of(&dir, &path)?;
        }
        let sub = |name: &str| open_dir(&dir, name, &path.join(name));
        let (tmp, new, cur) = (sub("tmp")?, File::from(sub("new")?), sub("cur")?);
        chain[3] = id_of(&tmp, &path.join("tmp"))?;
        chain[4] = id_of(&new, &path.join("new"))?;
        chain[5] = id_of(&cur, &path.join("cur"))?;
        Ok(Dirs {
            tmp,
            new,
            cur,
            new_id: chain[4],
            chain,
        })
    }

    /// A regular file (not a symlink) named `name` in `dir`.
    pub(super) fn is_file(&self, dir: &impl AsRawFd, name: &str) -> bool {
        let Ok(cname) = CString::new(name) else {
            return false;
        };
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name, `st` valid for writes.
        let rc = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
    }
}

/// Creates the mail root and its missing parents (0700), fsyncing each parent that gained an
/// entry: without that, a power cut can take the whole new tree, and every message delivered
/// into it, along with the directory's name.
fn create_root(root: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = root;
    while !cur.as_os_str().is_empty() && !cur.exists() {
        missing.push(cur);
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        match DirBuilder::new().mode(DIR_MODE).create(dir) {
            // Made by a concurrent delivery, which may not have synced it yet: sync anyway.
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Opens (creating it 0700 when missing, and fsyncing the parent that gained the entry) the
/// directory `name` in `parent`, never following a symlink.
fn open_dir(parent: &OwnedFd, name: &str, path: &Path) -> Result<OwnedFd, DeliveryError> {
    let cname = cstring(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let open = || {
        // SAFETY: valid descriptor and NUL-terminated name; the result is checked.
        let fd = unsafe { libc::openat(parent.as_raw_fd(), cname.as_ptr(), flags) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: a fresh descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    };
    match open() {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(DeliveryError::io("open", path, e))
        }
        Err(_) => {}
    }
    // SAFETY: valid descriptor and NUL-terminated name.
    let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), cname.as_ptr(), DIR_MODE as libc::mode_t) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(DeliveryError::io("create", path, e));
        }
    } else {
        // The new entry must survive a crash along with the message written into it.
        let dup = parent
            .try_clone()
            .map_err(|e| DeliveryError::io("fsync", path, e))?;
        File::from(dup)
            .sync_all()
            .map_err(|e| DeliveryError::io("fsync", path, e))?;
    }
    open().map_err(|e| DeliveryError::io("open", path, e))
}

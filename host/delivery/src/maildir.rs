//! Local delivery into Maildir, laid out as Dovecot expects: `<root>/<domain>/<local>/Maildir/`.
//!
//! The Maildir protocol (D. J. Bernstein, "Using maildir format"; Dovecot's maildir docs):
//! write the message under a unique name in `tmp/`, fsync it, rename it into `new/`, and fsync
//! `new/` so the rename itself survives a crash. A reader never sees a partial file because
//! `rename(2)` is atomic within a file system.
//!
//! Concurrent deliveries into one Maildir share the fsync of `new/` ([`dirsync`]: each waits
//! for one that started after its rename), so under load a mailbox costs about one directory
//! fsync per round of deliveries instead of one per message.
//!
//! Nothing below the mail root is followed through a symlink: directories are opened one
//! component at a time with `O_NOFOLLOW`, the message file is created with `O_EXCL` and
//! `O_NOFOLLOW`, and names are resolved relative to those directories (`openat`, `renameat`),
//! so a link planted by a mailbox owner cannot make the server write elsewhere.

mod dirsync;

use crate::DeliveryError;
use corvid_types::Address;
use std::ffi::CString;
use std::fs::{DirBuilder, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, OnceLock};

/// Mail is private to its owner: directories 0700, files 0600 (as Dovecot creates them).
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// The directory-fsync rounds of every Maildir's `new/`, shared by all deliveries.
static NEW_DIR_SYNC: LazyLock<dirsync::DirSync> = LazyLock::new(Default::default);

/// Delivers `content_prefix` followed by `content` (byte-exact, CRLF kept) to `mailbox`;
/// returns the path of the file. Returns only after the file and its directory entry are on
/// stable storage.
///
/// Idempotent for one message and mailbox: the file name is derived from
/// the message's queue id and arrival time, so a delivery attempted again after a crash (between
/// the rename into `new/` and the queue update) finds the earlier file instead of writing a
/// second copy. That is what makes local delivery exactly-once across SIGKILL.
///
/// The earlier copy is looked for in `new/`, and in `cur/` under the names Dovecot gives a
/// message it has seen (`:2,` and `:2,S`); a message a client has already flagged or deleted in
/// the meantime would be delivered again, which only a crash in that window can cause.
pub fn deliver(
    root: &Path,
    mailbox: &Address,
    queue_id: &str,
    arrived_at: u64,
    content_prefix: &[u8],
    content: &[u8],
) -> Result<PathBuf, DeliveryError> {
    let maildir = maildir_path(root, mailbox)?;
    check_component(queue_id)?;
    let dirs = Dirs::open(root, mailbox)?;
    let size = content_prefix.len() + content.len();
    let name = format!("{arrived_at}.Q{queue_id}.{},S={size}", hostname());
    let new = maildir.join("new").join(&name);
    if dirs.is_file(&dirs.new, &name) {
        // An earlier attempt renamed it but may have stopped (killed, or its fsync failed)
        // before new/ was synced: sync it now, so this success is as durable as a first one.
        sync_new(dirs.new, &maildir)?;
        return Ok(new);
    }
    for seen in [format!("{name}:2,"), format!("{name}:2,S")] {
        if dirs.is_file(&dirs.cur, &seen) {
            return Ok(maildir.join("cur").join(seen));
        }
    }
    let tmp = maildir.join("tmp").join(&name);
    let cname = cstring(&name)?;
    // A leftover of an interrupted attempt (or anything planted under this name, a symlink
    // included) is unlinked, never written through: the file is then made with O_EXCL and
    // O_NOFOLLOW, so a link that reappears in between makes the open fail.
    // SAFETY: valid directory descriptor and NUL-terminated name.
    unsafe { libc::unlinkat(dirs.tmp.as_raw_fd(), cname.as_ptr(), 0) };
    if let Err(e) = write_synced(&dirs.tmp, &cname, content_prefix, content) {
        // SAFETY: as above.
        unsafe { libc::unlinkat(dirs.tmp.as_raw_fd(), cname.as_ptr(), 0) };
        return Err(DeliveryError::io("write", tmp, e));
    }
    // renameat(2) replaces a name in new/ without following it, and both ends are the
    // directories opened without following symlinks.
    // SAFETY: valid descriptors and NUL-terminated names.
    let rc = unsafe {
        libc::renameat(
            dirs.tmp.as_raw_fd(),
            cname.as_ptr(),
            dirs.new.as_raw_fd(),
            cname.as_ptr(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::unlinkat(dirs.tmp.as_raw_fd(), cname.as_ptr(), 0) };
        return Err(DeliveryError::io("rename", new, e));
    }
    sync_new(dirs.new, &maildir)?;
    Ok(new)
}

/// Returns once an fsync of `new/` that started after this call has completed: the rename
/// made before it is then durable. A concurrent delivery's fsync may be that one (group
/// commit, see [`dirsync`]).
fn sync_new(new: OwnedFd, maildir: &Path) -> Result<(), DeliveryError> {
    use std::os::unix::fs::MetadataExt;
    let new = File::from(new);
    let fail = |op, e| DeliveryError::io(op, maildir.join("new"), e);
    // Device and inode: deliveries share a round only when they renamed into the very same
    // directory, whatever path led them there.
    let meta = new.metadata().map_err(|e| fail("stat", e))?;
    NEW_DIR_SYNC
        .sync_after((meta.dev(), meta.ino()), || new.sync_all())
        .map_err(|e| fail("fsync", e))
}

fn cstring(name: &str) -> Result<CString, DeliveryError> {
    CString::new(name).map_err(|_| DeliveryError::BadMailbox {
        name: name.to_string(),
        reason: "contains NUL",
    })
}

/// The Maildir's `tmp/`, `new/` and `cur/`, each reached from the mail root one component at
/// a time with `O_NOFOLLOW`: a symlink anywhere below the root (a domain, a user, `Maildir`
/// or one of its subdirectories) makes the delivery fail instead of writing elsewhere.
struct Dirs {
    tmp: OwnedFd,
    new: OwnedFd,
    cur: OwnedFd,
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
        for part in [mailbox.domain.as_str(), mailbox.local.as_str(), "Maildir"] {
            path.push(part);
            dir = open_dir(&dir, part, &path)?;
        }
        let sub = |name: &str| open_dir(&dir, name, &path.join(name));
        Ok(Dirs {
            tmp: sub("tmp")?,
            new: sub("new")?,
            cur: sub("cur")?,
        })
    }

    /// A regular file (not a symlink) named `name` in `dir`.
    fn is_file(&self, dir: &OwnedFd, name: &str) -> bool {
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

/// Creates `name` in `dir` exclusively (O_EXCL, O_NOFOLLOW), writes and fdatasyncs it.
fn write_synced(dir: &OwnedFd, name: &CString, prefix: &[u8], content: &[u8]) -> io::Result<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid descriptor and NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags,
            FILE_MODE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(prefix)?;
    file.write_all(content)?;
    // fdatasync(2) is enough here: it flushes the data and the metadata needed to read it back
    // (the size and the block allocation; POSIX "synchronized I/O data integrity"), and skips
    // only what a reader does not need (times). The file's name is not made durable by either
    // call: that is the fsync of new/ after the rename.
    file.sync_data()
}

/// `<root>/<domain>/<local>/Maildir`, after checking that neither part can leave `root`.
pub fn maildir_path(root: &Path, mailbox: &Address) -> Result<PathBuf, DeliveryError> {
    check_component(&mailbox.domain)?;
    check_component(&mailbox.local)?;
    Ok(root
        .join(&mailbox.domain)
        .join(&mailbox.local)
        .join("Maildir"))
}

/// A name is used as one path component: it must not be empty, `.` or `..`, or contain a
/// separator or NUL (path traversal, or a truncated C string).
fn check_component(name: &str) -> Result<(), DeliveryError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "dot directory"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(DeliveryError::BadMailbox {
        name: name.to_string(),
        reason,
    })
}

fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| sanitize_host(&system_hostname()))
}

/// Dovecot's escaping: `/` and `:` cannot appear in a Maildir name (`:` starts the flags).
fn sanitize_host(host: &str) -> String {
    let host = if host.is_empty() { "localhost" } else { host };
    host.replace('/', "\\057").replace(':', "\\072")
}

fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, which is the length we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests;

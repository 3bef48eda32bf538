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
//! The open directories of recently used mailboxes are kept ([`dirs`]), checked by path on
//! each use (each directory from the domain down, without following symlinks), so a delivery
//! does not open seven directories again.

mod dirs;
mod dirsync;

use crate::DeliveryError;
use corvid_types::Address;
use dirs::Dirs;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    let (dirs, cached) = dirs::get(root, mailbox, &maildir)?;
    let deliver = |dirs: &Dirs| {
        deliver_into(
            dirs,
            &maildir,
            queue_id,
            arrived_at,
            &[content_prefix, content],
        )
    };
    match deliver(&dirs) {
        // The cached directories may have been removed or replaced between their check and
        // this use: once more through freshly opened ones.
        Err(e) if cached && retry_fresh(&e) => {
            dirs::forget(root, mailbox);
            deliver(&dirs::get(root, mailbox, &maildir)?.0)
        }
        done => done,
    }
}

/// Whether a delivery through cached directories that failed with `e` may be tried once more
/// through freshly opened ones. Never after a failed fsync of `new/`: a descriptor opened after
/// a write-back error may not report it (Linux), so a second fsync could call a rename durable
/// that is not; the queue retries the delivery later instead.
fn retry_fresh(e: &DeliveryError) -> bool {
    !matches!(e, DeliveryError::Io { op: "fsync", .. })
}

/// [`deliver`] into the Maildir whose directories are `dirs`: `parts` one after the other.
fn deliver_into(
    dirs: &Dirs,
    maildir: &Path,
    queue_id: &str,
    arrived_at: u64,
    parts: &[&[u8]; 2],
) -> Result<PathBuf, DeliveryError> {
    let size = parts[0].len() + parts[1].len();
    let name = format!("{arrived_at}.Q{queue_id}.{},S={size}", hostname());
    let new = maildir.join("new").join(&name);
    if dirs.is_file(&dirs.new, &name) {
        // An earlier attempt renamed it but may have stopped (killed, or its fsync failed)
        // before new/ was synced: sync it now, so this success is as durable as a first one.
        sync_new(dirs, maildir)?;
        return Ok(new);
    }
    for seen in [format!("{name}:2,"), format!("{name}:2,S")] {
        if dirs.is_file(&dirs.cur, &seen) {
            return Ok(maildir.join("cur").join(seen));
        }
    }
    let tmp = maildir.join("tmp").join(&name);
    let cname = cstring(&name)?;
    if let Err(e) = write_synced(&dirs.tmp, &cname, parts) {
        // SAFETY: valid directory descriptor and NUL-terminated name.
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
    sync_new(dirs, maildir)?;
    Ok(new)
}

/// Returns once an fsync of `new/` that started after this call has completed: the rename
/// made before it is then durable. A concurrent delivery's fsync may be that one (group
/// commit, see [`dirsync`]).
fn sync_new(dirs: &Dirs, maildir: &Path) -> Result<(), DeliveryError> {
    // Device and inode: deliveries share a round only when they renamed into the very same
    // directory, whatever path led them there.
    NEW_DIR_SYNC
        .sync_after(dirs.new_id, || dirs.new.sync_all())
        .map_err(|e| DeliveryError::io("fsync", maildir.join("new"), e))
}

fn cstring(name: &str) -> Result<CString, DeliveryError> {
    CString::new(name).map_err(|_| DeliveryError::BadMailbox {
        name: name.to_string(),
        reason: "contains NUL",
    })
}

/// Creates `name` in `dir` exclusively (O_EXCL, O_NOFOLLOW), writes and fdatasyncs it.
///
/// A leftover of an interrupted attempt under this name (or anything planted there, a
/// symlink included) makes the first open fail with `EEXIST`: it is unlinked, never written
/// through, and the file made again with O_EXCL and O_NOFOLLOW, so a link that reappears in
/// between makes the open fail. (Unlinking first on every delivery cost a syscall per
/// message for what only a crash leaves behind.)
fn write_synced(dir: &OwnedFd, name: &CString, parts: &[&[u8]; 2]) -> io::Result<()> {
    let fd = match create_excl(dir, name) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // SAFETY: valid directory descriptor and NUL-terminated name.
            unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
            create_excl(dir, name)?
        }
        other => other?,
    };
    let mut file = File::from(fd);
    write_parts(&mut file, parts)?;
    // fdatasync(2) is enough here: it flushes the data and the metadata needed to read it back
    // (the size and the block allocation; POSIX "synchronized I/O data integrity"), and skips
    // only what a reader does not need (times). The file's name is not made durable by either
    // call: that is the fsync of new/ after the rename.
    file.sync_data()
}

/// Writes `parts` one after the other with one writev (a syscall per delivery less than a
/// write each); a short write, which a regular file makes only on an error such as a full
/// disk, is finished part by part.
fn write_parts(w: &mut impl Write, parts: &[&[u8]; 2]) -> io::Result<()> {
    let mut done = w.write_vectored(&[IoSlice::new(parts[0]), IoSlice::new(parts[1])])?;
    for part in parts {
        let skip = done.min(part.len());
        done -= skip;
        if let Some(rest) = part.get(skip..).filter(|r| !r.is_empty()) {
            w.write_all(rest)?;
        }
    }
    Ok(())
}

/// `openat(dir, name, O_CREAT | O_EXCL | O_NOFOLLOW)` for writing, mode 0600.
fn create_excl(dir: &OwnedFd, name: &CString) -> io::Result<OwnedFd> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

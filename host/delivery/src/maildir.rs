//! Local delivery into Maildir, laid out as Dovecot expects: `<root>/<domain>/<local>/Maildir/`.
//!
//! The Maildir protocol (D. J. Bernstein, "Using maildir format"; Dovecot's maildir docs):
//! write the message under a unique name in `tmp/`, fsync it, rename it into `new/`, and fsync
//! `new/` so the rename itself survives a crash. A reader never sees a partial file because
//! `rename(2)` is atomic within a file system.

use crate::DeliveryError;
use corvid_types::Address;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Mail is private to its owner: directories 0700, files 0600 (as Dovecot creates them).
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

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
    ensure_maildir(&maildir)?;
    let size = content_prefix.len() + content.len();
    let name = format!("{arrived_at}.Q{queue_id}.{},S={size}", hostname());
    let new = maildir.join("new").join(&name);
    if let Some(existing) = already_delivered(&maildir, &name) {
        return Ok(existing);
    }
    let tmp = maildir.join("tmp").join(&name);
    // A leftover tmp file of an interrupted attempt is overwritten, never delivered.
    let mut written = write_synced(&tmp, content_prefix, content);
    if matches!(&written, Err(e) if e.kind() == io::ErrorKind::NotFound) {
        // The Maildir was removed since it was created: make it again and retry once.
        forget_maildir(&maildir);
        ensure_maildir(&maildir)?;
        written = write_synced(&tmp, content_prefix, content);
    }
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(DeliveryError::io("write", tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, &new) {
        let _ = std::fs::remove_file(&tmp);
        return Err(DeliveryError::io("rename", new, e));
    }
    sync_dir(&maildir.join("new"))?;
    Ok(new)
}

fn already_delivered(maildir: &Path, name: &str) -> Option<PathBuf> {
    let candidates = [
        maildir.join("new").join(name),
        maildir.join("cur").join(format!("{name}:2,")),
        maildir.join("cur").join(format!("{name}:2,S")),
    ];
    candidates.into_iter().find(|p| p.exists())
}

fn write_synced(path: &Path, prefix: &[u8], content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.write_all(prefix)?;
    file.write_all(content)?;
    file.sync_all()
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

/// Maildirs known to exist, so that a delivery does not pay three failing `mkdir` calls.
/// Bounded: past this many it is simply cleared (the cost is only those `mkdir` calls again).
const KNOWN_MAILDIRS: usize = 100_000;

type Known = std::sync::Mutex<std::collections::HashSet<PathBuf>>;

fn known_maildirs() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

fn forget_maildir(maildir: &Path) {
    known_maildirs()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(maildir);
}

fn ensure_maildir(maildir: &Path) -> Result<(), DeliveryError> {
    let known = known_maildirs();
    if known
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(maildir)
    {
        return Ok(());
    }
    for sub in ["tmp", "new", "cur"] {
        ensure_dir(&maildir.join(sub))?;
    }
    let mut set = known.lock().unwrap_or_else(|p| p.into_inner());
    if set.len() >= KNOWN_MAILDIRS {
        set.clear();
    }
    set.insert(maildir.to_path_buf());
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700, fsyncing each parent that gained an
/// entry, so that a freshly created Maildir survives a crash along with the message in it.
fn ensure_dir(dir: &Path) -> Result<(), DeliveryError> {
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match dir.parent() {
            Some(parent) if parent != dir => {
                ensure_dir(parent)?;
                ensure_dir(dir)
            }
            _ => Err(DeliveryError::io("create", dir, e)),
        },
        Err(e) => Err(DeliveryError::io("create", dir, e)),
    }
}

/// fsync on a directory makes its entries (a rename, a new subdirectory) durable.
fn sync_dir(dir: &Path) -> Result<(), DeliveryError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DeliveryError::io("fsync", dir, e))
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

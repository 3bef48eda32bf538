//! The users file, in Dovecot's passwd-file format (see `passwd_file`), `#` comments.
//! Written owner-only (0600) and replaced atomically; a replacement keeps the file's owner,
//! group and group-read bit, so a file shared with Dovecot's auth process (`chmod g+r`, the
//! group Dovecot's `service auth { extra_groups }` names) stays readable by it. The server
//! re-reads the file when it changes, so `corvid user add` takes effect without a restart.

use super::passwd_file::{self, User};
use super::Credentials;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use corvid_types::Address;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("user names may not be empty or contain ':', ',' or white space")]
    BadName,
    #[error("sender address {0:?} is empty or contains ':', ',', '=' or white space")]
    BadAddress(String),
    #[error("auth.backend = \"dovecot\" needs auth.dovecot_socket")]
    NoDovecotSocket,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

#[derive(Clone, Debug, Default)]
struct Table {
    users: BTreeMap<String, User>,
    mtime: Option<SystemTime>,
    legacy_lines: usize,
}

pub struct UsersFile {
    path: PathBuf,
    table: Mutex<Arc<Table>>,
    delimiter: char,
}

/// An argon2id hash (PHC string) of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

impl UsersFile {
    /// Reads the file; a missing file is an empty user list. A file with lines in the old
    /// `name:$argon2id$...:addresses` format is rewritten in the passwd-file format; when
    /// that fails (a read-only file), it is still served as read and a warning says why.
    pub fn load(path: &Path, delimiter: char) -> Result<UsersFile, UsersError> {
        let mut table = read_table(path)?;
        if table.legacy_lines > 0 {
            match write_table(path, &table.users).and_then(|_| read_table(path)) {
                Ok(t) => {
                    tracing::info!(path = %path.display(), lines = table.legacy_lines, "users file converted to the Dovecot passwd-file format");
                    table = t;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "users file in the old format could not be converted")
                }
            }
        }
        Ok(UsersFile {
            path: path.to_path_buf(),
            table: Mutex::new(Arc::new(table)),
            delimiter,
        })
    }

    pub fn list(&self) -> Vec<(String, Vec<String>)> {
        let t = self.current();
        t.users
            .iter()
            .map(|(n, u)| (n.clone(), u.addresses.clone()))
            .collect()
    }

    /// Adds the user or changes its password (and addresses, when given). `hash` is a PHC
    /// string from `hash_password` (or already `{SCHEME}`-prefixed).
    pub fn set(
        &self,
        name: &str,
        hash: String,
        addresses: Option<Vec<String>>,
    ) -> Result<(), UsersError> {
        if name.is_empty() || name.contains([':', ',']) || name.contains(char::is_whitespace) {
            return Err(UsersError::BadName);
        }
        if let Some(bad) = addresses
            .iter()
            .flatten()
            .find(|a| !passwd_file::valid_address(a))
        {
            return Err(UsersError::BadAddress(bad.clone()));
        }
        self.edit(|users| {
            let user = users.entry(name.to_string()).or_default();
            user.password = passwd_file::password_field(&hash);
            if let Some(a) = addresses {
                user.addresses = a;
            }
        })
    }

    pub fn remove(&self, name: &str) -> Result<bool, UsersError> {
        let mut found = false;
        self.edit(|users| found = users.remove(name).is_some())?;
        Ok(found)
    }

    fn edit(&self, f: impl FnOnce(&mut BTreeMap<String, User>)) -> Result<(), UsersError> {
        let mut table = read_table(&self.path)?;
        f(&mut table.users);
        write_table(&self.path, &table.users)?;
        *self.table.lock().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(read_table(&self.path)?);
        Ok(())
    }

    /// The table, re-read first if the file changed on disk.
    fn current(&self) -> Arc<Table> {
        let mut guard = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime != guard.mtime {
            match read_table(&self.path) {
                Ok(t) => *guard = Arc::new(t),
                Err(e) => {
                    tracing::warn!(error = %e, "users file unreadable; keeping the previous one")
                }
            }
        }
        Arc::clone(&guard)
    }
}

impl Credentials for UsersFile {
    fn verify(&self, username: &str, password: &str) -> bool {
        let table = self.current();
        // An unknown user (or one whose scheme Corvid cannot verify) costs the same hashing
        // work as a known one, so response time does not reveal which user names exist.
        let known = table.users.get(username).and_then(User::argon2_phc);
        let hash = known.map_or_else(dummy_hash, String::from);
        let ok = PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known.is_some()
    }

    fn owns_address(&self, user: &str, address: &Address) -> bool {
        let table = self.current();
        let listed = table
            .users
            .get(user)
            .map(|u| u.addresses.as_slice())
            .unwrap_or_default();
        std::iter::once(user)
            .chain(listed.iter().map(String::as_str))
            .any(|a| super::same_address(a, address, self.delimiter))
    }
}

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password("corvid-dummy").unwrap_or_default())
        .clone()
}

fn read_table(path: &Path) -> Result<Table, UsersError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
        Err(source) => {
            return Err(UsersError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let parsed = passwd_file::parse(&text).map_err(|e| UsersError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        reason: e.reason,
    })?;
    Ok(Table {
        users: parsed.users,
        mtime,
        legacy_lines: parsed.legacy_lines,
    })
}

fn write_table(path: &Path, users: &BTreeMap<String, User>) -> Result<(), UsersError> {
    let io = |source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    };
    let old = std::fs::metadata(path).ok();
    // Never more than owner read-write plus group read (for Dovecot's auth process).
    let mode = 0o600 | old.as_ref().map_or(0, |m| m.permissions().mode() & 0o040);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // `mode` above only applies to a new file, and the umask applies to it.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    if let (Some(old), Ok(new)) = (&old, f.metadata()) {
        if (old.uid(), old.gid()) != (new.uid(), new.gid()) {
            // Root (or a member of the group) can keep the owner and group; anyone else gets
            // an error rather than a file Dovecot or the server can no longer read.
            std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid())).map_err(io)?;
        }
    }
    f.write_all(passwd_file::format(users).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    // The rename is only durable once the directory is synced too (fsync(2): syncing a file
    // does not sync the directory entry that names it).
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

#[cfg(test)]
#[path = "users_tests.rs"]
mod tests;

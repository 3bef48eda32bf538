//! The users file: one user per line, `name:argon2id-hash[:address,address...]`, `#` comments.
//! Written owner-only (0600) and replaced atomically; the server re-reads it when it changes,
//! so `corvid user add` takes effect without a restart.

use super::Credentials;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use corvid_types::Address;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
    #[error("password hashing failed: {0}")]
    Hash(String),
}

#[derive(Clone, Debug, Default)]
struct User {
    hash: String,
    addresses: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct Table {
    users: BTreeMap<String, User>,
    mtime: Option<SystemTime>,
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
    /// Reads the file; a missing file is an empty user list.
    pub fn load(path: &Path, delimiter: char) -> Result<UsersFile, UsersError> {
        let table = read_table(path)?;
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

    /// Adds the user or changes its password (and addresses, when given).
    pub fn set(
        &self,
        name: &str,
        hash: String,
        addresses: Option<Vec<String>>,
    ) -> Result<(), UsersError> {
        if name.is_empty() || name.contains([':', ',']) || name.contains(char::is_whitespace) {
            return Err(UsersError::BadName);
        }
        self.edit(|users| {
            let user = users.entry(name.to_string()).or_default();
            user.hash = hash;
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
        write_table(&self.path, &table)?;
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
        // An unknown user costs the same hashing work as a known one, so response time does
        // not reveal which user names exist.
        let hash = table
            .users
            .get(username)
            .map(|u| u.hash.clone())
            .unwrap_or_else(dummy_hash);
        let ok = PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && table.users.contains_key(username)
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
    let io = |source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
        Err(e) => return Err(io(e)),
    };
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut users = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, ':');
        let (Some(name), Some(hash)) = (fields.next(), fields.next()) else {
            let reason = "expected name:hash[:addresses]".to_string();
            return Err(UsersError::Syntax {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            });
        };
        let addresses = fields
            .next()
            .map(|a| {
                a.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        users.insert(
            name.to_string(),
            User {
                hash: hash.to_string(),
                addresses,
            },
        );
    }
    Ok(Table { users, mtime })
}

fn write_table(path: &Path, table: &Table) -> Result<(), UsersError> {
    let io = |source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::from(
        "# Corvid users: name:argon2id-hash[:address,...]. Edit with `corvid user`.\n",
    );
    for (name, u) in &table.users {
        text.push_str(&format!("{name}:{}:{}\n", u.hash, u.addresses.join(",")));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes())
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
mod tests {
    use super::*;

    #[test]
    fn add_verify_owns_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let users = UsersFile::load(&path, '+').unwrap();
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        users
            .set("alice@x.test", hash, Some(vec!["sales@x.test".into()]))
            .unwrap();
        assert!(users.verify("alice@x.test", "s3cret"));
        assert!(!users.verify("alice@x.test", "wrong"));
        assert!(!users.verify("bob@x.test", "s3cret"));
        assert!(users.owns_address("alice@x.test", &Address::new("Alice+tag", "X.test")));
        assert!(users.owns_address("alice@x.test", &Address::new("sales", "x.test")));
        assert!(!users.owns_address("alice@x.test", &Address::new("bob", "x.test")));
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(users.remove("alice@x.test").unwrap());
        assert!(!users.verify("alice@x.test", "s3cret"));
        assert!(users.set("bad name", String::new(), None).is_err());
    }
}

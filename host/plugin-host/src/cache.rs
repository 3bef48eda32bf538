//! The on-disk cache of compiled components, keyed by the SHA-256 of the component bytes and
//! of the engine's precompile compatibility hash (so a wasmtime upgrade or a config change
//! misses instead of loading incompatible code).
//!
//! Trust: loading a cached file runs native code from it ([`Component::deserialize_file`] is
//! `unsafe` for that reason). Only files this module wrote into the host's own cache directory
//! are ever deserialized; that directory must be writable by the server's user alone, like the
//! server binary itself.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Feeds `Hash` output into SHA-256, for a digest that is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.update(Sha256::digest(bytes));
    hex::encode(h.0.finalize())
}

/// Whether a load was served from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheUse {
    Hit,
    Miss,
    Disabled,
}

/// Compiles `bytes`, or loads the compiled form from `dir` when it is there.
pub(crate) fn component(
    engine: &Engine,
    bytes: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, CacheUse)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, bytes)?, CacheUse::Disabled));
    };
    let path: PathBuf = dir.join(format!("{}.cwasm", key(engine, bytes)));
    match read_entry(&path) {
        Ok(Some(code)) => {
            // SAFETY: `code` was read, without following a symlink, from our own cache
            // directory, where `store` below wrote it from `Component::serialize` of an engine
            // with the same compatibility hash (part of the file name). See the module docs
            // for the trust assumption on the directory.
            match unsafe { Component::deserialize(engine, &code) } {
                Ok(c) => return Ok((c, CacheUse::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "dropping unusable cache entry: {e:#}");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            // A symlink (or anything but a regular file) where a cache entry belongs is never
            // loaded: it could point at native code someone else controls. Removing it
            // removes the link, not its target.
            tracing::warn!(path = %path.display(), "refusing cache entry: {e}");
            let _ = std::fs::remove_file(&path);
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(dir = %dir.display(), "cannot write compiled-code cache: {e:#}");
    }
    Ok((component, CacheUse::Miss))
}

/// The cached code at `path`: `None` when there is none; an error when it is not a regular
/// file opened without following a symlink (`O_NOFOLLOW`).
fn read_entry(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut code = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut code)?;
    Ok(Some(code))
}

fn store(component: &Component, dir: &Path, path: &Path) -> wasmtime::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{seq}", std::process::id()));
    // A new file only (never through a symlink planted at the temporary name), owner-only.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(&component.serialize()?)?;
    drop(f);
    // rename(2) replaces the name itself, never what a symlink there points to.
    std::fs::rename(&tmp, path)?;
    Ok(())
}

//! Running as root only as long as needed (`server.user`, `server.group`, `server.allow_root`).
//!
//! Started as root with `server.user` set, the server switches its group for good and its
//! effective user id to that user before it opens anything, so that every file it creates
//! (queue, Maildirs, certificates, plugin cache, admin socket) belongs to that user. Root comes
//! back, as the effective id only, for the moment the SMTP listeners are bound (ports below
//! 1024), and then every user id is set to the user for good: after [`PendingDrop::finish`] the
//! process cannot become root again (checked). glibc applies set*id calls to every thread of
//! the process, so tokio's worker threads change with it.
//!
//! Started by another user (systemd `User=corvid` with `AmbientCapabilities=
//! CAP_NET_BIND_SERVICE`), there is nothing to drop. Started as root without `server.user`,
//! the server refuses to run unless `server.allow_root = true`.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tracing::{info, warn};

/// The user and group the server runs as after start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// A drop in progress: the group is dropped, the effective user id is the target's, the real
/// and saved ones are still root (for the bind).
#[derive(Debug)]
pub struct PendingDrop {
    target: Target,
}

/// What `server.*` says about users.
pub struct Settings<'a> {
    pub user: Option<&'a str>,
    pub group: Option<&'a str>,
    pub allow_root: bool,
    pub data_dir: &'a Path,
}

/// Called first thing, before any thread is started or any file opened. Returns the drop to
/// finish after the listeners are bound, or `None` when there is nothing to drop.
pub fn begin(s: &Settings) -> Result<Option<PendingDrop>> {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        if let Some(user) = s.user {
            let t = resolve(user, s.group)?;
            if t.uid != euid {
                warn!(user, uid = euid, "server.user is set but the server was not started as root: it keeps running as uid {euid}");
            }
        }
        return Ok(None);
    }
    let Some(user) = s.user else {
        if s.allow_root {
            warn!("running as root (server.allow_root = true)");
            return Ok(None);
        }
        bail!(
            "started as root without `server.user`: set server.user (and server.group) to the \
             user the server should run as once its ports are bound, or server.allow_root = true \
             to keep running as root"
        );
    };
    let target = resolve(user, s.group)?;
    if target.uid == 0 {
        if s.allow_root {
            return Ok(None);
        }
        bail!("key `server.user`: `{user}` is root; name an unprivileged user, or set server.allow_root = true");
    }
    prepare_data_dir(s.data_dir, &target)?;
    let gid = target.gid;
    // SAFETY: plain system calls on integers and a one-element array that outlives the call.
    unsafe {
        if libc::setgroups(1, &gid) != 0 {
            bail!("setgroups: {}", std::io::Error::last_os_error());
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            bail!("setresgid({gid}): {}", std::io::Error::last_os_error());
        }
        // Effective id only: the saved id (root) lets the bind regain it once.
        if libc::setresuid(libc::uid_t::MAX, target.uid, libc::uid_t::MAX) != 0 {
            bail!(
                "seteuid({}): {}",
                target.uid,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(Some(PendingDrop { target }))
}

impl PendingDrop {
    /// Root as the effective user id again, for binding the listeners; [`PendingDrop::finish`] ends it.
    pub fn regain(&self) -> Result<()> {
        // SAFETY: a system call on integers.
        if unsafe { libc::setresuid(libc::uid_t::MAX, 0, libc::uid_t::MAX) } != 0 {
            bail!(
                "regaining root to bind: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Every user id becomes the target's, for good; checks that root cannot come back.
    pub fn finish(self) -> Result<Target> {
        let uid = self.target.uid;
        // SAFETY: system calls on integers and on locals that outlive them.
        unsafe {
            if libc::setresuid(uid, uid, uid) != 0 {
                bail!("setresuid({uid}): {}", std::io::Error::last_os_error());
            }
            let (mut r, mut e, mut s) = (0, 0, 0);
            libc::getresuid(&mut r, &mut e, &mut s);
            if (r, e, s) != (uid, uid, uid) || libc::setuid(0) == 0 {
                bail!("dropping root failed: uids {r}/{e}/{s} after setresuid({uid})");
            }
        }
        info!(user = %self.target.user, uid, gid = self.target.gid, "dropped root privileges");
        Ok(self.target)
    }
}

/// The data directory must belong to the target user: created for it when missing (0700), and
/// refused when it belongs to someone else (files a root run left there would be unwritable).
fn prepare_data_dir(dir: &Path, t: &Target) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::os::unix::fs::chown(dir, Some(t.uid), Some(t.gid))
            .with_context(|| format!("chown {} to {}", dir.display(), t.user))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        return Ok(());
    }
    let owner = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .uid();
    if owner != t.uid {
        bail!(
            "key `server.data_dir`: {} belongs to uid {owner}, not to `{}` (uid {}), the user \
             the server runs as: `chown -R {}: {}`",
            dir.display(),
            t.user,
            t.uid,
            t.user,
            dir.display()
        );
    }
    Ok(())
}

/// Looks up `user` (and `group`, default the user's primary group) in the system databases.
pub fn resolve(user: &str, group: Option<&str>) -> Result<Target> {
    let (uid, primary) = lookup_user(user)?
        .with_context(|| format!("key `server.user`: no user `{user}` on this system"))?;
    let gid = match group {
        Some(g) => lookup_group(g)?
            .with_context(|| format!("key `server.group`: no group `{g}` on this system"))?,
        None => primary,
    };
    Ok(Target {
        user: user.to_string(),
        uid,
        gid,
    })
}

fn lookup_user(name: &str) -> Result<Option<(libc::uid_t, libc::gid_t)>> {
    let cname = CString::new(name).context("key `server.user`: contains a NUL")?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: getpwnam_r writes into `pwd` and `buf` (whose length it is given) and sets
    // `result` to null or to `pwd`; nothing is read from them unless it succeeded.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            bail!(
                "looking up user `{name}`: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok((!result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid)))
    }
}

fn lookup_group(name: &str) -> Result<Option<libc::gid_t>> {
    let cname = CString::new(name).context("key `server.group`: contains a NUL")?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: as in lookup_user.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            bail!(
                "looking up group `{name}`: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok((!result.is_null()).then_some(grp.gr_gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_are_looked_up_by_name() {
        let root = resolve("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let err = format!("{:#}", resolve("no-such-user-corvid", None).unwrap_err());
        assert!(err.contains("server.user"), "{err}");
        let err = format!(
            "{:#}",
            resolve("root", Some("no-such-group-corvid")).unwrap_err()
        );
        assert!(err.contains("server.group"), "{err}");
    }
}

use super::*;
use std::os::unix::fs::PermissionsExt;

fn alice() -> Address {
    Address::new("alice", "example.test")
}

#[test]
fn delivers_into_new_with_prefix_and_exact_bytes() {
    let root = tempfile::tempdir().unwrap();
    let content = b"Subject: hi\r\n\r\nline one\r\n.dot\r\n\x00\xff\r\n";
    let prefix = b"Return-Path: <bob@x.test>\r\n";
    let path = deliver(root.path(), &alice(), "Q1", 1_700_000_000, prefix, content).unwrap();

    let maildir = root.path().join("example.test/alice/Maildir");
    assert_eq!(path.parent().unwrap(), maildir.join("new"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..prefix.len()], prefix);
    assert_eq!(&bytes[prefix.len()..], content);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with(&format!(",S={}", bytes.len())), "{name}");
    assert!(!name.contains(':') && !name.contains('/'));
    for sub in ["tmp", "cur"] {
        assert!(maildir.join(sub).is_dir());
    }
    assert_eq!(std::fs::read_dir(maildir.join("tmp")).unwrap().count(), 0);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&maildir.join("new")), 0o700);
}

#[test]
fn names_are_unique() {
    let root = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..50)
        .map(|i| deliver(root.path(), &alice(), &format!("Q{i}"), 1, b"", b"x\r\n").unwrap())
        .collect();
    let dir = root.path().join("example.test/alice/Maildir/new");
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), paths.len());
}

#[test]
fn path_traversal_is_refused() {
    let root = tempfile::tempdir().unwrap();
    for (local, domain) in [
        ("..", "example.test"),
        (".", "example.test"),
        ("a/../../etc", "example.test"),
        ("alice", ".."),
        ("alice", "x/y"),
        ("al\0ice", "example.test"),
        ("", "example.test"),
    ] {
        let err = deliver(
            root.path(),
            &Address::new(local, domain),
            "Q1",
            1,
            b"",
            b"x",
        )
        .unwrap_err();
        assert!(
            matches!(err, DeliveryError::BadMailbox { .. }),
            "{local:?}@{domain:?}: {err}"
        );
        assert!(matches!(err.outcome(), crate::Outcome::Permanent(_)));
    }
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn io_trouble_is_transient() {
    let root = tempfile::tempdir().unwrap();
    // A file where the domain directory should be: creating the Maildir fails.
    std::fs::write(root.path().join("example.test"), b"").unwrap();
    let err = deliver(root.path(), &alice(), "Q1", 1, b"", b"x").unwrap_err();
    assert!(
        matches!(err.outcome(), crate::Outcome::Transient(_)),
        "{err}"
    );
}

#[test]
fn hostnames_are_escaped_as_dovecot_does() {
    assert_eq!(sanitize_host("a/b:c"), "a\\057b\\072c");
    assert_eq!(sanitize_host(""), "localhost");
    assert!(!hostname().is_empty());
}

#[test]
fn deliver_once_is_idempotent_per_message_and_mailbox() {
    let root = tempfile::tempdir().unwrap();
    let mb = Address::new("alice", "x.test");
    let first = deliver(
        root.path(),
        &mb,
        "ABC123",
        1_700_000_000,
        b"P: 1\r\n",
        b"body\r\n",
    )
    .unwrap();
    let again = deliver(
        root.path(),
        &mb,
        "ABC123",
        1_700_000_000,
        b"P: 1\r\n",
        b"body\r\n",
    )
    .unwrap();
    assert_eq!(first, again);
    let new_dir = root.path().join("x.test/alice/Maildir/new");
    assert_eq!(std::fs::read_dir(&new_dir).unwrap().count(), 1);
    assert_eq!(std::fs::read(&first).unwrap(), b"P: 1\r\nbody\r\n");
    // Seen by a client (moved to cur with flags): still not delivered twice.
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    let cur = root
        .path()
        .join("x.test/alice/Maildir/cur")
        .join(format!("{name}:2,S"));
    std::fs::rename(&first, &cur).unwrap();
    let third = deliver(
        root.path(),
        &mb,
        "ABC123",
        1_700_000_000,
        b"P: 1\r\n",
        b"body\r\n",
    )
    .unwrap();
    assert_eq!(third, cur);
    assert_eq!(std::fs::read_dir(&new_dir).unwrap().count(), 0);
    // Another message gets its own file.
    deliver(root.path(), &mb, "DEF456", 1_700_000_000, b"", b"x\r\n").unwrap();
    assert_eq!(std::fs::read_dir(&new_dir).unwrap().count(), 1);
    assert!(deliver(root.path(), &mb, "../x", 1, b"", b"").is_err());
}

/// The file name `deliver` uses for a message.
fn file_name(queue_id: &str, arrived_at: u64, size: usize) -> String {
    format!("{arrived_at}.Q{queue_id}.{},S={size}", hostname())
}

#[test]
fn a_symlink_planted_in_tmp_or_new_is_not_written_through() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let mb = alice();
    // Make the Maildir, then plant links under the names the next deliveries will use.
    deliver(root.path(), &mb, "FIRST", 1, b"", b"x").unwrap();
    let md = root.path().join("example.test/alice/Maildir");
    let in_tmp = file_name("TMP1", 7, 5);
    symlink(&victim, md.join("tmp").join(&in_tmp)).unwrap();
    let in_new = file_name("NEW1", 7, 5);
    symlink(&victim, md.join("new").join(&in_new)).unwrap();

    let a = deliver(root.path(), &mb, "TMP1", 7, b"", b"hello").unwrap();
    let b = deliver(root.path(), &mb, "NEW1", 7, b"", b"hello").unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for p in [&a, &b] {
        let meta = std::fs::symlink_metadata(p).unwrap();
        assert!(meta.file_type().is_file(), "{}", p.display());
        assert_eq!(std::fs::read(p).unwrap(), b"hello");
    }
    assert!(std::fs::symlink_metadata(md.join("tmp").join(&in_tmp)).is_err());
}

#[test]
fn symlinked_maildir_directories_are_not_followed() {
    use std::os::unix::fs::symlink;
    for (link_at, what) in [
        ("example.test/alice/Maildir/new", "new/"),
        ("example.test/alice/Maildir/tmp", "tmp/"),
        ("example.test/alice", "the user directory"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(outside.path().join(sub)).unwrap();
        }
        let md = root.path().join("example.test/alice/Maildir");
        std::fs::create_dir_all(&md).unwrap();
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        let link = root.path().join(link_at);
        std::fs::remove_dir_all(&link).unwrap();
        symlink(outside.path(), &link).unwrap();
        let err = deliver(root.path(), &alice(), "Q9", 1, b"", b"x").unwrap_err();
        assert!(
            matches!(err.outcome(), crate::Outcome::Transient(_)),
            "{what}: {err}"
        );
        let top = std::fs::read_dir(outside.path()).unwrap().count();
        assert_eq!(top, 3, "{what}: something was created through the link");
        for sub in ["tmp", "new", "cur"] {
            let n = std::fs::read_dir(outside.path().join(sub)).unwrap().count();
            assert_eq!(n, 0, "{what}: written through the link into {sub}");
        }
    }
}

#[test]
fn concurrent_deliveries_into_one_maildir_all_land() {
    // They share the fsyncs of new/ (dirsync's tests check the ordering); here each delivery
    // returns its own file, and the mailbox holds every message once.
    let root = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let root = root.path();
                s.spawn(move || {
                    (0..8)
                        .map(|i| {
                            let id = format!("T{t}M{i}");
                            deliver(root, &alice(), &id, 1, b"", id.as_bytes()).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let new_dir = root.path().join("example.test/alice/Maildir/new");
    assert_eq!(std::fs::read_dir(&new_dir).unwrap().count(), 16 * 8);
    for p in &paths {
        let id = p.file_name().unwrap().to_str().unwrap();
        let body = std::fs::read(p).unwrap();
        assert!(id.contains(&format!(".Q{}.", String::from_utf8_lossy(&body))));
    }
}

#[test]
fn a_cached_maildir_replaced_removed_or_symlinked_is_opened_again() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let md = root.path().join("example.test/alice/Maildir");
    let count = |dir: &Path| std::fs::read_dir(dir).map_or(0, |d| d.count());
    deliver(root.path(), &alice(), "C1", 1, b"", b"one").unwrap();
    // Moved away and made again: the next message lands in the new one.
    std::fs::rename(&md, root.path().join("old")).unwrap();
    let p = deliver(root.path(), &alice(), "C2", 1, b"", b"two").unwrap();
    assert!(p.starts_with(&md));
    assert_eq!(count(&md.join("new")), 1);
    assert_eq!(
        count(&root.path().join("old/new")),
        1,
        "nothing more in the old one"
    );
    // Removed with its user directory: made again.
    std::fs::remove_dir_all(root.path().join("example.test/alice")).unwrap();
    deliver(root.path(), &alice(), "C3", 1, b"", b"three").unwrap();
    assert_eq!(count(&md.join("new")), 1);
    // Replaced by a symlink to a Maildir elsewhere: refused, nothing written there.
    let subs = ["tmp", "new", "cur"].map(|sub| outside.path().join(sub));
    subs.iter()
        .for_each(|d| std::fs::create_dir_all(d).unwrap());
    std::fs::remove_dir_all(&md).unwrap();
    symlink(outside.path(), &md).unwrap();
    let err = deliver(root.path(), &alice(), "C4", 1, b"", b"four").unwrap_err();
    assert!(matches!(err.outcome(), crate::Outcome::Transient(_)));
    assert!(
        subs.iter().all(|d| count(d) == 0),
        "written through the link"
    );
    // tmp/ alone replaced (the check looks at new/ only): the failed write is retried through
    // freshly opened directories.
    std::fs::remove_file(&md).unwrap();
    deliver(root.path(), &alice(), "C5", 1, b"", b"five").unwrap();
    std::fs::remove_dir(md.join("tmp")).unwrap();
    std::fs::create_dir(md.join("tmp")).unwrap();
    deliver(root.path(), &alice(), "C6", 1, b"", b"six").unwrap();
    assert_eq!(count(&md.join("new")), 2);
    assert_eq!(count(&md.join("tmp")), 0);
}

/// A cached entry leads exactly where a fresh open would: a symlink at the Maildir or the
/// user level, to a real Maildir whose `new/` is the cached one, is refused like on a first
/// delivery (the check used to look at `new/` only, and followed the links above it).
#[test]
fn a_cached_maildir_moved_behind_a_symlink_is_refused() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let count = |dir: &Path| std::fs::read_dir(dir).map_or(0, |d| d.count());
    let bob = Address::new("bob", "example.test");
    let md = root.path().join("example.test/alice/Maildir");
    let bobs = root.path().join("example.test/bob/Maildir");
    deliver(root.path(), &alice(), "S1", 1, b"", b"one").unwrap();
    deliver(root.path(), &bob, "S0", 1, b"", b"bob's").unwrap();
    std::fs::remove_dir_all(&bobs).unwrap();
    std::fs::rename(&md, &bobs).unwrap();
    symlink("../bob/Maildir", &md).unwrap();
    assert!(deliver(root.path(), &alice(), "S2", 1, b"", b"two").is_err());
    assert_eq!(
        count(&bobs.join("new")),
        1,
        "only alice's first message, moved with it"
    );
    // The same one level up: alice's user directory is a link to bob's.
    std::fs::remove_file(&md).unwrap();
    deliver(root.path(), &alice(), "S3", 1, b"", b"three").unwrap();
    let user = root.path().join("example.test/alice");
    std::fs::remove_dir_all(&user).unwrap();
    symlink("bob", &user).unwrap();
    assert!(deliver(root.path(), &alice(), "S4", 1, b"", b"four").is_err());
    assert_eq!(count(&bobs.join("new")), 1);
    // cur/ replaced alone: opened again, and the delivery lands.
    std::fs::remove_file(&user).unwrap();
    deliver(root.path(), &alice(), "S5", 1, b"", b"five").unwrap();
    std::fs::remove_dir(md.join("cur")).unwrap();
    std::fs::create_dir(md.join("cur")).unwrap();
    deliver(root.path(), &alice(), "S6", 1, b"", b"six").unwrap();
    assert_eq!(count(&md.join("new")), 2);
}

#[test]
fn only_failures_before_the_directory_fsync_are_retried_through_fresh_directories() {
    let eio = || io::Error::from_raw_os_error(libc::EIO);
    assert!(!retry_fresh(&DeliveryError::io("fsync", "new", eio())));
    for op in ["open", "write", "rename", "stat"] {
        assert!(retry_fresh(&DeliveryError::io(op, "x", eio())), "{op}");
    }
}

/// A writer that takes at most `max` bytes a call, as a regular file does only on an error.
struct Short {
    out: Vec<u8>,
    max: usize,
}

impl Write for Short {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(self.max);
        self.out.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_short_write_is_finished_part_by_part() {
    let parts: [&[u8]; 2] = [b"Return-Path: <a@x>\r\n", b"Subject: s\r\n\r\nbody\r\n"];
    // Short in the prefix, at its end, in the message, and not short at all.
    for max in [3, 20, 25, 1000] {
        let mut w = Short {
            out: Vec::new(),
            max,
        };
        write_parts(&mut w, &parts).unwrap();
        assert_eq!(w.out, [parts[0], parts[1]].concat(), "max {max}");
    }
}

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
    let path = deliver(root.path(), &alice(), prefix, content).unwrap();

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
        .map(|_| deliver(root.path(), &alice(), b"", b"x\r\n").unwrap())
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
        let err = deliver(root.path(), &Address::new(local, domain), b"", b"x").unwrap_err();
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
    let err = deliver(root.path(), &alice(), b"", b"x").unwrap_err();
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

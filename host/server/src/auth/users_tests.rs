use super::*;

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

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
    assert_eq!(mode_of(&path), 0o600);
    // Written in Dovecot's passwd-file format.
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(
        line.starts_with("alice@x.test:{ARGON2ID}$argon2id$v=19$"),
        "{line}"
    );
    assert!(
        line.ends_with("::::::corvid_senders=sales@x.test"),
        "{line}"
    );
    assert!(users.remove("alice@x.test").unwrap());
    assert!(!users.verify("alice@x.test", "s3cret"));
    assert!(users.set("bad name", String::new(), None).is_err());
    assert!(matches!(
        users.set("a@x.test", String::new(), Some(vec!["x y@z".into()])),
        Err(UsersError::BadAddress(_))
    ));
}

#[test]
fn old_format_is_converted_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let hash = hash_password("s3cret").unwrap();
    std::fs::write(
        &path,
        format!("# old\nalice@x.test:{hash}:sales@x.test,info@x.test\nbob@x.test:{hash}\n"),
    )
    .unwrap();
    let users = UsersFile::load(&path, '+').unwrap();
    assert!(users.verify("alice@x.test", "s3cret"));
    assert!(users.verify("bob@x.test", "s3cret"));
    assert!(users.owns_address("alice@x.test", &Address::new("info", "x.test")));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!(
        "alice@x.test:{{ARGON2ID}}{hash}::::::corvid_senders=sales@x.test,info@x.test\n"
    )));
    assert!(text.contains(&format!("bob@x.test:{{ARGON2ID}}{hash}::::::\n")));
    // The old file was 0644: the group may still read it, the world no longer.
    assert_eq!(mode_of(&path), 0o640);
}

#[test]
fn a_read_only_old_file_is_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let hash = hash_password("s3cret").unwrap();
    std::fs::write(&path, format!("alice@x.test:{hash}\n")).unwrap();
    // The temporary file cannot be created in a read-only directory (root ignores modes, so
    // the directory is made unusable by putting a directory where the temporary file goes).
    std::fs::create_dir(path.with_extension("tmp")).unwrap();
    let users = UsersFile::load(&path, '+').unwrap();
    assert!(users.verify("alice@x.test", "s3cret"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("alice@x.test:{hash}\n")
    );
}

#[test]
fn rewrite_keeps_group_read_but_never_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let users = UsersFile::load(&path, '+').unwrap();
    users
        .set("a@x.test", hash_password("pw").unwrap(), None)
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    users
        .set("b@x.test", hash_password("pw").unwrap(), None)
        .unwrap();
    assert_eq!(mode_of(&path), 0o640);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(users.remove("b@x.test").unwrap());
    assert_eq!(mode_of(&path), 0o600);
}

#[test]
fn malformed_file_error_names_path_and_line_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, "# c\nalice@x.test:hunter2\n").unwrap();
    let Err(e) = UsersFile::load(&path, '+') else {
        panic!("a plain-text password field must be refused");
    };
    let text = e.to_string();
    assert!(text.contains("users line 2:"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn schemes_corvid_cannot_verify_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    // Dovecot's PLAIN scheme in a shared file: Corvid refuses it rather than compare text.
    std::fs::write(&path, "alice@x.test:{PLAIN}pw::::::\n").unwrap();
    let users = UsersFile::load(&path, '+').unwrap();
    assert!(!users.verify("alice@x.test", "pw"));
    assert_eq!(users.list().len(), 1);
}

#[test]
fn rewrite_keeps_owner_and_group_when_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let users = UsersFile::load(&path, '+').unwrap();
    users
        .set("a@x.test", hash_password("pw").unwrap(), None)
        .unwrap();
    if std::fs::metadata(&path).unwrap().uid() != 0 {
        // Only root can give the file away; the CI runs as root.
        return;
    }
    // The file belongs to the server's user (65534 here), `corvid user` runs as root.
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    users
        .set("b@x.test", hash_password("pw").unwrap(), None)
        .unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
}

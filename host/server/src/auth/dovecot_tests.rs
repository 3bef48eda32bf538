use super::*;
use std::io::BufRead;
use std::os::unix::net::UnixListener;

const HANDSHAKE: &str = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
                         SPID\t1\nCUID\t1\nCOOKIE\tabc\nDONE\n";

/// A one-connection fake of Dovecot's auth socket: sends `greeting`, reads the client's
/// lines up to its AUTH, then answers `reply(auth_line)`. Returns the lines it read.
fn fake(
    dir: &Path,
    greeting: &'static str,
    reply: impl Fn(&str) -> String + Send + 'static,
) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
    let path = dir.join("auth-client");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(greeting.as_bytes()).unwrap();
        let mut lines = Vec::new();
        let mut r = BufReader::new(s.try_clone().unwrap());
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap_or(0) == 0 {
                return lines;
            }
            let l = l.trim_end().to_string();
            lines.push(l.clone());
            if l.starts_with("AUTH\t") {
                let _ = s.write_all(reply(&l).as_bytes());
                // Keep the connection open until the client is done with it.
                let _ = r.read_line(&mut String::new());
                return lines;
            }
        }
    });
    (path, handle)
}

fn attempt<'a>() -> AuthAttempt<'a> {
    AuthAttempt {
        username: "alice@x.test",
        password: "pa\tss",
        secured: true,
        client_ip: Some("192.0.2.1".parse().unwrap()),
        local_ip: Some("127.0.0.1".parse().unwrap()),
    }
}

#[test]
fn ok_with_senders_and_the_request_postfix_sends() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h) = fake(dir.path(), HANDSHAKE, |_| {
        "OK\t1\tuser=Alice@x.test\tcorvid_senders=sales@x.test,info@x.test\n".into()
    });
    let d = DovecotAuth::new(&path, '+');
    assert_eq!(
        d.check(&attempt()),
        AuthCheck::Accepted("Alice@x.test".into())
    );
    let lines = h.join().unwrap();
    assert_eq!(lines[0], "VERSION\t1\t2");
    assert!(lines[1].starts_with("CPID\t"));
    let resp = STANDARD.encode(b"\0alice@x.test\0pa\tss");
    assert_eq!(
        lines[2],
        format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tsecured\tlip=127.0.0.1\trip=192.0.2.1\tresp={resp}"
        )
    );
    assert!(d.owns_address("Alice@x.test", &Address::new("sales+x", "x.test")));
    assert!(d.owns_address("Alice@x.test", &Address::new("alice", "X.test")));
    assert!(!d.owns_address("Alice@x.test", &Address::new("bob", "x.test")));
}

#[test]
fn fail_is_rejected_and_temp_fail_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _h) = fake(dir.path(), HANDSHAKE, |_| {
        "FAIL\t1\tuser=alice@x.test\n".into()
    });
    let d = DovecotAuth::new(&path, '+');
    assert_eq!(d.check(&attempt()), AuthCheck::Rejected);
    for reply in ["FAIL\t1\tuser=a\tcode=temp_fail\n", "FAIL\t1\ttemp\n"] {
        let (path, _h) = fake(dir.path(), HANDSHAKE, move |_| reply.into());
        let d = DovecotAuth::new(&path, '+');
        assert!(
            matches!(d.check(&attempt()), AuthCheck::Unavailable(_)),
            "{reply}"
        );
    }
}

#[test]
fn outages_and_nonsense_are_unavailable_never_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listening.
    let d = DovecotAuth::new(&dir.path().join("missing"), '+');
    let AuthCheck::Unavailable(why) = d.check(&attempt()) else {
        panic!("a missing socket must be a temporary failure");
    };
    assert!(why.contains("missing"), "{why}");
    assert!(!why.contains("pa\tss"));
    let cases: [(&'static str, &'static str); 4] = [
        ("VERSION\t2\t0\nMECH\tPLAIN\nDONE\n", "OK\t1\tuser=a\n"),
        ("VERSION\t1\t2\nMECH\tLOGIN\nDONE\n", "OK\t1\tuser=a\n"),
        (HANDSHAKE, "OK\t7\tuser=a\n"),
        (HANDSHAKE, "CONT\t1\tabc\n"),
    ];
    for (greeting, reply) in cases {
        let (path, _h) = fake(dir.path(), greeting, move |_| reply.into());
        let d = DovecotAuth::new(&path, '+');
        assert!(
            matches!(d.check(&attempt()), AuthCheck::Unavailable(_)),
            "{greeting:?} {reply:?}"
        );
    }
    // A line longer than the bound.
    let long: &'static str =
        Box::leak(format!("VERSION\t1\t2\n{}\n", "x".repeat(MAX_LINE + 10)).into_boxed_str());
    let (path, _h) = fake(dir.path(), long, |_| String::new());
    let d = DovecotAuth::new(&path, '+');
    let AuthCheck::Unavailable(why) = d.check(&attempt()) else {
        panic!("an over-long line must be refused");
    };
    assert!(why.contains("too long"), "{why}");
}

#[test]
fn a_silent_dovecot_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent");
    let _listener = UnixListener::bind(&path).unwrap();
    let d = DovecotAuth::new(&path, '+').with_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let AuthCheck::Unavailable(why) = d.check(&attempt()) else {
        panic!("a silent socket must be a temporary failure");
    };
    assert!(why.contains("timed out"), "{why}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn unescapes_dovecot_fields() {
    assert_eq!(unescape("a\x01tb\x011c\x01n"), "a\tb\x01c\n");
    assert_eq!(unescape("plain"), "plain");
}

#[test]
fn the_dovecot_backend_needs_its_socket() {
    let mut settings = crate::config::AuthSettings {
        backend: crate::auth::AuthBackend::Dovecot,
        ..Default::default()
    };
    let users = Path::new("/nonexistent/users");
    let Err(e) = crate::auth::credentials(&settings, users, '+') else {
        panic!("backend = dovecot without dovecot_socket must be refused");
    };
    assert!(e.to_string().contains("auth.dovecot_socket"), "{e}");
    settings.dovecot_socket = Some("/nonexistent/socket".into());
    let creds = crate::auth::credentials(&settings, users, '+').unwrap();
    // Built lazily: an absent Dovecot is a temporary failure at AUTH time, not a start error.
    assert!(matches!(
        creds.check(&AuthAttempt::new("a", "b")),
        AuthCheck::Unavailable(_)
    ));
}

#[test]
fn attempts_waiting_on_dovecot_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow");
    // Accepts and never answers: the first attempt waits for its timeout.
    let _listener = UnixListener::bind(&path).unwrap();
    let d = std::sync::Arc::new(
        DovecotAuth::new(&path, '+')
            .with_timeout(Duration::from_secs(2))
            .with_max_in_flight(1),
    );
    assert!(!d.hashes_locally());
    let first = {
        let d = std::sync::Arc::clone(&d);
        std::thread::spawn(move || d.check(&attempt()))
    };
    std::thread::sleep(Duration::from_millis(300));
    let AuthCheck::Unavailable(why) = d.check(&attempt()) else {
        panic!("a second attempt beyond the bound must be a temporary failure");
    };
    assert!(why.contains("too many"), "{why}");
    assert!(matches!(first.join().unwrap(), AuthCheck::Unavailable(_)));
    // The place is given back.
    let AuthCheck::Unavailable(why) = d.check(&attempt()) else {
        panic!("a silent socket must be a temporary failure");
    };
    assert!(!why.contains("too many"), "{why}");
}

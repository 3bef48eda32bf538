use super::files::sweep;
use super::section::retention;
use super::*;
use corvid_types::{Address, MailParams, RcptParams, Reply};
use std::time::Duration;

fn recorder(rate: f64, only: RecordOnly, dir: &Path, max_bytes: usize) -> Arc<Recorder> {
    let section = RecordSection {
        rate,
        only,
        plugin: None,
        dir: Some(dir.to_path_buf()),
        max_bytes,
        retention: retention(),
    };
    let chain: Chain = Box::new(|| vec!["deny-x".into()]);
    Arc::new(Recorder::new(&section, dir, chain))
}

#[test]
fn sampling_is_evenly_spaced() {
    let dir = tempfile::tempdir().unwrap();
    let count = |rate| {
        let r = recorder(rate, RecordOnly::All, dir.path(), 1);
        (0..100).filter(|_| r.sample()).count()
    };
    assert_eq!(count(0.0), 0);
    assert_eq!(count(0.1), 10);
    assert_eq!(count(0.25), 25);
    assert_eq!(count(1.0), 100);
}

/// A chain refusing `x@...` at RCPT and stamping a header at DATA.
struct DenyX;
struct DenyXSession;

impl Policy for DenyX {
    fn session(&self, _conn: &ConnectionInfo) -> Box<dyn PolicySession> {
        Box::new(DenyXSession)
    }
}

#[async_trait]
impl PolicySession for DenyXSession {
    async fn rcpt(&mut self, _c: &ConnectionInfo, _e: &Envelope, r: &Recipient) -> Decision {
        if r.address.local == "x" {
            return Decision::reject(Reply::new(550, "5.7.1", "no x"));
        }
        Decision::proceed()
    }
    async fn data(&mut self, _c: &ConnectionInfo, _e: &Envelope, _m: MessageView<'_>) -> Decision {
        let mut d = Decision::proceed();
        d.modifications.push(corvid_types::Modification::AddHeader {
            name: "X-Seen".into(),
            value: "yes".into(),
        });
        d
    }
}

fn conn() -> ConnectionInfo {
    ConnectionInfo {
        session_id: 7,
        listener: "smtp".into(),
        local_addr: "127.0.0.1:25".parse().unwrap(),
        peer_addr: "192.0.2.9:4000".parse().unwrap(),
        peer_rdns: None,
        helo: None,
        esmtp: false,
        tls: None,
        auth_user: None,
    }
}

/// Drives one session (MAIL, two RCPTs, DATA) through a recording policy, then drops it
/// outside the runtime so that the capture is written at once.
fn record_one(rec: &Arc<Recorder>, message: &[u8], password: &str) {
    let policy = RecordPolicy {
        inner: Arc::new(DenyX),
        recorder: Arc::clone(rec),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut c = conn();
    let mut s = policy.session(&c);
    rt.block_on(async {
        s.connect(&c).await;
        c.helo = Some("client.example".into());
        c.esmtp = true;
        s.helo(&c).await;
        // STARTTLS, then EHLO again.
        c.tls = Some(corvid_types::TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            sni: None,
        });
        s.helo(&c).await;
        let creds = AuthCredentials {
            mechanism: "PLAIN".into(),
            username: "u".into(),
            authzid: None,
            password: password.into(),
        };
        s.auth(&c, &creds).await;
        let mut env = Envelope {
            sender: Some(Address::new("a", "b.example")),
            params: MailParams::default(),
            recipients: Vec::new(),
        };
        s.mail(&c, &env).await;
        for local in ["x", "y"] {
            let r = Recipient {
                address: Address::new(local, "c.example"),
                params: RcptParams::default(),
            };
            if !refusal(&s.rcpt(&c, &env, &r).await) {
                env.recipients.push(r);
            }
        }
        // RCPT TO:<postmaster> (RFC 5321 4.5.1): the server takes it without the chain.
        env.recipients.push(Recipient {
            address: Address::new("postmaster", "c.example"),
            params: RcptParams::default(),
        });
        s.data(&c, &env, MessageView { content: message }).await;
        s.end_transaction();
    });
    drop(rt);
    drop(s);
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

#[test]
fn a_recorded_session_is_a_replayable_capture_without_the_password() {
    // The hook times come from the plugins' clock, which another test sets back to 2026-12-07.
    let _clock = crate::plugin_test::clock::GLOBAL_CLOCK
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(1.0, RecordOnly::All, dir.path(), 1 << 20);
    record_one(&rec, b"Subject: hi\r\n\r\nbody\r\n", "hunter2-secret");
    let files = captures(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains("hunter2-secret"), "{text}");
    let c = crate::replay::load(&files[0]).unwrap();
    assert_eq!(c.plugins, ["deny-x"]);
    assert!(
        c.partial.iter().any(|p| p.contains("password")),
        "{:?}",
        c.partial
    );
    let tx = &c.script.transactions[0];
    assert_eq!(tx.mail_from, "a@b.example");
    assert_eq!(tx.rcpt_to.len(), 3);
    assert!(tx.rcpt_to[2].server_accepted() && !tx.rcpt_to[1].server_accepted());
    assert_eq!((tx.expect.rcpt.len(), tx.at.rcpt.len()), (3, 3));
    // Each hook's time, in order.
    let conn = &c.script.connection;
    let times = [conn.at.connect, conn.at.helo, conn.at.auth, tx.at.mail];
    let mut times: Vec<u64> = times.into_iter().map(Option::unwrap).collect();
    times.extend(&tx.at.rcpt[..2]);
    times.push(tx.at.data.unwrap());
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // TLS came by STARTTLS: the replayed connect hook gets none, EHLO gets it.
    assert!(conn.starttls && conn.info().tls.is_none() && conn.tls().is_some());
    let pre = conn
        .pre_tls_helo
        .as_ref()
        .expect("the EHLO before STARTTLS");
    assert_eq!(pre.helo, "client.example");
    assert!(pre.at.is_some_and(|t| Some(t) <= conn.at.helo) && pre.expect.is_some());
    assert_eq!(tx.expect.rcpt[0].verdict.as_deref(), Some("reject"));
    assert_eq!(tx.expect.rcpt[0].code, Some(550));
    assert_eq!(tx.expect.rcpt[0].enhanced.as_deref(), Some("5.7.1"));
    assert_eq!(tx.expect.rcpt[1].verdict.as_deref(), Some("continue"));
    let data = tx.expect.data.as_ref().unwrap();
    assert_eq!(
        data.modifications.as_deref(),
        Some(&["add-header X-Seen: yes".to_string()][..])
    );
    assert_eq!(tx.data.as_deref(), Some("Subject: hi\r\n\r\nbody\r\n"));
    assert_eq!(c.script.connection.helo, "client.example");
}

#[test]
fn a_long_message_is_cut_and_the_capture_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(1.0, RecordOnly::All, dir.path(), 10);
    record_one(&rec, b"Subject: a long one\r\n\r\nbody\r\n", "");
    let c = crate::replay::load(&captures(dir.path())[0]).unwrap();
    assert_eq!(c.script.transactions[0].data.as_deref(), Some("Subject: a"));
    assert!(
        c.partial.iter().any(|p| p.contains("cut at 10")),
        "{:?}",
        c.partial
    );
}

#[test]
fn only_refused_keeps_sessions_with_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(1.0, RecordOnly::Refused, dir.path(), 1 << 20);
    record_one(&rec, b"x\r\n", "");
    assert_eq!(captures(dir.path()).len(), 1);
    // A session without a refusal is not kept.
    let policy = RecordPolicy {
        inner: Arc::new(DenyX),
        recorder: Arc::clone(&rec),
    };
    drop(policy.session(&conn()));
    assert_eq!(captures(dir.path()).len(), 1);
}

#[test]
fn the_sweep_removes_only_old_captures() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1-1.json"), "{}").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "keep").unwrap();
    assert_eq!(sweep(dir.path(), Duration::from_secs(3600)), 0);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(sweep(dir.path(), Duration::from_millis(1)), 1);
    assert_eq!(captures(dir.path()).len(), 1);
}

#[test]
fn the_record_table_has_its_defaults_and_a_rate_is_a_share() {
    use crate::config::{Config, DEV_CONFIG};
    let c = Config::parse(&format!("{DEV_CONFIG}\n[record]\nonly = \"refused\"\n")).unwrap();
    let r = c.record.unwrap();
    assert_eq!(
        (r.rate, r.only, r.max_bytes),
        (1.0, RecordOnly::Refused, 1 << 20)
    );
    assert_eq!(r.retention, Duration::from_secs(7 * 86400));
    assert!(Config::parse(DEV_CONFIG).unwrap().record.is_none());
    let err = Config::parse(&format!("{DEV_CONFIG}\n[record]\nrate = 2.0\n"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("record.rate"), "{err}");
    let err = Config::parse(&format!("{DEV_CONFIG}\n[record]\nonly = \"some\"\n"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("record.only"), "{err}");
}

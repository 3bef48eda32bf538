//! A plugin tested natively, the way the README tells authors to.

use corvid_plugin_sdk::testing::*;
use corvid_plugin_sdk::*;

/// Refuses senders from configured domains, counts rcpts per client in kv, stamps messages.
struct Example {
    blocked: Vec<String>,
    max_rcpts: i64,
}

impl Plugin for Example {
    const NAME: &'static str = "example";
    const VERSION: &'static str = "0.1.0";
    const STAGES: &'static [Stage] = &[Stage::Mail, Stage::Rcpt, Stage::Data];

    fn new(config: &Config) -> Result<Self, String> {
        Ok(Example {
            blocked: config.get_list("blocked_domains")?,
            max_rcpts: config.parse("max_rcpts")?.unwrap_or(100),
        })
    }

    fn on_mail(&mut self, _conn: &ConnectionInfo, env: &Envelope) -> Decision {
        match &env.sender {
            Some(s)
                if self
                    .blocked
                    .iter()
                    .any(|d| s.domain.eq_ignore_ascii_case(d)) =>
            {
                reject(550, "5.7.1", "Sender domain refused")
            }
            _ => proceed(),
        }
    }

    fn on_rcpt(&mut self, conn: &ConnectionInfo, _env: &Envelope, _rcpt: &Recipient) -> Decision {
        match host::kv_increment(&format!("rcpts:{}", conn.client_ip), 1, Some(3600)) {
            Ok(n) if n > self.max_rcpts => tempfail(451, "4.7.1", "Too many recipients, slow down"),
            Ok(_) => proceed(),
            Err(_) => proceed(),
        }
    }

    fn on_data(
        &mut self,
        _conn: &ConnectionInfo,
        _env: &Envelope,
        msg: &dyn MailMessage,
    ) -> Decision {
        let subject = msg.header("subject").join(" ");
        proceed().add_header("X-Example-Subject-Length", &subject.len().to_string())
    }
}

fn plugin(pairs: &[(&str, &str)]) -> Example {
    reset();
    Example::new(&Config::from_pairs(pairs.iter().copied())).expect("config accepted")
}

#[test]
fn blocked_sender_domains_are_rejected() {
    let mut p = plugin(&[("blocked_domains", r#"["spam.example", "junk.example"]"#)]);
    let d = p.on_mail(&conn("192.0.2.1"), &envelope("a@Spam.Example", &[]));
    assert_eq!(code_of(&d), Some(550));
    assert!(p
        .on_mail(&conn("192.0.2.1"), &envelope("a@ok.example", &[]))
        .is_continue());
    assert!(
        p.on_mail(&conn("192.0.2.1"), &envelope("", &[]))
            .is_continue(),
        "null sender"
    );
}

#[test]
fn bad_config_is_refused() {
    assert!(Example::new(&Config::from_pairs([("max_rcpts", "lots")])).is_err());
}

#[test]
fn recipients_are_counted_in_the_fake_kv() {
    let mut p = plugin(&[("max_rcpts", "2")]);
    let (c, e, r) = (
        conn("192.0.2.9"),
        envelope("a@b.example", &[]),
        rcpt("x@y.example"),
    );
    assert!(p.on_rcpt(&c, &e, &r).is_continue());
    assert!(p.on_rcpt(&c, &e, &r).is_continue());
    assert_eq!(code_of(&p.on_rcpt(&c, &e, &r)), Some(451));
    with_host(|h| {
        assert_eq!(
            h.kv.get("rcpts:192.0.2.9").map(Vec::as_slice),
            Some(&b"3"[..])
        )
    });
}

#[test]
fn data_sees_the_message() {
    let mut p = plugin(&[]);
    let msg = TestMessage::new("Subject: hi there\nFrom: a@b.example\n\nbody\n");
    let d = p.on_data(
        &conn("192.0.2.1"),
        &envelope("a@b.example", &["c@d.example"]),
        &msg,
    );
    assert_eq!(
        d.modifications,
        vec![Modification::AddHeader(HeaderField {
            name: "X-Example-Subject-Length".into(),
            value: "8".into()
        })]
    );
    assert_eq!(msg.read_body(0, 100), b"body\r\n");
    assert_eq!(msg.mime().subject.as_deref(), Some("hi there"));
}

#[test]
fn describe_and_configure_come_from_the_trait() {
    let info = corvid_plugin_sdk::runtime::describe::<Example>();
    assert_eq!(info.name, "example");
    assert_eq!(info.stages, vec![Stage::Mail, Stage::Rcpt, Stage::Data]);
    let bad = ConfigTable {
        entries: vec![("max_rcpts".into(), "x".into())],
        json: "{}".into(),
    };
    assert!(corvid_plugin_sdk::runtime::configure::<Example>(bad).is_err());
}

/// Counts the hooks its value has seen.
struct Counter(u32);

impl Plugin for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "0.1.0";
    const STAGES: &'static [Stage] = &[Stage::Mail];

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Counter(0))
    }
}

/// The exported hooks go through `runtime::with`: the value lives for one transaction (one
/// host lease), whatever the instance mode.
#[test]
fn the_plugin_value_is_fresh_for_every_transaction() {
    reset();
    let hook = || {
        corvid_plugin_sdk::runtime::with::<Counter, _>(|c| {
            c.0 += 1;
            c.0
        })
    };
    assert_eq!((hook(), hook()), (1, 2), "one transaction");
    new_transaction();
    assert_eq!(hook(), 1, "the next transaction starts afresh");
}

/// A plugin that opts in with `reset`: `new` runs once, the value is kept across
/// transactions, and `reset` clears the per-transaction field before each new one.
struct Reused {
    built: u32,
    seen_in_transaction: u32,
}

thread_local! {
    static NEW_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl Plugin for Reused {
    const NAME: &'static str = "reused";
    const STAGES: &'static [Stage] = &[Stage::Mail];

    fn new(_config: &Config) -> Result<Self, String> {
        NEW_CALLS.with(|n| n.set(n.get() + 1));
        Ok(Reused {
            built: NEW_CALLS.with(|n| n.get()),
            seen_in_transaction: 0,
        })
    }

    fn reset(&mut self) -> bool {
        self.seen_in_transaction = 0;
        true
    }
}

#[test]
fn a_plugin_whose_reset_returns_true_is_built_once_and_reset_per_transaction() {
    reset();
    NEW_CALLS.with(|n| n.set(0));
    let hook = || {
        corvid_plugin_sdk::runtime::with::<Reused, _>(|p| {
            p.seen_in_transaction += 1;
            (p.built, p.seen_in_transaction)
        })
    };
    assert_eq!((hook(), hook()), ((1, 1), (1, 2)), "one transaction");
    new_transaction();
    assert_eq!(
        hook(),
        (1, 1),
        "same value, per-transaction field cleared by reset"
    );
    new_transaction();
    assert_eq!(hook(), (1, 1));
    assert_eq!(NEW_CALLS.with(|n| n.get()), 1, "new ran once");
}

#[test]
fn added_recipients_hand_their_dsn_parameters_to_the_host() {
    reset();
    let never = Notify {
        never: true,
        success: false,
        failure: false,
        delay: false,
    };
    let params = RcptParams {
        notify: Some(never),
        orcpt: Some("rfc822;orig+40example.org".into()),
    };
    let d = proceed()
        .add_recipient_with(addr("copy@example.org"), params.clone())
        .add_recipient(addr("plain@example.org"));
    assert_eq!(
        d.modifications,
        vec![
            Modification::AddRecipient(addr("copy@example.org")),
            Modification::AddRecipient(addr("plain@example.org")),
        ]
    );
    let sent = with_host(|h| h.added_params.clone());
    assert_eq!(sent, vec![(addr("copy@example.org"), params)]);
}

#[test]
fn delivery_tls_is_faked_natively() {
    use corvid_plugin_sdk::delivery_tls::{self, TlsPolicy, TlsResult};
    reset();
    assert_eq!(delivery_tls::attempt_tls(), None);
    let tls = TlsResult {
        version: Some("TLSv1_3".into()),
        cipher: None,
        verified: true,
        policy: "verify".into(),
        source: Some("config".into()),
        policy_domain: None,
        failure: None,
    };
    with_host(|h| h.attempt_tls = Some(tls.clone()));
    assert_eq!(delivery_tls::attempt_tls(), Some(tls));
    delivery_tls::set_route_tls(TlsPolicy::Verify);
    assert_eq!(with_host(|h| h.route_tls), Some(TlsPolicy::Verify));
}

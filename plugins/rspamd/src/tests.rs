use super::reply::{clean, decide, parse, Scan};
use super::*;
use corvid_plugin_sdk::testing::{self, reply_of, TestMessage};

fn scan(json: &str) -> Scan {
    parse(json.as_bytes()).expect("parses")
}

/// The decision for `json` on a message with one forged `X-Spam-Status` and a subject.
fn decided(json: &str, spam_headers: bool) -> Decision {
    let msg = TestMessage::new("Subject: hi\nX-Spam-Status: Yes, forged\n\nbody\n");
    let count = |n: &str| msg.header(n).len();
    decide(&scan(json), spam_headers, &count, Some("hi"))
}

fn added(d: &Decision) -> Vec<(String, String)> {
    d.modifications
        .iter()
        .filter_map(|m| match m {
            Modification::AddHeader(f) => Some((f.name.clone(), f.value.clone())),
            _ => None,
        })
        .collect()
}

fn removed(d: &Decision) -> Vec<(String, u32)> {
    d.modifications
        .iter()
        .filter_map(|m| match m {
            Modification::RemoveHeader(r) => Some((r.name.clone(), r.index)),
            _ => None,
        })
        .collect()
}

#[test]
fn refusing_actions_map_to_replies() {
    let r = decided(
        r#"{"action":"reject","score":20,"required_score":15}"#,
        true,
    );
    assert_eq!(
        reply_of(&r),
        (550, "5.7.1".into(), "Spam message rejected".into())
    );
    let r = decided(
        r#"{"action":"reject","score":20,"messages":{"smtp_message":"Gtube\r\nmatch"}}"#,
        true,
    );
    assert_eq!(reply_of(&r).2, "Gtube match", "Rspamd's text, one line");
    let s = decided(r#"{"action":"soft reject","score":1}"#, true);
    assert_eq!(
        reply_of(&s),
        (451, "4.7.1".into(), "Try again later".into())
    );
    let g = decided(r#"{"action":"greylist","score":5}"#, true);
    assert_eq!((reply_of(&g).0, reply_of(&g).1), (451, "4.7.1".into()));
}

#[test]
fn a_clean_message_passes_with_its_score() {
    let d = decided(
        r#"{"action":"no action","score":1.5,"required_score":15}"#,
        true,
    );
    assert_eq!(d.verdict, Verdict::Continue);
    assert_eq!(
        removed(&d),
        vec![("X-Spam-Status".to_string(), 0)],
        "the forged one"
    );
    assert_eq!(
        added(&d),
        vec![
            ("X-Spam-Score".to_string(), "1.50".to_string()),
            (
                "X-Spam-Status".to_string(),
                "No, score=1.50 required=15.00".to_string()
            ),
            ("X-Spam-Action".to_string(), "no action".to_string()),
        ]
    );
    let quiet = decided(r#"{"action":"no action","score":1.5}"#, false);
    assert!(quiet.modifications.is_empty(), "spam_headers = false");
}

#[test]
fn add_header_flags_and_adds_rspamds_milter_headers() {
    let d = decided(
        r#"{"action":"add header","score":7,"required_score":15,
            "milter":{"add_headers":{"X-Spamd-Bar":"+++++++",
                "X-Spam":[{"value":"Yes","order":1},{"value":"first","order":0}],
                "Bad:Name":"x","X-Folded":"a\r\n\tb"},
              "remove_headers":{"X-Spam":0}}}"#,
        true,
    );
    assert_eq!(d.verdict, Verdict::Continue);
    let a = added(&d);
    assert_eq!(a[0], ("X-Spam-Flag".into(), "YES".into()));
    assert!(a.contains(&(
        "X-Spam-Status".into(),
        "Yes, score=7.00 required=15.00".into()
    )));
    assert!(a.contains(&("X-Spamd-Bar".into(), "+++++++".into())));
    assert!(
        a.contains(&("X-Folded".into(), "a b".into())),
        "unfolded: {a:?}"
    );
    let order: Vec<_> = a
        .iter()
        .filter(|(n, _)| n == "X-Spam")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(order, ["first", "Yes"], "by order");
    assert!(
        !a.iter().any(|(n, _)| n == "Bad:Name"),
        "invalid field names dropped"
    );
}

#[test]
fn rewrite_subject_changes_the_subject() {
    let d = decided(
        r#"{"action":"rewrite subject","score":9,"subject":"*** SPAM *** hi"}"#,
        true,
    );
    assert!(d
        .modifications
        .contains(&Modification::ChangeHeader(HeaderChange {
            name: "Subject".into(),
            index: 0,
            value: "*** SPAM *** hi".into(),
        })));
    let d = decided(r#"{"action":"rewrite subject","score":9}"#, true);
    assert!(d
        .modifications
        .iter()
        .any(|m| matches!(m, Modification::ChangeHeader(c) if c.value == "*** SPAM *** hi")));
}

#[test]
fn bad_replies_and_values_are_refused_or_cleaned() {
    assert!(parse(b"<html>").is_err());
    assert!(parse(br#"{"score":1}"#).is_err(), "no action");
    assert_eq!(clean("a\u{7}b\r\n c"), "a b c");
    assert_eq!(clean(&"é".repeat(600)).len(), 900);
}

#[test]
fn config_is_checked() {
    let p: Rspamd = testing::configured(&[("url", "http://127.0.0.1:11333/"), ("fail", "closed")]);
    assert_eq!(p.endpoint, "http://127.0.0.1:11333/checkv2");
    assert!(!p.fail_open && p.spam_headers && p.max_size == DEFAULT_MAX_SIZE);
    assert!(testing::refused::<Rspamd>(&[("fail", "maybe")]).contains("fail"));
    assert!(testing::refused::<Rspamd>(&[("url", "127.0.0.1:11333")]).contains("url"));
    assert!(testing::refused::<Rspamd>(&[("urll", "x")]).contains("unknown"));
    assert!(testing::refused::<Rspamd>(&[("max_size", "big")]).contains("max_size"));
}

#[test]
fn failures_follow_the_fail_policy() {
    let open: Rspamd = testing::configured(&[]);
    assert_eq!(open.failed("down").verdict, Verdict::Continue);
    let closed: Rspamd = testing::configured(&[("fail", "closed")]);
    assert_eq!(reply_of(&closed.failed("down")).0, 451);
    // Natively there is no wasi:http: the scan fails, and the policy applies.
    let env = testing::envelope("a@sender.example", &["b@example.org"]);
    let msg = TestMessage::new("Subject: x\n\nbody\n");
    let mut closed = closed;
    let d = closed.on_data(&testing::conn("192.0.2.1"), &env, &msg);
    assert_eq!(
        reply_of(&d),
        (
            451,
            "4.3.0".into(),
            "Spam scanner unavailable, try again later".into()
        )
    );
}

#[test]
fn the_transaction_goes_in_request_headers() {
    let mut c = testing::conn("192.0.2.1");
    c.auth_user = Some("alice".into());
    c.helo = Some("bad\nhelo".into());
    let env = testing::envelope("a@sender.example", &["b@example.org", "c@example.org"]);
    let h = request_headers(&c, &env);
    let get = |k: &str| {
        h.iter()
            .filter(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("IP"), ["192.0.2.1"]);
    assert_eq!(get("From"), ["a@sender.example"]);
    assert_eq!(get("Rcpt"), ["b@example.org", "c@example.org"]);
    assert_eq!(get("User"), ["alice"]);
    assert_eq!(get("Queue-Id"), ["corvid-1-1"]);
    assert!(get("Helo").is_empty(), "control characters are not sent");
    assert!(
        get("From").len() == 1
            && request_headers(&c, &testing::envelope("", &[]))
                .iter()
                .all(|(n, _)| *n != "From")
    );
}

#[test]
fn the_raw_message_is_rebuilt() {
    let msg = TestMessage::new("Subject: x\nFrom: a@b\n\nline 1\nline 2\n");
    assert_eq!(
        raw_message(&msg),
        b"Subject: x\r\nFrom: a@b\r\n\r\nline 1\r\nline 2\r\n".to_vec()
    );
}

#[test]
fn messages_over_max_size_pass_unscanned() {
    // Fail closed, yet a message too large to scan is not sent at all, so it passes.
    let mut p: Rspamd = testing::configured(&[("fail", "closed"), ("max_size", "20")]);
    let env = testing::envelope("a@sender.example", &["b@example.org"]);
    let big = TestMessage::new("Subject: big\n\nmore than twenty octets of body\n");
    let d = p.on_data(&testing::conn("192.0.2.1"), &env, &big);
    assert_eq!(d, proceed());
    let small = TestMessage::new("S: x\n\n");
    let d = p.on_data(&testing::conn("192.0.2.1"), &env, &small);
    assert_eq!(reply_of(&d).0, 451, "a small one is sent (and fails here)");
}

#[test]
fn a_milter_field_replaces_ours_of_that_name() {
    let d = decided(
        r#"{"action":"no action","score":2,"required_score":15,
            "milter":{"add_headers":{"X-Spam-Status":"No, score=2.00 (Rspamd's)"}}}"#,
        true,
    );
    let status: Vec<_> = added(&d)
        .into_iter()
        .filter(|(n, _)| n == "X-Spam-Status")
        .collect();
    assert_eq!(
        status,
        [(
            "X-Spam-Status".to_string(),
            "No, score=2.00 (Rspamd's)".to_string()
        )]
    );
    assert!(
        added(&d).iter().any(|(n, _)| n == "X-Spam-Score"),
        "the others stay"
    );
}

//! The script parser: every section the documentation shows, and unknown keys refused.

use super::*;
use std::time::Duration;

fn parse(text: &str) -> Result<Script, toml::de::Error> {
    toml::from_str(text)
}

const FULL: &str = r#"
[plugin]
name = "greylist"
config = { delay_seconds = 300 }
capabilities = ["log", "config", "kv", "clock"]
http = ["http://127.0.0.1:11333/"]

[clock]
start = "2026-12-07T13:00:00Z"

[connection]
client = "192.0.2.10:40000"
tls = { version = "TLSv1.2", sni = "mx.example.org" }
auth_user = "alice"

[auth]
user = "alice"
password = "secret"
expect = { verdict = "accept" }

[kv]
"plain" = "1"
"grey/x" = { value = "1796648400000", ttl = "1d" }

[[http]]
url = "http://127.0.0.1:11333/checkv2"
method = "POST"
body = '{"action":"no action"}'
headers = { content-type = "application/json" }

[[transaction]]
mail_from = "a@sender.example"
mail_params = { size = 10, body = "8bitmime", ret = "hdrs", envid = "e1", auth = "<>", requiretls = true }
rcpt_to = ["b@example.org"]
expect.rcpt = [{ verdict = "tempfail", code = 451, enhanced = "4.7.1" }]

[[transaction]]
advance = "5m 1s"
mail_from = "a@sender.example"
rcpt_to = [{ address = "b@example.org", notify = ["failure"], orcpt = "rfc822;b@example.org" }]

[[deferred]]
advance = "1h"
recipient = "b@example.org"
reply = "451 4.3.0 later"
expect = "retry-after 600s"

[expect_kv]
"plain" = ""
"grey/x" = { value = "1796648400000", ttl = "23h" }
"#;

#[test]
fn a_full_script_parses() {
    let s = parse(FULL).expect("parses");
    assert_eq!(
        s.plugin.http.as_deref(),
        Some(&["http://127.0.0.1:11333/".to_string()][..])
    );
    let start = s
        .clock
        .as_ref()
        .expect("[clock]")
        .start
        .since_epoch()
        .unwrap();
    assert_eq!(start, Duration::from_secs(1_796_648_400));
    let tls = s.connection.info().tls.expect("tls");
    assert_eq!(
        (tls.version.as_str(), tls.sni.as_deref()),
        ("TLSv1.2", Some("mx.example.org"))
    );
    assert_eq!(tls.cipher, "TLS_AES_256_GCM_SHA384", "the default cipher");
    assert_eq!(
        s.auth.as_ref().map(|a| a.credentials().password),
        Some("secret".into())
    );
    assert_eq!(s.kv["grey/x"].ttl(), Some(Duration::from_secs(86_400)));
    assert_eq!(s.kv["plain"].ttl(), None);
    assert_eq!(s.http[0].status, 200, "the default status");
    assert_eq!(s.transactions[0].advance, None);
    assert_eq!(s.transactions[1].advance, Some(Duration::from_secs(301)));
    assert_eq!(s.deferred[0].advance, Some(Duration::from_secs(3600)));
    let params = s.transactions[0].mail_params.params().unwrap();
    assert_eq!((params.size, params.requiretls), (Some(10), true));
    let rcpt = s.transactions[1].rcpt_to[0].recipient().unwrap();
    assert!(rcpt.params.notify.is_some_and(|n| n.failure && !n.delay));
    assert_eq!(s.expect_kv["plain"].expected(), None);
    assert_eq!(
        s.expect_kv["grey/x"].ttl(),
        Some(Duration::from_secs(82_800))
    );
}

#[test]
fn json_scripts_take_the_same_keys() {
    let s: Script = serde_json::from_str(
        r#"{"clock": {"start": "2026-12-07T13:00:00Z"},
            "kv": {"k": {"value": "v", "ttl": "10m"}},
            "http": [{"url": "https://api.example/v1", "status": 503}],
            "transaction": [{"advance": "10m", "mail_from": "", "rcpt_to": ["b@example.org"]}]}"#,
    )
    .expect("parses");
    assert!(s.clock.is_some());
    assert_eq!(s.transactions[0].advance, Some(Duration::from_secs(600)));
    assert_eq!(s.http[0].status, 503);
}

#[test]
fn unknown_or_malformed_keys_are_refused() {
    for bad in [
        "[clock]\nstart = \"2026-12-07T13:00:00Z\"\nspeed = 2\n",
        "[[transaction]]\nadvanec = \"1m\"\nmail_from = \"\"\nrcpt_to = []\n",
        "[[transaction]]\nadvance = \"soon\"\nmail_from = \"\"\nrcpt_to = []\n",
        "[[http]]\nurl = \"http://x/\"\nstatus = \"ok\"\n",
        "[[http]]\nurl = \"http://x/\"\nreply = \"x\"\n",
        "[[deferred]]\nrecipient = \"b@example.org\"\nadvance = 5\n",
        "[kv]\nk = { value = \"1\", expires = \"1m\" }\n",
        "[connection]\ntls = { version = \"TLSv1.3\", ciphers = \"x\" }\n",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad}");
    }
}

#[test]
fn the_old_forms_still_parse() {
    let s = parse("[kv]\n\"k\" = \"v\"\n[expect_kv]\n\"k\" = \"w\"\n").expect("parses");
    assert_eq!((s.kv["k"].value(), s.kv["k"].ttl()), ("v", None));
    assert_eq!(s.expect_kv["k"].expected(), Some("w"));
    assert!(s.clock.is_none() && s.http.is_empty() && s.plugin.http.is_none());
}

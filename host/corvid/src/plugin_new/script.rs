//! The `corvid plugin test` script of every template (plugin-test.toml): the same session for
//! every language, with the expectations of the chosen stages.

use super::Spec;
use std::fmt::Write as _;

pub(super) fn script(spec: &Spec) -> String {
    let (name, header) = (spec.name, spec.header.as_str());
    let has = |s: &str| spec.has(s);
    let mut s = format!(
        "# `corvid plugin test {name}.wasm --script plugin-test.toml`: the component in the real\n\
         # plugin host; a decision other than the expected one is a failure (exit status 1).\n\
         [plugin]\nname = \"{name}\"\n"
    );
    if has("mail") || has("rcpt") {
        s.push_str("config = { blocked_domains = [\"spam.example\"] }\n");
    }
    s.push_str("\n[connection]\nclient = \"192.0.2.10:40000\"\nhelo = \"client.example\"\n");
    for st in ["connect", "helo"] {
        if has(st) {
            let _ = writeln!(s, "expect.{st} = {{ verdict = \"continue\" }}");
        }
    }
    if has("auth") {
        s.push_str("\n[auth]\nuser = \"alice\"\npassword = \"secret\"\nexpect = { verdict = \"continue\" }\n");
    }
    s.push_str("\n[[transaction]]\nmail_from = \"friend@example.net\"\n");
    if has("rcpt") {
        s.push_str("rcpt_to = [\"user@example.org\", \"someone@spam.example\"]\n");
    } else {
        s.push_str("rcpt_to = [\"user@example.org\"]\n");
    }
    s.push_str("data = \"\"\"\nFrom: friend@example.net\nTo: user@example.org\nSubject: hello\n\nHello!\n\"\"\"\n");
    if has("mail") {
        s.push_str("expect.mail = { verdict = \"continue\" }\n");
    }
    if has("rcpt") {
        s.push_str("expect.rcpt = [\n  { verdict = \"continue\" },\n  { verdict = \"reject\", code = 550, enhanced = \"5.7.1\", text = \"Recipient domain refused\" },\n]\n");
    }
    if has("data") {
        let _ = writeln!(s, "expect.data = {{ verdict = \"continue\", modifications = [\"add-header {header}: checked\"] }}");
    }
    if has("mail") {
        s.push_str("\n[[transaction]]\nmail_from = \"someone@Spam.Example\"\nrcpt_to = [\"user@example.org\"]\nexpect.mail = { verdict = \"reject\", code = 550, enhanced = \"5.7.1\", text = \"Sender domain refused\" }\n");
    }
    if has("route") {
        s.push_str("\n[[route]]\nrecipient = \"user@example.org\"\nexpect = \"continue\"\n");
    }
    for st in ["deferred", "bounced"] {
        if has(st) {
            let _ = write!(s, "\n[[{st}]]\nrecipient = \"user@example.org\"\nreply = \"451 4.3.0 try later\"\nexpect = \"continue\"\n");
        }
    }
    if has("delivered") {
        s.push_str("\n[[delivered]]\nrecipient = \"user@example.org\"\n");
    }
    s
}

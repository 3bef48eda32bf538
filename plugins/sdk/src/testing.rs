//! Native test helpers: build connection facts, envelopes and messages in plain Rust, fake the
//! host's imports, and call your [`crate::Plugin`] hooks with `cargo test`.
//!
//! ```ignore
//! use corvid_plugin_sdk::testing::*;
//! let mut p = MyPlugin::new(&Config::default()).unwrap();
//! let d = p.on_mail(&conn("192.0.2.1"), &envelope("a@spam.example", &[]));
//! assert_eq!(code_of(&d), Some(550));
//! ```

use crate::{Address, ConfigTable, ConnectionInfo, Decision, Envelope, Header, LogLevel};
use crate::{BodyType, MailParams, MimePart, MimeSummary, RcptParams, Recipient, Verdict};
use std::cell::RefCell;
use std::collections::HashMap;

/// The fake host behind [`crate::host`] in native builds (one per test thread).
#[derive(Debug, Default)]
pub struct FakeHost {
    /// What `config_table` returns.
    pub config: ConfigTable,
    /// The kv store (no TTLs).
    pub kv: HashMap<String, Vec<u8>>,
    /// DNS answers by (`"A"`/`"AAAA"`/`"MX"`/`"TXT"`/`"PTR"`, lower-case name); MX as `"10 mx"`.
    pub dns: HashMap<(String, String), Vec<String>>,
    /// Lines logged.
    pub logs: Vec<(LogLevel, String)>,
    /// What `now_ms` returns.
    pub now_ms: u64,
    /// Counter totals.
    pub counters: HashMap<String, u64>,
    /// Histogram observations.
    pub histograms: HashMap<String, Vec<f64>>,
    /// What `lease` returns; [`new_transaction`] changes it.
    pub lease: u64,
    /// What `quarantined` returns.
    pub quarantined: Option<String>,
    /// What [`crate::Decision::add_recipient_with`] told the host: the DSN parameters of each
    /// added recipient (the last call for an address replaces earlier ones).
    pub added_params: Vec<(Address, RcptParams)>,
    /// What [`crate::delivery_tls::attempt_tls`] returns.
    pub attempt_tls: Option<crate::delivery_tls::TlsResult>,
    /// What [`crate::delivery_tls::set_route_tls`] asked last.
    pub route_tls: Option<crate::delivery_tls::TlsPolicy>,
}

impl Default for ConfigTable {
    fn default() -> Self {
        ConfigTable {
            entries: Vec::new(),
            json: "{}".to_string(),
        }
    }
}

thread_local! {
    static HOST: RefCell<FakeHost> = RefCell::new(FakeHost::default());
}

/// Runs `f` on this thread's fake host (to set DNS answers or inspect kv and logs).
pub fn with_host<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// Starts a new unit of work as the host does between transactions: the next hook called
/// through the exported world (not a direct method call) gets a fresh plugin value.
pub fn new_transaction() {
    with_host(|h| h.lease += 1);
}

/// Resets this thread's fake host and plugin state.
pub fn reset() {
    with_host(|h| *h = FakeHost::default());
    crate::runtime::reset();
}

/// Adds a fake DNS answer.
pub fn add_dns(kind: &str, name: &str, answers: &[&str]) {
    with_host(|h| {
        h.dns.insert(
            (kind.to_string(), name.to_ascii_lowercase()),
            answers.iter().map(|s| s.to_string()).collect(),
        )
    });
}

/// Connection facts for a plain-text client at `ip` on the `smtp` listener.
pub fn conn(ip: &str) -> ConnectionInfo {
    ConnectionInfo {
        session_id: 1,
        transaction: 1,
        listener: "smtp".to_string(),
        client_ip: ip.to_string(),
        client_port: 40000,
        local_ip: "127.0.0.1".to_string(),
        local_port: 25,
        client_rdns: None,
        helo: Some("client.example".to_string()),
        esmtp: true,
        tls: None,
        auth_user: None,
    }
}

/// An address from `local@domain` (panics without `@`: test input only).
pub fn addr(s: &str) -> Address {
    match Address::parse(s) {
        Some(a) => a,
        None => panic!("not an address: {s}"),
    }
}

/// A recipient without parameters.
pub fn rcpt(s: &str) -> Recipient {
    Recipient {
        address: addr(s),
        params: RcptParams {
            notify: None,
            orcpt: None,
        },
    }
}

/// An envelope; `sender` empty is the null sender.
pub fn envelope(sender: &str, recipients: &[&str]) -> Envelope {
    Envelope {
        sender: (!sender.is_empty()).then(|| addr(sender)),
        params: MailParams {
            size: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
            auth: None,
        },
        recipients: recipients.iter().map(|r| rcpt(r)).collect(),
    }
}

/// Resets the fake host, then builds `P` from `pairs` (in the host's form, see
/// [`crate::Config::from_pairs`]); panics with the reason when the configuration is refused.
pub fn configured<P: crate::Plugin>(pairs: &[(&str, &str)]) -> P {
    reset();
    match P::new(&crate::Config::from_pairs(pairs.iter().copied())) {
        Ok(p) => p,
        Err(e) => panic!("{}: configuration refused: {e}", P::NAME),
    }
}

/// Why `P` refuses the configuration `pairs`; panics when it is accepted.
pub fn refused<P: crate::Plugin>(pairs: &[(&str, &str)]) -> String {
    match P::new(&crate::Config::from_pairs(pairs.iter().copied())) {
        Ok(_) => panic!("{}: configuration accepted: {pairs:?}", P::NAME),
        Err(e) => e,
    }
}

/// The reply of a refusing decision as `(code, enhanced, text)`; panics on any other verdict.
pub fn reply_of(d: &Decision) -> (u16, String, String) {
    match &d.verdict {
        Verdict::Reject(r) | Verdict::Tempfail(r) | Verdict::Disconnect(r) => {
            (r.code, r.enhanced.clone(), r.text.clone())
        }
        other => panic!("not a refusal: {other:?}"),
    }
}

/// The fake kv store's value at `key`, as text.
pub fn kv_text(key: &str) -> Option<String> {
    with_host(|h| {
        h.kv.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// The reply code of a decision, when its verdict carries a reply.
pub fn code_of(d: &Decision) -> Option<u16> {
    match &d.verdict {
        Verdict::Reject(r) | Verdict::Tempfail(r) | Verdict::Disconnect(r) => Some(r.code),
        _ => None,
    }
}

/// A message for `on_data` tests, parsed just enough (headers, body; no MIME decoding).
#[derive(Clone, Debug)]
pub struct TestMessage {
    raw: Vec<u8>,
    body_start: usize,
}

impl TestMessage {
    /// From raw RFC 5322 text (`\n` line ends are turned into CRLF).
    pub fn new(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes();
        let body_start = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .unwrap_or(raw.len());
        TestMessage { raw, body_start }
    }
}

impl crate::MailMessage for TestMessage {
    fn headers(&self) -> Vec<Header> {
        let text = String::from_utf8_lossy(&self.raw[..self.body_start]);
        let mut out: Vec<Header> = Vec::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = out.last_mut() {
                    last.value.push(' ');
                    last.value.push_str(line.trim());
                }
            } else if let Some((n, v)) = line.split_once(':') {
                out.push(Header {
                    name: n.to_string(),
                    value: v.trim().to_string(),
                });
            }
        }
        out
    }
    fn header(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    }
    fn size(&self) -> u64 {
        self.raw.len() as u64
    }
    fn body_size(&self) -> u64 {
        (self.raw.len() - self.body_start) as u64
    }
    fn read_body(&self, offset: u64, len: u32) -> Vec<u8> {
        let body = &self.raw[self.body_start..];
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(body.len());
        let end = start.saturating_add(len as usize).min(body.len());
        body[start..end].to_vec()
    }
    fn mime(&self) -> MimeSummary {
        let first = |n: &str| self.header(n).into_iter().next();
        MimeSummary {
            subject: first("subject"),
            from: self.header("from"),
            to: self.header("to"),
            message_id: first("message-id").map(|m| m.trim_matches(['<', '>']).to_string()),
            date: None,
            parts: vec![MimePart {
                content_type: "text/plain".to_string(),
                filename: None,
                size: self.body_size(),
                is_attachment: false,
            }],
            has_html: false,
        }
    }
    fn body_text(&self, max_len: u32) -> Option<String> {
        let text = String::from_utf8_lossy(&self.raw[self.body_start..]).into_owned();
        let mut cut = text.len().min(max_len as usize);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        Some(text[..cut].to_string())
    }
}

//! The script format of `corvid plugin test` (TOML, or JSON for a `.json` file); documented in
//! plugins/sdk/README.md, "Testing a component".

use super::ambient::{HttpStep, KvEntry};
use super::clock::{ClockSection, HookTimes};
use anyhow::{bail, Context, Result};
use corvid_plugin_host::Capability;
use corvid_types::{Address, AuthCredentials, ConnectionInfo, Stage, TlsInfo};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default)]
    pub plugin: PluginSection,
    #[serde(default)]
    pub connection: ConnSection,
    /// The AUTH command, run after EHLO (the `auth` hook).
    pub auth: Option<AuthSection>,
    #[serde(default, rename = "transaction")]
    pub transactions: Vec<Transaction>,
    /// `[dns."name"] A = ["127.0.0.2"]`: answers for the dns import (A, AAAA, MX as
    /// `"10 mx.example"`, TXT, PTR under the address).
    #[serde(default)]
    pub dns: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Initial kv contents of the plugin's namespace: `[kv] "key" = "value"`, or with a TTL
    /// `"key" = { value = "value", ttl = "10m" }`.
    #[serde(default)]
    pub kv: BTreeMap<String, KvEntry>,
    /// `[clock] start = "2026-12-07T13:00:00Z"`: the plugin's clocks (and the kv TTLs) stand
    /// there until a step's `advance`. Without it: the system clock.
    pub clock: Option<ClockSection>,
    /// `[[http]] url = "...", status = 200, body = "..."`: the answers of the `http`
    /// capability; a request to a URL not listed fails (no request reaches the network).
    #[serde(default)]
    pub http: Vec<HttpStep>,
    /// `[[route]]`, `[[deferred]]`, `[[bounced]]`, `[[delivered]]`: delivery hook calls.
    #[serde(default)]
    pub route: Vec<DeliveryStep>,
    #[serde(default)]
    pub deferred: Vec<DeliveryStep>,
    #[serde(default)]
    pub bounced: Vec<DeliveryStep>,
    #[serde(default)]
    pub delivered: Vec<DeliveryStep>,
    /// After every step: `[expect_kv] "key" = "value"` (`""`: the key must be absent), or
    /// `"key" = { value = "value", ttl = "1d" }` to check the time left too.
    #[serde(default)]
    pub expect_kv: BTreeMap<String, KvEntry>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// The plugin's name, which is also its kv namespace. Default: `under-test`.
    pub name: Option<String>,
    #[serde(default)]
    pub config: toml::Table,
    /// Default: log, config, kv, dns, clock, metrics and random (so the script can exercise
    /// the plugin as it runs in a server granting them); `random` gives it the OS's entropy.
    pub capabilities: Option<Vec<Capability>>,
    pub stages: Option<Vec<Stage>>,
    /// The `http` URL prefixes the plugin may request. Default: the `[[http]]` URLs.
    pub http: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnSection {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub rdns: Option<String>,
    pub helo: String,
    pub esmtp: bool,
    pub listener: String,
    pub tls: Option<TlsSection>,
    /// `tls` came with STARTTLS after EHLO: the connect hook gets no TLS facts, EHLO and
    /// the hooks after it get `tls` (without it, `tls` is implicit TLS, there at connect).
    pub starttls: bool,
    pub auth_user: Option<String>,
    /// When connect, EHLO and AUTH ran (`connect`, `helo`, `auth`; set by `[record]`).
    pub at: HookTimes,
    /// With `starttls`: the EHLO before STARTTLS, run without TLS before `helo`.
    pub pre_tls_helo: Option<PreTlsHelo>,
    pub expect: ConnExpect,
}

/// The EHLO a client sent before STARTTLS (RFC 3207 4.2: it says EHLO again after it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreTlsHelo {
    pub helo: String,
    #[serde(default = "yes")]
    pub esmtp: bool,
    /// When it ran (milliseconds since the Unix epoch; set by `[record]`).
    pub at: Option<u64>,
    pub expect: Option<Expect>,
}

fn yes() -> bool {
    true
}

impl Default for ConnSection {
    fn default() -> Self {
        ConnSection {
            client: SocketAddr::from(([192, 0, 2, 10], 40000)),
            local: SocketAddr::from(([127, 0, 0, 1], 25)),
            rdns: None,
            helo: "client.example".into(),
            esmtp: true,
            listener: "smtp".into(),
            tls: None,
            starttls: false,
            auth_user: None,
            at: HookTimes::default(),
            pre_tls_helo: None,
            expect: ConnExpect::default(),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnExpect {
    pub connect: Option<Expect>,
    pub helo: Option<Expect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    #[serde(default = "tls_version")]
    pub version: String,
    #[serde(default = "tls_cipher")]
    pub cipher: String,
    pub sni: Option<String>,
}

fn tls_version() -> String {
    "TLSv1.3".into()
}

fn tls_cipher() -> String {
    "TLS_AES_256_GCM_SHA384".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default = "plain")]
    pub mechanism: String,
    pub user: String,
    #[serde(default)]
    pub password: String,
    pub authzid: Option<String>,
    pub expect: Option<Expect>,
}

fn plain() -> String {
    "PLAIN".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// Moves the scripted clock forward before MAIL (e.g. `"5m"`; needs `[clock]`).
    #[serde(default, with = "humantime_serde")]
    pub advance: Option<Duration>,
    /// The reverse-path; `""` is the null sender.
    pub mail_from: String,
    #[serde(default)]
    pub mail_params: MailParamsSection,
    pub rcpt_to: Vec<RcptSpec>,
    /// The message; line ends become CRLF.
    pub data: Option<String>,
    /// The SPF, DKIM, DMARC and ARC results the plugins read (the `auth-results` import).
    pub auth_results: Option<super::auth::AuthResultsSection>,
    /// When MAIL, each RCPT and DATA ran (`mail`, `rcpt`, `data`; set by `[record]`).
    #[serde(default)]
    pub at: HookTimes,
    #[serde(default)]
    pub expect: TxExpect,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TxExpect {
    pub mail: Option<Expect>,
    /// One per `rcpt_to` entry, in order (fewer: the rest are not checked).
    pub rcpt: Vec<Expect>,
    pub data: Option<Expect>,
}

/// What a hook is expected to decide; only the fields given are checked.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// continue, accept, reject, tempfail, disconnect, discard or quarantine.
    pub verdict: Option<String>,
    /// The reply code (reject, tempfail, disconnect).
    pub code: Option<u16>,
    /// The enhanced status code, e.g. `5.7.1` (RFC 3463).
    pub enhanced: Option<String>,
    /// Text the reply (or the quarantine reason) must contain.
    pub text: Option<String>,
    /// The exact list of modifications, e.g. `["add-header X-Greylist: pass"]`.
    pub modifications: Option<Vec<String>>,
}

/// A delivery hook call; `expect` is the decision as text (`relay smtp.example:587`,
/// `retry-after 600s`, `suppress`, ...).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryStep {
    /// Moves the scripted clock forward before the call (needs `[clock]`).
    #[serde(default, with = "humantime_serde")]
    pub advance: Option<Duration>,
    pub recipient: String,
    #[serde(default)]
    pub sender: String,
    #[serde(default = "queue_id")]
    pub queue_id: String,
    #[serde(default = "one")]
    pub attempt: u32,
    pub remote_host: Option<String>,
    /// The remote reply, e.g. `"451 4.3.0 try later"`.
    pub reply: Option<String>,
    #[serde(default)]
    pub reason: String,
    pub quarantined: Option<String>,
    pub expect: Option<String>,
}

fn queue_id() -> String {
    "TESTQUEUEID".into()
}

fn one() -> u32 {
    1
}

/// Reads a script: JSON when the file name ends in `.json`, TOML otherwise.
pub fn load(path: &Path) -> Result<Script> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(anyhow::Error::from)
    } else {
        toml::from_str(&text).map_err(anyhow::Error::from)
    };
    parsed.with_context(|| format!("in {}", path.display()))
}

pub fn address(text: &str) -> Result<Option<Address>> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.rsplit_once('@') {
        Some((l, d)) if !l.is_empty() && !d.is_empty() => Ok(Some(Address::new(l, d))),
        _ => bail!("`{text}` is not an address"),
    }
}

impl ConnSection {
    /// The TLS facts after EHLO.
    pub fn tls(&self) -> Option<TlsInfo> {
        self.tls.as_ref().map(|t| TlsInfo {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
            sni: t.sni.clone(),
        })
    }

    /// The connection facts at connect (no TLS yet when it comes with STARTTLS).
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            session_id: 1,
            listener: self.listener.clone(),
            local_addr: self.local,
            peer_addr: self.client,
            peer_rdns: self.rdns.clone(),
            helo: None,
            esmtp: false,
            tls: self.tls().filter(|_| !self.starttls),
            auth_user: self.auth_user.clone(),
        }
    }
}

impl AuthSection {
    pub fn credentials(&self) -> AuthCredentials {
        AuthCredentials {
            mechanism: self.mechanism.clone(),
            username: self.user.clone(),
            authzid: self.authzid.clone(),
            password: self.password.clone(),
        }
    }
}

mod envelope;
#[cfg(test)]
mod tests;

pub use envelope::{MailParamsSection, RcptSpec};

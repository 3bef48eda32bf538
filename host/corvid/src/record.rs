//! `[record]`: sampled SMTP sessions written as capture files that `corvid plugin replay`
//! runs again offline (see [`crate::replay`]).
//!
//! The recorder wraps the plugin chain's [`Policy`]: a sampled session's hooks pass through a
//! [`RecordSession`] that notes the facts each hook got (connection, HELO, AUTH mechanism and
//! user, envelope, message) and the chain's decision, and writes them when the session ends,
//! in the format of a `corvid plugin test` script whose expectations are the recorded
//! decisions. An unsampled session gets the chain's own session: with `[record]` off or a
//! session not sampled, nothing is added to any hook call.
//!
//! The SPF, DKIM, DMARC and ARC results the server handed the chain are kept per transaction
//! (`auth_results`), as the plugins read them through the `auth-results` import.
//!
//! Never recorded: the AUTH password (the auth hook's credentials) — a replay gives the auth
//! hook an empty one, and says so.

use crate::plugin_test::auth::AuthResultsSection;
use async_trait::async_trait;
use corvid_plugin_host::record::scope;
use corvid_types::{
    AuthCredentials, AuthResults, ConnectionInfo, Decision, Envelope, MessageView, Policy,
    PolicySession, Recipient, SigningRequest, SpfCheck,
};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

mod capture;
mod facts;
mod files;
mod rcpts;
mod section;

use corvid_plugin_host::clock::now_ms;
pub use facts::expect;
use facts::{connection, mail_params, push, rcpt_spec, refusal};
pub use files::{prepare, retain};
use rcpts::{Fix, Tracker};
pub use section::{RecordOnly, RecordSection};

/// The names of the chain's active plugins, in the order they run.
pub type Chain = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// What every recorded session shares.
pub struct Recorder {
    dir: PathBuf,
    rate: f64,
    only: RecordOnly,
    plugin: Option<String>,
    max_bytes: usize,
    /// The names of the active plugins of the chain now, in order (it changes with a
    /// reload).
    chain: Chain,
    sessions: AtomicU64,
}

impl Recorder {
    pub fn new(section: &RecordSection, data_dir: &Path, chain: Chain) -> Self {
        Recorder {
            dir: section
                .dir
                .clone()
                .unwrap_or_else(|| data_dir.join("captures")),
            rate: section.rate.clamp(0.0, 1.0),
            only: section.only,
            plugin: section.plugin.clone(),
            max_bytes: section.max_bytes,
            chain,
            sessions: AtomicU64::new(0),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Evenly spaced sampling: session n is taken when ⌊(n+1)·rate⌋ passes ⌊n·rate⌋.
    fn sample(&self) -> bool {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }
}

/// The chain's policy, recording the sampled sessions.
pub struct RecordPolicy {
    pub inner: Arc<dyn Policy>,
    pub recorder: Arc<Recorder>,
}

impl Policy for RecordPolicy {
    fn session(&self, conn: &ConnectionInfo) -> Box<dyn PolicySession> {
        let inner = self.inner.session(conn);
        if !self.recorder.sample() {
            return inner;
        }
        // The DNS and kv answers the plugins get in this session are kept from now on.
        corvid_plugin_host::record::start(conn.session_id);
        Box::new(RecordSession {
            inner,
            chain: (self.recorder.chain)(),
            rec: Arc::clone(&self.recorder),
            started: SystemTime::now(),
            mark: SystemTime::now(),
            session_id: conn.session_id,
            conn: Map::new(),
            conn_expect: Map::new(),
            auth: None,
            txs: Vec::new(),
            tx: None,
            partial: Vec::new(),
            refused: false,
            bytes: 0,
            rcpts: None,
            conn_at: Map::new(),
            tls_at_connect: false,
            auth_results: None,
        })
    }
}

/// One sampled session.
pub struct RecordSession {
    inner: Box<dyn PolicySession>,
    /// The chain the session started on.
    chain: Vec<String>,
    rec: Arc<Recorder>,
    started: SystemTime,
    /// The clock of the last recorded step (connect, or the last MAIL).
    mark: SystemTime,
    session_id: u64,
    conn: Map<String, Value>,
    conn_expect: Map<String, Value>,
    auth: Option<Value>,
    txs: Vec<Value>,
    tx: Option<Map<String, Value>>,
    partial: Vec<String>,
    refused: bool,
    /// Message bytes kept so far (against `max_bytes`).
    bytes: usize,
    /// The transaction's envelope as the replay builds it (see [`rcpts`]).
    rcpts: Option<Tracker>,
    /// When connect, EHLO and AUTH ran (the script's `[connection] at`).
    conn_at: Map<String, Value>,
    /// TLS was there at connect (implicit TLS); without it, TLS seen at EHLO came by
    /// STARTTLS and the replay's connect hook gets none.
    tls_at_connect: bool,
    /// SPF, handed over before the mail hook (so before its transaction is noted).
    auth_results: Option<Value>,
}

impl RecordSession {
    fn note(&mut self, d: &Decision) {
        self.refused |= refusal(d);
    }

    /// What the envelope of the hook about to run shows about the recipients before it:
    /// the server's refusal of one the chain let through (marked `server_refused`, left out
    /// of the replayed envelope), or one the server took without the chain (added as
    /// `server_accepted`, for which the replay runs no hook).
    fn settle(&mut self, env: &Envelope) {
        let (Some(tracker), Some(tx)) = (self.rcpts.as_mut(), self.tx.as_mut()) else {
            return;
        };
        for fix in tracker.settle(env) {
            match fix {
                Fix::Refused(i) => {
                    if let Some(spec) = tx.get_mut("rcpt_to").and_then(|l| l.get_mut(i)) {
                        if let Value::String(a) = spec {
                            *spec = json!({ "address": a.clone() });
                        }
                        spec["server_refused"] = true.into();
                    }
                }
                Fix::Accepted(r) => {
                    let mut spec = rcpt_spec(&r);
                    if let Value::String(a) = spec {
                        spec = json!({ "address": a });
                    }
                    spec["server_accepted"] = true.into();
                    push(tx, &["rcpt_to"], spec);
                    // No hook ran: an expectation of nothing keeps the lists in step.
                    push(tx, &["expect", "rcpt"], json!({}));
                    push(tx, &["at", "rcpt"], now_ms().into());
                }
            }
        }
    }

    fn close_tx(&mut self) {
        self.rcpts = None;
        if let Some(tx) = self.tx.take() {
            self.txs.push(Value::Object(tx));
        }
    }
}

#[async_trait]
impl PolicySession for RecordSession {
    async fn connect(&mut self, conn: &ConnectionInfo) -> Decision {
        connection(&mut self.conn, conn);
        self.tls_at_connect = conn.tls.is_some();
        self.conn_at.insert("connect".into(), now_ms().into());
        let d = scope(self.session_id, self.inner.connect(conn)).await;
        self.note(&d);
        self.conn_expect.insert("connect".into(), expect(&d));
        d
    }

    async fn helo(&mut self, conn: &ConnectionInfo) -> Decision {
        // After STARTTLS the client says EHLO again: the facts then (TLS) are the ones kept,
        // the replay's connect hook gets them without TLS, and the EHLO before STARTTLS is
        // kept apart (`pre_tls_helo`), to run before this one without TLS.
        let after_starttls = conn.tls.is_some() && !self.tls_at_connect;
        if after_starttls && !self.conn.contains_key("starttls") {
            self.conn.insert("starttls".into(), true.into());
            if let Some(e) = self.conn_expect.remove("helo") {
                let name = self.conn.get("helo").cloned();
                let mut pre = json!({
                    "helo": name.unwrap_or_else(|| "".into()),
                    "esmtp": self.conn.get("esmtp").cloned().unwrap_or(true.into()),
                    "expect": e,
                });
                if let Some(at) = self.conn_at.remove("helo") {
                    pre["at"] = at;
                }
                self.conn.insert("pre_tls_helo".into(), pre);
            }
        }
        connection(&mut self.conn, conn);
        self.conn_at.insert("helo".into(), now_ms().into());
        if let Some(h) = &conn.helo {
            self.conn.insert("helo".into(), h.clone().into());
        }
        self.conn.insert("esmtp".into(), conn.esmtp.into());
        let d = scope(self.session_id, self.inner.helo(conn)).await;
        self.note(&d);
        // Another EHLO without STARTTLS between them replaces the one before.
        self.conn_expect.insert("helo".into(), expect(&d));
        d
    }

    async fn auth(&mut self, conn: &ConnectionInfo, creds: &AuthCredentials) -> Decision {
        self.conn_at.insert("auth".into(), now_ms().into());
        let d = scope(self.session_id, self.inner.auth(conn, creds)).await;
        self.note(&d);
        // The password stays out (secrets are never recorded).
        let mut a = json!({
            "mechanism": creds.mechanism,
            "user": creds.username,
            "expect": expect(&d),
        });
        if let Some(z) = &creds.authzid {
            a["authzid"] = z.clone().into();
        }
        self.auth = Some(a);
        let note = "the AUTH password is not recorded: the replayed auth hook gets an empty one";
        if !self.partial.iter().any(|p| p == note) {
            self.partial.push(note.into());
        }
        d
    }

    async fn mail(&mut self, conn: &ConnectionInfo, env: &Envelope) -> Decision {
        self.close_tx();
        let at = now_ms();
        let d = scope(self.session_id, self.inner.mail(conn, env)).await;
        self.note(&d);
        if self.bytes >= self.rec.max_bytes {
            if self.tx.is_none() && !self.partial.iter().any(|p| p.starts_with("transactions")) {
                self.partial.push(format!(
                    "transactions after the first {} are left out (record.max_bytes)",
                    self.txs.len()
                ));
            }
            return d;
        }
        let now = SystemTime::now();
        let advance = now.duration_since(self.mark).unwrap_or_default();
        self.mark = now;
        let mut tx = Map::new();
        tx.insert(
            "advance".into(),
            format!("{}ms", advance.as_millis()).into(),
        );
        let from = env
            .sender
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tx.insert("mail_from".into(), from.into());
        tx.insert("mail_params".into(), mail_params(env));
        tx.insert("rcpt_to".into(), Value::Array(Vec::new()));
        tx.insert("expect".into(), json!({ "mail": expect(&d), "rcpt": [] }));
        tx.insert("at".into(), json!({ "mail": at, "rcpt": [] }));
        self.rcpts = Some(Tracker::new(env, refusal(&d), &d.modifications));
        if let Some(a) = self.auth_results.take() {
            tx.insert("auth_results".into(), a);
        }
        self.tx = Some(tx);
        d
    }

    async fn rcpt(&mut self, conn: &ConnectionInfo, env: &Envelope, rcpt: &Recipient) -> Decision {
        self.settle(env);
        let at = now_ms();
        let d = scope(self.session_id, self.inner.rcpt(conn, env, rcpt)).await;
        self.note(&d);
        if let Some(tx) = &mut self.tx {
            let index = tx
                .get("rcpt_to")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if let Some(t) = self.rcpts.as_mut() {
                t.decided(index, rcpt, refusal(&d), &d.modifications);
            }
            push(tx, &["rcpt_to"], rcpt_spec(rcpt));
            push(tx, &["expect", "rcpt"], expect(&d));
            push(tx, &["at", "rcpt"], at.into());
        }
        d
    }

    async fn data(
        &mut self,
        conn: &ConnectionInfo,
        env: &Envelope,
        message: MessageView<'_>,
    ) -> Decision {
        self.settle(env);
        let at = now_ms();
        let d = scope(self.session_id, self.inner.data(conn, env, message)).await;
        self.note(&d);
        let room = self.rec.max_bytes.saturating_sub(self.bytes);
        let content = message.content;
        let kept = &content[..content.len().min(room)];
        self.bytes += kept.len();
        if kept.len() < content.len() {
            self.partial.push(format!(
                "a message was cut at {} of its {} bytes (record.max_bytes)",
                kept.len(),
                content.len()
            ));
        }
        let text = String::from_utf8_lossy(kept);
        if matches!(text, std::borrow::Cow::Owned(_)) {
            self.partial
                .push("a message is not UTF-8: its other bytes were replaced".into());
        }
        if let Some(tx) = &mut self.tx {
            tx.insert("data".into(), text.into_owned().into());
            if let Some(Value::Object(e)) = tx.get_mut("expect") {
                e.insert("data".into(), expect(&d));
            }
            if let Some(Value::Object(t)) = tx.get_mut("at") {
                t.insert("data".into(), at.into());
            }
        }
        d
    }

    fn end_transaction(&mut self) {
        self.close_tx();
        self.auth_results = None;
        self.inner.end_transaction();
    }

    fn auth_results(&mut self, spf: Option<&SpfCheck>, message: Option<&AuthResults>) {
        self.inner.auth_results(spf, message);
        // What the plugins read through `auth-results`, so that the replay hands it over too.
        let section = AuthResultsSection::from_session(spf, message);
        let Ok(value) = serde_json::to_value(section) else {
            return;
        };
        match (message, self.tx.as_mut()) {
            (Some(_), Some(tx)) => _ = tx.insert("auth_results".into(), value),
            _ => self.auth_results = Some(value),
        }
    }

    fn signing(&mut self) -> SigningRequest {
        self.inner.signing()
    }
}

#[cfg(test)]
mod tests;

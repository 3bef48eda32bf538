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
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::warn;

mod capture;
mod facts;
mod files;
mod section;

pub use facts::expect;
use facts::{mail_params, rcpt_spec, refusal};
use files::write_capture;
pub use files::{prepare, retain};
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
            kept: None,
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
    /// The last recipient the chain let through (its index in the transaction), until the
    /// next hook shows whether the server kept it.
    kept: Option<(usize, corvid_types::Address)>,
    /// SPF, handed over before the mail hook (so before its transaction is noted).
    auth_results: Option<Value>,
}

impl RecordSession {
    fn note(&mut self, d: &Decision) {
        self.refused |= refusal(d);
    }

    /// The connection facts, as the test script's `[connection]` has them.
    fn connection(&mut self, conn: &ConnectionInfo) {
        let c = &mut self.conn;
        c.insert("client".into(), conn.peer_addr.to_string().into());
        c.insert("local".into(), conn.local_addr.to_string().into());
        c.insert("listener".into(), conn.listener.clone().into());
        if let Some(r) = &conn.peer_rdns {
            c.insert("rdns".into(), r.clone().into());
        }
        if let Some(t) = &conn.tls {
            let mut tls = json!({"version": t.version, "cipher": t.cipher});
            if let Some(sni) = &t.sni {
                tls["sni"] = sni.clone().into();
            }
            c.insert("tls".into(), tls);
        }
        if let Some(u) = &conn.auth_user {
            c.insert("auth_user".into(), u.clone().into());
        }
    }

    /// The server's own refusal of the last recipient the chain let through (an unknown
    /// user, relaying; RFC 5321 3.6.2): seen as its absence from the next hook's envelope,
    /// and marked so that the replay leaves it out of the envelope too.
    fn settle(&mut self, env: &Envelope) {
        let Some((i, address)) = self.kept.take() else {
            return;
        };
        if env.recipients.iter().any(|r| r.address == address) {
            return;
        }
        let Some(Value::Array(list)) = self.tx.as_mut().and_then(|t| t.get_mut("rcpt_to")) else {
            return;
        };
        if let Some(spec) = list.get_mut(i) {
            if let Value::String(a) = spec {
                *spec = json!({ "address": a.clone() });
            }
            spec["server_refused"] = true.into();
        }
    }

    fn close_tx(&mut self) {
        self.kept = None;
        if let Some(tx) = self.tx.take() {
            self.txs.push(Value::Object(tx));
        }
    }
}

#[async_trait]
impl PolicySession for RecordSession {
    async fn connect(&mut self, conn: &ConnectionInfo) -> Decision {
        self.connection(conn);
        let d = scope(self.session_id, self.inner.connect(conn)).await;
        self.note(&d);
        self.conn_expect.insert("connect".into(), expect(&d));
        d
    }

    async fn helo(&mut self, conn: &ConnectionInfo) -> Decision {
        // After STARTTLS the client says EHLO again: the facts then (TLS) are the ones kept.
        self.connection(conn);
        if let Some(h) = &conn.helo {
            self.conn.insert("helo".into(), h.clone().into());
        }
        self.conn.insert("esmtp".into(), conn.esmtp.into());
        let d = scope(self.session_id, self.inner.helo(conn)).await;
        self.note(&d);
        // A second EHLO (after STARTTLS) replaces the first: the replay runs one.
        self.conn_expect.insert("helo".into(), expect(&d));
        d
    }

    async fn auth(&mut self, conn: &ConnectionInfo, creds: &AuthCredentials) -> Decision {
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
        if let Some(a) = self.auth_results.take() {
            tx.insert("auth_results".into(), a);
        }
        self.tx = Some(tx);
        d
    }

    async fn rcpt(&mut self, conn: &ConnectionInfo, env: &Envelope, rcpt: &Recipient) -> Decision {
        self.settle(env);
        let d = scope(self.session_id, self.inner.rcpt(conn, env, rcpt)).await;
        self.note(&d);
        let removed = d.modifications.iter().any(
            |m| matches!(m, corvid_types::Modification::RemoveRecipient(a) if *a == rcpt.address),
        );
        if let Some(tx) = &mut self.tx {
            if let Some(Value::Array(list)) = tx.get_mut("rcpt_to") {
                if !refusal(&d) && !removed {
                    self.kept = Some((list.len(), rcpt.address.clone()));
                }
                list.push(rcpt_spec(rcpt));
            }
            if let Some(Value::Array(list)) = tx.get_mut("expect").and_then(|e| e.get_mut("rcpt")) {
                list.push(expect(&d));
            }
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

impl Drop for RecordSession {
    fn drop(&mut self) {
        let answers = corvid_plugin_host::record::finish(self.session_id);
        let refused_by = answers.as_ref().map_or(&[][..], |a| &a.refused_by[..]);
        let kept = match &self.rec.plugin {
            Some(p) => refused_by.contains(p),
            None => self.rec.only == RecordOnly::All || self.refused,
        };
        if !kept {
            return;
        }
        let capture = self.capture(answers);
        let millis = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let path = self
            .rec
            .dir
            .join(format!("{millis}-{}.json", self.session_id));
        let write = move || {
            if let Err(e) = write_capture(&path, &capture) {
                warn!(path = %path.display(), error = %e, "record: cannot write the capture");
            }
        };
        // Off the SMTP task: the file is written on the blocking pool.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

#[cfg(test)]
mod tests;

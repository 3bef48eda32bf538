//! One SMTP connection's view of the chain: an instance per plugin per hook call at the
//! session stages (`connect`, `helo`, `auth`), and per transaction from MAIL to the end of
//! DATA or RSET (taken at the plugin's first hook of the transaction, given back at
//! `end_transaction` as its [`InstanceMode`] says), so an idle connection holds no instance;
//! limits on every call, validation of every decision, and the failure policy when anything
//! goes wrong. Shadow plugins (`mode = "shadow"`) are not part of the chain: once it decided
//! a stage, the facts and its verdict go to the session's shadow task ([`crate::shadow_run`]).
//!
//! [`InstanceMode`]: crate::manifest::InstanceMode

use crate::auth_results::AuthShared;
use crate::bindings::corvid::plugin::types as wit;
use crate::context::{next_id, Facts, Named};
use crate::convert;
use crate::generation::Generation;
use crate::hook::{call_plugin, Slot};
use crate::instance::Call;
use crate::manifest::FailurePolicy;
use crate::message::MessageData;
use crate::shadow_run::Shadows;
use crate::warm;
use async_trait::async_trait;
use corvid_types::{AuthCredentials, ConnectionInfo, Decision, Envelope, MessageView};
use corvid_types::{PolicySession, Recipient};
use corvid_types::{Reply, Stage, Verdict};
use std::sync::Arc;

/// The generation a transaction started on, and its instances.
struct Txn {
    generation: Arc<Generation>,
    slots: Vec<Slot>,
}

/// The generic reply of the `tempfail` failure policy (details go to the log only).
pub(crate) fn policy_failure() -> Decision {
    Decision::tempfail(Reply::new(451, "4.3.0", "Temporary policy failure"))
}

/// The WIT form of `value` from `cache`, converted (and numbered) anew when it changed.
fn cached<'a, T: PartialEq + Clone, W>(
    cache: &'a mut Option<(T, Named<W>)>,
    value: &T,
    convert: impl FnOnce(&T) -> W,
) -> &'a Named<W> {
    if !matches!(cache, Some(c) if c.0 == *value) {
        *cache = None;
    }
    let c = cache.get_or_insert_with(|| (value.clone(), (Arc::new(convert(value)), next_id())));
    &c.1
}

/// The [`PolicySession`] of [`crate::PluginHost`].
pub(crate) struct PluginSession {
    current: Box<dyn Fn() -> Arc<Generation> + Send + Sync>,
    session_id: u64,
    listener: String,
    transaction: u32,
    txn: Option<Txn>,
    /// The last connection facts and their WIT form: most hooks of a session see the same
    /// facts, so the conversion (strings, IP formatting) is done once, and a plugin holding
    /// them (by their number) is not sent them again.
    conn_cache: Option<(ConnectionInfo, u32, Named<wit::ConnectionInfo>)>,
    /// The same for the envelope and the recipient.
    env_cache: Option<(Envelope, Named<wit::Envelope>)>,
    rcpt_cache: Option<(Recipient, Named<wit::Recipient>)>,
    /// The facts of the last hook call, reused as they are when nothing changed.
    last_facts: Option<Facts>,
    /// Authentication results and the signing choice (`auth-results`).
    auth: Arc<AuthShared>,
    /// The queue to the session's shadow plugins (`mode = "shadow"`).
    shadows: Shadows,
}

impl PluginSession {
    pub(crate) fn new(
        current: Box<dyn Fn() -> Arc<Generation> + Send + Sync>,
        conn: &ConnectionInfo,
        shadow_budget: Arc<crate::shadow_run::Budget>,
    ) -> Self {
        PluginSession {
            current,
            session_id: conn.session_id,
            listener: conn.listener.clone(),
            transaction: 0,
            txn: None,
            conn_cache: None,
            env_cache: None,
            rcpt_cache: None,
            last_facts: None,
            auth: Arc::default(),
            shadows: Shadows::new(shadow_budget),
        }
    }

    /// Ends the transaction: instances that did not fail go back per their instance mode.
    fn release_txn(&mut self) {
        let Some(txn) = self.txn.take() else { return };
        for (plugin, slot) in txn.generation.plugins.iter().zip(txn.slots) {
            if let Slot::Live { live, .. } = slot {
                warm::release(plugin, live);
            }
        }
    }

    /// The WIT form of `conn`, from the cache when the facts did not change.
    fn conn_named(&mut self, conn: &ConnectionInfo) -> &Named<wit::ConnectionInfo> {
        let t = self.transaction;
        if !matches!(&self.conn_cache, Some(c) if c.1 == t && c.0 == *conn) {
            self.conn_cache = None;
        }
        let c = self.conn_cache.get_or_insert_with(|| {
            let named = (Arc::new(convert::conn(conn, t)), next_id());
            (conn.clone(), t, named)
        });
        &c.2
    }

    fn conn(&mut self, conn: &ConnectionInfo) -> Named<wit::ConnectionInfo> {
        self.conn_named(conn).clone()
    }

    /// The WIT form of `env`, from the cache when it did not change.
    fn env_named(&mut self, env: &Envelope) -> &Named<wit::Envelope> {
        cached(&mut self.env_cache, env, convert::envelope)
    }

    /// The WIT form of `rcpt`, from the cache when it did not change.
    fn rcpt_named(&mut self, rcpt: &Recipient) -> &Named<wit::Recipient> {
        cached(&mut self.rcpt_cache, rcpt, convert::recipient)
    }

    /// The facts of a hook call: those of the previous call when nothing changed (no
    /// reference counts touched), else new ones from the caches. Give them back with
    /// [`Self::keep`] after the call.
    fn facts(
        &mut self,
        conn: &ConnectionInfo,
        env: Option<&Envelope>,
        rcpt: Option<&Recipient>,
    ) -> Facts {
        let c = self.conn_named(conn).1;
        let e = env.map(|e| self.env_named(e).1);
        let r = rcpt.map(|r| self.rcpt_named(r).1);
        if let Some(f) = self.last_facts.take() {
            let (fe, fr) = (f.env.as_ref().map(|n| n.1), f.rcpt.as_ref().map(|n| n.1));
            if f.conn.1 == c && fe == e && fr == r {
                return f;
            }
        }
        Facts {
            conn: self.conn(conn),
            env: env.map(|e| self.env_named(e).clone()),
            rcpt: rcpt.map(|r| self.rcpt_named(r).clone()),
            auth: self.auth.clone(),
        }
    }

    /// Keeps the facts of the call that just ended for the next one.
    fn keep(&mut self, facts: Facts) {
        self.last_facts = Some(facts);
    }

    /// The transaction's generation and instances, starting the transaction if needed.
    fn txn(&mut self) -> &mut Txn {
        self.txn.get_or_insert_with(|| {
            let generation = (self.current)();
            let slots = generation.plugins.iter().map(|_| Slot::Empty).collect();
            Txn { generation, slots }
        })
    }

    /// Whether any plugin of the transaction's generation takes part in `stage` here.
    fn wants(&mut self, stage: Stage) -> bool {
        self.txn();
        let listener = self.listener.as_str();
        self.txn.as_ref().is_some_and(|t| {
            let mut plugins = t.generation.plugins.iter();
            plugins.any(|p| p.applies(stage, listener))
        })
    }

    async fn run(&mut self, call: Call<'_>) -> Decision {
        let stage = call.stage();
        self.txn();
        let Some(txn) = self.txn.as_mut() else {
            return Decision::proceed();
        };
        let mut modifications = Vec::new();
        let decision = 'chain: {
            // By index rather than a zip of two iterators: the loop's state is kept across
            // the await in the hook's future, which `#[async_trait]` boxes at every call (see
            // `backstop`), and a zip is 56 bytes.
            for i in 0..txn.slots.len() {
                let (Some(plugin), Some(slot)) =
                    (txn.generation.plugins.get(i), txn.slots.get_mut(i))
                else {
                    break;
                };
                if plugin.shadow() || !plugin.applies(stage, &self.listener) {
                    continue;
                }
                match call_plugin(plugin, slot, &call, self.session_id).await {
                    Ok(d) => {
                        modifications.extend(d.modifications);
                        if d.verdict != Verdict::Continue {
                            crate::record::decided(
                                self.session_id,
                                &plugin.manifest.name,
                                &d.verdict,
                            );
                            break 'chain Decision {
                                verdict: d.verdict,
                                modifications,
                            };
                        }
                    }
                    Err(()) => match plugin.manifest.failure_policy {
                        FailurePolicy::Tempfail => {
                            let d = policy_failure();
                            let name = &plugin.manifest.name;
                            crate::record::decided(self.session_id, name, &d.verdict);
                            break 'chain d;
                        }
                        FailurePolicy::Continue => {}
                    },
                }
            }
            Decision {
                verdict: Verdict::Continue,
                modifications,
            }
        };
        // The chain has decided: the shadows see the stage after it, off this path.
        if txn.generation.shadows(stage) {
            let (t, listener) = (self.transaction, self.listener.as_str());
            let (generation, session) = (&txn.generation, self.session_id);
            (self.shadows).send(generation, t, &call, &decision.verdict, session, listener);
        }
        decision
    }
}

#[async_trait]
impl PolicySession for PluginSession {
    async fn connect(&mut self, conn: &ConnectionInfo) -> Decision {
        if !self.wants(Stage::Connect) {
            return Decision::proceed();
        }
        let f = self.facts(conn, None, None);
        let d = self.run(Call::Connect(&f)).await;
        self.keep(f);
        // Outside a transaction, instances are taken per hook call: an idle connection
        // holds none.
        self.release_txn();
        d
    }

    async fn helo(&mut self, conn: &ConnectionInfo) -> Decision {
        if !self.wants(Stage::Helo) {
            return Decision::proceed();
        }
        let f = self.facts(conn, None, None);
        let d = self.run(Call::Helo(&f)).await;
        self.keep(f);
        // Outside a transaction, instances are taken per hook call: an idle connection
        // holds none.
        self.release_txn();
        d
    }

    async fn auth(&mut self, conn: &ConnectionInfo, creds: &AuthCredentials) -> Decision {
        if !self.wants(Stage::Auth) {
            return Decision::proceed();
        }
        let c = self.conn(conn);
        let full = wit::AuthInfo {
            mechanism: creds.mechanism.clone(),
            user: creds.username.clone(),
            authzid: creds.authzid.clone().filter(|z| *z != creds.username),
            password: Some(creds.password.clone()),
        };
        let redacted = wit::AuthInfo {
            password: None,
            ..full.clone()
        };
        let d = self.run(Call::Auth(&c.0, &full, &redacted)).await;
        // Outside a transaction, instances are taken per hook call: an idle connection
        // holds none.
        self.release_txn();
        d
    }

    async fn mail(&mut self, conn: &ConnectionInfo, env: &Envelope) -> Decision {
        self.transaction = self.transaction.saturating_add(1);
        if !self.wants(Stage::Mail) {
            return Decision::proceed();
        }
        let f = self.facts(conn, Some(env), None);
        let d = self.run(Call::Mail(&f)).await;
        self.keep(f);
        d
    }

    async fn rcpt(&mut self, conn: &ConnectionInfo, env: &Envelope, rcpt: &Recipient) -> Decision {
        if !self.wants(Stage::Rcpt) {
            return Decision::proceed();
        }
        let f = self.facts(conn, Some(env), Some(rcpt));
        let d = self.run(Call::Rcpt(&f)).await;
        self.keep(f);
        d
    }

    async fn data(
        &mut self,
        conn: &ConnectionInfo,
        env: &Envelope,
        message: MessageView<'_>,
    ) -> Decision {
        if !self.wants(Stage::Data) {
            return Decision::proceed();
        }
        let f = self.facts(conn, Some(env), None);
        let m = MessageData::new(message.content);
        self.shadows.message_len(message.content.len());
        let d = self.run(Call::Data(&f, &m)).await;
        self.keep(f);
        d
    }

    fn end_transaction(&mut self) {
        self.release_txn();
        self.shadows.end_transaction();
        self.auth.new_transaction();
    }

    fn auth_results(
        &mut self,
        spf: Option<&corvid_types::SpfCheck>,
        message: Option<&corvid_types::AuthResults>,
    ) {
        self.auth.set(spf, message);
    }

    fn signing(&mut self) -> corvid_types::SigningRequest {
        self.auth.signing()
    }
}

impl Drop for PluginSession {
    /// A connection that ends without finishing a transaction (QUIT after EHLO) still gives
    /// its healthy instances back to the pool.
    fn drop(&mut self) {
        self.release_txn();
    }
}

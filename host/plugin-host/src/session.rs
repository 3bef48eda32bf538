//! One SMTP connection's view of the chain: an instance per plugin per transaction (taken at
//! the plugin's first hook, given back at `end_transaction` as its [`InstanceMode`] says),
//! limits on every call, validation of every decision, and the failure policy when anything
//! goes wrong.
//!
//! [`InstanceMode`]: crate::manifest::InstanceMode

use crate::bindings::corvid::plugin::types as wit;
use crate::convert;
use crate::generation::{Generation, LoadedPlugin};
use crate::instance::{Call, Live};
use crate::manifest::{Capability, FailurePolicy};
use crate::message::MessageData;
use crate::stats::Outcome;
use crate::validate;
use crate::warm::{self, ConnWarm};
use async_trait::async_trait;
use corvid_types::{AuthCredentials, ConnectionInfo, Decision, Envelope, MessageView};
use corvid_types::{PolicySession, Recipient};
use corvid_types::{Reply, Stage, Verdict};
use std::sync::Arc;
use std::time::Instant;

enum Slot {
    /// Not instantiated yet in this transaction.
    Empty,
    Live(Box<Live>),
    /// Failed in this transaction: its failure policy applies to its remaining hooks.
    Failed,
}

/// The generation a transaction started on, and its instances.
struct Txn {
    generation: Arc<Generation>,
    slots: Vec<Slot>,
}

/// The generic reply of the `tempfail` failure policy (details go to the log only).
pub(crate) fn policy_failure() -> Decision {
    Decision::tempfail(Reply::new(451, "4.3.0", "Temporary policy failure"))
}

/// The [`PolicySession`] of [`crate::PluginHost`].
pub(crate) struct PluginSession {
    current: Box<dyn Fn() -> Arc<Generation> + Send + Sync>,
    session_id: u64,
    listener: String,
    transaction: u32,
    txn: Option<Txn>,
    /// The last connection facts and their WIT form: most hooks of a session see the same
    /// facts, so the conversion (strings, IP formatting) is done once.
    conn_cache: Option<Box<(ConnectionInfo, u32, wit::ConnectionInfo)>>,
    /// Instances of `connection`-mode plugins between transactions.
    warm: ConnWarm,
}

impl PluginSession {
    pub(crate) fn new(
        current: Box<dyn Fn() -> Arc<Generation> + Send + Sync>,
        conn: &ConnectionInfo,
    ) -> Self {
        PluginSession {
            current,
            session_id: conn.session_id,
            listener: conn.listener.clone(),
            transaction: 0,
            txn: None,
            conn_cache: None,
            warm: ConnWarm::default(),
        }
    }

    /// Ends the transaction: instances that did not fail go back per their instance mode.
    fn release_txn(&mut self) {
        let Some(txn) = self.txn.take() else { return };
        for (plugin, slot) in txn.generation.plugins.iter().zip(txn.slots) {
            if let Slot::Live(live) = slot {
                warm::release(plugin, live, &mut self.warm);
            }
        }
    }

    /// The WIT form of `conn`, from the cache when the facts did not change. Give it back
    /// with [`PluginSession::put_conn`].
    fn take_conn(
        &mut self,
        conn: &ConnectionInfo,
    ) -> Box<(ConnectionInfo, u32, wit::ConnectionInfo)> {
        match self.conn_cache.take() {
            Some(c) if c.0 == *conn && c.1 == self.transaction => c,
            _ => Box::new((
                conn.clone(),
                self.transaction,
                convert::conn(conn, self.transaction),
            )),
        }
    }

    fn put_conn(&mut self, c: Box<(ConnectionInfo, u32, wit::ConnectionInfo)>) {
        self.conn_cache = Some(c);
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
        for (plugin, slot) in txn.generation.plugins.iter().zip(txn.slots.iter_mut()) {
            if !plugin.applies(stage, &self.listener) {
                continue;
            }
            match call_plugin(plugin, slot, &call, self.session_id, &mut self.warm).await {
                Ok(d) => {
                    modifications.extend(d.modifications);
                    if d.verdict != Verdict::Continue {
                        return Decision {
                            verdict: d.verdict,
                            modifications,
                        };
                    }
                }
                Err(()) => match plugin.manifest.failure_policy {
                    FailurePolicy::Tempfail => return policy_failure(),
                    FailurePolicy::Continue => {}
                },
            }
        }
        Decision {
            verdict: Verdict::Continue,
            modifications,
        }
    }
}

/// One plugin's hook: instance, call, validation, stats and logs. `Err` means "apply the
/// failure policy" (the cause is already logged and counted).
async fn call_plugin(
    p: &Arc<LoadedPlugin>,
    slot: &mut Slot,
    call: &Call<'_>,
    session: u64,
    warm: &mut ConnWarm,
) -> Result<Decision, ()> {
    let stage = call.stage();
    let started = Instant::now();
    let name = p.manifest.name.as_str();
    let fail = |slot: &mut Slot, outcome: Outcome, detail: &str| {
        p.stats.record(stage, outcome, started.elapsed());
        tracing::warn!(
            plugin = name,
            stage = stage.as_str(),
            session,
            ?outcome,
            "plugin failed, applying its failure policy: {detail}"
        );
        *slot = Slot::Failed;
        Err(())
    };
    if matches!(slot, Slot::Empty) {
        match warm::acquire(p, warm, session).await {
            Ok(live) => *slot = Slot::Live(live),
            Err((outcome, detail)) => return fail(slot, outcome, &detail),
        }
    }
    let live = match slot {
        Slot::Live(live) => live,
        // Failed earlier in this transaction (already counted and logged).
        _ => return Err(()),
    };
    let raw = match live.invoke(call, p.limit()).await {
        Ok(d) => d,
        Err((outcome, detail)) => return fail(slot, outcome, &detail),
    };
    match validate::decision(stage, raw, p.env.grants(Capability::ReplaceBody)) {
        Ok(d) => {
            p.stats
                .record(stage, validate::outcome(&d.verdict), started.elapsed());
            tracing::debug!(plugin = name, stage = stage.as_str(), session, verdict = ?d.verdict, "plugin decided");
            Ok(d)
        }
        Err(why) => {
            p.stats.record(stage, Outcome::Invalid, started.elapsed());
            tracing::warn!(
                plugin = name,
                stage = stage.as_str(),
                session,
                "invalid decision refused: {why}"
            );
            Err(())
        }
    }
}

#[async_trait]
impl PolicySession for PluginSession {
    async fn connect(&mut self, conn: &ConnectionInfo) -> Decision {
        if !self.wants(Stage::Connect) {
            return Decision::proceed();
        }
        let c = self.take_conn(conn);
        let d = self.run(Call::Connect(&c.2)).await;
        self.put_conn(c);
        d
    }

    async fn helo(&mut self, conn: &ConnectionInfo) -> Decision {
        if !self.wants(Stage::Helo) {
            return Decision::proceed();
        }
        let c = self.take_conn(conn);
        let d = self.run(Call::Helo(&c.2)).await;
        self.put_conn(c);
        d
    }

    async fn auth(&mut self, conn: &ConnectionInfo, creds: &AuthCredentials) -> Decision {
        if !self.wants(Stage::Auth) {
            return Decision::proceed();
        }
        let c = self.take_conn(conn);
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
        let d = self.run(Call::Auth(&c.2, &full, &redacted)).await;
        self.put_conn(c);
        d
    }

    async fn mail(&mut self, conn: &ConnectionInfo, env: &Envelope) -> Decision {
        self.transaction = self.transaction.saturating_add(1);
        if !self.wants(Stage::Mail) {
            return Decision::proceed();
        }
        let (c, e) = (self.take_conn(conn), convert::envelope(env));
        let d = self.run(Call::Mail(&c.2, &e)).await;
        self.put_conn(c);
        d
    }

    async fn rcpt(&mut self, conn: &ConnectionInfo, env: &Envelope, rcpt: &Recipient) -> Decision {
        if !self.wants(Stage::Rcpt) {
            return Decision::proceed();
        }
        let (c, e) = (self.take_conn(conn), convert::envelope(env));
        let r = convert::recipient(rcpt);
        let d = self.run(Call::Rcpt(&c.2, &e, &r)).await;
        self.put_conn(c);
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
        let (c, e) = (self.take_conn(conn), convert::envelope(env));
        let m = MessageData::new(message.content);
        let d = self.run(Call::Data(&c.2, &e, &m)).await;
        self.put_conn(c);
        d
    }

    fn end_transaction(&mut self) {
        self.release_txn();
    }
}

impl Drop for PluginSession {
    /// A connection that ends without finishing a transaction (QUIT after EHLO) still gives
    /// its healthy instances back to the pool.
    fn drop(&mut self) {
        self.release_txn();
    }
}

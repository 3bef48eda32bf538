//! One SMTP connection's view of the chain: an instance per plugin per hook call at the
//! session stages (`connect`, `helo`, `auth`), and per transaction from MAIL to the end of
//! DATA or RSET (taken at the plugin's first hook of the transaction, given back at
//! `end_transaction` as its [`InstanceMode`] says), so an idle connection holds no instance;
//! limits on every call, validation of every decision, and the failure policy when anything
//! goes wrong.
//!
//! [`InstanceMode`]: crate::manifest::InstanceMode

use crate::bindings::corvid::plugin::types as wit;
use crate::convert;
use crate::generation::Generation;
use crate::hook::{call_plugin, Slot};
use crate::instance::Call;
use crate::manifest::FailurePolicy;
use crate::message::MessageData;
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
            match call_plugin(plugin, slot, &call, self.session_id).await {
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

#[async_trait]
impl PolicySession for PluginSession {
    async fn connect(&mut self, conn: &ConnectionInfo) -> Decision {
        if !self.wants(Stage::Connect) {
            return Decision::proceed();
        }
        let c = self.take_conn(conn);
        let d = self.run(Call::Connect(&c.2)).await;
        // Outside a transaction, instances are taken per hook call: an idle connection
        // holds none.
        self.release_txn();
        self.put_conn(c);
        d
    }

    async fn helo(&mut self, conn: &ConnectionInfo) -> Decision {
        if !self.wants(Stage::Helo) {
            return Decision::proceed();
        }
        let c = self.take_conn(conn);
        let d = self.run(Call::Helo(&c.2)).await;
        // Outside a transaction, instances are taken per hook call: an idle connection
        // holds none.
        self.release_txn();
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
        // Outside a transaction, instances are taken per hook call: an idle connection
        // holds none.
        self.release_txn();
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

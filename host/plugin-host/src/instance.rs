//! One live instance of a plugin: its store, limits on every call into it, and how a failed
//! call is classified (trap, timeout, out of memory).

use crate::bindings::corvid::plugin::types as wit;
use crate::bindings::Plugin as Bindings;
use crate::generation::LoadedPlugin;
use crate::manifest::Capability;
use crate::message::{HostMessage, MessageData};
use crate::state::{new_store, DeadlineExceeded, HostState};
use crate::stats::Outcome;
use corvid_types::Stage;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Resource;
use wasmtime::Store;

/// Extra time the async timeout grants beyond the epoch deadline; it only fires when the
/// plugin is stuck in a host call (e.g. a slow DNS lookup), not while running wasm.
const GRACE: Duration = Duration::from_millis(5);

/// The least time instantiation is given, whatever the hook limit.
const INSTANTIATE_LIMIT: Duration = Duration::from_millis(500);

/// Sets the deadline of the next call into the store.
pub(crate) fn arm(store: &mut Store<HostState>, limit: Duration) {
    store.data_mut().deadline = Instant::now() + limit;
    store.set_epoch_deadline(1);
}

/// Classifies a wasmtime error into a stats outcome and a log text.
pub(crate) fn classify(e: wasmtime::Error, store: &Store<HostState>) -> (Outcome, String) {
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        (Outcome::Timeout, "wall-time limit exceeded".to_string())
    } else if store.data().limiter.refused {
        (
            Outcome::OutOfMemory,
            format!("memory limit exceeded: {e:#}"),
        )
    } else {
        (Outcome::Trap, format!("{e:#}"))
    }
}

/// A boxed call into an instance, for [`Live::run`].
pub(crate) type BoxedCall<'a, R> =
    std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// A live instance of one plugin.
pub(crate) struct Live {
    store: Store<HostState>,
    bindings: Bindings,
    /// Transactions (or delivery calls) served, for [`crate::manifest::Manifest::max_reuse`].
    pub(crate) uses: u32,
}

impl Live {
    pub(crate) async fn new(p: &LoadedPlugin, session_id: u64) -> Result<Live, (Outcome, String)> {
        let engine = p.pre.engine();
        let mut store = new_store(engine, p.env.clone(), session_id);
        // Instantiation runs no plugin code but the guest's initialisers; give it at least
        // INSTANTIATE_LIMIT so that a loaded host does not turn slow page faults into failures.
        arm(&mut store, p.limit().max(INSTANTIATE_LIMIT));
        match p.pre.instantiate_async(&mut store).await {
            Ok(bindings) => {
                p.stats.instantiated();
                p.stats.memory(store.data().limiter.peak);
                Ok(Live {
                    store,
                    bindings,
                    uses: 0,
                })
            }
            Err(e) => Err(classify(e, &store)),
        }
    }

    /// The largest linear memory this instance has had.
    pub(crate) fn memory_peak(&self) -> usize {
        self.store.data().limiter.peak
    }

    /// Prepares a warm instance for another session: its log lines carry the new session id,
    /// and a memory refusal of an earlier call is forgotten.
    pub(crate) fn rebind(&mut self, session_id: u64) {
        let state = self.store.data_mut();
        state.session_id = session_id;
        state.limiter.refused = false;
    }

    /// Runs `f` (a call into the instance) under `limit`; used by the delivery hooks.
    pub(crate) async fn run<R>(
        &mut self,
        limit: Duration,
        f: impl for<'a> FnOnce(&'a Bindings, &'a mut Store<HostState>) -> BoxedCall<'a, R>,
    ) -> Result<R, (Outcome, String)> {
        arm(&mut self.store, limit);
        let fut = f(&self.bindings, &mut self.store);
        match tokio::time::timeout(limit + GRACE, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(classify(e, &self.store)),
            Err(_) => Err((
                Outcome::Timeout,
                "wall-time limit exceeded in a host call".into(),
            )),
        }
    }

    /// Calls the hook for `call` under `limit`.
    pub(crate) async fn invoke(
        &mut self,
        call: &Call<'_>,
        limit: Duration,
    ) -> Result<wit::Decision, (Outcome, String)> {
        arm(&mut self.store, limit);
        let (store, b) = (&mut self.store, &self.bindings);
        // The password goes only to plugins granted `credentials`.
        let credentials = store.data().env.grants(Capability::Credentials);
        let fut = async {
            match *call {
                Call::Connect(c) => b.call_on_connect(&mut *store, c).await,
                Call::Helo(c) => b.call_on_helo(&mut *store, c).await,
                Call::Auth(c, full, redacted) => {
                    let a = if credentials { full } else { redacted };
                    b.call_on_auth(&mut *store, c, a).await
                }
                Call::Mail(c, e) => b.call_on_mail(&mut *store, c, e).await,
                Call::Rcpt(c, e, r) => b.call_on_rcpt(&mut *store, c, e, r).await,
                Call::Data(c, e, m) => {
                    let res = store
                        .data_mut()
                        .table
                        .push(HostMessage { data: m.clone() })?;
                    let borrowed = Resource::new_borrow(res.rep());
                    let d = b.call_on_data(&mut *store, c, e, borrowed).await;
                    store.data_mut().table.delete(res)?;
                    d
                }
            }
        };
        match tokio::time::timeout(limit + GRACE, fut).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(classify(e, &self.store)),
            Err(_) => Err((
                Outcome::Timeout,
                "wall-time limit exceeded in a host call".into(),
            )),
        }
    }
}

/// The arguments of one SMTP-stage hook, already converted to WIT types.
pub(crate) enum Call<'a> {
    Connect(&'a wit::ConnectionInfo),
    Helo(&'a wit::ConnectionInfo),
    /// The credentials with the password, and without it (for plugins not granted it).
    Auth(
        &'a wit::ConnectionInfo,
        &'a wit::AuthInfo,
        &'a wit::AuthInfo,
    ),
    Mail(&'a wit::ConnectionInfo, &'a wit::Envelope),
    Rcpt(
        &'a wit::ConnectionInfo,
        &'a wit::Envelope,
        &'a wit::Recipient,
    ),
    Data(
        &'a wit::ConnectionInfo,
        &'a wit::Envelope,
        &'a Arc<MessageData>,
    ),
}

impl Call<'_> {
    pub(crate) fn stage(&self) -> Stage {
        match self {
            Call::Connect(_) => Stage::Connect,
            Call::Helo(_) => Stage::Helo,
            Call::Auth(..) => Stage::Auth,
            Call::Mail(..) => Stage::Mail,
            Call::Rcpt(..) => Stage::Rcpt,
            Call::Data(..) => Stage::Data,
        }
    }
}

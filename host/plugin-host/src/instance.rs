//! One live instance of a plugin: its store, limits on every call into it, and how a failed
//! call is classified (trap, timeout, out of memory).

use crate::backstop::backstop;
use crate::bindings::corvid::plugin::types as wit;
use crate::bindings::Plugin as Bindings;
use crate::context::{Facts, Hooks};
use crate::generation::LoadedPlugin;
use crate::manifest::Capability;
use crate::message::{HostMessage, MessageData};
use crate::state::{new_store, BreakerTripped, DeadlineExceeded, HostState};
use crate::stats::Outcome;
use corvid_types::Stage;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Resource;
use wasmtime::Store;

/// Extra time the async timeout grants beyond the epoch deadline; it only fires when the
/// plugin is stuck in a host call (e.g. a slow DNS lookup), not while running wasm.
const GRACE: Duration = Duration::from_millis(5);

/// The least time instantiation is given, whatever the hook limit.
const INSTANTIATE_LIMIT: Duration = Duration::from_millis(500);

/// Instantiation (the guest's initialisers) and `configure` get this many hook budgets.
pub(crate) const SETUP_BUDGETS: u64 = 10;

/// The limits of one call into a store: a CPU budget in fuel and a wall-time backstop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub(crate) fuel: u64,
    pub(crate) time: Duration,
}

/// Sets the fuel and the deadline of the next call into the store.
pub(crate) fn arm(store: &mut Store<HostState>, budget: Budget) {
    arm_at(store, budget, Instant::now());
}

/// [`arm`] for a call that started at `now` (saves a clock read on the hot path).
pub(crate) fn arm_at(store: &mut Store<HostState>, budget: Budget, now: Instant) {
    let state = store.data_mut();
    state.deadline = now + budget.time;
    // A call that starts after a trip (the probe, or one admitted just before) runs.
    state.trips_seen = state.env.breaker_trips.load(Ordering::Relaxed);
    state.limiter.trips_seen = state.trips_seen;
    // A copy charge left by a call that failed inside an import is not this call's.
    state.copied = 0;
    state.ticks_left = crate::charge::ticks_for(budget.fuel);
    state.ran_on = 0;
    state.waits_seen = state.waits.load(Ordering::Relaxed);
    state.yielded = false;
    store.set_epoch_deadline(1);
    // Only fails on an engine without fuel, which `engine::build_engine` never makes.
    let _ = store.set_fuel(budget.fuel);
}

/// Classifies a wasmtime error into a stats outcome and a log text.
pub(crate) fn classify(e: wasmtime::Error, store: &Store<HostState>) -> (Outcome, String) {
    if e.downcast_ref::<BreakerTripped>().is_some() {
        (Outcome::Bypassed, BreakerTripped.to_string())
    } else if e.downcast_ref::<DeadlineExceeded>().is_some() {
        (Outcome::Timeout, "wall-time limit exceeded".to_string())
    } else if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) {
        (
            Outcome::CpuBudget,
            "cpu budget (hook_fuel) exhausted".to_string(),
        )
    } else if e
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        (
            Outcome::Exhausted,
            format!("engine instance limit reached: {e:#}"),
        )
    } else if store.data().limiter.refused_total {
        let which = if store.data().limiter.is_shadow() {
            "shadow plugins' memory share (a quarter of total_memory_mb) reached"
        } else {
            "engine total memory limit reached"
        };
        (Outcome::Exhausted, which.to_string())
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
    /// The `hooks` export (facts on demand), when the component has it.
    hooks: Option<Hooks>,
    /// Transactions (or delivery calls) served, for [`crate::manifest::Manifest::max_reuse`].
    pub(crate) uses: u32,
    /// The fuel the last call was given.
    armed: u64,
    /// The store's count of pending calls ([`HostState::waits`]), kept here so that a call
    /// can hand it to [`backstop`] while the store is borrowed.
    waits: Arc<AtomicU32>,
}

impl Live {
    pub(crate) async fn new(p: &LoadedPlugin, session_id: u64) -> Result<Live, (Outcome, String)> {
        let engine = p.pre.engine();
        let mut store = new_store(engine, p.env.clone(), session_id);
        // Instantiation runs no plugin code but the guest's initialisers; give it at least
        // INSTANTIATE_LIMIT so that a loaded host does not turn slow page faults into failures.
        let b = p.budget();
        arm(
            &mut store,
            Budget {
                fuel: b.fuel.saturating_mul(SETUP_BUDGETS),
                time: b.time.max(INSTANTIATE_LIMIT),
            },
        );
        let made = async {
            let instance = p.pre.instance_pre().instantiate_async(&mut store).await?;
            let bindings = p.indices.load(&mut store, &instance)?;
            let hooks = match &p.hooks {
                Some(h) => Some(h.load(&mut store, &instance)?),
                None => None,
            };
            Ok::<_, wasmtime::Error>((bindings, hooks))
        };
        match made.await {
            Ok((bindings, hooks)) => {
                p.stats.instantiated();
                p.stats.memory(store.data().limiter.peak);
                let waits = Arc::clone(&store.data().waits);
                Ok(Live {
                    store,
                    bindings,
                    hooks,
                    uses: 0,
                    armed: 0,
                    waits,
                })
            }
            Err(e) => Err(classify(e, &store)),
        }
    }

    /// Sets what `lifecycle.quarantined` answers during the next calls (delivery hooks).
    pub(crate) fn set_quarantined(&mut self, reason: Option<&str>) {
        self.store.data_mut().quarantined = reason.map(str::to_string);
    }

    /// The fuel the last call used.
    pub(crate) fn fuel_used(&self) -> u64 {
        self.armed
            .saturating_sub(self.store.get_fuel().unwrap_or(self.armed))
    }

    fn arm(&mut self, budget: Budget, now: Instant) {
        self.armed = budget.fuel;
        arm_at(&mut self.store, budget, now);
    }

    /// The largest linear memory this instance has had.
    pub(crate) fn memory_peak(&self) -> usize {
        self.store.data().limiter.peak
    }

    /// Prepares a warm instance for another unit of work: a new lease (the SDK starts a fresh
    /// plugin value), log lines with the new session id, and a memory refusal of an earlier
    /// call forgotten.
    pub(crate) fn rebind(&mut self, session_id: u64) {
        let state = self.store.data_mut();
        state.session_id = session_id;
        state.lease = crate::state::next_lease();
        state.facts = None;
        state.quarantined = None;
        state.limiter.refused = false;
        state.limiter.refused_total = false;
    }

    /// Runs `f` (a call into the instance) under `budget`; used by the delivery hooks.
    pub(crate) async fn run<R>(
        &mut self,
        budget: Budget,
        f: impl for<'a> FnOnce(&'a Bindings, &'a mut Store<HostState>) -> BoxedCall<'a, R>,
    ) -> Result<R, (Outcome, String)> {
        let now = Instant::now();
        self.arm(budget, now);
        // The delivery hooks read no SMTP facts (`auth-results` answers empty).
        self.store.data_mut().facts = None;
        let result = {
            let fut = std::pin::pin!(f(&self.bindings, &mut self.store));
            backstop(now + budget.time + GRACE, &self.waits, fut).await
        };
        // A call owing more for its host calls than its fuel left fails like a guest loop,
        // whenever its epoch checks fell.
        let result =
            result.map(|r| r.and_then(|r| crate::charge::settle(&mut self.store).map(|()| r)));
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(classify(e, &self.store)),
            Err(_) => Err((
                Outcome::Timeout,
                "wall-time limit exceeded in a host call".into(),
            )),
        }
    }

    /// Arms the instance for `call` under `budget` (the call started at `now`) and leaves the
    /// call's facts in the store: the next call of the same transaction usually has the same
    /// ones, and then nothing is cloned or dropped. Returns the wall-time deadline of
    /// [`Self::invoke`].
    pub(crate) fn prepare(&mut self, call: &Call<'_>, budget: Budget, now: Instant) -> Instant {
        self.arm(budget, now);
        let facts = call.facts();
        let held = &mut self.store.data_mut().facts;
        if !matches!((&*held, facts), (Some(a), Some(b)) if a.same(b)) {
            *held = facts.cloned();
        }
        now + budget.time + GRACE
    }

    /// Calls the hook for `call`, prepared by [`Self::prepare`], with a wall-time backstop at
    /// `deadline`. The set-up is not in this future: every byte kept across its await is in
    /// each hook call's box (see [`backstop`]).
    pub(crate) async fn invoke(
        &mut self,
        call: &Call<'_>,
        deadline: Instant,
    ) -> Result<crate::validate::Raw, (Outcome, String)> {
        let result = {
            let fut = std::pin::pin!(call_hook(
                &mut self.store,
                &self.bindings,
                self.hooks.as_ref(),
                call
            ));
            backstop(deadline, &self.waits, fut).await
        };
        let result =
            result.map(|r| r.and_then(|d| crate::charge::settle(&mut self.store).map(|()| d)));
        match result {
            // The DSN parameters the hook set go with its decision (`added-recipients`).
            Ok(Ok(decision)) => Ok(crate::validate::Raw {
                decision,
                added: std::mem::take(&mut self.store.data_mut().added),
            }),
            Ok(Err(e)) => Err(classify(e, &self.store)),
            Err(_) => Err((
                Outcome::Timeout,
                "wall-time limit exceeded in a host call".into(),
            )),
        }
    }
}

/// The call into the instance for [`Live::invoke`].
async fn call_hook(
    store: &mut Store<HostState>,
    b: &Bindings,
    hooks: Option<&Hooks>,
    call: &Call<'_>,
) -> wasmtime::Result<wit::Decision> {
    // The password goes only to plugins granted `credentials`.
    let credentials = store.data().env.grants(Capability::Credentials);
    let lease = store.data().lease;
    let facts = call.facts();
    // Facts on demand: the plugin fetches through `context` what it does not hold.
    if let (Some(h), Some(f)) = (hooks, facts) {
        let stamp = f.stamp(lease);
        let d = match *call {
            Call::Connect(_) => Hooks::call(&h.connect, store, stamp).await,
            Call::Helo(_) => Hooks::call(&h.helo, store, stamp).await,
            Call::Mail(_) => Hooks::call(&h.mail, store, stamp).await,
            Call::Rcpt(_) => Hooks::call(&h.rcpt, store, stamp).await,
            Call::Data(_, m) => {
                let res = store
                    .data_mut()
                    .table
                    .push(HostMessage { data: m.clone() })?;
                let borrowed = Resource::new_borrow(res.rep());
                // Boxed (once per message): the largest call, it would set the size of
                // every hook's future (see [`backstop`]).
                let d = Box::pin(h.call_data(store, stamp, borrowed)).await;
                store.data_mut().table.delete(res)?;
                d
            }
            Call::Auth(..) => Err(wasmtime::Error::msg("auth has no facts")),
        };
        return d;
    }
    // The `plugin` world's hooks may still import `auth-results` (it reads the facts).
    let d = match *call {
        Call::Connect(f) => b.call_on_connect(&mut *store, &f.conn.0).await,
        Call::Helo(f) => b.call_on_helo(&mut *store, &f.conn.0).await,
        Call::Auth(c, full, redacted) => {
            let a = if credentials { full } else { redacted };
            b.call_on_auth(&mut *store, c, a).await
        }
        Call::Mail(f) => b.call_on_mail(&mut *store, &f.conn.0, f.envelope()?).await,
        Call::Rcpt(f) => {
            let r = f.recipient()?;
            b.call_on_rcpt(&mut *store, &f.conn.0, f.envelope()?, r)
                .await
        }
        Call::Data(f, m) => {
            let res = store
                .data_mut()
                .table
                .push(HostMessage { data: m.clone() })?;
            let borrowed = Resource::new_borrow(res.rep());
            let env = f.envelope()?;
            let d = Box::pin(b.call_on_data(&mut *store, &f.conn.0, env, borrowed)).await;
            store.data_mut().table.delete(res)?;
            d
        }
    };
    d
}

/// The arguments of one SMTP-stage hook, already converted to WIT types.
pub(crate) enum Call<'a> {
    Connect(&'a Facts),
    Helo(&'a Facts),
    /// The credentials with the password, and without it (for plugins not granted it).
    Auth(
        &'a wit::ConnectionInfo,
        &'a wit::AuthInfo,
        &'a wit::AuthInfo,
    ),
    Mail(&'a Facts),
    Rcpt(&'a Facts),
    Data(&'a Facts, &'a Arc<MessageData>),
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

    /// The facts of the call (all but `auth`, whose hook keeps its arguments).
    fn facts(&self) -> Option<&Facts> {
        match *self {
            Call::Connect(f) | Call::Helo(f) | Call::Mail(f) | Call::Rcpt(f) => Some(f),
            Call::Data(f, _) => Some(f),
            Call::Auth(..) => None,
        }
    }
}

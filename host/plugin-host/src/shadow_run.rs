//! The shadow plugins of one SMTP session, run off the session's path: after the chain decided
//! a stage, the session queues the stage's facts and the chain's verdict ([`Shadows::send`],
//! which never waits) for a task of its own, which calls the shadow plugins in order, on
//! their own instances, with their own limits and circuit breakers, and compares (see
//! [`crate::shadow`]). Nothing a shadow returns reaches the session: its verdict is only
//! compared, its modifications are dropped, and its failures and slowness cost the task's
//! time only. A session whose shadows fall behind by [`QUEUE`] stages skips them (counted).
//! Shadows hold at most a quarter of the engine's instances at once ([`Budget`]): beyond, a
//! shadow sits out the transaction (counted as skipped), so that shadows cannot leave the
//! active chain without instances. A queued `data` stage holds the message: at most
//! [`DATA_JOBS`] per session and a quarter of `total_memory_mb` across sessions; past either
//! the stage is skipped (counted).
//!
//! Each queued call has a private copy of the session's authentication results, taken when it
//! is queued ([`crate::auth_results::AuthShared::snapshot`]): a shadow's signing choice
//! (`sign-with`, `suppress-signing`) goes nowhere, and a call that runs late still reads its
//! own transaction's results.
//!
//! Instances live as on the active side: per hook call at `connect`, `helo` and `auth`, per
//! transaction from MAIL to its end.

use crate::bindings::corvid::plugin::types as wit;
use crate::context::Facts;
use crate::engine::EngineOptions;
use crate::generation::{Generation, LoadedPlugin};
use crate::hook::{call_plugin, Slot};
use crate::instance::Call;
use crate::manifest::FailurePolicy;
use crate::message::MessageData;
use crate::stats::ShadowOutcome;
use crate::warm;
use corvid_types::{Stage, Verdict};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Stages a session's shadow task may be behind the session before it skips them: more
/// than a transaction's stages at the default recipient limit's order of magnitude, and a
/// bound on what one session keeps alive for its shadows (facts each; of the `data` stages,
/// which hold the message, at most [`DATA_JOBS`]).
pub(crate) const QUEUE: usize = 64;

/// `data` stages a session may have queued for its shadows or being run by them: the one they
/// run and one waiting. Each holds the whole message, which the server's own accounting of
/// sessions does not see; further ones are skipped (counted).
pub(crate) const DATA_JOBS: usize = 2;

/// What all sessions' shadows may hold at once (shared by a host's sessions): instances, and
/// the octets of the messages queued for them.
pub(crate) struct Budget {
    in_use: AtomicUsize,
    cap: usize,
    bytes: AtomicUsize,
    byte_cap: usize,
}

impl Budget {
    /// A quarter of the engine's `max_instances` (at least one) and a quarter of its
    /// `total_memory_mb` in queued messages.
    pub(crate) fn new(options: &EngineOptions) -> Self {
        Budget {
            in_use: AtomicUsize::new(0),
            cap: usize::try_from(options.max_instances / 4)
                .unwrap_or(usize::MAX)
                .max(1),
            bytes: AtomicUsize::new(0),
            byte_cap: usize::try_from((options.total_memory_mb << 20) / 4).unwrap_or(usize::MAX),
        }
    }

    fn take(&self) -> bool {
        let more = |n: usize| (n < self.cap).then_some(n + 1);
        let r = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, more);
        r.is_ok()
    }

    fn give(&self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }

    fn take_bytes(&self, n: usize) -> bool {
        let more = |used: usize| used.checked_add(n).filter(|u| *u <= self.byte_cap);
        let r = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, more);
        r.is_ok()
    }

    fn give_bytes(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A queued `data` stage's share of the session's [`DATA_JOBS`] and of the host's message
/// octets, given back when the stage was run or its job dropped.
struct Held {
    budget: Arc<Budget>,
    session: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_bytes(self.bytes);
        self.session.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A hook call's arguments, owned (shared by reference count with the session).
enum Owned {
    Connect(Facts),
    Helo(Facts),
    /// The connection, and the credentials with and without the password.
    Auth(
        Arc<wit::ConnectionInfo>,
        Box<(wit::AuthInfo, wit::AuthInfo)>,
    ),
    Mail(Facts),
    Rcpt(Facts),
    Data(Facts, Arc<MessageData>),
}

/// The facts with a private copy of the authentication results (see the module's doc).
fn private(f: &Facts) -> Facts {
    Facts {
        auth: Arc::new(f.auth.snapshot()),
        ..f.clone()
    }
}

impl Owned {
    fn of(call: &Call<'_>) -> Self {
        match *call {
            Call::Connect(f) => Owned::Connect(private(f)),
            Call::Helo(f) => Owned::Helo(private(f)),
            Call::Auth(c, full, redacted) => Owned::Auth(
                Arc::new(c.clone()),
                Box::new((full.clone(), redacted.clone())),
            ),
            Call::Mail(f) => Owned::Mail(private(f)),
            Call::Rcpt(f) => Owned::Rcpt(private(f)),
            Call::Data(f, m) => Owned::Data(private(f), m.clone()),
        }
    }

    fn call(&self) -> Call<'_> {
        match self {
            Owned::Connect(f) => Call::Connect(f),
            Owned::Helo(f) => Call::Helo(f),
            Owned::Auth(c, creds) => Call::Auth(c, &creds.0, &creds.1),
            Owned::Mail(f) => Call::Mail(f),
            Owned::Rcpt(f) => Call::Rcpt(f),
            Owned::Data(f, m) => Call::Data(f, m),
        }
    }
}

enum Job {
    Stage {
        generation: Arc<Generation>,
        transaction: u32,
        call: Owned,
        chain: Verdict,
        /// A `data` stage's share of the message budgets.
        held: Option<Held>,
    },
    /// The transaction ended: its instances go back.
    End,
}

/// The session's side: the queue to its shadow task, started at the first shadowed stage.
pub(crate) struct Shadows {
    tx: Option<mpsc::Sender<Job>>,
    budget: Arc<Budget>,
    /// `data` stages queued or being run ([`DATA_JOBS`] at most).
    data_jobs: Arc<AtomicUsize>,
    /// The size of the message of the current `data` stage ([`Shadows::message_len`]).
    message_len: usize,
}

impl Shadows {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Shadows {
            tx: None,
            budget,
            data_jobs: Arc::default(),
            message_len: 0,
        }
    }

    /// The size of the message the next `data` stage carries, in octets.
    pub(crate) fn message_len(&mut self, len: usize) {
        self.message_len = len;
    }

    /// The shares of a `data` stage, if the session and the host have room for its message.
    fn hold(&self) -> Option<Held> {
        let bytes = self.message_len;
        if !self.budget.take_bytes(bytes) {
            return None;
        }
        let more = |n: usize| (n < DATA_JOBS).then_some(n + 1);
        let jobs = (self.data_jobs).fetch_update(Ordering::AcqRel, Ordering::Acquire, more);
        if jobs.is_err() {
            self.budget.give_bytes(bytes);
            return None;
        }
        Some(Held {
            budget: self.budget.clone(),
            session: self.data_jobs.clone(),
            bytes,
        })
    }

    /// Queues `call` for the shadow plugins of `generation`, with the chain's verdict.
    pub(crate) fn send(
        &mut self,
        generation: &Arc<Generation>,
        transaction: u32,
        call: &Call<'_>,
        chain: &Verdict,
        session: u64,
        listener: &str,
    ) {
        if self.tx.is_none() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (tx, rx) = mpsc::channel(QUEUE);
                let budget = self.budget.clone();
                rt.spawn(run(rx, listener.to_string(), session, budget));
                self.tx = Some(tx);
            }
        }
        let stage = call.stage();
        let held = match call {
            Call::Data(..) => match self.hold() {
                Some(h) => Some(h),
                None => return skipped(generation, stage, listener),
            },
            _ => None,
        };
        let job = Job::Stage {
            generation: generation.clone(),
            transaction,
            call: Owned::of(call),
            chain: chain.clone(),
            held,
        };
        let queued = self.tx.as_ref().is_some_and(|tx| tx.try_send(job).is_ok());
        if !queued {
            skipped(generation, stage, listener);
        }
    }

    /// The transaction ended (if the queue is full, the next transaction's first stage
    /// releases its instances instead).
    pub(crate) fn end_transaction(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Job::End);
        }
    }
}

/// Counts `stage` as skipped for the shadows of `generation` that take part in it.
fn skipped(generation: &Generation, stage: Stage, listener: &str) {
    let shadows = generation.plugins.iter().filter(|p| p.shadow());
    for p in shadows.filter(|p| p.applies(stage, listener)) {
        p.stats.shadow(stage, ShadowOutcome::Skipped);
    }
}

/// One shadow plugin in the current unit of work.
struct Shadow {
    plugin: Arc<LoadedPlugin>,
    slot: Slot,
    /// It holds a unit of the [`Budget`] (from its first call to the unit's end).
    held: bool,
    /// The budget was spent at its first call: it sits out the rest of the unit.
    out: bool,
}

/// The shadow plugins' instances in the current unit of work.
struct Txn {
    generation: Arc<Generation>,
    transaction: u32,
    shadows: Vec<Shadow>,
}

fn release(txn: &mut Option<Txn>, budget: &Budget) {
    let Some(t) = txn.take() else { return };
    for s in t.shadows {
        if let Slot::Live { live, .. } = s.slot {
            warm::release(&s.plugin, live);
        }
        if s.held {
            budget.give();
        }
    }
}

/// Calls the shadow at `stage`: its verdict, or its failure policy's and why it failed;
/// `None` when it sits out this unit of work.
async fn call(
    s: &mut Shadow,
    call: &Call<'_>,
    session: u64,
    budget: &Budget,
) -> Option<(Verdict, Option<&'static str>)> {
    if !s.held && !s.out {
        s.held = budget.take();
        s.out = !s.held;
    }
    if s.out {
        return None;
    }
    Some(
        match call_plugin(&s.plugin, &mut s.slot, call, session).await {
            // Its modifications are dropped here: a shadow changes nothing.
            Ok(d) => (d.verdict, None),
            Err(()) => {
                let why = match s.slot {
                    Slot::Bypassed => "bypassed: its circuit breaker is open",
                    _ => "the plugin failed (see the log); its failure policy stands",
                };
                let verdict = match s.plugin.manifest.failure_policy {
                    FailurePolicy::Tempfail => crate::session::policy_failure().verdict,
                    FailurePolicy::Continue => Verdict::Continue,
                };
                (verdict, Some(why))
            }
        },
    )
}

/// The session's shadow task: until the session is gone and its queue drained.
async fn run(mut rx: mpsc::Receiver<Job>, listener: String, session: u64, budget: Arc<Budget>) {
    let mut txn: Option<Txn> = None;
    while let Some(job) = rx.recv().await {
        let Job::Stage {
            generation,
            transaction,
            call: owned,
            chain,
            // Kept to the end of the stage: the message is held until then.
            held: _held,
        } = job
        else {
            release(&mut txn, &budget);
            continue;
        };
        let c = owned.call();
        let stage = c.stage();
        let per_call = matches!(stage, Stage::Connect | Stage::Helo | Stage::Auth);
        let current = matches!(&txn, Some(t) if t.transaction == transaction
            && Arc::ptr_eq(&t.generation, &generation));
        if per_call || !current {
            release(&mut txn, &budget);
        }
        let t = txn.get_or_insert_with(|| Txn {
            shadows: (generation.plugins.iter())
                .filter(|p| p.shadow())
                .map(|p| Shadow {
                    plugin: p.clone(),
                    slot: Slot::Empty,
                    held: false,
                    out: false,
                })
                .collect(),
            generation,
            transaction,
        });
        for s in &mut t.shadows {
            if !s.plugin.applies(stage, &listener) {
                continue;
            }
            match call(s, &c, session, &budget).await {
                Some((verdict, failure)) => {
                    crate::shadow::record(&s.plugin, stage, session, &chain, &verdict, failure)
                }
                None => s.plugin.stats.shadow(stage, ShadowOutcome::Skipped),
            }
        }
        if per_call {
            release(&mut txn, &budget);
        }
    }
    release(&mut txn, &budget);
}

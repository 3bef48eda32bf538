//! One plugin's SMTP-stage hook within a transaction: the circuit breaker, the instance, the
//! call under its budget, validation, stats and logs.

use crate::breaker::Admit;
use crate::generation::LoadedPlugin;
use crate::instance::{Call, Live};
use crate::manifest::{Capability, InstanceMode};
use crate::stats::Outcome;
use crate::validate;
use crate::warm;
use corvid_types::{Decision, Verdict};
use std::sync::Arc;
use std::time::Instant;

/// A plugin's place in the current transaction.
pub(crate) enum Slot {
    /// Not instantiated yet in this transaction.
    Empty,
    /// Its instance; `probe` when the breaker is half-open and this transaction tests it.
    Live { live: Box<Live>, probe: bool },
    /// Failed in this transaction: its failure policy applies to its remaining hooks.
    Failed,
    /// Its breaker is open: its failure policy applies, without an instance.
    Bypassed,
}

/// One plugin's hook. `Err` means "apply the failure policy" (the cause is already logged
/// and counted).
pub(crate) async fn call_plugin(
    p: &Arc<LoadedPlugin>,
    slot: &mut Slot,
    call: &Call<'_>,
    session: u64,
) -> Result<Decision, ()> {
    let stage = call.stage();
    let started = Instant::now();
    let name = p.manifest.name.as_str();
    let fail = |slot: &mut Slot, probe: bool, outcome: Outcome, detail: &str| {
        p.stats.record(stage, outcome, started.elapsed());
        *slot = Slot::Failed;
        if outcome == Outcome::Bypassed {
            // Stopped by the breaker's trip (logged once, by the breaker).
            return Err(());
        }
        // A shadow's failure policy is only what it is compared as: nothing is applied.
        let what = if p.shadow() {
            "shadow plugin failed"
        } else {
            "plugin failed, applying its failure policy"
        };
        tracing::warn!(
            plugin = name,
            stage = stage.as_str(),
            session,
            ?outcome,
            "{what}: {detail}"
        );
        if outcome != Outcome::Exhausted && p.breaker.failure(name, probe) {
            p.stats.tripped();
        }
        Err(())
    };
    // The wall-time limit counts from here; a new instance restarts it after instantiation.
    let mut now = started;
    if matches!(slot, Slot::Empty) {
        let probe = match p.breaker.admit() {
            Admit::Bypass => {
                *slot = Slot::Bypassed;
                false
            }
            Admit::Probe => true,
            Admit::Run => false,
        };
        if !matches!(slot, Slot::Bypassed) {
            // Boxed: instantiation is the cold path, and its future is large; inline it would
            // grow every warm call's future, which is moved (copied) at each call.
            match Box::pin(warm::acquire(p, session)).await {
                Ok(live) => {
                    *slot = Slot::Live { live, probe };
                    now = Instant::now();
                }
                Err((outcome, detail)) => return fail(slot, probe, outcome, &detail),
            }
        }
    }
    // The breaker opened since this transaction took its instance: bypass it from now on.
    if matches!(slot, Slot::Live { probe: false, .. }) && p.breaker.is_open() {
        *slot = Slot::Bypassed;
    }
    let (live, probe) = match slot {
        Slot::Live { live, probe } => (live, *probe),
        Slot::Bypassed => {
            p.stats.record(stage, Outcome::Bypassed, started.elapsed());
            return Err(());
        }
        // Failed earlier in this transaction (already counted and logged).
        _ => return Err(()),
    };
    let deadline = live.prepare(call, p.budget(), now);
    let raw = live.invoke(call, deadline).await;
    p.stats.fuel(stage, live.fuel_used());
    let raw = match raw {
        Ok(d) => d,
        Err((outcome, detail)) => return fail(slot, probe, outcome, &detail),
    };
    match validate::decision(stage, raw, p.env.grants(Capability::ReplaceBody)) {
        Ok(mut d) => {
            // The administrator must see which plugin held the message.
            if let Verdict::Quarantine(why) = &mut d.verdict {
                *why = format!("{name}: {why}");
            }
            p.stats
                .record(stage, validate::outcome(&d.verdict), started.elapsed());
            tracing::debug!(plugin = name, stage = stage.as_str(), session, verdict = ?d.verdict, "plugin decided");
            p.breaker.success(name, probe);
            if probe {
                if let Slot::Live { probe, .. } = slot {
                    *probe = false;
                }
            }
            // `instance = "call"`: back to the pool at once; the next hook borrows one again.
            if p.manifest.instance == InstanceMode::Call {
                if let Slot::Live { live, .. } = std::mem::replace(slot, Slot::Empty) {
                    warm::release(p, live);
                }
            }
            Ok(d)
        }
        Err(why) => fail(
            slot,
            probe,
            Outcome::Invalid,
            &format!("invalid decision refused: {why}"),
        ),
    }
}

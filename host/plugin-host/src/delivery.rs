//! The delivery-side hooks (`route`, `deferred`, `bounced`, `delivered`). Each call gets an
//! instance per plugin: a fresh one, or a warm one from the plugin's pool in `pool` mode. These stages cannot accept mail,
//! so a failing plugin is skipped (`continue`), whatever its failure policy; the cause is logged.
//! The request and answer types are `corvid-types`' delivery-policy seam.

use crate::bindings::corvid::plugin::types as wit;
use crate::breaker::Admit;
use crate::convert;
use crate::generation::LoadedPlugin;
use crate::instance::BoxedCall;
use crate::stats::Outcome;
use crate::warm;
use corvid_types::{BounceAction, Deferral, DeliveryInfo, Route, RouteRequest, Stage};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn host_name_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

pub(crate) fn route_answer(r: wit::RouteDecision) -> Result<Route, String> {
    Ok(match r {
        wit::RouteDecision::Continue => Route::Continue,
        wit::RouteDecision::Local => Route::Local,
        wit::RouteDecision::Mx(d) if host_name_ok(&d) => Route::Mx(d),
        wit::RouteDecision::Relay(h) if host_name_ok(&h.host) && h.port != 0 => Route::Relay {
            host: h.host,
            port: h.port,
        },
        wit::RouteDecision::Drop => Route::Drop,
        other => return Err(format!("malformed route {other:?}")),
    })
}

pub(crate) fn deferral_answer(d: wit::DeferredDecision) -> Deferral {
    match d {
        wit::DeferredDecision::Continue => Deferral::Continue,
        wit::DeferredDecision::RetryAfter(s) => {
            Deferral::RetryAfter(Duration::from_secs(u64::from(s).min(7 * 24 * 3600)))
        }
        wit::DeferredDecision::Bounce => Deferral::Bounce,
    }
}

pub(crate) fn bounce_answer(b: wit::BounceDecision) -> BounceAction {
    match b {
        wit::BounceDecision::Continue => BounceAction::Continue,
        wit::BounceDecision::Suppress => BounceAction::Suppress,
        wit::BounceDecision::Annotate(t) => BounceAction::Annotate(clean(&t, 1000)),
    }
}

pub(crate) fn info(i: &DeliveryInfo) -> wit::DeliveryInfo {
    wit::DeliveryInfo {
        queue_id: i.queue_id.clone(),
        sender: i.sender.as_ref().map(convert::address),
        recipient: convert::address(&i.recipient),
        attempt: i.attempt,
        remote_host: i.remote_host.clone(),
        reply: i.reply.as_ref().map(|r| wit::Reply {
            code: r.code,
            enhanced: r.enhanced.map(|e| e.to_string()).unwrap_or_default(),
            text: r.lines.join("\n"),
        }),
        reason: i.reason.clone(),
    }
}

pub(crate) fn request(r: &RouteRequest) -> wit::RouteRequest {
    wit::RouteRequest {
        queue_id: r.queue_id.clone(),
        sender: r.sender.as_ref().map(convert::address),
        recipient: convert::address(&r.recipient),
    }
}

/// Calls one plugin's delivery hook on a fresh instance; `None` means "skip it" (failure,
/// already logged and counted). `outcome` maps the answer to a stats bucket.
pub(crate) async fn call<R>(
    p: &Arc<LoadedPlugin>,
    stage: Stage,
    quarantined: Option<&str>,
    f: impl for<'a> FnOnce(
        &'a crate::bindings::Plugin,
        &'a mut wasmtime::Store<crate::state::HostState>,
    ) -> BoxedCall<'a, R>,
    outcome: impl FnOnce(&R) -> Outcome,
) -> Option<R> {
    let started = Instant::now();
    let name = p.manifest.name.as_str();
    let probe = match p.breaker.admit() {
        Admit::Bypass => {
            p.stats.record(stage, Outcome::Bypassed, started.elapsed());
            return None;
        }
        Admit::Probe => true,
        Admit::Run => false,
    };
    // `pool` (and `connection`) plugins get a warm instance, given back only when the call
    // succeeded; `transaction` ones a fresh instance per call.
    let result = match warm::acquire(p, 0).await {
        Ok(mut live) => {
            live.set_quarantined(quarantined);
            let r = live.run(p.budget(), f).await;
            p.stats.fuel(stage, live.fuel_used());
            if r.is_ok() {
                warm::release(p, live);
            }
            r
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => {
            p.stats.record(stage, outcome(&r), started.elapsed());
            p.breaker.success(name, probe);
            Some(r)
        }
        Err((o, detail)) => {
            p.stats.record(stage, o, started.elapsed());
            if o == Outcome::Bypassed {
                // Stopped by the breaker's trip (logged once, by the breaker).
                return None;
            }
            if o != Outcome::Exhausted && p.breaker.failure(name, probe) {
                p.stats.tripped();
            }
            tracing::warn!(plugin = %p.manifest.name, stage = stage.as_str(), outcome = ?o, "delivery hook failed, skipping the plugin: {detail}");
            None
        }
    }
}

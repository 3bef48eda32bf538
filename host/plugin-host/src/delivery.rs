//! The delivery-side hooks (`route`, `deferred`, `bounced`, `delivered`). Each call gets an
//! instance per plugin: a fresh one, or a warm one from the plugin's pool in `pool` mode. These stages cannot accept mail,
//! so a failing plugin is skipped (`continue`), whatever its failure policy; the cause is logged.
//! The request and answer types are `corvid-types`' delivery-policy seam.

use crate::bindings::corvid::plugin::types as wit;
use crate::bindings::Plugin;
use crate::breaker::Admit;
use crate::convert;
use crate::delivery_tls::DeliveryCall;
use crate::generation::LoadedPlugin;
use crate::instance::BoxedCall;
use crate::state::HostState;
use crate::stats::Outcome;
use crate::warm;
use corvid_types::delivery_call::{self, DeliveryTls, TlsPolicy};
use corvid_types::{BounceAction, Deferral, DeliveryInfo, Route, RouteRequest, Stage};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Store;

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

/// A call into an instance, as [`crate::instance::Live::run`] takes it.
trait HookCall<R>:
    for<'a> FnOnce(&'a Plugin, &'a mut Store<HostState>) -> BoxedCall<'a, R> + Send + 'static
{
}

impl<R, F> HookCall<R> for F where
    F: for<'a> FnOnce(&'a Plugin, &'a mut Store<HostState>) -> BoxedCall<'a, R> + Send + 'static
{
}

/// Makes a closure's signature the one [`HookCall`] needs (so that its return value is
/// boxed as a [`BoxedCall`]).
fn hook_call<R, F>(f: F) -> F
where
    F: for<'a> FnOnce(&'a Plugin, &'a mut Store<HostState>) -> BoxedCall<'a, R> + Send + 'static,
{
    f
}

/// `f` with the store serving the delivery hook call at `stage` (`delivery-tls`), and what
/// the hook asked at `route` taken back after it.
fn with_call<R: Send>(
    stage: Stage,
    tls: Option<&DeliveryTls>,
    f: impl HookCall<R>,
) -> impl HookCall<(R, Option<TlsPolicy>)> {
    let call = DeliveryCall::new(stage, tls);
    hook_call(move |b, s| {
        s.data_mut().delivery = Some(call);
        Box::pin(async move {
            let r = f(b, &mut *s).await;
            let asked = s.data_mut().delivery.take().and_then(|c| c.route_tls);
            r.map(|r| (r, asked))
        })
    })
}

/// Calls one plugin's delivery hook on a fresh instance; `None` means "skip it" (failure,
/// already logged and counted). `outcome` maps the answer to a stats bucket.
pub(crate) async fn call<R: Send>(
    p: &Arc<LoadedPlugin>,
    stage: Stage,
    quarantined: Option<&str>,
    f: impl for<'a> FnOnce(&'a Plugin, &'a mut Store<HostState>) -> BoxedCall<'a, R> + Send + 'static,
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
    // What the delivery hands over beside the arguments (`delivery-tls`).
    let facts = delivery_call::current();
    let tls = facts.as_ref().and_then(|f| f.tls().cloned());
    // `pool` (and `connection`) plugins get a warm instance, given back only when the call
    // succeeded; `transaction` ones a fresh instance per call.
    let result = match warm::acquire(p, 0).await {
        Ok(mut live) => {
            live.set_quarantined(quarantined);
            let r = live
                .run(p.budget(), with_call(stage, tls.as_ref(), f))
                .await;
            let r = r.map(|(r, route_tls)| {
                // At `route`: the TLS policy the plugin asked for goes back to the delivery.
                if let (Some(asked), Some(facts)) = (route_tls, facts.as_ref()) {
                    facts.ask_route_tls(asked);
                }
                r
            });
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

//! The delivery-side hooks (`route`, `deferred`, `bounced`, `delivered`). Each call gets a fresh
//! instance per plugin (there is no transaction to share one). These stages cannot accept mail,
//! so a failing plugin is skipped (`continue`), whatever its failure policy; the cause is logged.
//!
//! The request and answer types live here until `corvid-types` grows a delivery-policy seam.

use crate::bindings::corvid::plugin::types as wit;
use crate::convert;
use crate::generation::LoadedPlugin;
use crate::instance::{BoxedCall, Live};
use crate::stats::Outcome;
use corvid_types::{Address, Reply, Stage};
use std::time::{Duration, Instant};

/// The question of the `route` stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRequest {
    pub queue_id: String,
    pub sender: Option<Address>,
    pub recipient: Address,
}

/// Where mail for a recipient goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// No plugin decided: built-in routing (local domains, then MX).
    Continue,
    Local,
    /// MX lookup of this domain.
    Mx(String),
    /// A smarthost.
    Relay {
        host: String,
        port: u16,
    },
    /// Drop the recipient without a bounce.
    Drop,
}

/// What is known about a delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    pub queue_id: String,
    pub sender: Option<Address>,
    pub recipient: Address,
    pub attempt: u32,
    pub remote_host: Option<String>,
    pub reply: Option<Reply>,
    pub reason: String,
}

/// The answer of the `deferred` stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deferral {
    Continue,
    /// Retry after this delay (capped at 7 days).
    RetryAfter(Duration),
    /// Give up now and bounce.
    Bounce,
}

/// The answer of the `bounced` stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BounceAction {
    Continue,
    Suppress,
    /// Add this text to the DSN's human-readable part.
    Annotate(String),
}

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
    p: &LoadedPlugin,
    stage: Stage,
    f: impl for<'a> FnOnce(
        &'a crate::bindings::Plugin,
        &'a mut wasmtime::Store<crate::state::HostState>,
    ) -> BoxedCall<'a, R>,
    outcome: impl FnOnce(&R) -> Outcome,
) -> Option<R> {
    let started = Instant::now();
    let result = match Live::new(p, 0).await {
        Ok(mut live) => live.run(p.limit(), f).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => {
            p.stats.record(stage, outcome(&r), started.elapsed());
            Some(r)
        }
        Err((o, detail)) => {
            p.stats.record(stage, o, started.elapsed());
            tracing::warn!(plugin = %p.manifest.name, stage = stage.as_str(), outcome = ?o, "delivery hook failed, skipping the plugin: {detail}");
            None
        }
    }
}

//! Transport security at the delivery stages (`wit/delivery-tls.wit`, interface
//! `delivery-tls`): the TLS of the attempt a `deferred`, `bounced` or `delivered` hook is told
//! about, and the TLS policy a `route` hook asks for.
//!
//! The delivery hands both over through [`corvid_types::delivery_call`] (the `DeliveryPolicy`
//! methods keep their signatures); [`crate::delivery::call`] puts the call's part into the
//! store as a [`DeliveryCall`] before the hook runs and takes it back after.

use crate::state::HostState;
use corvid_types::delivery_call::{DeliveryTls, TlsPolicy};
use corvid_types::Stage;
use wasmtime::component::{ComponentType, Lift, Linker, Lower};

/// The interface name of `wit/delivery-tls.wit` (package `corvid:plugin@0.1.0`).
const DELIVERY_TLS: &str = "corvid:plugin/delivery-tls@0.1.0";

/// `tls-policy`, only ever made by the derived `Lift` from the guest's argument (which the
/// dead-code lint does not see).
#[allow(dead_code)]
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitTlsPolicy {
    #[component(name = "none")]
    None,
    #[component(name = "opportunistic")]
    Opportunistic,
    #[component(name = "verify")]
    Verify,
    #[component(name = "dane")]
    Dane,
    #[component(name = "dane-only")]
    DaneOnly,
}

impl From<WitTlsPolicy> for TlsPolicy {
    fn from(p: WitTlsPolicy) -> Self {
        match p {
            WitTlsPolicy::None => TlsPolicy::None,
            WitTlsPolicy::Opportunistic => TlsPolicy::Opportunistic,
            WitTlsPolicy::Verify => TlsPolicy::Verify,
            WitTlsPolicy::Dane => TlsPolicy::Dane,
            WitTlsPolicy::DaneOnly => TlsPolicy::DaneOnly,
        }
    }
}

#[derive(ComponentType, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub(crate) struct WitTlsResult {
    version: Option<String>,
    cipher: Option<String>,
    verified: bool,
    policy: String,
    source: Option<String>,
    #[component(name = "policy-domain")]
    policy_domain: Option<String>,
    failure: Option<String>,
}

impl From<&DeliveryTls> for WitTlsResult {
    fn from(t: &DeliveryTls) -> Self {
        WitTlsResult {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
            verified: t.verified,
            policy: t.policy.clone(),
            source: t.source.clone(),
            policy_domain: t.policy_domain.clone(),
            failure: t.failure.clone(),
        }
    }
}

/// The delivery hook call the store serves.
#[derive(Debug)]
pub(crate) struct DeliveryCall {
    pub(crate) stage: Stage,
    /// What `attempt-tls` answers (at `deferred`, `bounced`, `delivered`).
    pub(crate) tls: Option<WitTlsResult>,
    /// What `set-route-tls` asked (at `route`).
    pub(crate) route_tls: Option<TlsPolicy>,
}

impl DeliveryCall {
    /// The call at `stage`, with the attempt's TLS where the stage is told about one.
    pub(crate) fn new(stage: Stage, tls: Option<&DeliveryTls>) -> Self {
        let told = matches!(stage, Stage::Deferred | Stage::Bounced | Stage::Delivered);
        DeliveryCall {
            stage,
            tls: tls.filter(|_| told).map(WitTlsResult::from),
            route_tls: None,
        }
    }
}

/// Defines the `delivery-tls` import. `attempt-tls` answers `none` outside the delivery
/// stages; `set-route-tls` traps outside `route` (the ask would go nowhere).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(DELIVERY_TLS)?;
    i.func_wrap("attempt-tls", |store, (): ()| {
        let call = store.data().delivery.as_ref();
        Ok((call.and_then(|c| c.tls.clone()),))
    })?;
    i.func_wrap(
        "set-route-tls",
        |mut store, (policy,): (WitTlsPolicy,)| match store.data_mut().delivery.as_mut() {
            Some(c) if c.stage == Stage::Route => {
                c.route_tls = Some(policy.into());
                Ok(())
            }
            _ => Err(wasmtime::Error::msg(
                "delivery-tls.set-route-tls used outside the route stage",
            )),
        },
    )?;
    Ok(())
}

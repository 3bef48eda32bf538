//! Mail authentication as data (`wit/auth.wit`, interface `auth-results`): the results the
//! host computed (SPF at MAIL; DKIM, DMARC and ARC at the end of DATA) for every plugin of the
//! chain, and the DKIM signing choice a plugin makes for the current message.
//!
//! The session keeps one [`AuthShared`] per connection and hands it to each hook call (in its
//! [`crate::context::Facts`]); the imports read and write it. A shadow plugin's call gets a
//! copy of its own instead ([`AuthShared::snapshot`]). Each result is converted to its
//! WIT form once, when the server hands it over, not per plugin or per call.

use crate::state::HostState;
use corvid_types::{
    ArcCheck, ArcVerdict, AuthResults, DkimCheck, DkimVerdict, DmarcCheck, DmarcPolicy,
    DmarcVerdict, SigningChoice, SigningRequest, SpfCheck, SpfIdentity, SpfVerdict,
};
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::component::{ComponentType, Linker, Lower};

/// The interface name of `wit/auth.wit` (package `corvid:plugin@0.1.0`).
const AUTH: &str = "corvid:plugin/auth-results@0.1.0";

#[derive(ComponentType, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitSpfResult {
    #[component(name = "pass")]
    Pass,
    #[component(name = "fail")]
    Fail,
    #[component(name = "softfail")]
    Softfail,
    #[component(name = "neutral")]
    Neutral,
    #[component(name = "none")]
    None,
    #[component(name = "temperror")]
    Temperror,
    #[component(name = "permerror")]
    Permerror,
}

#[derive(ComponentType, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitSpfIdentity {
    #[component(name = "mailfrom")]
    Mailfrom,
    #[component(name = "helo")]
    Helo,
}

#[derive(ComponentType, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub(crate) struct WitSpf {
    result: WitSpfResult,
    domain: String,
    identity: WitSpfIdentity,
}

#[derive(ComponentType, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitDkimResult {
    #[component(name = "pass")]
    Pass,
    #[component(name = "fail")]
    Fail,
    #[component(name = "neutral")]
    Neutral,
    #[component(name = "temperror")]
    Temperror,
    #[component(name = "permerror")]
    Permerror,
    #[component(name = "not-checked")]
    NotChecked,
}

#[derive(ComponentType, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub(crate) struct WitDkimSignature {
    result: WitDkimResult,
    domain: String,
    selector: String,
    algorithm: String,
}

/// `dmarc-result` and `arc-result` have the same cases.
#[derive(ComponentType, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitResult {
    #[component(name = "pass")]
    Pass,
    #[component(name = "fail")]
    Fail,
    #[component(name = "none")]
    None,
    #[component(name = "temperror")]
    Temperror,
    #[component(name = "permerror")]
    Permerror,
}

#[derive(ComponentType, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitDmarcPolicy {
    #[component(name = "none")]
    None,
    #[component(name = "quarantine")]
    Quarantine,
    #[component(name = "reject")]
    Reject,
}

#[derive(ComponentType, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub(crate) struct WitDmarc {
    result: WitResult,
    policy: WitDmarcPolicy,
    domain: String,
    pct: u8,
    #[component(name = "spf-aligned")]
    spf_aligned: bool,
    #[component(name = "dkim-aligned")]
    dkim_aligned: bool,
}

#[derive(ComponentType, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(record)]
pub(crate) struct WitArc {
    result: WitResult,
    sets: u32,
}

fn spf(c: &SpfCheck) -> WitSpf {
    WitSpf {
        result: match c.result {
            SpfVerdict::Pass => WitSpfResult::Pass,
            SpfVerdict::Fail => WitSpfResult::Fail,
            SpfVerdict::Softfail => WitSpfResult::Softfail,
            SpfVerdict::Neutral => WitSpfResult::Neutral,
            SpfVerdict::None => WitSpfResult::None,
            SpfVerdict::Temperror => WitSpfResult::Temperror,
            SpfVerdict::Permerror => WitSpfResult::Permerror,
        },
        domain: c.domain.clone(),
        identity: match c.identity {
            SpfIdentity::Mailfrom => WitSpfIdentity::Mailfrom,
            SpfIdentity::Helo => WitSpfIdentity::Helo,
        },
    }
}

fn dkim(c: &DkimCheck) -> WitDkimSignature {
    WitDkimSignature {
        result: match c.result {
            DkimVerdict::Pass => WitDkimResult::Pass,
            DkimVerdict::Fail => WitDkimResult::Fail,
            DkimVerdict::Neutral => WitDkimResult::Neutral,
            DkimVerdict::Temperror => WitDkimResult::Temperror,
            DkimVerdict::Permerror => WitDkimResult::Permerror,
            DkimVerdict::NotChecked => WitDkimResult::NotChecked,
        },
        domain: c.domain.clone(),
        selector: c.selector.clone(),
        algorithm: c.algorithm.clone(),
    }
}

fn dmarc(c: &DmarcCheck) -> WitDmarc {
    WitDmarc {
        result: match c.result {
            DmarcVerdict::Pass => WitResult::Pass,
            DmarcVerdict::Fail => WitResult::Fail,
            DmarcVerdict::None => WitResult::None,
            DmarcVerdict::Temperror => WitResult::Temperror,
            DmarcVerdict::Permerror => WitResult::Permerror,
        },
        policy: match c.policy {
            DmarcPolicy::None => WitDmarcPolicy::None,
            DmarcPolicy::Quarantine => WitDmarcPolicy::Quarantine,
            DmarcPolicy::Reject => WitDmarcPolicy::Reject,
        },
        domain: c.from_domain.clone(),
        pct: c.pct,
        spf_aligned: c.spf_aligned,
        dkim_aligned: c.dkim_aligned,
    }
}

fn arc(c: &ArcCheck) -> WitArc {
    WitArc {
        result: match c.result {
            ArcVerdict::Pass => WitResult::Pass,
            ArcVerdict::Fail => WitResult::Fail,
            ArcVerdict::None => WitResult::None,
            ArcVerdict::Temperror => WitResult::Temperror,
            ArcVerdict::Permerror => WitResult::Permerror,
        },
        sets: c.sets,
    }
}

/// The results of the end of DATA in their WIT form.
#[derive(Clone, Debug, Default)]
struct MessageResults {
    dkim: Vec<WitDkimSignature>,
    dmarc: Option<WitDmarc>,
    arc: Option<WitArc>,
}

#[derive(Debug, Default)]
struct Inner {
    spf: Option<WitSpf>,
    message: MessageResults,
    signing: SigningRequest,
}

/// One connection's results and signing choice, shared by the session and the stores of its
/// hook calls.
#[derive(Debug, Default)]
pub(crate) struct AuthShared(Mutex<Inner>);

impl AuthShared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the data is plain values.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `PolicySession::auth_results` hands over: SPF at MAIL (which also clears the
    /// message results of an earlier transaction), everything at the end of DATA.
    pub(crate) fn set(&self, spf_check: Option<&SpfCheck>, message: Option<&AuthResults>) {
        let mut g = self.lock();
        g.spf = spf_check.map(spf);
        g.message = match message {
            Some(m) => MessageResults {
                dkim: m.dkim.iter().map(dkim).collect(),
                dmarc: Some(dmarc(&m.dmarc)),
                arc: Some(arc(&m.arc)),
            },
            None => MessageResults::default(),
        };
    }

    /// A new transaction: no signing choice yet; results of the previous message forgotten
    /// (the server hands SPF over again before the mail hook when it checks this client).
    pub(crate) fn new_transaction(&self) {
        let mut g = self.lock();
        g.signing = SigningRequest::Default;
        g.spf = None;
        g.message = MessageResults::default();
    }

    /// A private copy for a shadow plugin's call ([`crate::shadow_run`]), taken when the call
    /// is queued: the results as they are now, the signing choice at its default. What the
    /// shadow chooses stays in the copy (it must never change how the real message is
    /// signed), and a call that runs late reads the results of its own transaction.
    pub(crate) fn snapshot(&self) -> AuthShared {
        let g = self.lock();
        AuthShared(Mutex::new(Inner {
            spf: g.spf.clone(),
            message: g.message.clone(),
            signing: SigningRequest::Default,
        }))
    }

    /// The signing choice of the current message (`PolicySession::signing`).
    pub(crate) fn signing(&self) -> SigningRequest {
        self.lock().signing.clone()
    }
}

fn shared(store: &wasmtime::StoreContextMut<'_, HostState>) -> wasmtime::Result<Arc<AuthShared>> {
    store
        .data()
        .facts
        .as_ref()
        .map(|f| f.auth.clone())
        .ok_or_else(|| wasmtime::Error::msg("auth-results used outside an SMTP hook"))
}

/// Defines the `auth-results` import. Reading or choosing outside an SMTP hook (at a delivery
/// hook, or during `configure`) traps: there is no message.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(AUTH)?;
    i.func_wrap("get-spf", |mut store, (): ()| {
        store.data_mut().count_call();
        Ok((shared(&store)?.lock().spf.clone(),))
    })?;
    i.func_wrap("get-dkim", |mut store, (): ()| {
        store.data_mut().count_call();
        Ok((shared(&store)?.lock().message.dkim.clone(),))
    })?;
    i.func_wrap("get-dmarc", |mut store, (): ()| {
        store.data_mut().count_call();
        Ok((shared(&store)?.lock().message.dmarc.clone(),))
    })?;
    i.func_wrap("get-arc", |mut store, (): ()| {
        store.data_mut().count_call();
        Ok((shared(&store)?.lock().message.arc,))
    })?;
    i.func_wrap(
        "sign-with",
        |store, (domain, selector): (Option<String>, Option<String>)| {
            shared(&store)?.lock().signing =
                SigningRequest::Choose(SigningChoice { domain, selector });
            Ok(())
        },
    )?;
    i.func_wrap("suppress-signing", |mut store, (): ()| {
        store.data_mut().count_call();
        shared(&store)?.lock().signing = SigningRequest::Suppress;
        Ok(())
    })?;
    i.func_wrap("default-signing", |mut store, (): ()| {
        store.data_mut().count_call();
        shared(&store)?.lock().signing = SigningRequest::Default;
        Ok(())
    })?;
    Ok(())
}

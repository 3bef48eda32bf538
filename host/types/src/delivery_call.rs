//! What one call of a [`DeliveryPolicy`] method learns and answers beyond its arguments: the
//! TLS of the attempt it is told about (`deferred`, `bounced`, `delivered`) and the TLS policy
//! a `route` answer asks for (the plugins' `delivery-tls` import, `wit/delivery-tls.wit`).
//!
//! The trait's signatures stay as they are, so every implementation and test fake keeps
//! compiling: the delivery runs the call [`within`] a [`CallFacts`], and an implementation
//! that wants them reads [`current`] while the call runs (a task-local, as tokio's, made of a
//! thread-local set around each poll of the call's future).
//!
//! [`DeliveryPolicy`]: crate::DeliveryPolicy

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The transport security of one delivery attempt to a next hop, as the queue records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryTls {
    /// `TLSv1_3`, `TLSv1_2`; `None` in clear text or when no session opened.
    pub version: Option<String>,
    /// The negotiated cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: Option<String>,
    /// The certificate was verified for the host name connected to (WebPKI or DANE).
    pub verified: bool,
    /// The policy that decided: `none`, `opportunistic`, `verify`, `encrypt`, `mta-sts`,
    /// `dane`, `dane-only`.
    pub policy: String,
    /// Where the policy came from: `config`, `default`, `plugin`, `tlsa`; for MTA-STS its
    /// mode and how it was found, e.g. `enforce, cached`.
    pub source: Option<String>,
    /// The domain whose policy it is (the recipient domain for MTA-STS and DANE).
    pub policy_domain: Option<String>,
    /// What failed, when something did.
    pub failure: Option<String>,
}

/// A next hop's TLS policy, by the names of a route's `tls` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    None,
    Opportunistic,
    Verify,
    Dane,
    DaneOnly,
}

impl TlsPolicy {
    /// How strict a policy is: `none` < `opportunistic` < `verify` = `dane` < `dane-only`.
    /// `verify` and `dane` both authenticate the next hop (by WebPKI, by TLSA records) and
    /// neither replaces the other.
    pub fn strictness(self) -> u8 {
        match self {
            TlsPolicy::None => 0,
            TlsPolicy::Opportunistic => 1,
            TlsPolicy::Verify | TlsPolicy::Dane => 2,
            TlsPolicy::DaneOnly => 3,
        }
    }
}

/// The facts of one delivery-policy call; see the module documentation.
#[derive(Debug, Default)]
pub struct CallFacts {
    tls: Option<DeliveryTls>,
    route_tls: Mutex<Option<TlsPolicy>>,
}

impl CallFacts {
    /// For a `deferred`, `bounced` or `delivered` call: the attempt's TLS, if a next hop was
    /// tried.
    pub fn attempt(tls: Option<DeliveryTls>) -> Arc<CallFacts> {
        Arc::new(CallFacts {
            tls,
            route_tls: Mutex::new(None),
        })
    }

    /// The attempt's TLS.
    pub fn tls(&self) -> Option<&DeliveryTls> {
        self.tls.as_ref()
    }

    /// At `route`: the policy asks for `policy` for the recipient. Of several asks (plugins
    /// of one chain) the strictest stays, so that a later plugin never loosens what an
    /// earlier one asked for; on a tie (`verify`, `dane`) the earlier one.
    pub fn ask_route_tls(&self, policy: TlsPolicy) {
        // A poisoned lock only means a panic elsewhere; the value is a plain enum.
        let mut asked = self.route_tls.lock().unwrap_or_else(|e| e.into_inner());
        if asked.is_none_or(|a| policy.strictness() > a.strictness()) {
            *asked = Some(policy);
        }
    }

    /// What the `route` call asked for, if anything.
    pub fn route_tls(&self) -> Option<TlsPolicy> {
        *self.route_tls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<CallFacts>>> = const { RefCell::new(None) };
}

/// The facts of the delivery-policy call being polled on this thread, if any.
pub fn current() -> Option<Arc<CallFacts>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `fut` (a [`crate::DeliveryPolicy`] call) with `facts` as [`current`].
pub fn within<F: Future>(facts: Arc<CallFacts>, fut: F) -> Within<F> {
    Within {
        facts,
        fut: Box::pin(fut),
    }
}

/// The future of [`within`].
pub struct Within<F> {
    facts: Arc<CallFacts>,
    fut: Pin<Box<F>>,
}

/// Puts back the facts of an enclosing call when a poll ends, also by a panic.
struct Restore(Option<Arc<CallFacts>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

impl<F: Future> Future for Within<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let previous = CURRENT.with(|c| c.replace(Some(Arc::clone(&this.facts))));
        let _restore = Restore(previous);
        this.fut.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Polls `fut` once (the futures here never wait).
    fn run<F: Future>(fut: F) -> F::Output {
        let mut fut = Box::pin(fut);
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn the_facts_are_current_only_during_the_call() {
        let tls = DeliveryTls {
            version: Some("TLSv1_3".into()),
            verified: true,
            policy: "verify".into(),
            ..DeliveryTls::default()
        };
        let facts = CallFacts::attempt(Some(tls.clone()));
        let seen = run(within(Arc::clone(&facts), async {
            let f = current().expect("current during the call");
            f.ask_route_tls(TlsPolicy::Opportunistic);
            f.ask_route_tls(TlsPolicy::Verify);
            // A nested call sees its own facts, and the outer ones come back after it.
            let inner = run(within(CallFacts::attempt(None), async {
                current().and_then(|f| f.tls().cloned())
            }));
            (f.tls().cloned(), inner, current().is_some())
        }));
        assert_eq!(seen, (Some(tls), None, true));
        assert!(current().is_none());
        assert_eq!(facts.route_tls(), Some(TlsPolicy::Verify));
    }

    #[test]
    fn of_several_asks_the_strictest_stays() {
        let facts = CallFacts::attempt(None);
        facts.ask_route_tls(TlsPolicy::DaneOnly);
        facts.ask_route_tls(TlsPolicy::Opportunistic);
        facts.ask_route_tls(TlsPolicy::None);
        assert_eq!(facts.route_tls(), Some(TlsPolicy::DaneOnly));
        // A tie keeps the earlier ask.
        let facts = CallFacts::attempt(None);
        facts.ask_route_tls(TlsPolicy::Dane);
        facts.ask_route_tls(TlsPolicy::Verify);
        assert_eq!(facts.route_tls(), Some(TlsPolicy::Dane));
    }
}

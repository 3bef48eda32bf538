//! A process-wide observer of events worth counting (connections, transactions, TLS handshakes,
//! AUTH failures, deliveries), so that every crate can report them with one line and without
//! depending on a metrics library. The binary installs the real observer (its Prometheus
//! registry) once at start; until then, and in tests, every report goes to a no-op.

use crate::Reply;
use std::sync::OnceLock;

/// Receives the events. Every method defaults to doing nothing, so an observer implements only
/// what it exports. Calls come from the SMTP and delivery paths: they must be cheap and must
/// not block (atomic increments, no I/O).
pub trait Observer: Send + Sync {
    /// A connection was accepted on `listener` (refused ones, over the connection limits,
    /// included: they are still connections the listener took).
    fn connection(&self, _listener: &str) {}

    /// A message transaction ended with `reply` (the reply to the end of DATA or BDAT LAST:
    /// accepted, discarded, refused or failed).
    fn transaction(&self, _listener: &str, _reply: &Reply) {}

    /// A TLS handshake (STARTTLS or implicit TLS) completed with `version` ("TLSv1.3"), or
    /// failed (`version` = "failed").
    fn tls_handshake(&self, _listener: &str, _version: &str) {}

    /// An AUTH attempt failed with bad credentials (535).
    fn auth_failure(&self, _listener: &str) {}

    /// A delivery attempt for one recipient ended: `outcome` is `delivered`, `deferred`,
    /// `failed` or `expired`; `destination` is the route as the queue records it (`local`,
    /// `mx:example.org`, `smtp://host:port`, `lmtp://host:port`, `lmtp:unix:/path`); an
    /// observer that exports it keeps only the kind (the part before the first `:`).
    fn delivery(&self, _outcome: &str, _destination: &str) {}
}

struct Nothing;
impl Observer for Nothing {}

static OBSERVER: OnceLock<Box<dyn Observer>> = OnceLock::new();

/// Installs the process's observer. Only the first call wins (returns `false` afterwards):
/// counters must not be split between two registries.
pub fn install(observer: Box<dyn Observer>) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// The installed observer, or a no-op one.
pub fn observer() -> &'static dyn Observer {
    static NOTHING: Nothing = Nothing;
    match OBSERVER.get() {
        Some(o) => o.as_ref(),
        None => &NOTHING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Count(&'static AtomicU64);
    impl Observer for Count {
        fn auth_failure(&self, _listener: &str) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn reports_reach_the_installed_observer_and_only_the_first_install_wins() {
        static N: AtomicU64 = AtomicU64::new(0);
        static M: AtomicU64 = AtomicU64::new(0);
        observer().connection("smtp"); // no observer yet: nothing happens
        assert!(install(Box::new(Count(&N))));
        assert!(!install(Box::new(Count(&M))));
        observer().auth_failure("submission");
        observer().connection("smtp"); // not implemented by Count: the default no-op
        assert_eq!(N.load(Ordering::Relaxed), 1);
        assert_eq!(M.load(Ordering::Relaxed), 0);
    }
}

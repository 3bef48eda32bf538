//! The TLS-RPT counters (RFC 8460) kept in the queue store, so that a restart before the
//! daily report does not lose the period's counts: [`crate::tlsrpt::TlsCounters`] writes a
//! domain's counts through after each attempt and reads them all back at start.

use crate::tlsrpt::DomainCounts;
use corvid_queue::Spool;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// [`DomainCounts`] as stored: JSON has no tuple keys, so the details are a list.
#[derive(Serialize, Deserialize)]
struct Stored {
    policy_type: String,
    policy_string: Vec<String>,
    mx_host: Vec<String>,
    success: u64,
    failure: u64,
    /// (result type, receiving MX host, sessions).
    details: Vec<(String, String, u64)>,
    #[serde(default)]
    since: u64,
}

/// One domain's counts, serialized for [`Spool::set_tlsrpt_counts`].
pub(crate) fn encode(c: &DomainCounts) -> Vec<u8> {
    let stored = Stored {
        policy_type: c.policy_type.clone(),
        policy_string: c.policy_string.clone(),
        mx_host: c.mx_host.clone(),
        success: c.success,
        failure: c.failure,
        details: c
            .details
            .iter()
            .map(|((kind, mx), n)| (kind.clone(), mx.clone(), *n))
            .collect(),
        since: c.since,
    };
    // A struct of strings and integers always serializes.
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Result<DomainCounts, serde_json::Error> {
    let s: Stored = serde_json::from_slice(bytes)?;
    Ok(DomainCounts {
        policy_type: s.policy_type,
        policy_string: s.policy_string,
        mx_host: s.mx_host,
        success: s.success,
        failure: s.failure,
        details: s
            .details
            .into_iter()
            .map(|(kind, mx, n)| ((kind, mx), n))
            .collect(),
        since: s.since,
    })
}

/// Every domain's counts the store holds; unreadable entries are logged and skipped (they
/// are only statistics).
pub(crate) fn load(store: &dyn Spool) -> HashMap<String, DomainCounts> {
    let entries = match store.tlsrpt_counts() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored TLS-RPT counts");
            return HashMap::new();
        }
    };
    entries
        .into_iter()
        .filter_map(|(domain, bytes)| match decode(&bytes) {
            Ok(c) => Some((domain, c)),
            Err(e) => {
                tracing::warn!(%domain, error = %e, "skipping unreadable TLS-RPT counts");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::tlsrpt::{Session, TlsCounters};
    use corvid_queue::{SledSpool, Spool};
    use std::sync::Arc;

    fn session<'a>(domain: &'a str, failure: Option<&'static str>) -> Session<'a> {
        Session {
            domain,
            policy: None,
            mx: "mx.far.test",
            failure,
            tlsa: false,
        }
    }

    #[tokio::test]
    async fn counts_survive_a_restart_until_taken() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SledSpool::open(dir.path()).unwrap();
        let counters = TlsCounters::with_store(Arc::clone(&spool) as Arc<dyn Spool>);
        counters.count(session("Far.test", None));
        counters.count(session("far.test", Some("certificate-expired")));
        counters.count(session("other.test", None));
        drop(counters);
        spool.sync().await.unwrap();
        drop(spool);

        let spool = SledSpool::open(dir.path()).unwrap();
        let counters = TlsCounters::with_store(Arc::clone(&spool) as Arc<dyn Spool>);
        assert_eq!(counters.of("far.test"), (1, 1));
        assert_eq!(counters.of("other.test"), (1, 0));
        counters.count(session("far.test", None));
        assert_eq!(counters.of("far.test"), (2, 1));
        let taken = counters.take();
        assert_eq!(taken["other.test"].success, 1);
        let far = &taken["far.test"];
        assert_eq!(
            far.details[&("certificate-expired".into(), "mx.far.test".into())],
            1
        );
        assert!(far.since > 0 && far.since <= crate::tlsrpt::now_secs());
        assert_eq!(far.policy_type, "no-policy-found");
        drop(counters);
        spool.sync().await.unwrap();
        drop(spool);

        // Taking a period cleared the store too.
        let spool = SledSpool::open(dir.path()).unwrap();
        let counters = TlsCounters::with_store(spool as Arc<dyn Spool>);
        assert_eq!(counters.of("far.test"), (0, 0));
    }
}

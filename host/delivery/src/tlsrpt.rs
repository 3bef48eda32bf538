//! TLS-RPT (RFC 8460): per policy domain, how many TLS sessions succeeded and failed, and the
//! failures by kind, for the aggregate report (4: JSON, gzip-compressed for mail, 5.3).
//!
//! Counted once per attempt to a remote MX (not per recipient): a session that negotiated TLS
//! (and, under an MTA-STS policy, verified) is a success; a certificate that failed a required
//! check, a missing STARTTLS under a policy, an MX the policy does not list and a policy that
//! could not be fetched are failures.
//!
//! With a store (the queue, [`TlsCounters::with_store`]) the counts outlive a restart: each
//! count writes its domain's counts through (`tlsrpt_persist.rs`), and taking a period clears
//! them.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The counts of one policy domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainCounts {
    /// `tlsa`, `sts` or `no-policy-found` (RFC 8460 4.4), as of the latest attempt.
    pub policy_type: String,
    /// The policy text's lines (4.4 `policy-string`), for `sts`.
    pub policy_string: Vec<String>,
    pub mx_host: Vec<String>,
    pub success: u64,
    pub failure: u64,
    /// (result type, receiving MX host) → sessions.
    pub details: HashMap<(String, String), u64>,
    /// Unix seconds of the first session counted in this period (0: none yet); a report's
    /// period starts no later (the counts may predate a restart).
    pub since: u64,
}

/// One attempt's result for the counters.
pub struct Session<'a> {
    pub domain: &'a str,
    /// The MTA-STS policy that applied: its `mx` patterns and mode line, if any.
    pub policy: Option<&'a crate::mta_sts::Policy>,
    pub mx: &'a str,
    /// `None` for success, else the RFC 8460 4.3 result type.
    pub failure: Option<&'static str>,
    /// DANE (the MX host's TLSA records) decided the session: policy type `tlsa` (4.4).
    pub tlsa: bool,
}

/// The counters since the last report.
#[derive(Default)]
pub struct TlsCounters {
    domains: Mutex<HashMap<String, DomainCounts>>,
    /// Where the counts are kept across restarts, if anywhere.
    store: Option<Arc<dyn corvid_queue::Spool>>,
}

impl TlsCounters {
    /// Counters kept in `store` too, starting from what it holds (the period a restart
    /// interrupted).
    pub fn with_store(store: Arc<dyn corvid_queue::Spool>) -> Self {
        TlsCounters {
            domains: Mutex::new(crate::tlsrpt_persist::load(store.as_ref())),
            store: Some(store),
        }
    }

    /// Counts one attempt. With a store, one small write of the domain's counts (not synced:
    /// it becomes durable with the queue's next commit, see `Spool::set_tlsrpt_counts`).
    pub fn count(&self, s: Session<'_>) {
        let mut map = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        let domain = s.domain.to_ascii_lowercase();
        let c = map.entry(domain.clone()).or_default();
        if c.since == 0 {
            c.since = now_secs();
        }
        match s.policy {
            _ if s.tlsa => c.policy_type = "tlsa".into(),
            Some(p) => {
                c.policy_type = "sts".into();
                c.policy_string = policy_lines(p);
                c.mx_host = p.mx.clone();
            }
            None if c.policy_type.is_empty() => c.policy_type = "no-policy-found".into(),
            None => {}
        }
        match s.failure {
            None => c.success += 1,
            Some(kind) => {
                c.failure += 1;
                *c.details
                    .entry((kind.to_string(), s.mx.to_string()))
                    .or_default() += 1;
            }
        }
        if let Some(store) = &self.store {
            // Under the lock, so the stored counts are written in the order they were made.
            if let Err(e) = store.set_tlsrpt_counts(&domain, &crate::tlsrpt_persist::encode(c)) {
                tracing::warn!(%domain, error = %e, "cannot store the TLS-RPT counts");
            }
        }
    }

    /// (successes, failures) of a domain so far.
    pub fn of(&self, domain: &str) -> (u64, u64) {
        let map = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&domain.to_ascii_lowercase())
            .map_or((0, 0), |c| (c.success, c.failure))
    }

    /// Everything counted, and the counters start over (one report period ends), in the store
    /// too (not synced on its own: a crash before the next commit counts them again).
    pub fn take(&self) -> HashMap<String, DomainCounts> {
        let mut map = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = &self.store {
            if let Err(e) = store.clear_tlsrpt_counts() {
                tracing::warn!(error = %e, "cannot clear the stored TLS-RPT counts");
            }
        }
        std::mem::take(&mut *map)
    }
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn policy_lines(p: &crate::mta_sts::Policy) -> Vec<String> {
    let mut lines = vec![
        "version: STSv1".to_string(),
        format!("mode: {}", p.mode.as_str()),
    ];
    lines.extend(p.mx.iter().map(|m| format!("mx: {m}")));
    lines.push(format!("max_age: {}", p.max_age));
    lines
}

/// The RFC 8460 result type of a TLS failure text (4.3.2: negotiation failures).
pub fn result_type(failure: &str) -> &'static str {
    let f = failure.to_ascii_lowercase();
    if f.contains("not valid for name") || f.contains("notvalidforname") {
        "certificate-host-mismatch"
    } else if f.contains("expired") {
        "certificate-expired"
    } else if f.contains("unknownissuer")
        || f.contains("unknown issuer")
        || f.contains("self-signed")
    {
        "certificate-not-trusted"
    } else if f.contains("starttls") {
        "starttls-not-supported"
    } else if f.contains("policy fetch") {
        "sts-policy-fetch-error"
    } else {
        "validation-failure"
    }
}

/// The RFC 8460 4.3 result type of a failure under DANE: a bogus or failed TLSA lookup is
/// `dnssec-invalid` (4.3.1), `dane-only` without usable records `dane-required`, a
/// certificate that matches no record `tlsa-invalid`; otherwise as [`result_type`].
pub fn dane_result_type(failure: &str) -> &'static str {
    let f = failure.to_ascii_lowercase();
    if f.contains("dane-only") {
        "dane-required"
    } else if f.contains("dane:") {
        "dnssec-invalid"
    } else if f.contains("certificate") {
        "tlsa-invalid"
    } else {
        result_type(failure)
    }
}

/// Who reports, and the period (RFC 3339 times).
pub struct ReportMeta<'a> {
    pub organization: &'a str,
    pub contact: &'a str,
    pub report_id: &'a str,
    pub start: &'a str,
    pub end: &'a str,
}

/// The aggregate report (RFC 8460 4.4) for one policy domain.
pub fn report(meta: &ReportMeta<'_>, domain: &str, c: &DomainCounts) -> Value {
    let mut details: Vec<_> = c.details.iter().collect();
    details.sort();
    let failures: Vec<Value> = details
        .into_iter()
        .map(|((kind, mx), n)| {
            json!({
                "result-type": kind,
                "receiving-mx-hostname": mx,
                "failed-session-count": n,
            })
        })
        .collect();
    let mut policy = json!({
        "policy-type": c.policy_type,
        "policy-domain": domain,
    });
    if !c.policy_string.is_empty() {
        policy["policy-string"] = json!(c.policy_string);
        policy["mx-host"] = json!(c.mx_host);
    }
    json!({
        "organization-name": meta.organization,
        "date-range": { "start-datetime": meta.start, "end-datetime": meta.end },
        "contact-info": meta.contact,
        "report-id": meta.report_id,
        "policies": [{
            "policy": policy,
            "summary": {
                "total-successful-session-count": c.success,
                "total-failure-session-count": c.failure,
            },
            "failure-details": failures,
        }],
    })
}

/// The report as mailed: gzip-compressed JSON (RFC 8460 5.3, `application/tlsrpt+gzip`).
pub fn gzip(report: &Value) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(report.to_string().as_bytes())?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta_sts::{Mode, Policy};
    use std::io::Read;

    #[test]
    fn counts_and_a_report_that_parses() {
        let counters = TlsCounters::default();
        let policy = Policy {
            mode: Mode::Enforce,
            mx: vec!["mx.far.test".into()],
            max_age: 86400,
        };
        let ok = |failure| Session {
            domain: "Far.test",
            policy: Some(&policy),
            mx: "mx.far.test",
            failure,
            tlsa: false,
        };
        counters.count(ok(None));
        counters.count(ok(None));
        counters.count(ok(Some(result_type(
            "invalid peer certificate: certificate not valid for name \"mx.far.test\"",
        ))));
        counters.count(Session {
            domain: "plain.test",
            policy: None,
            mx: "mx.plain.test",
            failure: None,
            tlsa: false,
        });
        counters.count(Session {
            domain: "dane.test",
            policy: None,
            mx: "mx.dane.test",
            failure: Some(dane_result_type(
                "DANE: TLSA lookup for _25._tcp.mx.dane.test: bogus",
            )),
            tlsa: true,
        });
        assert_eq!(counters.of("far.test"), (2, 1));
        let taken = counters.take();
        assert_eq!(counters.of("far.test"), (0, 0));
        let meta = ReportMeta {
            organization: "corvid.test",
            contact: "postmaster@corvid.test",
            report_id: "2026-12-07T00:00:00Z_far.test",
            start: "2026-12-07T00:00:00Z",
            end: "2026-12-07T23:59:59Z",
        };
        let json = report(&meta, "far.test", &taken["far.test"]);
        let zipped = gzip(&json).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_string(&mut text)
            .unwrap();
        // Parsed back and held against RFC 8460 4.4's schema: every required member, with
        // its type.
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_schema(&v);
        assert_eq!(v["organization-name"], "corvid.test");
        let p = &v["policies"][0];
        assert_eq!(p["policy"]["policy-domain"], "far.test");
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-string"][1], "mode: enforce");
        assert_eq!(p["summary"]["total-successful-session-count"], 2);
        assert_eq!(p["summary"]["total-failure-session-count"], 1);
        let f = &p["failure-details"][0];
        assert_eq!(f["result-type"], "certificate-host-mismatch");
        assert_eq!(f["receiving-mx-hostname"], "mx.far.test");
        assert_eq!(f["failed-session-count"], 1);
        let plain = report(&meta, "plain.test", &taken["plain.test"]);
        assert_schema(&plain);
        assert_eq!(
            plain["policies"][0]["policy"]["policy-type"],
            "no-policy-found"
        );
        let dane = report(&meta, "dane.test", &taken["dane.test"]);
        assert_schema(&dane);
        let p = &dane["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "tlsa");
        assert_eq!(p["failure-details"][0]["result-type"], "dnssec-invalid");
        assert_eq!(
            dane_result_type("DANE: no usable ... (dane-only)"),
            "dane-required"
        );
        assert_eq!(
            dane_result_type("TLS certificate not verified: mx: invalid peer certificate"),
            "tlsa-invalid"
        );
    }

    /// RFC 8460 4.4 (and the JSON schema of its appendix): the members a report must have.
    fn assert_schema(v: &Value) {
        for k in ["organization-name", "contact-info", "report-id"] {
            assert!(v[k].is_string(), "{k}");
        }
        for k in ["start-datetime", "end-datetime"] {
            let t = v["date-range"][k].as_str().unwrap();
            assert!(rfc3339_utc(t), "{k}: {t}");
        }
        let policies = v["policies"].as_array().unwrap();
        assert!(!policies.is_empty());
        for p in policies {
            let pol = &p["policy"];
            let kind = pol["policy-type"].as_str().unwrap();
            assert!(["tlsa", "sts", "no-policy-found"].contains(&kind), "{kind}");
            assert!(pol["policy-domain"].is_string());
            if kind == "sts" {
                assert!(pol["policy-string"].is_array() && pol["mx-host"].is_array());
            }
            for k in [
                "total-successful-session-count",
                "total-failure-session-count",
            ] {
                assert!(p["summary"][k].is_u64(), "{k}");
            }
            for f in p["failure-details"].as_array().unwrap() {
                assert!(f["result-type"].is_string());
                assert!(f["failed-session-count"].is_u64());
            }
        }
    }

    /// An RFC 3339 date-time in UTC: `YYYY-MM-DDTHH:MM:SSZ`.
    fn rfc3339_utc(t: &str) -> bool {
        let b = t.as_bytes();
        b.len() == 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z'
    }
}

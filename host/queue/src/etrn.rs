//! ETRN (RFC 1985) on the sled spool: the queue runs a client may start.

use crate::SledSpool;

/// ETRN (RFC 1985): a queue run for one domain, or with `@` for it and its subdomains.
impl corvid_types::QueueControl for SledSpool {
    fn start_run(&self, node: &str) -> Result<usize, corvid_types::IntakeError> {
        let (domain, subdomains) = match node.strip_prefix('@') {
            Some(d) => (d.to_ascii_lowercase(), true),
            None => (node.to_ascii_lowercase(), false),
        };
        let suffix = format!(".{domain}");
        self.flush_matching(|a| {
            let d = a.domain_lower();
            d == domain || (subdomains && d.ends_with(&suffix))
        })
        .map_err(|e| corvid_types::IntakeError::Storage(e.to_string()))
    }
}

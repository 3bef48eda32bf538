//! Delivery's TLS-RPT counters (RFC 8460) in the queue's database (and the pruning of its
//! MTA-STS cache, the other opaque store of delivery's), so that a restart before
//! the daily report does not lose the period's counts: one entry per policy domain, its value
//! opaque to the spool (delivery serializes it).
//!
//! Writes are not synced on their own: like the MTA-STS cache, each becomes durable with the
//! next group commit (any accepted message or recorded delivery flushes the whole database)
//! and at shutdown. A power cut can lose the last few counts, never mail.

use crate::{QueueError, SledSpool};

impl SledSpool {
    pub(crate) fn tlsrpt_entries(&self) -> Result<Vec<(String, Vec<u8>)>, QueueError> {
        let mut out = Vec::new();
        for item in self.tlsrpt.iter() {
            let (key, value) = item?;
            match String::from_utf8(key.to_vec()) {
                Ok(domain) => out.push((domain, value.to_vec())),
                Err(_) => tracing::warn!("skipping a TLS-RPT entry whose domain is not UTF-8"),
            }
        }
        Ok(out)
    }

    pub(crate) fn put_tlsrpt_entry(&self, domain: &str, counts: &[u8]) -> Result<(), QueueError> {
        self.tlsrpt.insert(domain.as_bytes(), counts)?;
        Ok(())
    }

    pub(crate) fn clear_tlsrpt_entries(&self) -> Result<(), QueueError> {
        self.tlsrpt.clear()?;
        Ok(())
    }
}

/// Removes the entries of `tree` that `keep` refuses; how many went. Used for delivery's
/// MTA-STS cache, whose values are as opaque to the spool as the counts above.
pub(crate) fn prune(tree: &sled::Tree, keep: &dyn Fn(&[u8]) -> bool) -> Result<usize, QueueError> {
    let mut gone = 0;
    for item in tree.iter() {
        let (key, value) = item?;
        if !keep(&value) {
            tree.remove(&key)?;
            gone += 1;
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use crate::{SledSpool, Spool};

    #[tokio::test]
    async fn sts_policies_the_caller_refuses_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SledSpool::open(dir.path()).unwrap();
        spool.set_sts_policy("old.test", b"stale").unwrap();
        spool.set_sts_policy("new.test", b"fresh").unwrap();
        let gone = spool.prune_sts_policies(&|raw| raw == b"fresh").unwrap();
        assert_eq!(gone, 1);
        assert_eq!(spool.sts_policy("old.test").unwrap(), None);
        assert_eq!(
            spool.sts_policy("new.test").unwrap(),
            Some(b"fresh".to_vec())
        );
    }

    #[tokio::test]
    async fn counts_survive_a_reopen_and_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SledSpool::open(dir.path()).unwrap();
        assert!(spool.tlsrpt_counts().unwrap().is_empty());
        spool.set_tlsrpt_counts("a.test", b"one").unwrap();
        spool.set_tlsrpt_counts("b.test", b"two").unwrap();
        spool.set_tlsrpt_counts("a.test", b"three").unwrap();
        // Durable with the next commit, as at shutdown.
        spool.sync().await.unwrap();
        drop(spool);

        let spool = SledSpool::open(dir.path()).unwrap();
        let mut got = spool.tlsrpt_counts().unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                ("a.test".to_string(), b"three".to_vec()),
                ("b.test".to_string(), b"two".to_vec())
            ]
        );
        spool.clear_tlsrpt_counts().unwrap();
        assert!(spool.tlsrpt_counts().unwrap().is_empty());
        spool.sync().await.unwrap();
        drop(spool);
        let spool = SledSpool::open(dir.path()).unwrap();
        assert!(spool.tlsrpt_counts().unwrap().is_empty());
    }
}

//! Delivery's TLS-RPT counters (RFC 8460) in the queue's database, so that a restart before
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

#[cfg(test)]
mod tests {
    use crate::{SledSpool, Spool};

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

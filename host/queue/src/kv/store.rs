//! [`corvid_types::KvStore`] on the sled store, so the binary hands it to the plugin host
//! directly. Errors map by variant: a quota refusal stays a quota refusal, a non-integer stays
//! `NotANumber`, and everything else (oversized request, sled failure) is a storage error,
//! to which the plugin's failure policy applies.

use super::{KvError, SledKv};
use corvid_types::kv::{KvError as StoreError, KvStore};
use std::time::Duration;

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::NotAnInteger => StoreError::NotANumber,
            e @ KvError::QuotaExceeded { .. } => StoreError::Quota(e.to_string()),
            e @ (KvError::Invalid(_) | KvError::Storage(_)) => StoreError::Storage(e.to_string()),
        }
    }
}

impl KvStore for SledKv {
    fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(SledKv::get(self, ns, key)?)
    }

    fn ttl(&self, ns: &str, key: &[u8]) -> Result<Option<Duration>, StoreError> {
        Ok(SledKv::ttl(self, ns, key)?)
    }

    fn set(
        &self,
        ns: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        Ok(SledKv::set(self, ns, key, value, ttl)?)
    }

    fn delete(&self, ns: &str, key: &[u8]) -> Result<bool, StoreError> {
        Ok(SledKv::delete(self, ns, key)?)
    }

    fn increment(
        &self,
        ns: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StoreError> {
        Ok(SledKv::increment(self, ns, key, delta, ttl)?)
    }

    fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        Ok(SledKv::compare_and_swap(self, ns, key, expected, new, ttl)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::KvLimits;
    use super::*;
    use corvid_types::kv::conformance;

    /// The semantics table every backend passes (corvid_types::kv::conformance).
    #[test]
    fn sled_store_passes_the_kv_conformance_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let limits = KvLimits {
            max_keys_per_plugin: conformance::MAX_KEYS,
            max_bytes_per_plugin: conformance::MAX_BYTES,
        };
        let kv = SledKv::new(db.open_tree("kv").unwrap(), limits).unwrap();
        conformance::run_all(&kv, "sled");
    }

    #[test]
    fn errors_map_by_variant() {
        let e: StoreError = KvError::NotAnInteger.into();
        assert_eq!(e, StoreError::NotANumber);
        let e: StoreError = KvError::QuotaExceeded {
            namespace: "p".into(),
            what: "1 keys".into(),
        }
        .into();
        assert!(matches!(e, StoreError::Quota(_)));
        let e: StoreError = KvError::Invalid("too long".into()).into();
        assert!(matches!(e, StoreError::Storage(_)));
    }
}

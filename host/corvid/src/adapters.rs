//! Adapters that hand the plugin host what other crates own: the queue's kv store and the
//! delivery resolver. They live in the binary because those crates must not depend on each
//! other (DESIGN.md 2). (Delivery policy needs none: the plugin host implements
//! `corvid_types::DeliveryPolicy`, which the delivery runner takes.)

use async_trait::async_trait;
use corvid_delivery::dns::{DnsError as DeliveryDnsError, HickoryDns};
use corvid_plugin_host::{DnsError, DnsResolver, KvError, KvStore};
use corvid_queue::SledKv;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct Kv(pub SledKv);

fn kv_err(e: corvid_queue::KvError) -> KvError {
    use corvid_queue::KvError as Q;
    match e {
        Q::NotAnInteger => KvError::NotANumber,
        e @ Q::QuotaExceeded { .. } => KvError::Quota(e.to_string()),
        e @ (Q::Invalid(_) | Q::Storage(_)) => KvError::Storage(e.to_string()),
    }
}

impl KvStore for Kv {
    fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(ns, key).map_err(kv_err)
    }
    fn set(
        &self,
        ns: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        self.0.set(ns, key, value, ttl).map_err(kv_err)
    }
    fn delete(&self, ns: &str, key: &[u8]) -> Result<bool, KvError> {
        self.0.delete(ns, key).map_err(kv_err)
    }
    fn increment(
        &self,
        ns: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        self.0.increment(ns, key, delta, ttl).map_err(kv_err)
    }
    fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        self.0
            .compare_and_swap(ns, key, expected, new, ttl)
            .map_err(kv_err)
    }
}

pub struct Dns(pub Arc<HickoryDns>);

fn dns_err(e: DeliveryDnsError) -> DnsError {
    match e {
        DeliveryDnsError::NoSuchDomain | DeliveryDnsError::NoData => DnsError::NotFound,
        DeliveryDnsError::Temporary(s) => DnsError::Failed(s),
    }
}

#[async_trait]
impl DnsResolver for Dns {
    async fn ip(&self, name: &str, v6: bool) -> Result<Vec<IpAddr>, DnsError> {
        self.0.ips(name, v6).await.map_err(dns_err)
    }
    async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        corvid_delivery::dns::Dns::mx(self.0.as_ref(), name)
            .await
            .map_err(dns_err)
    }
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.0.txt(name).await.map_err(dns_err)
    }
    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        self.0.ptr(ip).await.map_err(dns_err)
    }
}

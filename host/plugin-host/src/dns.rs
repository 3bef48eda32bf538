//! The resolver behind the `dns` import. The binary hands in its hickory resolver (from
//! corvid-delivery) through [`corvid_types::DnsResolver`]; [`StaticDns`] answers from a table,
//! for tests.

use async_trait::async_trait;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;

pub use corvid_types::{DnsError, DnsResolver};

/// A resolver answering from a table; anything not in it is `NotFound`.
#[derive(Default)]
pub struct StaticDns {
    records: RwLock<HashMap<(String, String), Vec<String>>>,
}

impl StaticDns {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds answers of `kind` (`A`, `AAAA`, `MX` as `"10 mx.example"`, `TXT`, `PTR` keyed by
    /// the IP's text) for `name`.
    pub fn insert(&self, kind: &str, name: &str, answers: &[&str]) {
        if let Ok(mut r) = self.records.write() {
            r.insert(
                (kind.to_ascii_uppercase(), normalise(name)),
                answers.iter().map(|s| s.to_string()).collect(),
            );
        }
    }

    fn get(&self, kind: &str, name: &str) -> Result<Vec<String>, DnsError> {
        self.records
            .read()
            .map_err(|_| DnsError::Failed("poisoned".into()))?
            .get(&(kind.to_string(), normalise(name)))
            .cloned()
            .ok_or(DnsError::NotFound)
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[async_trait]
impl DnsResolver for StaticDns {
    async fn ip(&self, name: &str, v6: bool) -> Result<Vec<IpAddr>, DnsError> {
        let answers = self.get(if v6 { "AAAA" } else { "A" }, name)?;
        Ok(answers.iter().filter_map(|a| a.parse().ok()).collect())
    }

    async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let answers = self.get("MX", name)?;
        Ok(answers
            .iter()
            .filter_map(|a| {
                let (p, x) = a.split_once(' ')?;
                Some((p.parse().ok()?, x.to_string()))
            })
            .collect())
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.get("TXT", name)
    }

    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        self.get("PTR", &ip.to_string())
    }
}

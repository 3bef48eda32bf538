//! The DNS lookups that crates other than delivery need (the plugins' `dns` import, the
//! server's forward-confirmed reverse DNS of a client), as a trait: only `corvid-delivery` may
//! use hickory (DESIGN.md 2), and the binary hands its resolver to the others through this.

use async_trait::async_trait;
use std::net::IpAddr;

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN or no records of the type.
    #[error("not found")]
    NotFound,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// The lookups a plugin may make.
#[async_trait]
pub trait DnsResolver: Send + Sync {
    /// A or AAAA records (`v6` selects AAAA).
    async fn ip(&self, name: &str, v6: bool) -> Result<Vec<IpAddr>, DnsError>;
    /// MX records as (preference, exchange).
    async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError>;
    /// TXT records, each record's strings joined.
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError>;
    /// PTR names of `ip`.
    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError>;
}

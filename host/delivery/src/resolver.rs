//! [`corvid_types::DnsResolver`] on the hickory resolver, for the plugins' `dns` import and
//! the server's reverse DNS: only this crate may use hickory (DESIGN.md 2), so the binary hands
//! the others this resolver through the trait.

use crate::dns::{Dns, DnsError, HickoryDns};
use async_trait::async_trait;
use corvid_types::dns::{DnsError as LookupError, DnsResolver};
use std::net::IpAddr;

impl From<DnsError> for LookupError {
    fn from(e: DnsError) -> Self {
        match e {
            DnsError::NoSuchDomain | DnsError::NoData => LookupError::NotFound,
            DnsError::Temporary(s) => LookupError::Failed(s),
        }
    }
}

#[async_trait]
impl DnsResolver for HickoryDns {
    async fn ip(&self, name: &str, v6: bool) -> Result<Vec<IpAddr>, LookupError> {
        Ok(self.ips(name, v6).await?)
    }

    async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, LookupError> {
        Ok(Dns::mx(self, name).await?)
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        Ok(HickoryDns::txt(self, name).await?)
    }

    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, LookupError> {
        Ok(self.ptr(ip).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_by_variant() {
        assert_eq!(
            LookupError::from(DnsError::NoSuchDomain),
            LookupError::NotFound
        );
        assert_eq!(LookupError::from(DnsError::NoData), LookupError::NotFound);
        assert_eq!(
            LookupError::from(DnsError::Temporary("servfail".into())),
            LookupError::Failed("servfail".into())
        );
    }
}

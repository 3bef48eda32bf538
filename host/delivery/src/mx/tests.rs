use super::*;
use async_trait::async_trait;
use std::collections::HashMap;

#[derive(Default)]
struct FakeDns {
    mx: HashMap<String, Result<Vec<(u16, String)>, DnsError>>,
    ips: HashMap<String, Result<Vec<IpAddr>, DnsError>>,
}

#[async_trait]
impl Dns for FakeDns {
    async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        self.mx
            .get(domain)
            .cloned()
            .unwrap_or(Err(DnsError::NoSuchDomain))
    }
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.ips
            .get(host)
            .cloned()
            .unwrap_or(Err(DnsError::NoSuchDomain))
    }
}

fn recs(list: &[(u16, &str)]) -> Result<Vec<(u16, String)>, DnsError> {
    Ok(list.iter().map(|(p, h)| (*p, h.to_string())).collect())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const OPTS: MxOptions = MxOptions {
    port: 25,
    ipv6: true,
    limit: 10,
};

#[tokio::test]
async fn preference_order_with_random_ties() {
    let mut dns = FakeDns::default();
    dns.mx.insert(
        "d.test".into(),
        recs(&[(20, "c"), (10, "a"), (10, "b"), (30, "d")]),
    );
    let mut seen_first = std::collections::HashSet::new();
    for _ in 0..64 {
        let hosts = mx_hosts(&dns, "d.test").await.unwrap();
        assert_eq!(&hosts[2..], ["c", "d"]);
        seen_first.insert(hosts[0].clone());
    }
    assert_eq!(seen_first.len(), 2, "equal preferences are shuffled");
}

#[tokio::test]
async fn implicit_null_and_missing() {
    let mut dns = FakeDns::default();
    dns.mx.insert("implicit.test".into(), Err(DnsError::NoData));
    dns.mx.insert("null.test".into(), recs(&[(0, ".")]));
    dns.mx
        .insert("mixed.test".into(), recs(&[(0, "."), (10, "mx.test")]));
    dns.mx.insert(
        "flaky.test".into(),
        Err(DnsError::Temporary("SERVFAIL".into())),
    );
    assert_eq!(
        mx_hosts(&dns, "implicit.test").await.unwrap(),
        ["implicit.test"]
    );
    assert_eq!(mx_hosts(&dns, "mixed.test").await.unwrap(), ["mx.test"]);
    let perm = |o: Outcome| matches!(o, Outcome::Permanent(t) if t.starts_with("5."));
    assert!(perm(mx_hosts(&dns, "null.test").await.unwrap_err()));
    assert!(perm(mx_hosts(&dns, "nxdomain.test").await.unwrap_err()));
    assert!(
        matches!(mx_hosts(&dns, "flaky.test").await.unwrap_err(), Outcome::Transient(t) if t.starts_with("4.4.3"))
    );
    let null = mx_hosts(&dns, "null.test").await.unwrap_err();
    assert!(matches!(null, Outcome::Permanent(t) if t.starts_with("5.1.10")));
}

#[tokio::test]
async fn addresses_v6_first_limited_and_failures() {
    let mut dns = FakeDns::default();
    dns.mx
        .insert("d.test".into(), recs(&[(10, "a"), (20, "b"), (30, "gone")]));
    dns.ips
        .insert("a".into(), Ok(vec![ip("192.0.2.1"), ip("2001:db8::1")]));
    dns.ips.insert("b".into(), Ok(vec![ip("192.0.2.2")]));
    let c = candidates(&dns, "d.test", OPTS).await.unwrap();
    let addrs: Vec<String> = c.iter().map(|c| format!("{} {}", c.host, c.addr)).collect();
    assert_eq!(
        addrs,
        ["a [2001:db8::1]:25", "a 192.0.2.1:25", "b 192.0.2.2:25"]
    );
    let v4 = MxOptions {
        ipv6: false,
        limit: 1,
        ..OPTS
    };
    let c = candidates(&dns, "d.test", v4).await.unwrap();
    assert_eq!(
        c,
        [Candidate {
            host: "a".into(),
            addr: "192.0.2.1:25".parse().unwrap()
        }]
    );

    dns.mx.insert("noaddr.test".into(), recs(&[(10, "gone")]));
    assert!(matches!(
        candidates(&dns, "noaddr.test", OPTS).await.unwrap_err(),
        Outcome::Transient(_)
    ));
    dns.mx.insert("bare.test".into(), Err(DnsError::NoData));
    assert!(
        matches!(candidates(&dns, "bare.test", OPTS).await.unwrap_err(), Outcome::Permanent(t) if t.starts_with("5.4.4"))
    );
}

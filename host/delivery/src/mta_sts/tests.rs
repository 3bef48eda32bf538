//! Discovery and the cache, with a scripted DNS and policy server.

use super::*;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

struct FakeDns {
    txt: Mutex<Result<Vec<String>, DnsError>>,
}

impl Default for FakeDns {
    fn default() -> Self {
        FakeDns {
            txt: Mutex::new(Err(DnsError::NoData)),
        }
    }
}

impl FakeDns {
    fn set(&self, r: Result<Vec<String>, DnsError>) {
        *lock(&self.txt) = r;
    }
}

#[async_trait::async_trait]
impl Dns for FakeDns {
    async fn mx(&self, _: &str) -> Result<Vec<(u16, String)>, DnsError> {
        Err(DnsError::NoData)
    }
    async fn addresses(&self, _: &str) -> Result<Vec<IpAddr>, DnsError> {
        Err(DnsError::NoData)
    }
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        assert_eq!(name, "_mta-sts.far.test");
        lock(&self.txt).clone()
    }
}

struct FakeFetch {
    body: Mutex<Result<String, String>>,
    calls: AtomicUsize,
}

impl Default for FakeFetch {
    fn default() -> Self {
        FakeFetch {
            body: Mutex::new(Err("no server".into())),
            calls: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Fetcher for FakeFetch {
    async fn fetch(&self, _: &dyn Dns, domain: &str) -> Result<String, String> {
        assert_eq!(domain, "far.test");
        self.calls.fetch_add(1, Ordering::SeqCst);
        lock(&self.body).clone()
    }
}

fn body(mode: &str, max_age: u64) -> Result<String, String> {
    Ok(format!(
        "version: STSv1\nmode: {mode}\nmx: mx.far.test\nmax_age: {max_age}\n"
    ))
}

fn mode_of(l: &Lookup) -> Option<(Mode, &'static str)> {
    match l {
        Lookup::Policy(a) => Some((a.policy.mode, a.source)),
        _ => None,
    }
}

#[tokio::test]
async fn cached_by_id_refetched_on_a_new_id_and_after_max_age() {
    let dns = FakeDns::default();
    let fetch = Arc::new(FakeFetch::default());
    let sts = MtaSts::new(fetch.clone(), None);
    dns.set(Ok(vec!["v=STSv1; id=one".into()]));
    *lock(&fetch.body) = body("enforce", 100);
    let l = sts.lookup(&dns, "far.test", 1000).await;
    assert_eq!(mode_of(&l), Some((Mode::Enforce, "fetched")));
    // Same id: the cache, no fetch.
    let l = sts.lookup(&dns, "far.test", 1050).await;
    assert_eq!(mode_of(&l), Some((Mode::Enforce, "cached")));
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 1);
    // A new id: fetched again, and the new mode applies.
    dns.set(Ok(vec!["v=STSv1; id=two".into()]));
    *lock(&fetch.body) = body("testing", 100);
    let l = sts.lookup(&dns, "far.test", 1060).await;
    assert_eq!(mode_of(&l), Some((Mode::Testing, "fetched")));
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 2);
    // Past max_age: fetched again even with the same id.
    let l = sts.lookup(&dns, "far.test", 1060 + 100).await;
    assert_eq!(mode_of(&l), Some((Mode::Testing, "fetched")));
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_dns_outage_or_a_failed_fetch_uses_the_cache_until_it_expires() {
    let dns = FakeDns::default();
    let fetch = Arc::new(FakeFetch::default());
    let sts = MtaSts::new(fetch.clone(), None);
    dns.set(Ok(vec!["v=STSv1; id=one".into()]));
    *lock(&fetch.body) = body("enforce", 100);
    sts.lookup(&dns, "far.test", 1000).await;
    dns.set(Err(DnsError::Temporary("SERVFAIL".into())));
    let l = sts.lookup(&dns, "far.test", 1099).await;
    assert_eq!(mode_of(&l), Some((Mode::Enforce, "cached")));
    // A record gone is not a policy removal (RFC 8461 10.2).
    dns.set(Err(DnsError::NoSuchDomain));
    assert!(mode_of(&sts.lookup(&dns, "far.test", 1099).await).is_some());
    // A new id whose policy cannot be fetched: the cached policy still holds.
    dns.set(Ok(vec!["v=STSv1; id=two".into()]));
    *lock(&fetch.body) = Err("connection refused".into());
    assert_eq!(
        mode_of(&sts.lookup(&dns, "far.test", 1099).await),
        Some((Mode::Enforce, "cached"))
    );
    // Expired: no policy, and the failed fetch is said.
    let l = sts.lookup(&dns, "far.test", 1100).await;
    assert!(
        matches!(&l, Lookup::FetchFailed(e) if e.contains("refused")),
        "{l:?}"
    );
    dns.set(Err(DnsError::Temporary("SERVFAIL".into())));
    assert_eq!(sts.lookup(&dns, "far.test", 1100).await, Lookup::None);
}

#[tokio::test]
async fn no_record_no_policy_and_mode_none_is_none() {
    let dns = FakeDns::default();
    let fetch = Arc::new(FakeFetch::default());
    let sts = MtaSts::new(fetch.clone(), None);
    dns.set(Err(DnsError::NoSuchDomain));
    assert_eq!(sts.lookup(&dns, "far.test", 1).await, Lookup::None);
    dns.set(Ok(vec!["v=STSv1; id=one".into()]));
    *lock(&fetch.body) = body("none", 100);
    assert_eq!(sts.lookup(&dns, "far.test", 1).await, Lookup::None);
    // An invalid policy is no policy, and a fetch error.
    dns.set(Ok(vec!["v=STSv1; id=two".into()]));
    *lock(&fetch.body) = Ok("<html>".into());
    assert!(matches!(
        sts.lookup(&dns, "far.test", 1).await,
        Lookup::FetchFailed(e) if e.starts_with("invalid policy")
    ));
}

fn cached(fetched_at: u64, max_age: u64) -> Cached {
    let text = body("enforce", max_age).unwrap();
    Cached {
        id: "one".into(),
        policy: policy::parse_policy(&text).unwrap(),
        fetched_at,
    }
}

fn domains(m: &Memory) -> Vec<String> {
    let mut d: Vec<String> = m.map.keys().cloned().collect();
    d.sort();
    d
}

#[test]
fn the_memory_copy_drops_expired_policies_first_then_the_oldest() {
    let mut m = Memory::new(10);
    for i in 0..5 {
        m.insert(&format!("short{i}.test"), &cached(1000, 100), 1000);
        m.insert(
            &format!("long{i}.test"),
            &cached(1000 + i, 100_000),
            1000 + i,
        );
    }
    assert_eq!(m.map.len(), 10);
    // Full: the five past their max_age go, the live ones stay.
    m.insert("new.test", &cached(1200, 100_000), 1200);
    let mut want: Vec<String> = (0..5).map(|i| format!("long{i}.test")).collect();
    want.push("new.test".into());
    want.sort();
    assert_eq!(domains(&m), want);
    // Full of live policies: the least recently fetched one goes (a tenth of 10).
    for i in 0..4 {
        m.insert(&format!("more{i}.test"), &cached(1300, 100_000), 1300);
    }
    assert_eq!(m.map.len(), 10);
    m.insert("last.test", &cached(1400, 100_000), 1400);
    assert_eq!(m.map.len(), 10);
    assert!(!m.map.contains_key("long0.test"), "{:?}", domains(&m));
    assert!(m.map.contains_key("long1.test") && m.map.contains_key("last.test"));
    // Replacing a domain's policy when full evicts nothing.
    m.insert("long1.test", &cached(1500, 100_000), 1500);
    assert_eq!(m.map.len(), 10);
}

#[test]
fn the_memory_copy_is_swept_of_expired_policies_even_when_not_full() {
    let mut m = Memory::new(10);
    m.insert("a.test", &cached(0, 100), 0);
    m.insert("b.test", &cached(50, 100), 50);
    assert_eq!(m.map.len(), 2, "no sweep within the interval");
    m.insert("c.test", &cached(SWEEP_INTERVAL, 100), SWEEP_INTERVAL);
    assert_eq!(domains(&m), ["c.test"]);
}

#[tokio::test]
async fn storing_a_policy_prunes_expired_ones_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let spool = corvid_queue::SledSpool::open(dir.path()).unwrap();
    let expired = serde_json::to_vec(&cached(1_000, 100)).unwrap();
    spool.set_sts_policy("gone.test", &expired).unwrap();
    let dns = FakeDns::default();
    let fetch = Arc::new(FakeFetch::default());
    let sts = MtaSts::new(fetch.clone(), Some(spool.clone() as Arc<dyn Spool>));
    dns.set(Ok(vec!["v=STSv1; id=one".into()]));
    *lock(&fetch.body) = body("enforce", 86_400);
    let l = sts.lookup(&dns, "far.test", 100_000).await;
    assert_eq!(mode_of(&l), Some((Mode::Enforce, "fetched")));
    assert_eq!(
        spool.sts_policy("gone.test").unwrap(),
        None,
        "expired: pruned"
    );
    assert!(
        spool.sts_policy("far.test").unwrap().is_some(),
        "fresh: kept"
    );
}

use super::*;
use corvid_types::DomainEntry;

fn entry(domain: &str, to: &str) -> RouteEntry {
    RouteEntry {
        domain: domain.into(),
        to: Target::try_from(to.to_string()).unwrap(),
        auth: None,
        require_tls: false,
        tls: None,
    }
}

#[test]
fn targets_parse() {
    let t = |s: &str| Target::try_from(s.to_string());
    assert_eq!(
        t("smtp://relay.test").unwrap(),
        Target::Smtp(HostPort {
            host: "relay.test".into(),
            port: 25
        })
    );
    assert_eq!(
        t("lmtp://[::1]:2400").unwrap(),
        Target::Lmtp(HostPort {
            host: "::1".into(),
            port: 2400
        })
    );
    assert_eq!(
        t("lmtp://127.0.0.1").unwrap(),
        Target::Lmtp(HostPort {
            host: "127.0.0.1".into(),
            port: 24
        })
    );
    assert!(t("smtp://h:99999").is_err());
    assert!(t("lmtp:unix:relative").is_err());
}

#[test]
fn table_order() {
    let mut dir = Directory::new(None, None);
    dir.add_domain("corvid.test", DomainEntry::default());
    dir.add_domain("lmtp.test", DomainEntry::default());
    let router = Router::new(
        vec![
            entry("*", "smtp://smart.test:587"),
            entry("LMTP.test", "lmtp:unix:/run/lmtp"),
            entry("direct.test", "mx"),
        ],
        Arc::new(dir),
    );
    let hop = |d: &str| router.route(&Address::new("a", d)).hop.to_string();
    assert_eq!(hop("corvid.test"), "local");
    assert_eq!(hop("lmtp.test"), "lmtp:unix:/run/lmtp");
    assert_eq!(hop("Direct.Test"), "mx:direct.test");
    assert_eq!(hop("other.test"), "smtp://smart.test:587");
    let bare = Router::new(vec![], Arc::new(Directory::new(None, None)));
    assert_eq!(
        bare.route(&Address::new("a", "X.test")).hop.to_string(),
        "mx:x.test"
    );
}

#[test]
fn a_plugin_can_make_tls_stricter_never_looser() {
    use corvid_types::delivery_call::TlsPolicy as Asked;
    let mx = || Destination::new(NextHop::Mx("far.test".into()));
    let with = |tls: Option<TlsMode>, asked: Asked| {
        let d = Destination { tls, ..mx() }.with_plugin_tls(Some(asked));
        (d.tls, d.tls_by_plugin)
    };
    // Without a configured policy the default counts as opportunistic.
    assert_eq!(with(None, Asked::Verify), (Some(TlsMode::Verify), true));
    assert_eq!(with(None, Asked::Opportunistic), (None, false));
    assert_eq!(with(None, Asked::None), (None, false));
    // A configured policy is only ever raised.
    let verify = Some(TlsMode::Verify);
    assert_eq!(with(verify, Asked::None), (verify, false));
    assert_eq!(with(verify, Asked::Dane), (verify, false));
    assert_eq!(
        with(verify, Asked::DaneOnly),
        (Some(TlsMode::DaneOnly), true)
    );
    assert_eq!(
        with(Some(TlsMode::None), Asked::Opportunistic),
        (Some(TlsMode::Opportunistic), true)
    );
    assert_eq!(mx().with_plugin_tls(None), mx());
    // Local delivery has no TLS: its destination (and group) stays the same.
    let local = Destination::new(NextHop::Local);
    assert_eq!(local.clone().with_plugin_tls(Some(Asked::Verify)), local);
}

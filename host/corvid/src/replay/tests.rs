use super::*;

fn names(ms: &[Manifest]) -> Vec<&str> {
    ms.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn an_override_is_name_equals_path() {
    let (n, p) = parse_override("greylist=/tmp/g.wasm").unwrap();
    assert_eq!((n.as_str(), p), ("greylist", PathBuf::from("/tmp/g.wasm")));
    assert!(parse_override("greylist").is_err());
    assert!(parse_override("=x.wasm").is_err());
}

#[test]
fn the_chain_is_the_recorded_one_with_overrides_and_additions() {
    let mut a = Manifest::new("a", "/cfg/a.wasm");
    a.config.insert("k".into(), toml::Value::from("v"));
    a.order = 5;
    let mut b = Manifest::new("b", "/cfg/b.wasm");
    b.mode = PluginMode::Shadow;
    let configured = vec![a, b];
    let recorded = vec!["a".to_string()];
    let overrides = vec![
        ("a".to_string(), PathBuf::from("/new/a.wasm")),
        ("c".to_string(), PathBuf::from("/new/c.wasm")),
    ];
    let chain = chain(&recorded, &configured, &overrides).unwrap();
    assert_eq!(names(&chain), ["a", "c"]);
    // The override replaces the component only: the config's settings stay.
    assert_eq!(chain[0].path, PathBuf::from("/new/a.wasm"));
    assert_eq!(chain[0].config.get("k").and_then(|v| v.as_str()), Some("v"));
    assert_eq!(chain[0].order, 0);
    // A plugin known only from --plugin gets what `plugin test` grants.
    assert!(chain[1].grants(corvid_plugin_host::Capability::Kv));
    // A shadow plugin of the config replays as a member of the chain.
    let chain = super::chain(&["b".to_string()], &configured, &[]).unwrap();
    assert_eq!(chain[0].mode, PluginMode::Active);
}

#[test]
fn a_plugin_from_nowhere_is_an_error() {
    let err = chain(&["x".to_string()], &[], &[]).err().unwrap();
    assert!(err.to_string().contains("\"x\""), "{err}");
}

#[test]
fn a_hand_written_capture_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    std::fs::write(
        &path,
        r#"{"corvid_capture": 1, "plugins": ["recipient-list"], "partial": [],
            "script": {"connection": {"client": "192.0.2.1:1234", "expect": {"connect": {"verdict": "continue"}}},
                       "transaction": [{"mail_from": "a@b.example", "rcpt_to": ["x@y.example"],
                                        "expect": {"rcpt": [{"verdict": "reject", "code": 550}]}}],
                       "clock": {"start": "2026-12-07T13:00:00.250Z"}}}"#,
    )
    .unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.plugins, ["recipient-list"]);
    assert_eq!(c.script.transactions.len(), 1);
    std::fs::write(
        &path,
        r#"{"corvid_capture": 9, "plugins": [], "script": {}}"#,
    )
    .unwrap();
    let err = load(&path).err().unwrap();
    assert!(err.to_string().contains("capture format 9"), "{err}");
}

//! The config API: values as the host prints them, typed access, errors naming the key path,
//! and the STAGES check.

use corvid_plugin_sdk::testing::*;
use corvid_plugin_sdk::*;

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn cfg(pairs: &[(&str, &str)]) -> Config {
    Config::from_pairs(pairs.iter().copied())
}

#[test]
fn values_parse_as_the_host_prints_them() {
    // Exactly what `toml::Value::to_string` produced for these values.
    let c = cfg(&[
        ("list", r#"["a@b.example", "@spam.example", 'x"y@z']"#),
        (
            "map",
            r#"{ "@old.example" = "@new.example", plain = "x", n = 5 }"#,
        ),
        ("esc", r#"["a\"b\\c\u00e9"]"#),
        ("n", "-12_000"),
        ("hex", "0xff"),
        ("f", "2.5e3"),
        ("t", "true"),
        ("d", "1979-05-27T07:32:00Z"),
        ("text", "hello world"),
        ("spaced", "[ 'a' , \n 'b', ] # note"),
    ]);
    let v = |k| c.value(k).ok().flatten();
    assert_eq!(
        v("list"),
        Some(Value::Array(vec![
            s("a@b.example"),
            s("@spam.example"),
            s("x\"y@z")
        ]))
    );
    let map = c.get_table("map").expect("map");
    assert_eq!(
        map.keys().collect::<Vec<_>>(),
        ["@old.example", "plain", "n"]
    );
    assert_eq!(map.get("n"), Some(&Value::Integer(5)));
    assert_eq!(
        c.get_list::<String>("esc"),
        Ok(vec!["a\"b\\cé".to_string()])
    );
    assert_eq!(v("n"), Some(Value::Integer(-12000)));
    assert_eq!(v("hex"), Some(Value::Integer(255)));
    assert_eq!(v("f"), Some(Value::Float(2500.0)));
    assert_eq!(v("t"), Some(Value::Boolean(true)));
    assert_eq!(v("d"), Some(Value::Datetime("1979-05-27T07:32:00Z".into())));
    assert_eq!(v("text"), Some(s("hello world")));
    assert_eq!(c.get_list::<String>("spaced").map(|l| l.len()), Ok(2));
}

#[test]
fn typed_access_with_defaults() {
    let c = cfg(&[
        ("port", "2525"),
        ("on", "false"),
        ("name", "5"),
        ("one", "solo@x.example"),
        (
            "nested",
            r#"{ inner = { depth = 3, tags = ["a", "b"] }, a.b = 1 }"#,
        ),
    ]);
    assert_eq!(c.get_as::<u16>("port"), Ok(Some(2525)));
    assert_eq!(c.get_or::<u32>("absent", 7), Ok(7));
    assert_eq!(c.get_or("on", true), Ok(false));
    // The host gives strings unquoted: `name = "5"` is still a string when one is asked for.
    assert_eq!(c.get_as::<String>("name"), Ok(Some("5".to_string())));
    assert_eq!(
        c.get_list::<String>("one"),
        Ok(vec!["solo@x.example".into()])
    );
    assert_eq!(c.get_list::<String>("absent"), Ok(vec![]));
    let nested = c.get_table("nested").expect("nested");
    let inner = nested.get_table("inner").expect("inner");
    assert_eq!(inner.get_as::<u8>("depth"), Ok(Some(3)));
    assert_eq!(
        inner.get_or::<Vec<String>>("tags", vec![]).map(|t| t.len()),
        Ok(2)
    );
    assert_eq!(
        nested.get_table("a").and_then(|a| a.require::<i64>("b")),
        Ok(1)
    );
    assert!(c.get_table("absent").expect("absent").is_empty());
    assert_eq!(c.require::<u16>("port"), Ok(2525));
}

#[test]
fn errors_name_the_key_path() {
    let c = cfg(&[
        ("port", "99999"),
        ("zones", r#"["a", 5]"#),
        ("routes", r#"{ "x.example" = { port = "25" } }"#),
        ("broken", r#"["a""#),
        ("map", r#"{ k = ["v"] }"#),
    ]);
    let err = |r: Result<(), ConfigError>| r.expect_err("should fail").to_string();
    assert_eq!(
        err(c.get_as::<u16>("port").map(drop)),
        "config key `port`: 99999 is out of range (0 to 65535)"
    );
    assert_eq!(
        err(c.get_list::<String>("zones").map(drop)),
        "config key `zones[1]`: expected a string, got an integer"
    );
    let routes = c.get_table("routes").expect("routes");
    let x = routes.get_table("x.example").expect("x");
    assert_eq!(
        err(x.get_as::<u16>("port").map(drop)),
        "config key `routes.x.example.port`: expected an integer, got a string"
    );
    assert_eq!(
        err(x.require::<String>("host").map(drop)),
        "config key `routes.x.example.host`: is required"
    );
    assert!(err(c.get_list::<String>("broken").map(drop)).starts_with("config key `broken`:"));
    assert_eq!(
        err(c.get_map::<String>("map").map(drop)),
        "config key `map.k`: expected a string, got an array"
    );
    assert_eq!(
        err(c.get_table("port").map(drop)),
        "config key `port`: expected a table such as { \"a\" = \"b\" }, got an integer"
    );
    assert!(err(c.check_keys(&["port", "zones"])).contains("`routes`: unknown key"));
    assert!(c
        .check_keys(&["port", "zones", "routes", "broken", "map"])
        .is_ok());
    // `?` in `Plugin::new` turns it into the String the host logs.
    let as_string: String = ConfigError::new("a.b", "is required").into();
    assert_eq!(as_string, "config key `a.b`: is required");
}

#[test]
fn malformed_values_are_refused() {
    for bad in [
        "[\"a\"",
        "{ a = }",
        "[\"open]",
        "{ a = \"1\", a = \"2\" }",
        "[\"a\"] x",
        "[\"\\q\"]",
        "[\"\"\"multi\"\"\"]",
        "[007]",
        "[1__0]",
        "{ a = 1 b = 2 }",
        "[bare]",
    ] {
        assert!(
            cfg(&[("k", bad)]).value("k").is_err(),
            "{bad} should not parse"
        );
    }
}

/// Implements `on_mail` but lists only `rcpt`: the host would never call `on_mail`.
struct Forgetful;

impl Plugin for Forgetful {
    const NAME: &'static str = "forgetful";
    const STAGES: &'static [Stage] = &[Stage::Rcpt];

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Forgetful)
    }

    fn on_mail(&mut self, _conn: &ConnectionInfo, _env: &Envelope) -> Decision {
        host::log(LogLevel::Info, "probed");
        reject(550, "5.7.1", "no")
    }

    fn on_route(&mut self, _req: &RouteRequest) -> RouteDecision {
        RouteDecision::Local
    }
}

#[test]
fn a_hook_missing_from_stages_is_refused_at_configure() {
    reset();
    let err = runtime::configure::<Forgetful>(ConfigTable::default()).expect_err("refused");
    assert!(err.contains("forgetful: implements"), "{err}");
    assert!(err.contains("on_mail (Stage::Mail)"), "{err}");
    assert!(err.contains("on_route (Stage::Route)"), "{err}");
    assert!(!err.contains("on_rcpt"), "{err}");
    assert_eq!(runtime::check_stages::<Forgetful>(), Err(err));
    // The probe does not leave the probing flag set.
    assert!(!runtime::probing());
}

/// Lists every stage it implements, leaves VERSION to the crate.
struct Tidy;

impl Plugin for Tidy {
    const NAME: &'static str = "tidy";
    const STAGES: &'static [Stage] = &[Stage::Mail];

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Tidy)
    }

    fn on_mail(&mut self, _conn: &ConnectionInfo, _env: &Envelope) -> Decision {
        proceed()
    }
}

export_plugin!(Tidy);

#[test]
fn a_tidy_plugin_passes_and_its_version_comes_from_the_crate() {
    reset();
    assert_eq!(runtime::configure::<Tidy>(ConfigTable::default()), Ok(()));
    let info = <__CorvidPluginExport as bindings::Guest>::describe();
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(runtime::describe_as::<Forgetful>("9.9.9").version, "9.9.9");
}

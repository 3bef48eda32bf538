//! The Rust template: a crate on the SDK (`plugins/sdk`), its hooks, unit tests on the SDK's
//! fake host, and `./build.sh` for the wasm32-wasip2 component.

use super::{camel, fill, Spec};
use std::fmt::Write as _;

const CARGO: &str = include_str!("../../templates/rust/Cargo.toml.in");
const BUILD: &str = include_str!("../../templates/rust/build.sh.in");
const README: &str = include_str!("../../templates/rust/README.md.in");

pub(super) fn project(spec: &Spec, sdk: &str) -> Vec<(&'static str, String)> {
    let (name, stages, header) = (spec.name, spec.stages.as_slice(), spec.header.as_str());
    let crate_name = name.replace('-', "_");
    let (behaviour, config) = (spec.behaviour(), spec.config_snippet());
    let vars = [
        ("name", name),
        ("crate", crate_name.as_str()),
        ("sdk", sdk),
        ("stages", &stages.join(", ")),
        ("behaviour", behaviour.as_str()),
        ("config", config.as_str()),
    ];
    vec![
        ("Cargo.toml", fill(CARGO, &vars)),
        ("build.sh", fill(BUILD, &vars)),
        ("README.md", fill(README, &vars)),
        (".gitignore", format!("/target\n/{name}.wasm\n")),
        ("src/lib.rs", rust_lib(name, stages, header)),
        ("plugin-test.toml", super::script(spec)),
    ]
}

fn stage_variant(s: &str) -> String {
    camel(s)
}

fn rust_lib(name: &str, stages: &[&str], header: &str) -> String {
    let has = |s: &str| stages.contains(&s);
    let ty = camel(name);
    let blocks = has("mail") || has("rcpt");
    let variants: Vec<String> = stages
        .iter()
        .map(|s| format!("Stage::{}", stage_variant(s)))
        .collect();
    let mut keys = Vec::new();
    let mut fields = String::new();
    let mut init = String::new();
    if blocks {
        keys.push("\"blocked_domains\"");
        fields.push_str("    /// Lower-cased domains whose senders and recipients are refused.\n    blocked: Vec<String>,\n");
        init.push_str("            blocked: config\n                .get_list::<String>(\"blocked_domains\")?\n                .iter()\n                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())\n                .collect(),\n");
    }
    if has("data") {
        keys.push("\"header\"");
        fields.push_str(
            "    /// The header field stamped on accepted messages.\n    header: String,\n",
        );
        let _ = writeln!(
            init,
            "            header: config.get_or(\"header\", \"{header}\".to_string())?,"
        );
    }
    let mut hooks = String::new();
    for s in stages {
        hooks.push_str(hook(s));
    }
    let helper = if blocks {
        format!("\nimpl {ty} {{\n    /// Domains compare case-insensitively and without the root dot (RFC 5321 §2.4).\n    fn blocked(&self, domain: &str) -> bool {{\n        let d = domain.trim_end_matches('.').to_ascii_lowercase();\n        self.blocked.contains(&d)\n    }}\n}}\n")
    } else {
        String::new()
    };
    let fields = if fields.is_empty() {
        ";".to_string()
    } else {
        format!(" {{\n{fields}}}")
    };
    let ctor = if init.is_empty() {
        ty.clone()
    } else {
        format!("{ty} {{\n{init}        }}")
    };
    format!(
        "//! {name}: a Corvid mail-policy plugin (README.md says what it does and how to build,\n\
         //! test and install it; the SDK's README is the author guide).\n\n\
         use corvid_plugin_sdk::*;\n\n\
         pub struct {ty}{fields}\n\n\
         impl Plugin for {ty} {{\n    const NAME: &'static str = \"{name}\";\n    \
         // VERSION is the crate's (Cargo.toml). A hook for a stage missing here is refused.\n    \
         const STAGES: &'static [Stage] = &[{}];\n\n    \
         fn new(config: &Config) -> Result<Self, String> {{\n        \
         // An unknown key is an error, so a typo in the server config is caught at load.\n        \
         config.check_keys(&[{}])?;\n        Ok({ctor})\n    }}\n{hooks}}}\n{helper}\n\
         export_plugin!({ty});\n\n{}",
        variants.join(", "),
        keys.join(", "),
        tests(&ty, stages, header)
    )
}

fn hook(stage: &str) -> &'static str {
    match stage {
        "connect" => "\n    fn on_connect(&mut self, conn: &ConnectionInfo) -> Decision {\n        host::log(LogLevel::Debug, &format!(\"connection from {}\", conn.client_ip));\n        proceed()\n    }\n",
        "helo" => "\n    fn on_helo(&mut self, _conn: &ConnectionInfo) -> Decision {\n        proceed()\n    }\n",
        "auth" => "\n    /// `proceed()` lets the next plugin, then the users file, decide.\n    fn on_auth(&mut self, _conn: &ConnectionInfo, _auth: &AuthInfo) -> Decision {\n        proceed()\n    }\n",
        "mail" => "\n    fn on_mail(&mut self, _conn: &ConnectionInfo, env: &Envelope) -> Decision {\n        match &env.sender {\n            Some(s) if self.blocked(&s.domain) => reject(550, \"5.7.1\", \"Sender domain refused\"),\n            _ => proceed(),\n        }\n    }\n",
        "rcpt" => "\n    fn on_rcpt(&mut self, _conn: &ConnectionInfo, _env: &Envelope, rcpt: &Recipient) -> Decision {\n        if self.blocked(&rcpt.address.domain) {\n            return reject(550, \"5.7.1\", \"Recipient domain refused\");\n        }\n        proceed()\n    }\n",
        "data" => "\n    fn on_data(&mut self, _conn: &ConnectionInfo, _env: &Envelope, _msg: &dyn MailMessage) -> Decision {\n        proceed().add_header(&self.header, \"checked\")\n    }\n",
        "route" => "\n    fn on_route(&mut self, _req: &RouteRequest) -> RouteDecision {\n        RouteDecision::Continue\n    }\n",
        "deferred" => "\n    fn on_deferred(&mut self, _info: &DeliveryInfo) -> DeferredDecision {\n        DeferredDecision::Continue\n    }\n",
        "bounced" => "\n    fn on_bounced(&mut self, _info: &DeliveryInfo) -> BounceDecision {\n        BounceDecision::Continue\n    }\n",
        _ => "\n    fn on_delivered(&mut self, info: &DeliveryInfo) {\n        host::log(LogLevel::Debug, &format!(\"delivered to {}\", info.recipient));\n    }\n",
    }
}

fn tests(ty: &str, stages: &[&str], header: &str) -> String {
    let has = |s: &str| stages.contains(&s);
    let config = if has("mail") || has("rcpt") {
        "&[(\"blocked_domains\", r#\"[\"Spam.Example\"]\"#)]"
    } else {
        "&[]"
    };
    let mut t = format!(
        "#[cfg(test)]\nmod tests {{\n    use super::*;\n    use corvid_plugin_sdk::testing::*;\n\n    \
         fn plugin() -> {ty} {{\n        configured({config})\n    }}\n\n    \
         #[test]\n    fn a_typo_in_the_config_is_refused() {{\n        \
         assert!(refused::<{ty}>(&[(\"no_such_key\", \"1\")]).contains(\"unknown key\"));\n    }}\n"
    );
    if has("mail") {
        t.push_str("\n    #[test]\n    fn blocked_senders_are_refused() {\n        let mut p = plugin();\n        let d = p.on_mail(&conn(\"192.0.2.1\"), &envelope(\"a@spam.example\", &[]));\n        assert_eq!(reply_of(&d), (550, \"5.7.1\".into(), \"Sender domain refused\".into()));\n        assert!(p.on_mail(&conn(\"192.0.2.1\"), &envelope(\"a@ok.example\", &[])).is_continue());\n    }\n");
    }
    if has("rcpt") {
        t.push_str("\n    #[test]\n    fn blocked_recipients_are_refused() {\n        let mut p = plugin();\n        let env = envelope(\"a@ok.example\", &[]);\n        let d = p.on_rcpt(&conn(\"192.0.2.1\"), &env, &rcpt(\"b@SPAM.example.\"));\n        assert_eq!(code_of(&d), Some(550));\n        assert!(p.on_rcpt(&conn(\"192.0.2.1\"), &env, &rcpt(\"b@ok.example\")).is_continue());\n    }\n");
    }
    if has("data") {
        let _ = write!(t, "\n    #[test]\n    fn messages_are_stamped() {{\n        let mut p = plugin();\n        let msg = TestMessage::new(\"Subject: hi\\n\\nbody\\n\");\n        let d = p.on_data(&conn(\"192.0.2.1\"), &envelope(\"a@ok.example\", &[\"b@ok.example\"]), &msg);\n        assert!(d.is_continue());\n        assert_eq!(d, proceed().add_header(\"{header}\", \"checked\"));\n    }}\n");
    }
    t.push_str("}\n");
    t
}

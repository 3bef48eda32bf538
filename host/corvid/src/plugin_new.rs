//! `corvid plugin new NAME --lang rust [--stages mail,rcpt,data]`: a plugin project that builds
//! into a component with one command (`./build.sh`), has passing native unit tests and a
//! `corvid plugin test` script, and a README. The fixed files are templates under
//! host/corvid/templates/; the hooks, tests and script depend on the stages and are written
//! here.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The languages `--lang` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Javascript,
    C,
}

const STAGES: &[&str] = &[
    "connect",
    "helo",
    "auth",
    "mail",
    "rcpt",
    "data",
    "route",
    "deferred",
    "bounced",
    "delivered",
];

const CARGO: &str = include_str!("../templates/rust/Cargo.toml.in");
const BUILD: &str = include_str!("../templates/rust/build.sh.in");
const README: &str = include_str!("../templates/rust/README.md.in");

/// Where the SDK is when this binary runs from its source tree (development and CI).
fn default_sdk() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/sdk");
    p.join("Cargo.toml")
        .exists()
        .then(|| p.canonicalize().ok())
        .flatten()
}

pub fn run(
    name: &str,
    lang: Lang,
    stages: &[String],
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<()> {
    check_name(name)?;
    let stages: Vec<&str> = if stages.is_empty() {
        vec!["mail", "rcpt", "data"]
    } else {
        let mut v = Vec::new();
        for s in stages {
            let s = s.trim().to_ascii_lowercase();
            let Some(known) = STAGES.iter().find(|k| **k == s) else {
                bail!("unknown stage {s:?} (stages: {})", STAGES.join(", "));
            };
            if !v.contains(known) {
                v.push(*known);
            }
        }
        v
    };
    if lang != Lang::Rust {
        bail!(
            "--lang {lang:?}: only the Rust template exists so far; start from \
             examples/greylist/{} in the Corvid sources",
            format!("{lang:?}").to_ascii_lowercase()
        );
    }
    let sdk = match sdk.map(Path::to_path_buf).or_else(default_sdk) {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("the SDK at {}", p.display()))?,
        None => bail!("where is the Corvid SDK (plugins/sdk of the sources)? pass --sdk PATH"),
    };
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    std::fs::create_dir_all(dir.join("src"))?;
    let files = rust_project(name, &stages, &sdk.display().to_string());
    for (path, text) in &files {
        let p = dir.join(path);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    // The hooks are written without layout; rustfmt (when installed) lays them out as
    // `cargo fmt` would, so the author's first `cargo fmt` changes nothing.
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2021"])
        .arg(dir.join("src/lib.rs"))
        .status();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("build.sh"), std::fs::Permissions::from_mode(0o755))?;
    }
    println!(
        "created {} (Rust plugin, stages {}): cd {0} && ./build.sh && cargo test && \
         corvid plugin test {name}.wasm --script plugin-test.toml",
        dir.display(),
        stages.join(", ")
    );
    Ok(())
}

/// Lower-case letters, digits and `-`, starting with a letter: a crate name, a kv namespace
/// and a file name at once.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!("plugin name {name:?}: use lower-case letters, digits and -, starting with a letter");
    }
    Ok(())
}

fn camel(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

fn rust_project(name: &str, stages: &[&str], sdk: &str) -> Vec<(&'static str, String)> {
    let has = |s: &str| stages.contains(&s);
    let crate_name = name.replace('-', "_");
    let header = format!("X-{}", camel(name));
    let mut behaviour = String::new();
    let mut config = String::new();
    if has("mail") || has("rcpt") {
        behaviour.push_str(
            "- refuses senders and recipients in `blocked_domains` (550 5.7.1), at the MAIL and \
             RCPT stages it runs at;\n",
        );
        config.push_str("blocked_domains = [\"spam.example\"]\n");
    }
    if has("data") {
        let _ = writeln!(
            behaviour,
            "- stamps each accepted message with a `{header}: checked` field (`header` names it);"
        );
        let _ = writeln!(config, "header = \"{header}\"");
    }
    behaviour.push_str("- answers `continue` (no opinion) at its other stages.");
    let vars = [
        ("name", name),
        ("crate", crate_name.as_str()),
        ("sdk", sdk),
        ("stages", &stages.join(", ")),
        ("behaviour", behaviour.as_str()),
        ("config", config.trim_end()),
    ];
    vec![
        ("Cargo.toml", fill(CARGO, &vars)),
        ("build.sh", fill(BUILD, &vars)),
        ("README.md", fill(README, &vars)),
        (".gitignore", format!("/target\n/{name}.wasm\n")),
        ("src/lib.rs", rust_lib(name, stages, &header)),
        ("plugin-test.toml", script(name, stages, &header)),
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

fn script(name: &str, stages: &[&str], header: &str) -> String {
    let has = |s: &str| stages.contains(&s);
    let mut s = format!(
        "# `corvid plugin test {name}.wasm --script plugin-test.toml`: the component in the real\n\
         # plugin host; a decision other than the expected one is a failure (exit status 1).\n\
         [plugin]\nname = \"{name}\"\n"
    );
    if has("mail") || has("rcpt") {
        s.push_str("config = { blocked_domains = [\"spam.example\"] }\n");
    }
    s.push_str("\n[connection]\nclient = \"192.0.2.10:40000\"\nhelo = \"client.example\"\n");
    for st in ["connect", "helo"] {
        if has(st) {
            let _ = writeln!(s, "expect.{st} = {{ verdict = \"continue\" }}");
        }
    }
    if has("auth") {
        s.push_str("\n[auth]\nuser = \"alice\"\npassword = \"secret\"\nexpect = { verdict = \"continue\" }\n");
    }
    s.push_str("\n[[transaction]]\nmail_from = \"friend@example.net\"\n");
    if has("rcpt") {
        s.push_str("rcpt_to = [\"user@example.org\", \"someone@spam.example\"]\n");
    } else {
        s.push_str("rcpt_to = [\"user@example.org\"]\n");
    }
    s.push_str("data = \"\"\"\nFrom: friend@example.net\nTo: user@example.org\nSubject: hello\n\nHello!\n\"\"\"\n");
    if has("mail") {
        s.push_str("expect.mail = { verdict = \"continue\" }\n");
    }
    if has("rcpt") {
        s.push_str("expect.rcpt = [\n  { verdict = \"continue\" },\n  { verdict = \"reject\", code = 550, enhanced = \"5.7.1\", text = \"Recipient domain refused\" },\n]\n");
    }
    if has("data") {
        let _ = writeln!(s, "expect.data = {{ verdict = \"continue\", modifications = [\"add-header {header}: checked\"] }}");
    }
    if has("mail") {
        s.push_str("\n[[transaction]]\nmail_from = \"someone@Spam.Example\"\nrcpt_to = [\"user@example.org\"]\nexpect.mail = { verdict = \"reject\", code = 550, enhanced = \"5.7.1\", text = \"Sender domain refused\" }\n");
    }
    if has("route") {
        s.push_str("\n[[route]]\nrecipient = \"user@example.org\"\nexpect = \"continue\"\n");
    }
    for st in ["deferred", "bounced"] {
        if has(st) {
            let _ = write!(s, "\n[[{st}]]\nrecipient = \"user@example.org\"\nreply = \"451 4.3.0 try later\"\nexpect = \"continue\"\n");
        }
    }
    if has("delivered") {
        s.push_str("\n[[delivered]]\nrecipient = \"user@example.org\"\n");
    }
    s
}

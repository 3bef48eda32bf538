//! `corvid plugin new NAME --lang rust|python|javascript|c [--stages mail,rcpt,data]`: a plugin
//! project that builds into a component with one command (`./build.sh`), has passing native
//! unit tests and a `corvid plugin test` script, and a README. Every language implements the
//! same small policy at the chosen stages (see `Spec::behaviour`); the fixed files are
//! templates under host/corvid/templates/, the parts that depend on the stages are written by
//! the language's module.

mod c;
mod javascript;
mod python;
mod rust;
mod script;

use script::script;

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

/// The contract, written into the non-Rust projects' `wit/` so they build against the WIT this
/// binary speaks (the Rust SDK carries its own copy). A test checks that none is missing.
const WIT: &[(&str, &str)] = &[
    ("auth.wit", include_str!("../../../wit/auth.wit")),
    ("context.wit", include_str!("../../../wit/context.wit")),
    (
        "delivery-tls.wit",
        include_str!("../../../wit/delivery-tls.wit"),
    ),
    ("dsn.wit", include_str!("../../../wit/dsn.wit")),
    ("host.wit", include_str!("../../../wit/host.wit")),
    ("message.wit", include_str!("../../../wit/message.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
];

/// The Corvid source tree this binary was built from, when it is still there: the SDK, the
/// examples' toolchains (target/toolchains) and their JavaScript node_modules live in it.
fn source_tree() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.join("plugins/sdk/Cargo.toml")
        .exists()
        .then(|| p.canonicalize().ok())
        .flatten()
}

/// What every language's template is made of.
pub(crate) struct Spec<'a> {
    name: &'a str,
    stages: Vec<&'static str>,
    /// The header field the `data` hook stamps by default (`X-` and the name in camel case).
    header: String,
}

impl Spec<'_> {
    fn has(&self, stage: &str) -> bool {
        self.stages.contains(&stage)
    }

    /// The `mail` or `rcpt` hook refuses the domains of `blocked_domains`.
    fn blocks(&self) -> bool {
        self.has("mail") || self.has("rcpt")
    }

    /// The configuration keys the plugin knows (any other refuses the configuration).
    fn keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.blocks() {
            keys.push("blocked_domains");
        }
        if self.has("data") {
            keys.push("header");
        }
        keys
    }

    /// What the plugin does, as README bullets.
    fn behaviour(&self) -> String {
        let mut b = String::new();
        if self.blocks() {
            b.push_str(
                "- refuses senders and recipients in `blocked_domains` (550 5.7.1), at the MAIL \
                 and RCPT stages it runs at;\n",
            );
        }
        if self.has("data") {
            let _ = writeln!(
                b,
                "- stamps each accepted message with a `{}: checked` field (`header` names it);",
                self.header
            );
        }
        b.push_str("- answers `continue` (no opinion) at its other stages.");
        b
    }

    /// The README's "See it act" section: what a client sees on the development config.
    fn see_it(&self) -> String {
        let mut s = String::from(
            "\n## See it act\n\nWith the server on Corvid's development config (SMTP on \
             127.0.0.1:2525, domain `corvid.test`) and the plugin added to it:\n",
        );
        if self.has("mail") {
            s.push_str(
                "\n```sh\nswaks --server 127.0.0.1:2525 --from someone@spam.example --to \
                 alice@corvid.test\n```\n\nis refused at MAIL: `550 5.7.1 Sender domain \
                 refused`.\n",
            );
        } else if self.has("rcpt") {
            s.push_str(
                "\n```sh\nswaks --server 127.0.0.1:2525 --from you@example.org --to \
                 someone@spam.example\n```\n\nis refused at RCPT: `550 5.7.1 Recipient \
                 domain refused`.\n",
            );
        }
        if self.has("data") {
            let _ = write!(
                s,
                "\nA message the server accepts, such as\n\n```sh\nswaks --server \
                 127.0.0.1:2525 --from you@example.org --to alice@corvid.test\n```\n\nis \
                 delivered with the field `{}: checked` added.\n",
                self.header
            );
        }
        if !self.has("mail") && !self.has("rcpt") && !self.has("data") {
            s.push_str("\nIt answers `continue`, so mail flows as before.\n");
        }
        s
    }

    /// The `[plugin.config]` lines of the README's server config.
    fn config_snippet(&self) -> String {
        let mut c = String::new();
        if self.blocks() {
            c.push_str("blocked_domains = [\"spam.example\"]\n");
        }
        if self.has("data") {
            let _ = writeln!(c, "header = \"{}\"", self.header);
        }
        c.trim_end().to_string()
    }
}

pub fn run(
    name: &str,
    lang: Lang,
    stages: &[String],
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<()> {
    check_name(name)?;
    let spec = Spec {
        name,
        stages: parse_stages(stages)?,
        header: format!("X-{}", camel(name)),
    };
    let tree = source_tree();
    let files = match lang {
        Lang::Rust => {
            let sdk = match sdk
                .map(Path::to_path_buf)
                .or_else(|| tree.as_ref().map(|t| t.join("plugins/sdk")))
            {
                Some(p) => p
                    .canonicalize()
                    .with_context(|| format!("the SDK at {}", p.display()))?,
                None => {
                    bail!("where is the Corvid SDK (plugins/sdk of the sources)? pass --sdk PATH")
                }
            };
            rust::project(&spec, &sdk.display().to_string())
        }
        Lang::Python => python::project(&spec, &toolchains(tree.as_deref())),
        Lang::Javascript => javascript::project(&spec, tree.as_deref())?,
        Lang::C => c::project(&spec, &toolchains(tree.as_deref())),
    };
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The README's server config names the component where build.sh writes it.
    let abs = dir.canonicalize()?.display().to_string();
    let see_it = spec.see_it();
    for (path, text) in &files {
        let text = fill(text, &[("dir", abs.as_str()), ("see_it", see_it.as_str())]);
        write(&dir.join(path), &text)?;
    }
    if lang == Lang::Rust {
        // The hooks are written without layout; rustfmt (when installed) lays them out as
        // `cargo fmt` would, so the author's first `cargo fmt` changes nothing.
        let _ = std::process::Command::new("rustfmt")
            .args(["--edition", "2021"])
            .arg(dir.join("src/lib.rs"))
            .status();
    } else {
        for (file, text) in WIT {
            write(&dir.join("wit").join(file), text)?;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("build.sh"), std::fs::Permissions::from_mode(0o755))?;
    }
    let test = match lang {
        Lang::Rust => "cargo test",
        Lang::Python => "python3 -m unittest",
        Lang::Javascript => "node --test",
        Lang::C => "make test",
    };
    let language = format!("{lang:?}").to_ascii_lowercase();
    println!(
        "created {} ({language} plugin, stages {}): cd {0} && ./build.sh && {test} && \
         corvid plugin test {name}.wasm --script plugin-test.toml",
        dir.display(),
        spec.stages.join(", ")
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn parse_stages(stages: &[String]) -> Result<Vec<&'static str>> {
    if stages.is_empty() {
        return Ok(vec!["mail", "rcpt", "data"]);
    }
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
    Ok(v)
}

/// Where the Python and C projects' build.sh looks for (and installs) its toolchain when
/// CORVID_TOOLCHAINS is not set: the source tree's target/toolchains, which the examples'
/// build scripts fill, or else a per-user cache.
fn toolchains(tree: Option<&Path>) -> String {
    match tree {
        Some(t) => t.join("target/toolchains").display().to_string(),
        None => "${XDG_CACHE_HOME:-$HOME/.cache}/corvid/toolchains".to_string(),
    }
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

fn fill<V: AsRef<str>>(template: &str, vars: &[(&str, V)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v.as_ref());
    }
    s
}

/// A stage's hook in a template's language: `own` for the stages the plugin runs at,
/// `default` (a no-opinion body) for the others, which the world exports all the same.
type Hook = fn(&str) -> &'static str;

/// The variables the Python, JavaScript and C templates share. `stages` and `keys` are the
/// language's spelling of the stage list and the known config keys.
fn template_vars(
    spec: &Spec,
    stages: &[String],
    keys: &[String],
    own: Hook,
    default: Hook,
) -> Vec<(&'static str, String)> {
    let mut hooks = String::new();
    let mut others = String::new();
    for stage in STAGES {
        if spec.has(stage) {
            hooks.push_str(own(stage));
        } else {
            others.push_str(default(stage));
        }
    }
    vec![
        ("name", spec.name.to_string()),
        ("header", spec.header.clone()),
        ("stages", stages.join(", ")),
        ("stage_names", spec.stages.join(", ")),
        ("keys", keys.join(", ")),
        ("hooks", hooks),
        ("others", others.trim_end().to_string()),
        ("behaviour", spec.behaviour()),
        ("config", spec.config_snippet()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wit_file_is_written_into_the_projects() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = WIT.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_toolchain_pins_are_the_examples() {
        let py = include_str!("../../../examples/greylist/python/build.sh");
        assert!(py.contains(&format!(
            "COMPONENTIZE_PY_VERSION={}\n",
            python::COMPONENTIZE_PY
        )));
        let c = include_str!("../../../examples/greylist/c/build.sh");
        assert!(c.contains(&format!("WIT_BINDGEN_VERSION=\"{}\"", c::WIT_BINDGEN)));
    }

    #[test]
    fn stages_are_checked_and_deduplicated() {
        let s = |v: &[&str]| parse_stages(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&[]).unwrap(), ["mail", "rcpt", "data"]);
        assert_eq!(s(&["Data", "mail", "data"]).unwrap(), ["data", "mail"]);
        assert!(s(&["mial"]).is_err());
    }
}

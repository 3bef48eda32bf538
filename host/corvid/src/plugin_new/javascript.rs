//! The JavaScript template: plugin.js (the world's exports, for componentize-js), policy.js
//! (the logic, plain JavaScript) with its `node --test` tests, and `./build.sh`. The toolchain
//! is pinned by the JavaScript example's package.json and package-lock.json, copied here so
//! that the example's installed node_modules serves new projects too.

use super::{fill, Spec};
use anyhow::{Context, Result};
use std::path::Path;

const BUILD: &str = include_str!("../../templates/javascript/build.sh.in");
const PLUGIN: &str = include_str!("../../templates/javascript/plugin.js.in");
const POLICY: &str = include_str!("../../templates/javascript/policy.js.in");
const TEST: &str = include_str!("../../templates/javascript/policy.test.js.in");
const README: &str = include_str!("../../templates/javascript/README.md.in");
const PACKAGE: &str = include_str!("../../../../examples/greylist/javascript/package.json");
const LOCK: &str = include_str!("../../../../examples/greylist/javascript/package-lock.json");

pub(super) fn project(spec: &Spec, tree: Option<&Path>) -> Result<Vec<(&'static str, String)>> {
    let (package, lock, version) = toolchain(spec.name)?;
    let example = tree
        .map(|t| t.join("examples/greylist/javascript").display().to_string())
        .unwrap_or_default();
    let stages: Vec<String> = spec.stages.iter().map(|s| format!("'{s}'")).collect();
    let keys: Vec<String> = spec.keys().iter().map(|k| format!("'{k}'")).collect();
    let mut vars = super::template_vars(spec, &stages, &keys, hook, default_hook);
    vars.push(("example", example));
    vars.push(("cjs_version", version));
    Ok(vec![
        ("build.sh", fill(BUILD, &vars)),
        ("plugin.js", fill(PLUGIN, &vars)),
        ("policy.js", fill(POLICY, &vars)),
        ("policy.test.js", fill(TEST, &vars)),
        ("README.md", fill(README, &vars)),
        ("package.json", package),
        ("package-lock.json", lock),
        ("plugin-test.toml", super::script(spec)),
        (
            ".gitignore",
            format!("node_modules/\n/{0}.wasm\n/{0}.wasm.tmp\n", spec.name),
        ),
    ])
}

/// The example's package.json and lock file renamed to the project, and the componentize-js
/// version they pin.
fn toolchain(name: &str) -> Result<(String, String, String)> {
    let rename = |text: &str| -> Result<serde_json::Value> {
        let mut v: serde_json::Value = serde_json::from_str(text)?;
        let obj = v.as_object_mut().context("the example's package files")?;
        obj.insert("name".into(), name.into());
        obj.insert("version".into(), "0.1.0".into());
        obj.remove("license");
        obj.remove("description");
        Ok(v)
    };
    let mut package = rename(PACKAGE)?;
    if let Some(scripts) = package.get_mut("scripts").and_then(|s| s.as_object_mut()) {
        scripts.insert("build".into(), "bash build.sh".into());
        scripts.insert("test".into(), "node --test".into());
    }
    let version = package["devDependencies"]["@bytecodealliance/componentize-js"]
        .as_str()
        .context("the example's package.json pins no componentize-js")?
        .to_string();
    let mut lock = rename(LOCK)?;
    rename_in(&mut lock, name)?;
    let pretty =
        |v: &serde_json::Value| -> Result<String> { Ok(serde_json::to_string_pretty(v)? + "\n") };
    Ok((pretty(&package)?, pretty(&lock)?, version))
}

/// The lock file names the project twice: at the top and as the root package `""`.
fn rename_in(lock: &mut serde_json::Value, name: &str) -> Result<()> {
    let root = lock
        .get_mut("packages")
        .and_then(|p| p.get_mut(""))
        .and_then(|r| r.as_object_mut())
        .context("the example's package-lock.json has no root package")?;
    root.insert("name".into(), name.into());
    root.insert("version".into(), "0.1.0".into());
    root.remove("license");
    Ok(())
}

fn hook(stage: &str) -> &'static str {
    match stage {
        "connect" => "\nexport function onConnect(conn) {\n  log('debug', `connection from ${conn.clientIp}`);\n  return proceed();\n}\n",
        "helo" => "\nexport function onHelo(_conn) {\n  return proceed();\n}\n",
        "auth" => "\nexport function onAuth(_conn, _auth) {\n  // proceed() lets the next plugin, then the users file, decide. Never log a password.\n  return proceed();\n}\n",
        "mail" => "\nexport function onMail(_conn, env) {\n  const reply = senderReply(settings(), env.sender?.domain);\n  return reply ? refuse(reply) : proceed();\n}\n",
        "rcpt" => "\nexport function onRcpt(_conn, _env, rcpt) {\n  const reply = recipientReply(settings(), rcpt.address.domain);\n  return reply ? refuse(reply) : proceed();\n}\n",
        "data" => "\nexport function onData(_conn, _env, _msg) {\n  // `_msg` is borrowed for this call only: never keep it.\n  return proceed(addHeader(settings().header, 'checked'));\n}\n",
        "route" => "\nexport function onRoute(_req) {\n  return { tag: 'continue' };\n}\n",
        "deferred" => "\nexport function onDeferred(_info) {\n  return { tag: 'continue' };\n}\n",
        "bounced" => "\nexport function onBounced(_info) {\n  return { tag: 'continue' };\n}\n",
        _ => "\nexport function onDelivered(info) {\n  log('debug', `delivered to ${info.recipient.local}@${info.recipient.domain}`);\n}\n",
    }
}

fn default_hook(stage: &str) -> &'static str {
    match stage {
        "connect" => "\nexport function onConnect(_conn) {\n  return proceed();\n}\n",
        "mail" => "\nexport function onMail(_conn, _env) {\n  return proceed();\n}\n",
        "rcpt" => "\nexport function onRcpt(_conn, _env, _rcpt) {\n  return proceed();\n}\n",
        "data" => "\nexport function onData(_conn, _env, _msg) {\n  return proceed();\n}\n",
        "delivered" => "\nexport function onDelivered(_info) {}\n",
        // helo, auth, route, deferred and bounced have no behaviour of their own.
        other => hook(other),
    }
}

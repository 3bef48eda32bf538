//! `corvid plugin test COMPONENT --script FILE`: one plugin, a scripted SMTP transaction, no
//! server. Every hook's decision is printed, so an author can check policy offline.

use anyhow::{bail, Context, Result};
use corvid_plugin_host::{
    Capability, EngineOptions, Manifest, MemoryKv, PluginEngine, PluginHost, Services, StaticDns,
};
use corvid_types::{
    Address, ConnectionInfo, Decision, Envelope, MessageView, Policy, Recipient, Stage, Verdict,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    #[serde(default)]
    plugin: PluginSection,
    #[serde(default)]
    connection: ConnSection,
    #[serde(default, rename = "transaction")]
    transactions: Vec<Transaction>,
    /// `[dns."name"] A = ["127.0.0.2"]`: answers for the dns import.
    #[serde(default)]
    dns: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSection {
    #[serde(default)]
    config: toml::Table,
    /// Default: log, config, kv, dns, clock, metrics and random (so the script can exercise
    /// the plugin as it runs in a server granting them); `random` gives it the OS's entropy.
    capabilities: Option<Vec<Capability>>,
    stages: Option<Vec<Stage>>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ConnSection {
    client: SocketAddr,
    helo: String,
    listener: String,
    auth_user: Option<String>,
}

impl Default for ConnSection {
    fn default() -> Self {
        ConnSection {
            client: SocketAddr::from(([192, 0, 2, 10], 40000)),
            helo: "client.example".into(),
            listener: "smtp".into(),
            auth_user: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transaction {
    /// The reverse-path; `""` is the null sender.
    mail_from: String,
    rcpt_to: Vec<String>,
    /// The message; line ends become CRLF.
    data: Option<String>,
}

pub fn run(component: &Path, script: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(script).with_context(|| format!("reading {}", script.display()))?;
    let script: Script =
        toml::from_str(&text).with_context(|| format!("in {}", script.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_script(component, script))
}

async fn run_script(component: &Path, script: Script) -> Result<()> {
    let dns = StaticDns::new();
    for (name, kinds) in &script.dns {
        for (kind, answers) in kinds {
            let answers: Vec<&str> = answers.iter().map(String::as_str).collect();
            dns.insert(kind, name, &answers);
        }
    }
    let services = Services {
        kv: Arc::new(MemoryKv::new()),
        dns: Arc::new(dns),
    };
    let engine = PluginEngine::new(EngineOptions::default())?;
    let host = PluginHost::new(&engine, services, None);
    let mut manifest = Manifest::new("under-test", component);
    manifest.config = script.plugin.config;
    manifest.stages = script.plugin.stages;
    manifest.capabilities = script.plugin.capabilities.unwrap_or_else(all_capabilities);
    let generation = host.load(vec![manifest]).await?;
    if let Some((_, error)) = generation.errors().first() {
        bail!("the plugin did not load: {error}");
    }
    host.swap(generation);
    let c = &script.connection;
    let mut conn = ConnectionInfo {
        session_id: 1,
        listener: c.listener.clone(),
        local_addr: SocketAddr::from(([127, 0, 0, 1], 25)),
        peer_addr: c.client,
        peer_rdns: None,
        helo: None,
        esmtp: false,
        tls: None,
        auth_user: c.auth_user.clone(),
    };
    let mut session = host.session(&conn);
    show("connect", &session.connect(&conn).await);
    conn.helo = Some(c.helo.clone());
    conn.esmtp = true;
    show("helo", &session.helo(&conn).await);
    for tx in &script.transactions {
        let mut env = Envelope {
            sender: address(&tx.mail_from)?,
            ..Envelope::default()
        };
        show(
            &format!("mail <{}>", tx.mail_from),
            &session.mail(&conn, &env).await,
        );
        for r in &tx.rcpt_to {
            let Some(address) = address(r)? else {
                bail!("empty recipient")
            };
            let rcpt = Recipient {
                address,
                params: Default::default(),
            };
            let d = session.rcpt(&conn, &env, &rcpt).await;
            show(&format!("rcpt <{r}>"), &d);
            if !matches!(
                d.verdict,
                Verdict::Reject(_) | Verdict::Tempfail(_) | Verdict::Disconnect(_)
            ) {
                env.recipients.push(rcpt);
            }
        }
        if let Some(data) = &tx.data {
            let content = crlf(data);
            show(
                "data",
                &session
                    .data(&conn, &env, MessageView { content: &content })
                    .await,
            );
        }
        session.end_transaction();
    }
    Ok(())
}

fn all_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![Log, Config, Kv, Dns, Clock, Metrics, Random]
}

fn address(text: &str) -> Result<Option<Address>> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.rsplit_once('@') {
        Some((l, d)) if !l.is_empty() && !d.is_empty() => Ok(Some(Address::new(l, d))),
        _ => bail!("`{text}` is not an address"),
    }
}

fn crlf(text: &str) -> Vec<u8> {
    let mut out = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.into_bytes()
}

fn show(hook: &str, d: &Decision) {
    let verdict = match &d.verdict {
        Verdict::Continue => "continue".to_string(),
        Verdict::Accept => "accept".to_string(),
        Verdict::Reject(r) => format!("reject {r}"),
        Verdict::Tempfail(r) => format!("tempfail {r}"),
        Verdict::Disconnect(r) => format!("disconnect {r}"),
        Verdict::Discard => "discard".to_string(),
        Verdict::Quarantine(why) => format!("quarantine ({why})"),
    };
    // A closed stdout (`| head`) ends the output quietly instead of panicking in println!.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{hook}: {verdict}");
    for m in &d.modifications {
        let _ = writeln!(out, "  modification: {m:?}");
    }
}

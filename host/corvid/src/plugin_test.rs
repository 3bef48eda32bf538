//! `corvid plugin test COMPONENT --script FILE`: one plugin, a scripted SMTP session and
//! delivery events, no server. Every hook's decision is printed and checked against the
//! script's expectations; any mismatch makes the command fail (exit status 1).
//!
//! The plugin runs in the real plugin host with an in-memory kv store (seeded from `[kv]`,
//! its TTLs on the script's clock), a static resolver (`[dns]`), the script's clock
//! (`[clock]`, moved by the steps' `advance`), its `http` answers (`[[http]]`: nothing
//! reaches the network) and each transaction's `auth_results` (SPF, DKIM, DMARC, ARC). The session follows the server's rules: a refusal at `connect` ends
//! the session, a refused MAIL skips its RCPTs and DATA, DATA runs only with an accepted
//! recipient (RFC 5321 §3.3: "no valid recipients").

pub(crate) mod ambient;
pub(crate) mod auth;
pub(crate) mod clock;
mod delivery;
pub(crate) mod envelope;
mod kv;
pub(crate) mod report;
pub(crate) mod script;

pub use report::Format;

use ambient::{Answers, KvEntry};
use anyhow::{bail, Result};
use clock::ScriptClock;
use corvid_plugin_host::{
    Capability, EngineOptions, Manifest, PluginEngine, PluginHost, Services, StaticDns,
};
use corvid_types::{Envelope, KvStore, MessageView, Policy, PolicySession, Verdict};
use report::Outcome;
use script::{address, Expect, Script};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn run(
    component: &Path,
    script_path: &Path,
    format: Format,
    cache: Option<PathBuf>,
) -> Result<()> {
    let script = script::load(script_path)?;
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcomes = rt.block_on(run_script(component, script, cache))?;
    let failed = report::print(&script_path.display().to_string(), &outcomes, format);
    if failed > 0 {
        bail!(
            "{failed} of {} checks failed in {}",
            outcomes.len(),
            script_path.display()
        );
    }
    Ok(())
}

/// The plugin's log lines and the host's account of a failed hook (a trap with its wasm
/// backtrace, a spent budget), tagged with the plugin's name and the session id as in the
/// server's log, go to stderr: warnings and errors by default, more with RUST_LOG
/// (`RUST_LOG=corvid_plugin_host=debug`). stdout keeps only the report.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("corvid_plugin_host=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

fn is_refusal(v: &Verdict) -> bool {
    matches!(
        v,
        Verdict::Reject(_) | Verdict::Tempfail(_) | Verdict::Disconnect(_)
    )
}

async fn run_script(
    component: &Path,
    script: Script,
    cache: Option<PathBuf>,
) -> Result<Vec<Outcome>> {
    let name = script
        .plugin
        .name
        .clone()
        .unwrap_or_else(|| "under-test".into());
    let mut manifest = Manifest::new(&name, component);
    manifest.config = script.plugin.config.clone();
    manifest.stages = script.plugin.stages.clone();
    manifest.http = match &script.plugin.http {
        Some(prefixes) => prefixes.clone(),
        None => script.http.iter().map(|h| h.url.clone()).collect(),
    };
    manifest.capabilities = script
        .plugin
        .capabilities
        .clone()
        .unwrap_or_else(all_capabilities);
    let seed = BTreeMap::from([(name, script.kv.clone())]);
    run_chain(vec![manifest], &seed, &script, cache).await
}

/// Runs `script` through the chain of `manifests` (in that order), with the script's DNS
/// answers, clock and http answers, and the kv store seeded with `seed` (namespace, then
/// key). `corvid plugin test` runs a chain of one; `corvid plugin replay` the recorded chain.
/// `[expect_kv]` is checked in the first manifest's namespace.
pub(crate) async fn run_chain(
    manifests: Vec<Manifest>,
    seed: &BTreeMap<String, BTreeMap<String, KvEntry>>,
    script: &Script,
    cache: Option<PathBuf>,
) -> Result<Vec<Outcome>> {
    let dns = StaticDns::new();
    for (name, kinds) in &script.dns {
        for (kind, answers) in kinds {
            let answers: Vec<&str> = answers.iter().map(String::as_str).collect();
            dns.insert(kind, name, &answers);
        }
    }
    let clock = ScriptClock::new(script.clock.as_ref())?;
    let kv = Arc::new(corvid_plugin_host::MemoryKv::with_clock(clock.shared()));
    for (ns, keys) in seed {
        for (k, v) in keys {
            kv.set(ns, k.as_bytes(), v.value().as_bytes(), v.ttl())?;
        }
    }
    let kv_ns = manifests
        .first()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    // Always: a plugin under test never reaches the network.
    let answers = Answers::install(&script.http)?;
    let services = Services {
        kv: kv.clone(),
        dns: Arc::new(dns),
    };
    let engine = PluginEngine::new(EngineOptions::default())?;
    let host = PluginHost::new(&engine, services, cache);
    let generation = host.load(manifests).await?;
    if let Some((name, error)) = generation.errors().first() {
        bail!("the plugin {name} did not load: {error}");
    }
    host.swap(generation);
    let mut out = Vec::new();
    session(&host, script, &clock, &mut out).await?;
    delivery::delivery(&host, script, &clock, &mut out).await?;
    for (k, want) in &script.expect_kv {
        out.push(kv::check(&kv, &kv_ns, k, want)?);
    }
    out.extend(answers.unanswered_outcomes());
    Ok(out)
}

/// connect, helo, auth, then each transaction.
async fn session(
    host: &PluginHost,
    script: &Script,
    clock: &ScriptClock,
    out: &mut Vec<Outcome>,
) -> Result<()> {
    let c = &script.connection;
    let mut conn = c.info();
    let mut s = host.session(&conn);
    clock.at(c.at.connect)?;
    let d = s.connect(&conn).await;
    let mut ended = is_refusal(&d.verdict).then_some("the connection was refused");
    out.push(report::decision(
        "connect".into(),
        c.expect.connect.as_ref(),
        &d,
    ));
    if let Some(p) = c.pre_tls_helo.as_ref().filter(|_| c.starttls) {
        let mut pre = conn.clone();
        pre.helo = Some(p.helo.clone());
        pre.esmtp = p.esmtp;
        clock.at(p.at)?;
        let name = "helo (before STARTTLS)";
        ended = helo(s.as_mut(), &pre, name, p.expect.as_ref(), ended, out).await;
    }
    conn.helo = Some(c.helo.clone());
    conn.esmtp = c.esmtp;
    // With STARTTLS, the EHLO that follows it.
    conn.tls = c.tls();
    clock.at(c.at.helo)?;
    ended = helo(
        s.as_mut(),
        &conn,
        "helo",
        c.expect.helo.as_ref(),
        ended,
        out,
    )
    .await;
    if let Some(a) = &script.auth {
        let name = format!("auth {} {}", a.mechanism, a.user);
        clock.at(c.at.auth)?;
        match ended {
            Some(why) => out.push(report::skipped(name, a.expect.is_some(), why)),
            None => {
                let d = s.auth(&conn, &a.credentials()).await;
                if !is_refusal(&d.verdict) && conn.auth_user.is_none() {
                    conn.auth_user = Some(a.user.clone());
                }
                if matches!(d.verdict, Verdict::Disconnect(_)) {
                    ended = Some("auth disconnected");
                }
                out.push(report::decision(name, a.expect.as_ref(), &d));
            }
        }
    }
    for tx in &script.transactions {
        // Time passes between transactions whether or not the session still runs. A recorded
        // hook time wins over `advance` (a capture has both): advancing first and setting the
        // wall clock back after would leave the monotonic clock, which never goes back and on
        // which kv keys expire, ahead of the server's.
        if tx.at.mail.is_none() {
            clock.advance(tx.advance)?;
        }
        ended = transaction(s.as_mut(), &conn, tx, clock, ended, out).await?;
    }
    Ok(())
}

/// One EHLO, unless the session `ended`; what ends it then.
async fn helo(
    s: &mut dyn PolicySession,
    conn: &corvid_types::ConnectionInfo,
    name: &str,
    expect: Option<&Expect>,
    ended: Option<&'static str>,
    out: &mut Vec<Outcome>,
) -> Option<&'static str> {
    if let Some(why) = ended {
        out.push(report::skipped(name.into(), expect.is_some(), why));
        return ended;
    }
    let d = s.helo(conn).await;
    out.push(report::decision(name.into(), expect, &d));
    matches!(d.verdict, Verdict::Disconnect(_)).then_some("helo disconnected")
}

async fn transaction(
    s: &mut dyn PolicySession,
    conn: &corvid_types::ConnectionInfo,
    tx: &script::Transaction,
    clock: &ScriptClock,
    mut ended: Option<&'static str>,
    out: &mut Vec<Outcome>,
) -> Result<Option<&'static str>> {
    let mut env = Envelope {
        sender: address(&tx.mail_from)?,
        params: tx.mail_params.params()?,
        recipients: Vec::new(),
    };
    let e = &tx.expect;
    let mail_name = format!("mail <{}>", tx.mail_from);
    let auth = tx.auth_results.as_ref();
    let spf = auth.and_then(|a| a.spf_check(conn, &tx.mail_from));
    let message = match auth {
        Some(a) => a.message(spf.as_ref())?,
        None => None,
    };
    let mut skip: Option<&'static str> = ended;
    clock.at(tx.at.mail)?;
    match ended {
        Some(why) => out.push(report::skipped(mail_name, e.mail.is_some(), why)),
        None => {
            // As the server: SPF before the mail hook, the rest before the data hook.
            if spf.is_some() {
                s.auth_results(spf.as_ref(), None);
            }
            let d = s.mail(conn, &env).await;
            if is_refusal(&d.verdict) {
                skip = Some("MAIL was refused");
            } else {
                envelope::apply(&mut env, &d.modifications);
            }
            if matches!(d.verdict, Verdict::Disconnect(_)) {
                ended = Some("the session was disconnected");
            }
            out.push(report::decision(mail_name, e.mail.as_ref(), &d));
        }
    }
    for (i, r) in tx.rcpt_to.iter().enumerate() {
        let name = format!("rcpt <{}>", r.text());
        let expect: Option<&Expect> = e.rcpt.get(i);
        clock.at(tx.at.rcpt.get(i).copied())?;
        if r.server_accepted() && skip.is_none() {
            // As the server: it joins the envelope without the chain (RFC 5321 4.5.1).
            env.recipients.push(r.recipient()?);
            let got = "accepted by the server without the chain".to_string();
            out.push(report::text(name, None, got));
            continue;
        }
        if let Some(why) = skip {
            out.push(report::skipped(name, expect.is_some(), why));
            continue;
        }
        let rcpt = r.recipient()?;
        let d = s.rcpt(conn, &env, &rcpt).await;
        if matches!(d.verdict, Verdict::Disconnect(_)) {
            ended = Some("the session was disconnected");
            skip = ended;
        }
        if !is_refusal(&d.verdict) && !r.server_refused() {
            // As the server: the recipient, then the decision's envelope changes (which may
            // remove it again).
            env.recipients.push(rcpt);
            envelope::apply(&mut env, &d.modifications);
        }
        out.push(report::decision(name, expect, &d));
    }
    if let Some(data) = &tx.data {
        let why = skip.or(env
            .recipients
            .is_empty()
            .then_some("no recipient was accepted"));
        clock.at(tx.at.data)?;
        match why {
            Some(why) => out.push(report::skipped("data".into(), e.data.is_some(), why)),
            None => {
                let content = crlf(data);
                if message.is_some() {
                    s.auth_results(spf.as_ref(), message.as_ref());
                }
                let d = s.data(conn, &env, MessageView { content: &content }).await;
                if matches!(d.verdict, Verdict::Disconnect(_)) {
                    ended = Some("the session was disconnected");
                }
                out.push(report::decision("data".into(), e.data.as_ref(), &d));
            }
        }
    }
    s.end_transaction();
    Ok(ended)
}

pub(crate) fn all_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![Log, Config, Kv, Dns, Clock, Metrics, Random]
}

fn crlf(text: &str) -> Vec<u8> {
    let mut out = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.into_bytes()
}

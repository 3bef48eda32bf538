//! The check that every implemented hook is listed in [`Plugin::STAGES`].
//!
//! Rust cannot tell at compile time whether an impl overrides a default method, so the check
//! runs each hook of a stage missing from `STAGES` once, on sample facts, and sees whether the
//! trait's default ran (the defaults call [`default_hook`]). While it probes, the host imports
//! ([`crate::host`]) answer from the in-memory fake of [`crate::testing`], so a probed hook
//! reaches no real kv store, resolver or log. It runs at load time (`configure`) and in the
//! `#[test]` that [`crate::export_plugin!`] generates.

use crate::testing::{conn, envelope, rcpt};
use crate::{AuthInfo, Config, DeliveryInfo, Header, MailMessage, MimeSummary, Plugin};
use crate::{RouteRequest, Stage};
use std::cell::Cell;

thread_local! {
    static PROBING: Cell<bool> = const { Cell::new(false) };
    static DEFAULT_RAN: Cell<bool> = const { Cell::new(false) };
}

/// Called by every default hook of [`Plugin`].
pub fn default_hook() {
    DEFAULT_RAN.with(|d| d.set(true));
}

/// True while hooks are being probed: the host imports use the fake host then.
pub fn probing() -> bool {
    PROBING.with(|p| p.get())
}

/// Sets the probing flag back when dropped, also if a probed hook panics (native tests).
struct Probing;

impl Probing {
    fn start() -> Probing {
        PROBING.with(|p| p.set(true));
        Probing
    }
}

impl Drop for Probing {
    fn drop(&mut self) {
        PROBING.with(|p| p.set(false));
    }
}

/// An empty message for a probed `on_data` (kept minimal: the probe is in every component).
struct ProbeMessage;

impl MailMessage for ProbeMessage {
    fn headers(&self) -> Vec<Header> {
        Vec::new()
    }
    fn header(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }
    fn size(&self) -> u64 {
        0
    }
    fn body_size(&self) -> u64 {
        0
    }
    fn read_body(&self, _offset: u64, _len: u32) -> Vec<u8> {
        Vec::new()
    }
    fn mime(&self) -> MimeSummary {
        MimeSummary {
            subject: None,
            from: Vec::new(),
            to: Vec::new(),
            message_id: None,
            date: None,
            parts: Vec::new(),
            has_html: false,
        }
    }
    fn body_text(&self, _max_len: u32) -> Option<String> {
        None
    }
}

fn delivery() -> DeliveryInfo {
    DeliveryInfo {
        queue_id: "probe".to_string(),
        sender: None,
        recipient: crate::testing::addr("probe@example.com"),
        attempt: 1,
        remote_host: None,
        reply: None,
        reason: "probe".to_string(),
    }
}

/// Runs `f` and says whether the trait's default hook ran.
fn ran_default(f: impl FnOnce()) -> bool {
    DEFAULT_RAN.with(|d| d.set(false));
    f();
    DEFAULT_RAN.with(|d| d.replace(false))
}

/// `Err` names each hook that is implemented while its stage is missing from `STAGES`.
/// A plugin whose `new` refuses `config` is not probed (the refusal is reported elsewhere).
pub fn check<P: Plugin>(config: &Config) -> Result<(), String> {
    let _guard = Probing::start();
    let c = conn("192.0.2.1");
    let env = envelope("probe@example.com", &["probe@example.net"]);
    let r = rcpt("probe@example.net");
    let msg = ProbeMessage;
    let auth = AuthInfo {
        mechanism: "PLAIN".to_string(),
        user: "probe".to_string(),
        authzid: None,
        password: None,
    };
    let route = RouteRequest {
        queue_id: "probe".to_string(),
        sender: None,
        recipient: crate::testing::addr("probe@example.net"),
    };
    let mut missing = Vec::new();
    for (stage, hook) in [
        (Stage::Connect, "on_connect (Stage::Connect)"),
        (Stage::Helo, "on_helo (Stage::Helo)"),
        (Stage::Auth, "on_auth (Stage::Auth)"),
        (Stage::Mail, "on_mail (Stage::Mail)"),
        (Stage::Rcpt, "on_rcpt (Stage::Rcpt)"),
        (Stage::Data, "on_data (Stage::Data)"),
        (Stage::Route, "on_route (Stage::Route)"),
        (Stage::Deferred, "on_deferred (Stage::Deferred)"),
        (Stage::Bounced, "on_bounced (Stage::Bounced)"),
        (Stage::Delivered, "on_delivered (Stage::Delivered)"),
    ] {
        if P::STAGES.contains(&stage) || P::OPTIONAL_STAGES.contains(&stage) {
            continue;
        }
        let Ok(mut p) = P::new(config) else {
            return Ok(());
        };
        let default = ran_default(|| match stage {
            Stage::Connect => drop(p.on_connect(&c)),
            Stage::Helo => drop(p.on_helo(&c)),
            Stage::Auth => drop(p.on_auth(&c, &auth)),
            Stage::Mail => drop(p.on_mail(&c, &env)),
            Stage::Rcpt => drop(p.on_rcpt(&c, &env, &r)),
            Stage::Data => drop(p.on_data(&c, &env, &msg)),
            Stage::Route => drop(p.on_route(&route)),
            Stage::Deferred => drop(p.on_deferred(&delivery())),
            Stage::Bounced => drop(p.on_bounced(&delivery())),
            Stage::Delivered => p.on_delivered(&delivery()),
        });
        if !default {
            missing.push(hook);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: implements {} but STAGES does not list it, so the host would never call it; \
             add the stage to STAGES (or OPTIONAL_STAGES) or remove the hook",
            P::NAME,
            missing.join(", ")
        ))
    }
}

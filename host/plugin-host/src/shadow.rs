//! Shadow mode (`mode = "shadow"`): what a shadow plugin decided, compared with the chain's
//! final verdict at the same stage, counted per stage ([`crate::HookStats`]) and kept, when
//! they differ, in a bounded log per plugin ([`crate::PluginHost::shadow_diffs`]), with a
//! sample logged at most every [`SAMPLE_EVERY`]. The calls themselves run in
//! [`crate::shadow_run`], off the session's path.

use crate::generation::LoadedPlugin;
use crate::stats::ShadowOutcome;
use corvid_types::{Reply, Stage, Verdict};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Differences kept per plugin (the oldest is dropped first).
pub const DIFF_LOG_SIZE: usize = 100;

/// At most one difference per plugin is logged (at info) per this interval: enough to see in
/// the log that a shadow disagrees, without a log line per message.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// The longest reason text kept (octets, cut at a character boundary).
const MAX_REASON: usize = 200;

/// One decision of a shadow plugin that differed from the chain's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowDiff {
    pub at: SystemTime,
    pub stage: Stage,
    /// The SMTP session (as in the server's logs).
    pub session: u64,
    /// The chain's final verdict at the stage (`continue`, `accept`, `reject`, `tempfail`,
    /// `disconnect`, `discard`, `quarantine`) and its reply code.
    pub chain_verdict: &'static str,
    pub chain_code: Option<u16>,
    /// The shadow plugin's verdict and reply code; when it failed, its failure policy's.
    pub shadow_verdict: &'static str,
    pub shadow_code: Option<u16>,
    /// The shadow's reply text or quarantine reason (control characters replaced, at most
    /// 200 octets), or why it failed.
    pub reason: String,
}

/// The recent differences of one plugin, and when one was last logged.
#[derive(Default)]
pub(crate) struct DiffLog {
    recent: Mutex<VecDeque<ShadowDiff>>,
    logged_at: AtomicU64,
}

impl DiffLog {
    fn push(&self, plugin: &str, d: ShadowDiff) {
        let now = secs(d.at);
        let last = self.logged_at.load(Relaxed);
        if now >= last.saturating_add(SAMPLE_EVERY.as_secs())
            && self
                .logged_at
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::info!(
                plugin,
                stage = d.stage.as_str(),
                session = d.session,
                chain = %verdict_text(d.chain_verdict, d.chain_code),
                shadow = %verdict_text(d.shadow_verdict, d.shadow_code),
                reason = %d.reason,
                "shadow plugin differs from the chain (a sample; `corvid plugins diff` lists them)"
            );
        }
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        if recent.len() >= DIFF_LOG_SIZE {
            recent.pop_front();
        }
        recent.push_back(d);
    }

    /// The kept differences, oldest first.
    pub(crate) fn recent(&self) -> Vec<ShadowDiff> {
        match self.recent.lock() {
            Ok(r) => r.iter().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `reject 550`, `continue`.
pub fn verdict_text(verdict: &str, code: Option<u16>) -> String {
    match code {
        Some(c) => format!("{verdict} {c}"),
        None => verdict.to_string(),
    }
}

/// A verdict's name and reply code.
fn describe(v: &Verdict) -> (&'static str, Option<u16>) {
    match v {
        Verdict::Continue => ("continue", None),
        Verdict::Accept => ("accept", None),
        Verdict::Reject(r) => ("reject", Some(r.code)),
        Verdict::Tempfail(r) => ("tempfail", Some(r.code)),
        Verdict::Disconnect(r) => ("disconnect", Some(r.code)),
        Verdict::Discard => ("discard", None),
        Verdict::Quarantine(_) => ("quarantine", None),
    }
}

/// Whether the two verdicts have the same effect on the client: `continue` and `accept` both
/// let the stage pass; the others must be of the same kind with the same reply code (texts
/// and quarantine reasons may differ).
pub(crate) fn same(chain: &Verdict, shadow: &Verdict) -> bool {
    let pass = |v: &Verdict| matches!(v, Verdict::Continue | Verdict::Accept);
    (pass(chain) && pass(shadow)) || describe(chain) == describe(shadow)
}

fn reply_text(r: &Reply) -> String {
    let code = r.enhanced.map(|e| format!("{e} ")).unwrap_or_default();
    format!("{code}{}", r.lines.join(" "))
}

/// Control characters become spaces; at most [`MAX_REASON`] octets.
fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        out.push(c);
    }
    out
}

/// Counts the shadow's decision at `stage` against the chain's, and keeps it if it differs.
/// `failure` is why the shadow gave no decision of its own (its failure policy's stands).
pub(crate) fn record(
    p: &LoadedPlugin,
    stage: Stage,
    session: u64,
    chain: &Verdict,
    shadow: &Verdict,
    failure: Option<&str>,
) {
    if same(chain, shadow) {
        p.stats.shadow(stage, ShadowOutcome::Agree);
        return;
    }
    p.stats.shadow(stage, ShadowOutcome::Differ);
    let reason = match (failure, shadow) {
        (Some(why), _) => why.to_string(),
        (None, Verdict::Reject(r) | Verdict::Tempfail(r) | Verdict::Disconnect(r)) => reply_text(r),
        (None, Verdict::Quarantine(why)) => why.clone(),
        (None, _) => String::new(),
    };
    let (chain_verdict, chain_code) = describe(chain);
    let (shadow_verdict, shadow_code) = describe(shadow);
    let diff = ShadowDiff {
        at: SystemTime::now(),
        stage,
        session,
        chain_verdict,
        chain_code,
        shadow_verdict,
        shadow_code,
        reason: sanitize(&reason),
    };
    p.stats.diffs.push(&p.manifest.name, diff);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(code: u16) -> Verdict {
        Verdict::Reject(Reply::new(code, "5.7.1", "no"))
    }

    #[test]
    fn pass_verdicts_agree_and_codes_count() {
        assert!(same(&Verdict::Continue, &Verdict::Accept));
        assert!(same(&reject(550), &reject(550)));
        assert!(!same(&reject(550), &reject(554)));
        assert!(!same(&Verdict::Continue, &reject(550)));
        let q = |s: &str| Verdict::Quarantine(s.into());
        assert!(same(&q("a"), &q("b")));
        assert!(!same(&q("a"), &Verdict::Discard));
    }

    #[test]
    fn reasons_are_sanitized_and_bounded() {
        assert_eq!(sanitize("a\r\nb\u{1b}c"), "a  b c");
        let long = "é".repeat(300);
        let s = sanitize(&long);
        assert!(s.len() <= MAX_REASON && s.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_log_keeps_the_last_differences() {
        let log = DiffLog::default();
        for session in 0..(DIFF_LOG_SIZE as u64 + 5) {
            let d = ShadowDiff {
                at: SystemTime::now(),
                stage: Stage::Rcpt,
                session,
                chain_verdict: "continue",
                chain_code: None,
                shadow_verdict: "reject",
                shadow_code: Some(550),
                reason: String::new(),
            };
            log.push("p", d);
        }
        let recent = log.recent();
        assert_eq!(recent.len(), DIFF_LOG_SIZE);
        assert_eq!(recent.first().map(|d| d.session), Some(5));
    }
}

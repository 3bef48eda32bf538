//! Expectations against decisions, and the three output formats of `corvid plugin test`.

use super::script::Expect;
use corvid_types::{Decision, Modification, Verdict};
use std::io::Write as _;

/// How `corvid plugin test` prints its results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per hook call, and a diff under each failed expectation.
    #[default]
    Text,
    /// The Test Anything Protocol (version 13): one test point per hook call.
    Tap,
    /// A JUnit XML report: one testcase per hook call.
    Junit,
}

/// One hook call (or one kv check) and what was wrong with it.
#[derive(Clone)]
pub struct Outcome {
    pub name: String,
    /// The decision, one line per part (verdict first, then modifications).
    pub got: Vec<String>,
    /// `- expected` / `+ got` lines; empty when it passed.
    pub diff: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.diff.is_empty()
    }
}

/// `continue`, `reject 550 5.7.1 text`, ...
pub fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Continue => "continue".into(),
        Verdict::Accept => "accept".into(),
        Verdict::Reject(r) => format!("reject {r}"),
        Verdict::Tempfail(r) => format!("tempfail {r}"),
        Verdict::Disconnect(r) => format!("disconnect {r}"),
        Verdict::Discard => "discard".into(),
        Verdict::Quarantine(why) => format!("quarantine {why}"),
    }
}

/// A modification as scripts write it in `modifications = [...]`.
pub fn modification_text(m: &Modification) -> String {
    match m {
        Modification::ChangeSender(Some(a)) => format!("change-sender {a}"),
        Modification::ChangeSender(None) => "change-sender <>".into(),
        Modification::AddRecipient(a) => format!("add-recipient {a}"),
        // Written as the RCPT parameters they stand for (RFC 3461 4.1, 4.2).
        Modification::AddRecipientWithParams(r) => {
            let mut text = format!("add-recipient {}", r.address);
            if let Some(n) = &r.params.notify {
                let on = notify_words(n).join(",").to_ascii_uppercase();
                text.push_str(&format!(" NOTIFY={on}"));
            }
            if let Some(o) = &r.params.orcpt {
                text.push_str(&format!(" ORCPT={o}"));
            }
            text
        }
        Modification::RemoveRecipient(a) => format!("remove-recipient {a}"),
        Modification::AddHeader { name, value } => format!("add-header {name}: {value}"),
        Modification::InsertHeader { index, name, value } => {
            format!("insert-header {index} {name}: {value}")
        }
        Modification::ChangeHeader { name, index, value } => {
            format!("change-header {name}[{index}]: {value}")
        }
        Modification::RemoveHeader { name, index } => format!("remove-header {name}[{index}]"),
        Modification::ReplaceBody(b) => format!("replace-body {} bytes", b.len()),
    }
}

/// The NOTIFY words set in `n` (RFC 3461 4.1), lower-case, in the RFC's order.
pub fn notify_words(n: &corvid_types::Notify) -> Vec<&'static str> {
    let words = [
        (n.never, "never"),
        (n.success, "success"),
        (n.failure, "failure"),
        (n.delay, "delay"),
    ];
    words.iter().filter(|w| w.0).map(|w| w.1).collect()
}

pub fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Continue => "continue",
        Verdict::Accept => "accept",
        Verdict::Reject(_) => "reject",
        Verdict::Tempfail(_) => "tempfail",
        Verdict::Disconnect(_) => "disconnect",
        Verdict::Discard => "discard",
        Verdict::Quarantine(_) => "quarantine",
    }
}

fn mismatch(diff: &mut Vec<String>, field: &str, want: &str, got: &str) {
    diff.push(format!("- {field}: {want}"));
    diff.push(format!("+ {field}: {got}"));
}

/// The outcome of a hook call against its expectation (none: it passes).
pub fn decision(name: String, expect: Option<&Expect>, d: &Decision) -> Outcome {
    let mut got = vec![verdict_text(&d.verdict)];
    got.extend(d.modifications.iter().map(modification_text));
    let mut diff = Vec::new();
    if let Some(e) = expect {
        let reply = match &d.verdict {
            Verdict::Reject(r) | Verdict::Tempfail(r) | Verdict::Disconnect(r) => Some(r),
            _ => None,
        };
        if let Some(want) = &e.verdict {
            if !want.eq_ignore_ascii_case(verdict_name(&d.verdict)) {
                mismatch(&mut diff, "verdict", want, verdict_name(&d.verdict));
            }
        }
        if let Some(want) = e.code {
            let have = reply.map(|r| r.code.to_string());
            if have.as_deref() != Some(&want.to_string()) {
                mismatch(&mut diff, "code", &want.to_string(), &or_none(have));
            }
        }
        if let Some(want) = &e.enhanced {
            let have = reply.and_then(|r| r.enhanced).map(|c| c.to_string());
            if have.as_deref() != Some(want.as_str()) {
                mismatch(&mut diff, "enhanced", want, &or_none(have));
            }
        }
        if let Some(want) = &e.text {
            let have = match &d.verdict {
                Verdict::Quarantine(why) => Some(why.clone()),
                _ => reply.map(|r| r.text()),
            };
            if !have.as_deref().is_some_and(|h| h.contains(want.as_str())) {
                mismatch(
                    &mut diff,
                    "text",
                    &format!("contains {want:?}"),
                    &or_none(have),
                );
            }
        }
        if let Some(want) = &e.modifications {
            let have: Vec<String> = d.modifications.iter().map(modification_text).collect();
            if *want != have {
                diff.push("modifications:".into());
                diff.extend(
                    want.iter()
                        .filter(|w| !have.contains(w))
                        .map(|w| format!("- {w}")),
                );
                diff.extend(
                    have.iter()
                        .filter(|h| !want.contains(h))
                        .map(|h| format!("+ {h}")),
                );
                if diff.last().is_some_and(|l| l == "modifications:") {
                    diff.push(format!("  the same ones in another order: {have:?}"));
                }
            }
        }
    }
    Outcome { name, got, diff }
}

/// A delivery hook's answer (as text) against its expectation.
pub fn text(name: String, expect: Option<&str>, got: String) -> Outcome {
    let mut diff = Vec::new();
    if let Some(want) = expect {
        if want != got {
            mismatch(&mut diff, "decision", want, &got);
        }
    }
    Outcome {
        name,
        got: vec![got],
        diff,
    }
}

/// A hook the script expected but that was not called (the session ended before it).
pub fn skipped(name: String, expected: bool, why: &str) -> Outcome {
    let mut diff = Vec::new();
    if expected {
        mismatch(&mut diff, "called", "yes", &format!("no ({why})"));
    }
    Outcome {
        name,
        got: vec![format!("not called: {why}")],
        diff,
    }
}

fn or_none(v: Option<String>) -> String {
    v.unwrap_or_else(|| "(none)".into())
}

/// Prints the outcomes; the number that failed.
pub fn print(script: &str, outcomes: &[Outcome], format: Format) -> usize {
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    // A closed stdout (`| head`) ends the output quietly instead of panicking in println!.
    let mut out = std::io::stdout().lock();
    let _ = match format {
        Format::Text => text_report(&mut out, outcomes, failed),
        Format::Tap => tap(&mut out, outcomes),
        Format::Junit => writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .and_then(|_| junit(&mut out, script, outcomes, failed)),
    };
    failed
}

/// Several scripts' outcomes (one per replayed capture) as one TAP stream (one plan, each
/// test named after its script) or one JUnit document (a `<testsuites>` of one suite per
/// script): CI tools read a single document. Text is printed per script as it runs.
pub fn print_many(suites: &[(String, Vec<Outcome>)], format: Format) {
    let mut out = std::io::stdout().lock();
    let _ = match format {
        Format::Text => Ok(()),
        Format::Tap => tap_many(&mut out, suites),
        Format::Junit => junit_many(&mut out, suites),
    };
}

fn tap_many(
    out: &mut impl std::io::Write,
    suites: &[(String, Vec<Outcome>)],
) -> std::io::Result<()> {
    let named: Vec<Outcome> = suites
        .iter()
        .flat_map(|(script, outcomes)| {
            outcomes.iter().map(move |o| Outcome {
                name: format!("{script}: {}", o.name),
                ..o.clone()
            })
        })
        .collect();
    tap(out, &named)
}

fn junit_many(
    out: &mut impl std::io::Write,
    suites: &[(String, Vec<Outcome>)],
) -> std::io::Result<()> {
    let count = |pass: bool| -> usize {
        let all = suites.iter().flat_map(|(_, o)| o.iter());
        all.filter(|o| pass || !o.passed()).count()
    };
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites tests="{}" failures="{}">"#,
        count(true),
        count(false)
    )?;
    for (script, outcomes) in suites {
        let failed = outcomes.iter().filter(|o| !o.passed()).count();
        junit(out, script, outcomes, failed)?;
    }
    writeln!(out, "</testsuites>")
}

fn text_report(
    out: &mut impl std::io::Write,
    outcomes: &[Outcome],
    failed: usize,
) -> std::io::Result<()> {
    for o in outcomes {
        let mark = if o.passed() { "" } else { "FAIL " };
        writeln!(
            out,
            "{mark}{}: {}",
            o.name,
            o.got.first().map_or("", String::as_str)
        )?;
        for m in o.got.iter().skip(1) {
            writeln!(out, "  modification: {m}")?;
        }
        for d in &o.diff {
            writeln!(out, "    {d}")?;
        }
    }
    writeln!(out, "{} checks, {failed} failed", outcomes.len())
}

fn tap(out: &mut impl std::io::Write, outcomes: &[Outcome]) -> std::io::Result<()> {
    writeln!(out, "TAP version 13")?;
    writeln!(out, "1..{}", outcomes.len())?;
    for (i, o) in outcomes.iter().enumerate() {
        let ok = if o.passed() { "ok" } else { "not ok" };
        writeln!(out, "{ok} {} - {}", i + 1, o.name.replace('#', "\\#"))?;
        writeln!(out, "  ---")?;
        writeln!(out, "  got: {:?}", o.got.join("; "))?;
        if !o.passed() {
            writeln!(out, "  diff: |")?;
            for d in &o.diff {
                writeln!(out, "    {d}")?;
            }
        }
        writeln!(out, "  ...")?;
    }
    Ok(())
}

fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c if c.is_control() && c != '\n' => "?".into(),
            c => c.to_string(),
        })
        .collect()
}

fn junit(
    out: &mut impl std::io::Write,
    script: &str,
    outcomes: &[Outcome],
    failed: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        r#"<testsuite name="{}" tests="{}" failures="{failed}">"#,
        xml(script),
        outcomes.len()
    )?;
    for o in outcomes {
        write!(
            out,
            r#"  <testcase classname="{}" name="{}""#,
            xml(script),
            xml(&o.name)
        )?;
        if o.passed() {
            writeln!(out, "/>")?;
        } else {
            writeln!(out, ">")?;
            writeln!(
                out,
                "    <failure message=\"expectation not met\">{}</failure>",
                xml(&o.diff.join("\n"))
            )?;
            writeln!(out, "  </testcase>")?;
        }
    }
    writeln!(out, "</testsuite>")
}

//! Rspamd's `/checkv2` reply (JSON) and the decision it maps to.
//!
//! | Rspamd action | decision |
//! |---|---|
//! | `reject` | `550 5.7.1` (RFC 3463 5.7.1: refused by policy), Rspamd's `smtp_message` as text when it gives one |
//! | `soft reject` | `451 4.7.1` (try again later) |
//! | `greylist` | `451 4.7.1` |
//! | `rewrite subject` | the message passes with Rspamd's `subject` (else `*** SPAM *** ` + the original) and the spam headers |
//! | `add header` | the message passes with `X-Spam-Flag: YES` and the spam headers |
//! | `no action` (and anything else) | the message passes with the score headers |
//!
//! In every passing case the fields in `milter.add_headers` are added and those in
//! `milter.remove_headers` removed (Rspamd's milter protocol: `0` removes every occurrence,
//! `n` the n-th).

use corvid_plugin_sdk::*;
use serde_json::Value;

/// What Rspamd said about one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    pub action: String,
    pub score: f64,
    pub required: f64,
    /// The rewritten subject (`rewrite subject`).
    pub subject: Option<String>,
    /// The SMTP reply text Rspamd suggests (`messages.smtp_message`).
    pub smtp_message: Option<String>,
    /// `milter.add_headers`, in order of name (with each value's order within a name).
    pub add: Vec<(String, String)>,
    /// `milter.remove_headers`: name and occurrence (0: all).
    pub remove: Vec<(String, i64)>,
}

/// Parses the reply body; `Err` when it is not Rspamd's JSON.
pub fn parse(body: &[u8]) -> Result<Scan, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("reply is not JSON: {e}"))?;
    let action = v
        .get("action")
        .and_then(Value::as_str)
        .ok_or("reply has no action")?
        .to_ascii_lowercase();
    let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let text = |x: Option<&Value>| x.and_then(Value::as_str).map(str::to_string);
    let milter = v.get("milter");
    let mut add = Vec::new();
    if let Some(Value::Object(m)) = milter.and_then(|m| m.get("add_headers")) {
        for (name, val) in m {
            let mut vals: Vec<(i64, String)> = match val {
                Value::Array(items) => items.iter().filter_map(header_value).collect(),
                other => header_value(other).into_iter().collect(),
            };
            vals.sort_by_key(|(order, _)| *order);
            add.extend(vals.into_iter().map(|(_, s)| (name.clone(), s)));
        }
    }
    let mut remove = Vec::new();
    if let Some(Value::Object(m)) = milter.and_then(|m| m.get("remove_headers")) {
        for (name, n) in m {
            remove.push((name.clone(), n.as_i64().unwrap_or(0)));
        }
    }
    Ok(Scan {
        action,
        score: num("score"),
        required: num("required_score"),
        subject: text(v.get("subject")),
        smtp_message: text(v.get("messages").and_then(|m| m.get("smtp_message"))),
        add,
        remove,
    })
}

/// A milter header value: a string, or `{"value": ..., "order": n}`.
fn header_value(v: &Value) -> Option<(i64, String)> {
    match v {
        Value::String(s) => Some((0, s.clone())),
        Value::Object(o) => Some((
            o.get("order").and_then(Value::as_i64).unwrap_or(0),
            o.get("value")?.as_str()?.to_string(),
        )),
        _ => None,
    }
}

/// A header field value the host accepts: control characters (Rspamd folds long values)
/// become spaces, and it is cut to fit a line (RFC 5322 2.1.1: 998 octets).
pub fn clean(value: &str) -> String {
    let mut s: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut cut = s.len().min(900);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

/// A field name RFC 5322 2.2 allows (printable ASCII but `:`), of a sane length.
pub fn field_name_ok(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Our score fields; client-supplied copies are removed first, so they cannot be forged.
const SPAM_FIELDS: [&str; 4] = [
    "X-Spam-Flag",
    "X-Spam-Score",
    "X-Spam-Status",
    "X-Spam-Action",
];

/// The decision for `scan`. `count(name)` tells how many fields called `name` the message
/// has; `subject` is its current subject; `spam_headers` adds the `X-Spam-*` fields.
pub fn decide(
    scan: &Scan,
    spam_headers: bool,
    count: &dyn Fn(&str) -> usize,
    subject: Option<&str>,
) -> Decision {
    let said = scan.smtp_message.as_deref().map(clean);
    let said = said.as_deref().filter(|s| !s.is_empty());
    match scan.action.as_str() {
        "reject" => return reject(550, "5.7.1", said.unwrap_or("Spam message rejected")),
        "soft reject" => return tempfail(451, "4.7.1", said.unwrap_or("Try again later")),
        "greylist" => return tempfail(451, "4.7.1", said.unwrap_or("Greylisted, try again later")),
        _ => {}
    }
    let spam = matches!(scan.action.as_str(), "add header" | "rewrite subject");
    let mut d = proceed();
    let mut removed: Vec<String> = Vec::new();
    let remove_all = |d: Decision, name: &str, removed: &mut Vec<String>| {
        if removed.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return d;
        }
        removed.push(name.to_string());
        // Each removal of occurrence 0 shifts the rest up.
        (0..count(name)).fold(d, |d, _| d.remove_header(name, 0))
    };
    for (name, n) in &scan.remove {
        if !field_name_ok(name) {
            continue;
        }
        match *n {
            0 => d = remove_all(d, name, &mut removed),
            n if n > 0 && (n as usize) <= count(name) => {
                d = d.remove_header(name, (n - 1) as u32);
            }
            _ => {}
        }
    }
    let milter_sets = |name: &str| scan.add.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if spam_headers {
        let status = format!(
            "{}, score={:.2} required={:.2}",
            if spam { "Yes" } else { "No" },
            scan.score,
            scan.required
        );
        let mut ours = vec![
            ("X-Spam-Score", format!("{:.2}", scan.score)),
            ("X-Spam-Status", status),
            ("X-Spam-Action", scan.action.clone()),
        ];
        if spam {
            ours.insert(0, ("X-Spam-Flag", "YES".to_string()));
        }
        for name in SPAM_FIELDS {
            d = remove_all(d, name, &mut removed);
        }
        for (name, value) in ours {
            if !milter_sets(name) {
                d = d.add_header(name, &clean(&value));
            }
        }
    }
    for (name, value) in &scan.add {
        if field_name_ok(name) {
            d = d.add_header(name, &clean(value));
        }
    }
    if scan.action == "rewrite subject" {
        let new = match &scan.subject {
            Some(s) => clean(s),
            None => clean(&format!("*** SPAM *** {}", subject.unwrap_or(""))),
        };
        d = match subject {
            Some(_) => d.change_header("Subject", 0, &new),
            None => d.add_header("Subject", &new),
        };
    }
    d
}

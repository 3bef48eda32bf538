//! What a script sets around the plugin besides the SMTP session: kv entries with a TTL
//! (`[kv]`, `[expect_kv]`) and the answers of the `http` capability (`[[http]]`). The clock is
//! in [`super::clock`].

use super::report::{self, Outcome};
use anyhow::{bail, Result};
use corvid_plugin_host::http_answers::{HttpAnswer, HttpAnswers};
use humantime_serde::re::humantime;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A kv entry in the script: `"key" = "value"`, or `"key" = { value = "value", ttl = "10m" }`.
/// In `[kv]` it seeds the store (the TTL counts from the clock's start). In `[expect_kv]`
/// `""` means absent (never written, deleted or expired) and a `ttl` checks the time left
/// too.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum KvEntry {
    Plain(String),
    Full(KvFull),
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvFull {
    value: String,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
}

impl KvEntry {
    pub fn value(&self) -> &str {
        match self {
            KvEntry::Plain(v) | KvEntry::Full(KvFull { value: v, .. }) => v,
        }
    }

    /// The expected value, `None` for absent.
    pub fn expected(&self) -> Option<&str> {
        Some(self.value()).filter(|v| !v.is_empty())
    }

    pub fn ttl(&self) -> Option<Duration> {
        match self {
            KvEntry::Plain(_) => None,
            KvEntry::Full(f) => f.ttl,
        }
    }
}

/// A time left as the report shows it: whole seconds, rounded up (`none`: no expiry).
pub fn ttl_text(ttl: Option<Duration>) -> String {
    match ttl {
        None => "none".into(),
        Some(d) => {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            humantime::format_duration(Duration::from_secs(secs)).to_string()
        }
    }
}

/// `[[http]]`: the answer to requests for `url` (exactly as the plugin sends it).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    pub url: String,
    /// Only requests with this method (any when absent).
    pub method: Option<String>,
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn ok() -> u16 {
    200
}

impl HttpStep {
    pub fn check(&self) -> Result<()> {
        let answer = HttpAnswer {
            status: self.status,
            headers: self.headers.clone().into_iter().collect(),
            body: Vec::new(),
        };
        if let Err(e) = corvid_plugin_host::http_answers::response(answer) {
            bail!("[[http]] {}: {e}", self.url);
        }
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            bail!(
                "[[http]] url {:?}: must start with http:// or https://",
                self.url
            );
        }
        Ok(())
    }
}

/// The `[[http]]` answers, and the requests nobody scripted (each one fails the run).
/// Entries for the same request answer in turn, one request each; the last one answers
/// every request after it.
pub struct Answers {
    steps: Vec<HttpStep>,
    /// Per entry: whether it has answered.
    used: Mutex<Vec<bool>>,
    pub unanswered: Mutex<Vec<String>>,
}

impl Answers {
    /// Installs the answers for the plugins' `wasi:http` requests, in place of an earlier
    /// script's (a replay of several captures runs each with its own).
    pub fn install(steps: &[HttpStep]) -> Result<Arc<Answers>> {
        for s in steps {
            s.check()?;
        }
        let answers = Arc::new(Answers::new(steps.to_vec()));
        corvid_plugin_host::http_answers::install(Some(answers.clone()));
        Ok(answers)
    }

    fn new(steps: Vec<HttpStep>) -> Answers {
        Answers {
            used: Mutex::new(vec![false; steps.len()]),
            steps,
            unanswered: Mutex::default(),
        }
    }

    fn find(&self, method: &str, url: &str) -> Option<&HttpStep> {
        // `http://h` and `http://h/` are the same resource (RFC 9110 §4.2.3).
        let same = |a: &str| {
            a == url || a.strip_suffix('/') == Some(url) || url.strip_suffix('/') == Some(a)
        };
        let matching: Vec<usize> = (0..self.steps.len())
            .filter(|&i| {
                let s = &self.steps[i];
                same(&s.url)
                    && s.method
                        .as_deref()
                        .is_none_or(|m| m.eq_ignore_ascii_case(method))
            })
            .collect();
        let mut used = self.used.lock().ok()?;
        let i = matching
            .iter()
            .copied()
            .find(|&i| !used[i])
            .or(matching.last().copied())?;
        used[i] = true;
        Some(&self.steps[i])
    }
}

impl Answers {
    /// One failed check per request that had no scripted answer.
    pub fn unanswered_outcomes(&self) -> Vec<Outcome> {
        let requests = match self.unanswered.lock() {
            Ok(u) => u.clone(),
            Err(_) => Vec::new(),
        };
        requests
            .into_iter()
            .map(|r| {
                let mut o = report::text(
                    format!("http {r}"),
                    None,
                    "no scripted answer: the request failed".into(),
                );
                o.diff = vec![
                    "- answer: a [[http]] entry for this URL".into(),
                    "+ answer: none".into(),
                ];
                o
            })
            .collect()
    }
}

impl HttpAnswers for Answers {
    fn answer(&self, _plugin: &str, method: &str, url: &str) -> Option<HttpAnswer> {
        let Some(s) = self.find(method, url) else {
            if let Ok(mut u) = self.unanswered.lock() {
                u.push(format!("{method} {url}"));
            }
            return None;
        };
        Some(HttpAnswer {
            status: s.status,
            headers: s.headers.clone().into_iter().collect(),
            body: s.body.clone().into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_seeds_and_expectations_take_a_ttl() {
        #[derive(Deserialize)]
        struct S {
            kv: BTreeMap<String, KvEntry>,
            expect_kv: BTreeMap<String, KvEntry>,
        }
        let s: S = toml::from_str(
            "[kv]\na = \"1\"\nb = { value = \"2\", ttl = \"10m\" }\n\
             [expect_kv]\na = \"\"\nb = { value = \"2\", ttl = \"1h 30m\" }\n",
        )
        .unwrap();
        assert_eq!((s.kv["a"].value(), s.kv["a"].ttl()), ("1", None));
        assert_eq!(s.kv["b"].ttl(), Some(Duration::from_secs(600)));
        assert_eq!(s.expect_kv["a"].expected(), None, "\"\" is absent");
        assert_eq!(s.expect_kv["b"].ttl(), Some(Duration::from_secs(5400)));
        for bad in [
            "a = { value = \"1\", ttl = \"soon\" }",
            "a = { value = \"1\", tll = \"1s\" }",
        ] {
            assert!(
                toml::from_str::<S>(&format!("[kv]\n{bad}\n[expect_kv]\n")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(ttl_text(Some(Duration::from_millis(599_001))), "10m");
        assert_eq!(ttl_text(None), "none");
    }

    #[test]
    fn http_answers_match_the_url_and_method_and_record_the_rest() {
        let steps: Vec<HttpStep> = toml::from_str::<BTreeMap<String, Vec<HttpStep>>>(
            "[[http]]\nurl = \"http://127.0.0.1:11333/checkv2\"\nmethod = \"POST\"\n\
             body = '{\"action\":\"reject\"}'\nheaders = { content-type = \"application/json\" }\n\
             [[http]]\nurl = \"https://api.example\"\nstatus = 503\n\
             [[http]]\nurl = \"https://api.example\"\nstatus = 204\n",
        )
        .unwrap()
        .remove("http")
        .unwrap();
        let a = Answers::new(steps);
        let got = a
            .answer("p", "POST", "http://127.0.0.1:11333/checkv2")
            .unwrap();
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, &b"{\"action\":\"reject\"}"[..])
        );
        assert_eq!(
            got.headers,
            vec![("content-type".into(), "application/json".into())]
        );
        let status = |url| a.answer("p", "GET", url).map(|r| r.status);
        assert_eq!(
            status("https://api.example/"),
            Some(503),
            "the first entry once"
        );
        assert_eq!(
            status("https://api.example"),
            Some(204),
            "then the next one"
        );
        assert_eq!(
            status("https://api.example"),
            Some(204),
            "and the last one again"
        );
        assert!(a
            .answer("p", "GET", "http://127.0.0.1:11333/checkv2")
            .is_none());
        assert!(a.answer("p", "GET", "https://other.example/").is_none());
        assert_eq!(
            *a.unanswered.lock().unwrap(),
            [
                "GET http://127.0.0.1:11333/checkv2",
                "GET https://other.example/"
            ]
        );
        let bad = HttpStep {
            url: "ftp://x/".into(),
            method: None,
            status: 200,
            headers: BTreeMap::new(),
            body: String::new(),
        };
        assert!(bad.check().is_err());
        assert!(HttpStep {
            status: 99,
            url: "http://x/".into(),
            ..bad
        }
        .check()
        .is_err());
    }
}

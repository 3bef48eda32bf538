//! What a script sets around the plugin besides the SMTP session: the clock (`[clock]` and
//! the steps' `advance`), kv entries with a TTL (`[kv]`, `[expect_kv]`) and the answers of the
//! `http` capability (`[[http]]`).

use super::report::{self, Outcome};
use anyhow::{bail, Result};
use corvid_plugin_host::clock::{Clock, ScriptedClock, SystemClock};
use corvid_plugin_host::http_answers::{HttpAnswer, HttpAnswers};
use humantime_serde::re::humantime;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// `[clock] start = "2026-12-07T13:00:00Z"`: the plugin's clocks stand at `start` until a
/// step's `advance` moves them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSection {
    pub start: Instant,
}

/// An RFC 3339 time, quoted or as a TOML datetime.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Instant {
    Text(String),
    Toml(toml::value::Datetime),
}

impl Instant {
    /// Time since the Unix epoch.
    pub fn since_epoch(&self) -> Result<Duration> {
        let text = match self {
            Instant::Text(t) => t.clone(),
            Instant::Toml(d) => d.to_string(),
        };
        let Ok(t) = humantime::parse_rfc3339_weak(&text) else {
            bail!("clock.start: {text:?} is not an RFC 3339 time (2026-12-07T13:00:00Z)")
        };
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Ok(d),
            Err(_) => bail!("clock.start: {text:?} is before 1970"),
        }
    }
}

/// The script's clock: scripted (and installed as the plugins' clock) with `[clock]`, the
/// system's without.
pub enum ScriptClock {
    Scripted(Arc<ScriptedClock>),
    System,
}

impl ScriptClock {
    /// Installs the scripted clock for the plugins (once per process: one script per run).
    pub fn new(section: Option<&ClockSection>) -> Result<ScriptClock> {
        let Some(c) = section else {
            return Ok(ScriptClock::System);
        };
        let clock = Arc::new(ScriptedClock::new(c.start.since_epoch()?));
        if corvid_plugin_host::clock::install(clock.clone()).is_err() {
            bail!("a clock was installed already");
        }
        Ok(ScriptClock::Scripted(clock))
    }

    pub fn shared(&self) -> Arc<dyn Clock> {
        match self {
            ScriptClock::Scripted(c) => c.clone(),
            ScriptClock::System => Arc::new(SystemClock),
        }
    }

    /// A step's `advance`; `Err` without `[clock]` (the system clock cannot be moved).
    pub fn advance(&self, by: Option<Duration>) -> Result<()> {
        match (self, by) {
            (_, None) => Ok(()),
            (ScriptClock::Scripted(c), Some(by)) => {
                c.advance(by);
                Ok(())
            }
            (ScriptClock::System, Some(_)) => {
                bail!("`advance` needs a scripted clock: add [clock] start = \"...\"")
            }
        }
    }
}

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
    /// Installs the answers for the plugin's `wasi:http` requests (once per process).
    pub fn install(steps: &[HttpStep]) -> Result<Arc<Answers>> {
        for s in steps {
            s.check()?;
        }
        let answers = Arc::new(Answers::new(steps.to_vec()));
        if corvid_plugin_host::http_answers::install(answers.clone()).is_err() {
            bail!("http answers were installed already");
        }
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
    fn start_times_parse_quoted_or_as_toml_datetimes() {
        #[derive(Deserialize)]
        struct S {
            clock: ClockSection,
        }
        let quoted: S = toml::from_str("clock.start = \"2026-12-07T13:00:00Z\"").unwrap();
        let bare: S = toml::from_str("clock.start = 2026-12-07T13:00:00Z").unwrap();
        let want = Duration::from_secs(1_796_648_400);
        assert_eq!(quoted.clock.start.since_epoch().unwrap(), want);
        assert_eq!(bare.clock.start.since_epoch().unwrap(), want);
        let bad: S = toml::from_str("clock.start = \"tomorrow\"").unwrap();
        let e = bad.clock.start.since_epoch().unwrap_err().to_string();
        assert!(e.contains("not an RFC 3339 time"), "{e}");
        assert!(toml::from_str::<S>("clock.begin = \"2026-12-07T13:00:00Z\"").is_err());
    }

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

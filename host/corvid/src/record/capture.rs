//! The capture file's contents: the session's script, the chain, and the host answers its
//! plugins got, in the format `corvid plugin replay` reads ([`crate::replay::Capture`]).

use super::RecordSession;
use crate::replay::CAPTURE_VERSION;
use corvid_plugin_host::record::{HostAnswers, KvSeed};
use humantime_serde::re::humantime;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

impl RecordSession {
    /// The capture file's contents, with the host answers `answers`.
    pub(super) fn capture(&mut self, answers: Option<HostAnswers>) -> Value {
        self.close_tx();
        let answers = answers.unwrap_or_default();
        self.partial.extend(answers.notes);
        let mut conn = std::mem::take(&mut self.conn);
        conn.insert(
            "at".into(),
            Value::Object(std::mem::take(&mut self.conn_at)),
        );
        conn.insert(
            "expect".into(),
            Value::Object(std::mem::take(&mut self.conn_expect)),
        );
        let mut script = Map::new();
        script.insert("connection".into(), Value::Object(conn));
        if let Some(a) = self.auth.take() {
            script.insert("auth".into(), a);
        }
        script.insert(
            "transaction".into(),
            Value::Array(std::mem::take(&mut self.txs)),
        );
        let start = humantime::format_rfc3339_millis(self.started).to_string();
        script.insert("clock".into(), json!({ "start": start }));
        script.insert("dns".into(), json!(answers.dns));
        let http: Vec<Value> = answers
            .http
            .iter()
            .map(|h| {
                json!({
                    "method": h.method,
                    "url": h.url,
                    "status": h.status,
                    "headers": h.headers,
                    "body": h.body,
                })
            })
            .collect();
        script.insert("http".into(), http.into());
        json!({
            "corvid_capture": CAPTURE_VERSION,
            "recorded_at": start,
            "plugins": self.chain,
            "partial": self.partial,
            "kv": kv(&answers.kv),
            "refused_by": answers.refused_by,
            "script": script,
        })
    }
}

/// The kv values as a script's `[kv]` takes them: `"value"`, or `{ value, ttl }` for a key
/// that expired (the time from the session's start, in milliseconds).
fn kv(seeds: &BTreeMap<String, BTreeMap<String, KvSeed>>) -> Value {
    let mut out = Map::new();
    for (ns, keys) in seeds {
        let mut m = Map::new();
        for (k, seed) in keys {
            let v = match seed.ttl {
                None => seed.value.clone().into(),
                Some(t) => json!({ "value": seed.value, "ttl": format!("{}ms", t.as_millis()) }),
            };
            m.insert(k.clone(), v);
        }
        out.insert(ns.clone(), Value::Object(m));
    }
    Value::Object(out)
}

//! A session's facts and the chain's decisions in the form of a `corvid plugin test` script.

use crate::plugin_test::report::{modification_text, notify_words, verdict_name};
use corvid_types::{BodyType, ConnectionInfo, Decision, Envelope, Recipient, Ret, Verdict};
use serde_json::{json, Map, Value};

/// The expectation a recorded decision becomes: the whole decision.
pub fn expect(d: &Decision) -> Value {
    let mut e = Map::new();
    e.insert("verdict".into(), verdict_name(&d.verdict).into());
    let text = match &d.verdict {
        Verdict::Reject(r) | Verdict::Tempfail(r) | Verdict::Disconnect(r) => {
            e.insert("code".into(), r.code.into());
            if let Some(c) = r.enhanced {
                e.insert("enhanced".into(), c.to_string().into());
            }
            Some(r.text())
        }
        Verdict::Quarantine(why) => Some(why.clone()),
        _ => None,
    };
    if let Some(t) = text {
        e.insert("text".into(), t.into());
    }
    let mods: Vec<String> = d.modifications.iter().map(modification_text).collect();
    e.insert("modifications".into(), mods.into());
    Value::Object(e)
}

pub fn refusal(d: &Decision) -> bool {
    matches!(
        d.verdict,
        Verdict::Reject(_) | Verdict::Tempfail(_) | Verdict::Disconnect(_)
    )
}

pub fn mail_params(env: &Envelope) -> Value {
    let p = &env.params;
    let mut m = Map::new();
    if let Some(s) = p.size {
        m.insert("size".into(), s.into());
    }
    if p.body == BodyType::EightBitMime {
        m.insert("body".into(), "8bitmime".into());
    }
    if p.smtputf8 {
        m.insert("smtputf8".into(), true.into());
    }
    match p.ret {
        Some(Ret::Full) => _ = m.insert("ret".into(), "full".into()),
        Some(Ret::Headers) => _ = m.insert("ret".into(), "hdrs".into()),
        None => {}
    }
    if let Some(e) = &p.envid {
        m.insert("envid".into(), e.clone().into());
    }
    if let Some(a) = &p.auth {
        m.insert("auth".into(), a.clone().into());
    }
    if p.requiretls {
        m.insert("requiretls".into(), true.into());
    }
    Value::Object(m)
}

pub fn rcpt_spec(r: &Recipient) -> Value {
    let address = r.address.to_string();
    if r.params.notify.is_none() && r.params.orcpt.is_none() {
        return address.into();
    }
    let mut m = Map::new();
    m.insert("address".into(), address.into());
    if let Some(n) = &r.params.notify {
        m.insert("notify".into(), notify_words(n).into());
    }
    if let Some(o) = &r.params.orcpt {
        m.insert("orcpt".into(), o.clone().into());
    }
    Value::Object(m)
}

/// The connection facts, as the test script's `[connection]` has them.
pub fn connection(c: &mut Map<String, Value>, conn: &ConnectionInfo) {
    c.insert("client".into(), conn.peer_addr.to_string().into());
    c.insert("local".into(), conn.local_addr.to_string().into());
    c.insert("listener".into(), conn.listener.clone().into());
    if let Some(r) = &conn.peer_rdns {
        c.insert("rdns".into(), r.clone().into());
    }
    if let Some(t) = &conn.tls {
        let mut tls = json!({"version": t.version, "cipher": t.cipher});
        if let Some(sni) = &t.sni {
            tls["sni"] = sni.clone().into();
        }
        c.insert("tls".into(), tls);
    }
    if let Some(u) = &conn.auth_user {
        c.insert("auth_user".into(), u.clone().into());
    }
}

/// Appends `v` to the list at `path` in `tx` (made on the way when missing).
pub fn push(tx: &mut Map<String, Value>, path: &[&str], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut m = tx;
    for p in parents {
        let slot = m.entry(p.to_string()).or_insert_with(|| json!({}));
        let Value::Object(next) = slot else { return };
        m = next;
    }
    if let Value::Array(list) = m.entry(last.to_string()).or_insert_with(|| json!([])) {
        list.push(v);
    }
}

//! Trace headers at DATA: optionally strips incoming fields by name first (so a client cannot
//! forge the stamps this server adds), then adds fields built from templates such as
//! `client={client_ip}; helo={helo}` (README.md documents the configuration).

use corvid_plugin_sdk::*;

/// The host refuses a decision with more modifications than this.
const MAX_MODIFICATIONS: usize = 256;
/// Cap on one substituted value: the host refuses header values over 3992 octets.
const MAX_SUBSTITUTION: usize = 255;
/// Headers one plugin adds; the rest of the modification budget is left for removals.
const MAX_ADD: usize = 32;
const DEFAULT_ADD: &[(&str, &str)] = &[("X-Corvid-Stamp", "client={client_ip}; helo={helo}")];

pub struct HeaderStamp {
    add: Vec<(String, Vec<Piece>)>,
    /// Lower-cased names; a trailing `*` matches any rest.
    remove: Vec<String>,
    top: bool,
    /// The records the templates name ([`Plugin::reads`]).
    reads: Reads,
}

impl Plugin for HeaderStamp {
    const NAME: &'static str = "header-stamp";
    const STAGES: &'static [Stage] = &[Stage::Data];

    /// Holds only its configuration, so the value is kept between transactions (no re-read).
    fn reset(&mut self) -> bool {
        true
    }

    /// Only the records the templates name.
    fn reads(&self, _stage: Stage) -> Reads {
        self.reads
    }

    fn new(config: &Config) -> Result<Self, String> {
        config.check_keys(&["add", "remove", "position"])?;
        let mut add = config.get_map::<String>("add")?;
        if config.get("add").is_none() {
            add = DEFAULT_ADD
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
        }
        let add = add
            .into_iter()
            .map(|(name, template)| {
                if name.contains('*') {
                    return Err("config key `add`: header names cannot contain *".to_string());
                }
                check_name(&name).map_err(|e| format!("config key `add`: {e}"))?;
                let pieces = parse_template(&template)
                    .map_err(|e| format!("config key `add`: header {name}: {e}"))?;
                Ok((name, pieces))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let remove = config
            .get_list::<String>("remove")?
            .into_iter()
            .map(|p| {
                let stem = p.strip_suffix('*').unwrap_or(&p);
                // A bare `*` would strip every field, From and Date included: never meant.
                if stem.is_empty() || stem.contains('*') || check_name(stem).is_err() {
                    return Err(format!(
                        "config key `remove`: {p:?} is not a header name (a trailing * is allowed)"
                    ));
                }
                Ok(p.to_ascii_lowercase())
            })
            .collect::<Result<Vec<_>, String>>()?;
        if add.len() > MAX_ADD {
            return Err(format!("config key `add`: at most {MAX_ADD} headers"));
        }
        let top = match config.get("position").unwrap_or("top") {
            "top" => true,
            "bottom" => false,
            other => {
                return Err(format!(
                    "config key `position`: {other:?} is not top or bottom"
                ))
            }
        };
        if add.is_empty() && remove.is_empty() {
            return Err("nothing to do: `add` and `remove` are both empty".to_string());
        }
        let reads = reads_of(&add);
        Ok(HeaderStamp {
            add,
            remove,
            top,
            reads,
        })
    }

    fn on_data(
        &mut self,
        conn: &ConnectionInfo,
        env: &Envelope,
        msg: &dyn MailMessage,
    ) -> Decision {
        let mut d = proceed();
        // Removal goes first so that stamps added below are never among the removed. Removing
        // occurrence 0 repeatedly removes them all, as each removal shifts the rest up.
        let budget = MAX_MODIFICATIONS.saturating_sub(self.add.len());
        if !self.remove.is_empty() {
            // A malformed field name cannot be named in a removal the host accepts; such a
            // field is left alone rather than failing the whole decision.
            let doomed = msg
                .headers()
                .into_iter()
                .filter(|h| self.removes(&h.name) && check_name(&h.name).is_ok())
                .collect::<Vec<_>>();
            if doomed.len() > budget {
                host::log(
                    LogLevel::Warn,
                    &format!("{} fields to remove, only {budget} removed", doomed.len()),
                );
            }
            for h in doomed.iter().take(budget) {
                d = d.remove_header(&h.name, 0);
            }
        }
        for (i, (name, template)) in self.add.iter().enumerate() {
            let value = render(template, conn, env, msg);
            d = if self.top {
                // Inserting at 0, 1, 2, ... keeps the configured order at the top.
                d.insert_header(i as u32, name, &value)
            } else {
                d.add_header(name, &value)
            };
        }
        d
    }
}

impl HeaderStamp {
    fn removes(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.remove.iter().any(|p| match p.strip_suffix('*') {
            Some(stem) => name.starts_with(stem),
            None => name == *p,
        })
    }
}

/// The records the templates of `add` read: the envelope for the sender and the recipient
/// count, the connection for the rest (the size comes from the message).
fn reads_of(add: &[(String, Vec<Piece>)]) -> Reads {
    let vars = || {
        add.iter().flat_map(|(_, t)| t).filter_map(|p| match p {
            Piece::Var(v) => Some(*v),
            Piece::Text(_) => None,
        })
    };
    Reads {
        connection: vars().any(|v| !matches!(v, Var::Sender | Var::RcptCount | Var::Size)),
        envelope: vars().any(|v| matches!(v, Var::Sender | Var::RcptCount)),
    }
}

/// The host's rule for field names (printable ASCII without `:`, at most 76 octets), checked
/// at load time so that a configuration never produces a decision the host refuses.
fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 76 || !n.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("{n:?} is not a valid header name"));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Var {
    ClientIp,
    ClientPort,
    ClientRdns,
    Helo,
    Listener,
    LocalIp,
    LocalPort,
    Session,
    Tls,
    AuthUser,
    Sender,
    RcptCount,
    Size,
}

const VARS: &[(&str, Var)] = &[
    ("client_ip", Var::ClientIp),
    ("client_port", Var::ClientPort),
    ("client_rdns", Var::ClientRdns),
    ("helo", Var::Helo),
    ("listener", Var::Listener),
    ("local_ip", Var::LocalIp),
    ("local_port", Var::LocalPort),
    ("session", Var::Session),
    ("tls", Var::Tls),
    ("auth_user", Var::AuthUser),
    ("sender", Var::Sender),
    ("rcpt_count", Var::RcptCount),
    ("size", Var::Size),
];

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// `{name}` is a placeholder, `{{` and `}}` are literal braces. Parsed once at load so that a
/// typo in a placeholder is a configuration error, not a literal `{helo }` in every message.
fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    if t.chars().any(|c| c.is_control() && c != '\t') {
        return Err("control characters in the template".to_string());
    }
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("unterminated placeholder {{{name}")),
                    }
                }
                let var = VARS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        let known: Vec<_> = VARS.iter().map(|(n, _)| *n).collect();
                        format!(
                            "unknown placeholder {{{name}}} (known: {})",
                            known.join(", ")
                        )
                    })?;
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Var(var));
            }
            '}' => return Err("unmatched } (write }} for a literal brace)".to_string()),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

fn render(
    pieces: &[Piece],
    conn: &ConnectionInfo,
    env: &Envelope,
    msg: &dyn MailMessage,
) -> String {
    let mut out = String::new();
    for p in pieces {
        let value = match p {
            Piece::Text(t) => {
                out.push_str(t);
                continue;
            }
            Piece::Var(v) => var(*v, conn, env, msg),
        };
        // Client-supplied text (HELO, rDNS, addresses) must not smuggle line breaks into the
        // header; the host would refuse the decision and tempfail the message.
        let clean = value
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(MAX_SUBSTITUTION);
        out.extend(clean);
    }
    out
}

fn var(v: Var, conn: &ConnectionInfo, env: &Envelope, msg: &dyn MailMessage) -> String {
    let or_unknown = |s: &Option<String>| s.clone().unwrap_or_else(|| "unknown".to_string());
    match v {
        Var::ClientIp => conn.client_ip.clone(),
        Var::ClientPort => conn.client_port.to_string(),
        Var::ClientRdns => or_unknown(&conn.client_rdns),
        Var::Helo => or_unknown(&conn.helo),
        Var::Listener => conn.listener.clone(),
        Var::LocalIp => conn.local_ip.clone(),
        Var::LocalPort => conn.local_port.to_string(),
        Var::Session => conn.session_id.to_string(),
        Var::Tls => match &conn.tls {
            Some(t) => format!("{} {}", t.version, t.cipher),
            None => "none".to_string(),
        },
        Var::AuthUser => conn.auth_user.clone().unwrap_or_else(|| "none".to_string()),
        Var::Sender => env
            .sender
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        Var::RcptCount => env.recipients.len().to_string(),
        Var::Size => msg.size().to_string(),
    }
}

export_plugin!(HeaderStamp);

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_sdk::testing::*;

    fn plugin(pairs: &[(&str, &str)]) -> HeaderStamp {
        configured(pairs)
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        corvid_plugin_sdk::testing::refused::<HeaderStamp>(pairs)
    }

    fn stamp(p: &mut HeaderStamp, conn: &ConnectionInfo, raw: &str) -> Decision {
        let d = p.on_data(
            conn,
            &envelope("a@b.example", &["c@d.example"]),
            &TestMessage::new(raw),
        );
        assert!(d.is_continue());
        d
    }

    const MSG: &str = "X-Corvid-Stamp: forged\nSubject: hi\nx-corvid-spam: no\nX-Corvid-Stamp: again\nX-Other: keep\n\nbody\n";

    #[test]
    fn only_the_records_the_templates_name_are_read() {
        let reads = |add: &str| plugin(&[("add", add)]).reads(Stage::Data);
        let r = reads(r#"{ "X-A" = "client={client_ip}; tls={tls}" }"#);
        assert_eq!((r.connection, r.envelope), (true, false));
        let r = reads(r#"{ "X-A" = "from {sender}, {rcpt_count} rcpts, {size} octets" }"#);
        assert_eq!((r.connection, r.envelope), (false, true));
        let r = reads(r#"{ "X-A" = "fixed", "X-B" = "{size}" }"#);
        assert_eq!((r.connection, r.envelope), (false, false));
    }

    #[test]
    fn the_default_stamp_goes_on_top_with_ip_and_helo() {
        let mut p = plugin(&[]);
        let d = stamp(&mut p, &conn("192.0.2.7"), "Subject: hi\n\nbody\n");
        assert_eq!(
            d.modifications,
            vec![Modification::InsertHeader(HeaderInsert {
                index: 0,
                name: "X-Corvid-Stamp".into(),
                value: "client=192.0.2.7; helo=client.example".into(),
            })]
        );
    }

    #[test]
    fn spoofed_fields_are_removed_before_the_stamps_are_added() {
        let mut p = plugin(&[
            ("remove", r#"["X-Corvid-*", "X-Absent"]"#),
            (
                "add",
                r#"{ "X-Corvid-Stamp" = "{{mx1}} tls={tls} user={auth_user} from=<{sender}> rcpts={rcpt_count}", "X-Corvid-Session" = "{session}/{listener}" }"#,
            ),
            ("position", "bottom"),
        ]);
        let mut c = conn("2001:db8::1");
        c.tls = Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            sni: None,
        });
        c.auth_user = Some("jane".into());
        let d = stamp(&mut p, &c, MSG);
        let removed = |n: &str| {
            Modification::RemoveHeader(HeaderRef {
                name: n.into(),
                index: 0,
            })
        };
        let added = |n: &str, v: &str| {
            Modification::AddHeader(HeaderField {
                name: n.into(),
                value: v.into(),
            })
        };
        assert_eq!(
            d.modifications,
            vec![
                removed("X-Corvid-Stamp"),
                removed("x-corvid-spam"),
                removed("X-Corvid-Stamp"),
                added(
                    "X-Corvid-Stamp",
                    "{mx1} tls=TLSv1.3 TLS13_AES_128_GCM_SHA256 user=jane from=<a@b.example> rcpts=1"
                ),
                added("X-Corvid-Session", "1/smtp"),
            ]
        );
    }

    #[test]
    fn several_stamps_on_top_keep_their_order_and_client_text_is_defused() {
        let mut p = plugin(&[("add", r#"{ "X-A" = "{helo}", "X-B" = "{client_rdns}" }"#)]);
        let mut c = conn("192.0.2.1");
        c.helo = Some(format!(
            "evil\r\nBcc: victim@example.org{}",
            "x".repeat(400)
        ));
        let d = stamp(&mut p, &c, "\n");
        let Modification::InsertHeader(a) = &d.modifications[0] else {
            panic!("{:?}", d.modifications)
        };
        assert_eq!((a.index, a.name.as_str()), (0, "X-A"));
        assert!(a.value.starts_with("evil??Bcc: victim@example.org"));
        assert!(!a.value.contains(['\r', '\n']) && a.value.len() == MAX_SUBSTITUTION);
        assert_eq!(
            d.modifications[1],
            Modification::InsertHeader(HeaderInsert {
                index: 1,
                name: "X-B".into(),
                value: "unknown".into()
            })
        );
    }

    #[test]
    fn removal_never_exceeds_what_the_host_accepts() {
        let mut p = plugin(&[("remove", "received")]);
        let raw = "Received: x\n".repeat(400) + "\nbody\n";
        let d = stamp(&mut p, &conn("192.0.2.1"), &raw);
        assert_eq!(d.modifications.len(), MAX_MODIFICATIONS);
        with_host(|h| assert!(h.logs.iter().any(|(_, l)| l.contains("400 fields"))));
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        assert!(refused(&[("add", r#"{ "X Bad" = "v" }"#)]).contains("not a valid header name"));
        assert!(refused(&[("add", r#"{ "X-A:" = "v" }"#)]).contains("not a valid header name"));
        assert!(refused(&[("add", r#"{ "X-*" = "v" }"#)]).contains("cannot contain *"));
        assert!(refused(&[("add", r#"{ "X-A" = "{helo" }"#)]).contains("unterminated"));
        assert!(refused(&[("add", r#"{ "X-A" = "{hello}" }"#)]).contains("{hello}"));
        assert!(refused(&[("add", r#"{ "X-A" = "a}b" }"#)]).contains("unmatched }"));
        assert!(refused(&[("add", r#"{ "X-A" = "a\nb" }"#)]).contains("control"));
        assert!(refused(&[("add", "{}")]).contains("nothing to do"));
        assert!(refused(&[("remove", "X-*-Foo")]).contains("not a header name"));
        assert!(refused(&[("remove", "*")]).contains("not a header name"));
        assert!(refused(&[("position", "middle")]).contains("position"));
        assert!(refused(&[("headers", "{}")]).contains("unknown key"));
    }
}

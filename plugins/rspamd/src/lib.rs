//! Rspamd at DATA (README.md documents the configuration).
//!
//! The message goes to Rspamd's `/checkv2` (its HTTP protocol, as `rspamc` and the Rspamd
//! proxy use it) with the transaction as request headers: `IP`, `Helo`, `Hostname`, `From`,
//! one `Rcpt` per recipient, `User` when the client authenticated, and `Queue-Id`. Corvid
//! assigns the queue ID once the message is accepted, after this hook, so `Queue-Id` is
//! `corvid-<session>-<transaction>`, the session number of Corvid's log lines.
//!
//! Rspamd's action becomes the verdict (see [`reply`]); its thresholds are set in Rspamd.
//! When Rspamd cannot be reached, times out (`limits.http_timeout_ms` of the manifest),
//! answers with an error or with something that is not its JSON, `fail = "open"` (the
//! default) lets the message through unscanned and `fail = "closed"` answers
//! `451 4.3.0` (RFC 3463 4.3.0: mail system status, so the client retries later).
//!
//! The manifest must grant the URL: `http = ["http://127.0.0.1:11333/"]`.

pub mod reply;

use corvid_plugin_sdk::*;

const KEYS: &[&str] = &["url", "fail", "spam_headers", "max_size"];

/// The default largest message sent for scanning; larger ones pass unscanned, as Rspamd's
/// own proxy does past its `max_size`.
const DEFAULT_MAX_SIZE: u64 = 8 << 20;

/// Body bytes read per host call (the host caps a read at 1 MiB).
const CHUNK: u32 = 1 << 20;

pub struct Rspamd {
    /// `<url>/checkv2`.
    endpoint: String,
    fail_open: bool,
    spam_headers: bool,
    max_size: u64,
}

impl Plugin for Rspamd {
    const NAME: &'static str = "rspamd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const STAGES: &'static [Stage] = &[Stage::Data];

    /// Holds only its configuration, so the value is kept between transactions (no re-read).
    fn reset(&mut self) -> bool {
        true
    }

    fn new(config: &Config) -> Result<Self, String> {
        if let Some((k, _)) = config
            .entries()
            .iter()
            .find(|(k, _)| !KEYS.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown config key `{k}` (known: {})",
                KEYS.join(", ")
            ));
        }
        let url = config
            .get("url")
            .unwrap_or("http://127.0.0.1:11333")
            .trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("config key `url`: {url:?} is not an http(s) URL"));
        }
        let fail_open = match config.get("fail").unwrap_or("open") {
            "open" => true,
            "closed" => false,
            other => {
                return Err(format!(
                    "config key `fail`: {other:?} is neither \"open\" nor \"closed\""
                ))
            }
        };
        let spam_headers = match config.get("spam_headers").unwrap_or("true") {
            "true" => true,
            "false" => false,
            other => {
                return Err(format!(
                    "config key `spam_headers`: {other:?} is not a boolean"
                ))
            }
        };
        let max_size = match config.get("max_size") {
            None => DEFAULT_MAX_SIZE,
            Some(s) => s
                .parse()
                .map_err(|_| format!("config key `max_size`: {s:?} is not a size in octets"))?,
        };
        Ok(Rspamd {
            endpoint: format!("{url}/checkv2"),
            fail_open,
            spam_headers,
            max_size,
        })
    }

    fn on_data(
        &mut self,
        conn: &ConnectionInfo,
        env: &Envelope,
        msg: &dyn MailMessage,
    ) -> Decision {
        if msg.size() > self.max_size {
            host::log(
                LogLevel::Info,
                &format!(
                    "message of {} octets not scanned (max_size {})",
                    msg.size(),
                    self.max_size
                ),
            );
            return proceed();
        }
        let raw = raw_message(msg);
        let headers = request_headers(conn, env);
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let scan = match http::post(&self.endpoint, &pairs, &raw) {
            Ok(r) if r.status == 200 => reply::parse(&r.body),
            Ok(r) => Err(format!("HTTP status {}", r.status)),
            Err(e) => Err(e.to_string()),
        };
        match scan {
            Ok(scan) => {
                let count = |name: &str| msg.header(name).len();
                let subject = msg.header("Subject").into_iter().next();
                let d = reply::decide(&scan, self.spam_headers, &count, subject.as_deref());
                host::log(
                    LogLevel::Info,
                    &format!("rspamd: {} (score {:.2})", scan.action, scan.score),
                );
                d
            }
            Err(why) => self.failed(&why),
        }
    }
}

impl Rspamd {
    fn failed(&self, why: &str) -> Decision {
        let policy = if self.fail_open { "open" } else { "closed" };
        host::log(
            LogLevel::Warn,
            &format!("rspamd scan failed ({why}); failing {policy}"),
        );
        if self.fail_open {
            proceed()
        } else {
            tempfail(451, "4.3.0", "Spam scanner unavailable, try again later")
        }
    }
}

/// The message as received, header fields rebuilt from the host's (unfolded) values.
fn raw_message(msg: &dyn MailMessage) -> Vec<u8> {
    let mut raw = Vec::with_capacity(usize::try_from(msg.size()).unwrap_or(0));
    for h in msg.headers() {
        raw.extend_from_slice(h.name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(h.value.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    let mut offset = 0;
    loop {
        let chunk = msg.read_body(offset, CHUNK);
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        raw.extend_from_slice(&chunk);
    }
    raw
}

/// The transaction as Rspamd's request headers; values a header cannot carry (control
/// characters from the peer) are left out.
pub fn request_headers(conn: &ConnectionInfo, env: &Envelope) -> Vec<(&'static str, String)> {
    let mut h: Vec<(&'static str, String)> = vec![("IP", conn.client_ip.clone())];
    if let Some(helo) = &conn.helo {
        h.push(("Helo", helo.clone()));
    }
    if let Some(name) = &conn.client_rdns {
        h.push(("Hostname", name.clone()));
    }
    if let Some(s) = &env.sender {
        h.push(("From", format!("{}@{}", s.local, s.domain)));
    }
    for r in &env.recipients {
        h.push(("Rcpt", format!("{}@{}", r.address.local, r.address.domain)));
    }
    if let Some(user) = &conn.auth_user {
        h.push(("User", user.clone()));
    }
    h.push((
        "Queue-Id",
        format!("corvid-{}-{}", conn.session_id, conn.transaction),
    ));
    h.retain(|(_, v)| !v.is_empty() && !v.chars().any(char::is_control));
    h
}

export_plugin!(Rspamd);

#[cfg(test)]
mod tests;

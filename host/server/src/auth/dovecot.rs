//! SMTP AUTH through Dovecot's auth socket: the client side of Dovecot's authentication
//! protocol (the one Postfix's `smtpd_sasl_type = dovecot` speaks), version 1:
//!
//! ```text
//! S: VERSION 1 2 / MECH PLAIN plaintext / ... / SPID n / CUID n / COOKIE x / DONE
//! C: VERSION 1 2 / CPID <pid>
//! C: AUTH 1 PLAIN service=smtp nologin [secured] lip=.. rip=.. resp=<base64>
//! S: OK 1 user=<name> [extra fields] | FAIL 1 [code=temp_fail|temp] ...
//! ```
//! (fields separated by TAB). One connection per attempt: no state to get wrong after a
//! Dovecot restart, and an attempt already waits for a password hash. Every read is bounded in
//! length, line count and time; a Dovecot that cannot be reached or answers nonsense is a
//! temporary failure (454), never a wrong password (535).

use super::passwd_file::SENDERS_FIELD;
use super::{AuthAttempt, AuthCheck, Credentials};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use corvid_types::Address;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest line read from Dovecot. Its handshake and replies are short; an OK reply carries
/// the passdb extra fields (sender lists), so leave room.
const MAX_LINE: usize = 16 * 1024;
/// Handshake lines before DONE (one MECH line per mechanism, a few more).
const MAX_HANDSHAKE_LINES: usize = 64;
/// Whole-attempt deadline. Dovecot itself waits `auth_failure_delay` (2 s by default) before
/// a FAIL, so this must be well above that.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Users whose sender lists are remembered from their last OK reply.
const MAX_REMEMBERED: usize = 10_000;
/// Attempts waiting on Dovecot at once. Dovecot holds every wrong password for
/// `auth_failure_delay`, so these are not limited by `auth.max_concurrent_hashes` (a few
/// guessers would starve everyone's logins); beyond this many, 454 4.7.0.
const MAX_IN_FLIGHT: usize = 64;

pub struct DovecotAuth {
    socket: PathBuf,
    timeout: Duration,
    delimiter: char,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// user -> `corvid_senders` of its last successful login, for `owns_address`.
    senders: Mutex<HashMap<String, Vec<String>>>,
}

#[derive(Debug, thiserror::Error)]
enum ProtoError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("Dovecot closed the connection")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error("line from Dovecot too long")]
    TooLong,
    #[error("unexpected handshake: {0}")]
    Handshake(&'static str),
    #[error("unexpected reply to AUTH")]
    Reply,
}

impl DovecotAuth {
    pub fn new(socket: &Path, delimiter: char) -> DovecotAuth {
        DovecotAuth {
            socket: socket.to_path_buf(),
            timeout: TIMEOUT,
            delimiter,
            in_flight: AtomicUsize::new(0),
            max_in_flight: MAX_IN_FLIGHT,
            senders: Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> DovecotAuth {
        self.timeout = timeout;
        self
    }

    #[cfg(test)]
    pub(crate) fn with_max_in_flight(mut self, max: usize) -> DovecotAuth {
        self.max_in_flight = max;
        self
    }

    fn exchange(&self, attempt: &AuthAttempt<'_>) -> Result<AuthCheck, ProtoError> {
        let deadline = Instant::now() + self.timeout;
        let stream = UnixStream::connect(&self.socket)?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        writer.write_all(format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id()).as_bytes())?;
        let mut plain = false;
        for n in 0.. {
            if n == MAX_HANDSHAKE_LINES {
                return Err(ProtoError::Handshake("too many lines"));
            }
            let line = read_line(&mut reader, deadline)?;
            let mut f = line.split('\t');
            match f.next() {
                // A different major version is a different protocol.
                Some("VERSION") if f.next() != Some("1") => {
                    return Err(ProtoError::Handshake("not version 1"))
                }
                Some("MECH") if f.next().is_some_and(|m| m.eq_ignore_ascii_case("PLAIN")) => {
                    plain = true
                }
                Some("DONE") => break,
                _ => {}
            }
        }
        if !plain {
            return Err(ProtoError::Handshake(
                "PLAIN is not among Dovecot's mechanisms",
            ));
        }
        // RFC 4616 2: authzid empty, authcid, passwd. The password goes nowhere else.
        let mut resp = Vec::with_capacity(attempt.username.len() + attempt.password.len() + 2);
        resp.push(0);
        resp.extend_from_slice(attempt.username.as_bytes());
        resp.push(0);
        resp.extend_from_slice(attempt.password.as_bytes());
        let mut cmd = String::from("AUTH\t1\tPLAIN\tservice=smtp\tnologin");
        if attempt.secured {
            cmd.push_str("\tsecured");
        }
        if let Some(ip) = attempt.local_ip {
            cmd.push_str(&format!("\tlip={ip}"));
        }
        if let Some(ip) = attempt.client_ip {
            cmd.push_str(&format!("\trip={ip}"));
        }
        cmd.push_str(&format!("\tresp={}\n", STANDARD.encode(&resp)));
        writer.write_all(cmd.as_bytes())?;
        let line = read_line(&mut reader, deadline)?;
        let mut fields = line.split('\t');
        let (kind, id) = (fields.next(), fields.next());
        if id != Some("1") {
            return Err(ProtoError::Reply);
        }
        let params: Vec<(&str, String)> = fields
            .map(|f| f.split_once('=').unwrap_or((f, "")))
            .map(|(k, v)| (k, unescape(v)))
            .collect();
        let get = |key: &str| params.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        match kind {
            Some("OK") => {
                let user = get("user")
                    .cloned()
                    .unwrap_or_else(|| attempt.username.to_string());
                let senders = get(SENDERS_FIELD)
                    .map(|l| {
                        l.split(',')
                            .map(str::trim)
                            .filter(|a| !a.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                self.remember(&user, senders);
                Ok(AuthCheck::Accepted(user))
            }
            // Dovecot 2.3 marks a failure that is not the password's fault with `temp` or
            // `code=temp_fail` (its passdb is down, the users file unreadable...).
            Some("FAIL")
                if get("temp").is_some() || get("code").is_some_and(|c| c == "temp_fail") =>
            {
                Ok(AuthCheck::Unavailable(
                    "Dovecot reported a temporary failure".into(),
                ))
            }
            Some("FAIL") => Ok(AuthCheck::Rejected),
            _ => Err(ProtoError::Reply),
        }
    }

    fn remember(&self, user: &str, senders: Vec<String>) {
        let mut map = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_REMEMBERED && !map.contains_key(user) {
            map.clear();
        }
        map.insert(user.to_string(), senders);
    }
}

impl Credentials for DovecotAuth {
    fn verify(&self, username: &str, password: &str) -> bool {
        let attempt = AuthAttempt::new(username, password);
        matches!(self.check(&attempt), AuthCheck::Accepted(_))
    }

    fn check(&self, attempt: &AuthAttempt<'_>) -> AuthCheck {
        let Some(_slot) = InFlight::take(&self.in_flight, self.max_in_flight) else {
            return AuthCheck::Unavailable("too many checks waiting on Dovecot".into());
        };
        self.exchange(attempt).unwrap_or_else(|e| {
            AuthCheck::Unavailable(format!(
                "Dovecot auth socket {}: {e}",
                self.socket.display()
            ))
        })
    }

    fn hashes_locally(&self) -> bool {
        false
    }

    /// The user name itself (when it is an address) and the `corvid_senders` extra field of
    /// the user's passdb entry, as Dovecot returned them at login.
    fn owns_address(&self, user: &str, address: &Address) -> bool {
        let map = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        let listed = map.get(user).map(Vec::as_slice).unwrap_or_default();
        std::iter::once(user)
            .chain(listed.iter().map(String::as_str))
            .any(|a| super::same_address(a, address, self.delimiter))
    }
}

/// A place among the attempts in flight, given back on drop.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn take(count: &'a AtomicUsize, max: usize) -> Option<InFlight<'a>> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(count))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One LF-terminated line, at most `MAX_LINE` bytes, before `deadline`.
fn read_line(reader: &mut BufReader<UnixStream>, deadline: Instant) -> Result<String, ProtoError> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(ProtoError::Timeout)?;
    reader.get_ref().set_read_timeout(Some(left))?;
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ProtoError::Timeout,
            _ => ProtoError::Io(e),
        })?;
    if n == 0 {
        return Err(ProtoError::Closed);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > MAX_LINE {
            ProtoError::TooLong
        } else {
            ProtoError::Closed
        });
    }
    buf.pop();
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Dovecot's tab escaping: `\x01` followed by `1`, `t`, `r`, `n`, `0` stands for `\x01`, TAB,
/// CR, LF, NUL.
fn unescape(v: &str) -> String {
    if !v.contains('\x01') {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\x01' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push('\x01'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
#[path = "dovecot_tests.rs"]
mod tests;

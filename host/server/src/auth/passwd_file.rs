//! The users file's lines, in Dovecot's `passwd-file` format so that Dovecot's
//! `passdb { driver = passwd-file }` reads the same file:
//!
//! `name:{ARGON2ID}$argon2id$...:uid:gid:gecos:home:shell:extra fields`
//!
//! Corvid writes the uid..shell fields empty and keeps the sender addresses a user may use in
//! the extra field `corvid_senders=a@x,b@y` (Dovecot passes unknown extra fields through and
//! otherwise ignores them). Fields it does not use (uid, home, other extra fields such as
//! `userdb_quota_rule=...`) are kept as they are when the file is rewritten.
//!
//! The older Corvid format, `name:$argon2id$...[:address,address]`, is still read; the file is
//! rewritten in the new format when it is loaded.

use std::collections::BTreeMap;

/// The extra field holding the sender addresses.
pub(crate) const SENDERS_FIELD: &str = "corvid_senders";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct User {
    /// The password field as written, `{SCHEME}...` (Dovecot's scheme prefix).
    pub(crate) password: String,
    pub(crate) addresses: Vec<String>,
    /// uid, gid, gecos, home, shell: unused by Corvid, kept for Dovecot.
    pub(crate) unix: [String; 5],
    /// Extra fields other than `corvid_senders`, in order.
    pub(crate) extra: Vec<String>,
}

impl User {
    pub(crate) fn new(phc_hash: &str, addresses: Vec<String>) -> User {
        User {
            password: password_field(phc_hash),
            addresses,
            ..User::default()
        }
    }

    /// The PHC string Corvid verifies, when the scheme is one of the argon2 ones.
    pub(crate) fn argon2_phc(&self) -> Option<&str> {
        let (scheme, rest) = split_scheme(&self.password)?;
        matches!(scheme, "ARGON2ID" | "ARGON2I").then_some(rest)
    }
}

/// `{ARGON2ID}$argon2id$...` for a PHC string from `hash_password` (Dovecot names the scheme
/// in braces; its ARGON2ID and ARGON2I verify the same PHC strings the argon2 crate writes).
pub(crate) fn password_field(phc_hash: &str) -> String {
    if phc_hash.starts_with('{') {
        return phc_hash.to_string();
    }
    let scheme = if phc_hash.starts_with("$argon2i$") {
        "ARGON2I"
    } else {
        "ARGON2ID"
    };
    format!("{{{scheme}}}{phc_hash}")
}

fn split_scheme(password: &str) -> Option<(&str, &str)> {
    let rest = password.strip_prefix('{')?;
    let (scheme, hash) = rest.split_once('}')?;
    Some((scheme, hash))
}

/// What a file held: the users, and whether any line was in the old format.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) legacy_lines: usize,
}

/// Why a line was refused. Never holds the line itself: it may contain a password hash.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineError {
    pub(crate) line: usize,
    pub(crate) reason: String,
}

pub(crate) fn parse(text: &str) -> Result<Parsed, LineError> {
    let mut parsed = Parsed::default();
    let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let err = |reason: String| LineError {
            line: number,
            reason,
        };
        let (name, user, legacy) = parse_line(line).map_err(|r| err(r.to_string()))?;
        if let Some(first) = first_seen.get(&name) {
            return Err(err(format!("user {name} is already on line {first}")));
        }
        first_seen.insert(name.clone(), number);
        parsed.legacy_lines += usize::from(legacy);
        parsed.users.insert(name, user);
    }
    Ok(parsed)
}

/// One non-comment line: (name, user, old format?).
fn parse_line(line: &str) -> Result<(String, User, bool), &'static str> {
    let mut fields = line.splitn(8, ':');
    let name = fields.next().unwrap_or_default();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err("the user name (first field) is empty or contains white space");
    }
    let Some(password) = fields.next() else {
        return Err("expected name:{SCHEME}hash::::::extra fields");
    };
    let rest: Vec<&str> = fields.collect();
    if password.starts_with("$argon2") {
        // The old format: name:phc[:addresses], nothing after the addresses.
        if rest.len() > 1 {
            return Err("an old-format line (name:$argon2id$...:addresses) has extra fields");
        }
        let addresses = rest.first().map(|a| split_list(a)).unwrap_or_default();
        return Ok((name.to_string(), User::new(password, addresses), true));
    }
    if split_scheme(password).is_none_or(|(scheme, hash)| scheme.is_empty() || hash.is_empty()) {
        return Err("the password field is not {SCHEME}hash (e.g. {ARGON2ID}$argon2id$...)");
    }
    let mut user = User {
        password: password.to_string(),
        ..User::default()
    };
    for (slot, value) in user.unix.iter_mut().zip(rest.iter()) {
        *slot = value.to_string();
    }
    if let Some(extra) = rest.get(5) {
        for field in extra.split(' ').filter(|f| !f.is_empty()) {
            match field.split_once('=') {
                Some((SENDERS_FIELD, list)) => user.addresses.extend(split_list(list)),
                _ => user.extra.push(field.to_string()),
            }
        }
    }
    Ok((name.to_string(), user, false))
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// The file's text, always in the passwd-file format.
pub(crate) fn format(users: &BTreeMap<String, User>) -> String {
    let mut text = String::from(
        "# Corvid users, in Dovecot passwd-file format (Dovecot's passdb can read this file):\n\
         # name:{ARGON2ID}hash:uid:gid:gecos:home:shell:corvid_senders=a@x,b@y other=fields\n\
         # Edit with `corvid user`.\n",
    );
    for (name, u) in users {
        let mut extra = Vec::new();
        if !u.addresses.is_empty() {
            extra.push(format!("{SENDERS_FIELD}={}", u.addresses.join(",")));
        }
        extra.extend(u.extra.iter().cloned());
        text.push_str(&format!(
            "{name}:{}:{}:{}\n",
            u.password,
            u.unix.join(":"),
            extra.join(" ")
        ));
    }
    text
}

/// A sender address may go in the extra field: no separator of the file or of the list.
pub(crate) fn valid_address(a: &str) -> bool {
    !a.is_empty() && !a.contains([':', ',', '=']) && !a.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

    #[test]
    fn new_format_round_trip_keeps_dovecot_fields() {
        let text = format!(
            "# comment\n\nalice@x.test:{{ARGON2ID}}{PHC}:::::: corvid_senders=sales@x.test,info@x.test\n\
             bob@x.test:{{ARGON2ID}}{PHC}:5000:5000::/home/bob::userdb_quota_rule=*:storage=1G nologin\n\
             carol@x.test:{{ARGON2ID}}{PHC}\n"
        );
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.legacy_lines, 0);
        let alice = &parsed.users["alice@x.test"];
        assert_eq!(alice.addresses, ["sales@x.test", "info@x.test"]);
        assert_eq!(alice.argon2_phc(), Some(PHC));
        let bob = &parsed.users["bob@x.test"];
        assert_eq!(bob.unix[0], "5000");
        assert_eq!(bob.unix[3], "/home/bob");
        // A ':' inside an extra field stays in it (Dovecot joins the fields after the 7th).
        assert_eq!(bob.extra, ["userdb_quota_rule=*:storage=1G", "nologin"]);
        assert!(parsed.users["carol@x.test"].addresses.is_empty());
        let again = parse(&format(&parsed.users)).unwrap();
        assert_eq!(again.users, parsed.users);
        let out = format(&parsed.users);
        assert!(out.contains(&format!(
            "alice@x.test:{{ARGON2ID}}{PHC}::::::corvid_senders=sales@x.test,info@x.test\n"
        )));
        assert!(out.contains(&format!("carol@x.test:{{ARGON2ID}}{PHC}::::::\n")));
    }

    #[test]
    fn old_format_is_read_and_written_new() {
        let text = format!("alice@x.test:{PHC}:sales@x.test, info@x.test\nbob@x.test:{PHC}:\n");
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.legacy_lines, 2);
        assert_eq!(
            parsed.users["alice@x.test"].addresses,
            ["sales@x.test", "info@x.test"]
        );
        assert_eq!(parsed.users["bob@x.test"].argon2_phc(), Some(PHC));
        let out = format(&parsed.users);
        assert!(out.contains(&format!(
            "alice@x.test:{{ARGON2ID}}{PHC}::::::corvid_senders=sales@x.test,info@x.test\n"
        )));
        assert_eq!(parse(&out).unwrap().legacy_lines, 0);
    }

    #[test]
    fn malformed_lines_name_the_line_not_the_secret() {
        let cases = [
            ("ok@x.test:{ARGON2ID}$argon2id$a\nnocolon\n", 2, "expected"),
            ("\n:{ARGON2ID}$argon2id$secret-hash\n", 2, "user name"),
            ("a b:{ARGON2ID}x\n", 1, "user name"),
            ("alice:plaintext-secret\n", 1, "{SCHEME}hash"),
            ("alice:{ARGON2ID}\n", 1, "{SCHEME}hash"),
            ("alice:$argon2id$secret:a@x:extra\n", 1, "old-format"),
            ("a:{ARGON2ID}h\n#\na:{ARGON2ID}h\n", 3, "already on line 1"),
        ];
        for (text, line, reason) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}");
            assert!(e.reason.contains(reason), "{text:?}: {}", e.reason);
            assert!(!e.reason.contains("secret"), "{}", e.reason);
        }
    }

    #[test]
    fn schemes() {
        assert_eq!(password_field(PHC), format!("{{ARGON2ID}}{PHC}"));
        assert_eq!(
            password_field("$argon2i$v=19$x"),
            "{ARGON2I}$argon2i$v=19$x"
        );
        let other = User {
            password: "{SHA512-CRYPT}$6$abc".into(),
            ..User::default()
        };
        assert_eq!(other.argon2_phc(), None);
        assert!(valid_address("a@x.test"));
        assert!(!valid_address("a b@x") && !valid_address("a@x,b@y") && !valid_address(""));
    }
}

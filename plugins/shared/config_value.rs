//! Structured values in a plugin's config table, shared by the first-party plugins (each crate
//! includes this file with `#[path]`, so they stay independent crates without another dependency).
//!
//! The host hands every top-level key over as text: strings as they are, anything else in TOML
//! syntax as the `toml` crate prints it (`["a", 'b"c']`, `{ "@old.example" = "@new.example" }`).
//! The SDK's `Config::list` splits on commas and ignores TOML quoting, and nested tables have no
//! accessor at all, so this file parses the subset of TOML the first-party plugins need: strings
//! (basic and literal), arrays, inline tables, and bare scalars kept as text. Pulling in the
//! `toml` crate instead would make each component about 240 KB larger.

use corvid_plugin_sdk::Config;

/// A parsed config value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    List(Vec<Value>),
    Table(Vec<(String, Value)>),
    /// A number, boolean or date, as written.
    Scalar(String),
}

/// Refuses keys the plugin does not know, so a typo is a load error instead of a silently
/// ignored setting.
pub fn check_keys(config: &Config, known: &[&str]) -> Result<(), String> {
    for (key, _) in config.entries() {
        if !known.contains(&key.as_str()) {
            return Err(format!(
                "unknown config key `{key}` (known keys: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// A list of strings at `key`; a plain string counts as a list of one, an absent key as empty.
pub fn string_list(config: &Config, key: &str) -> Result<Vec<String>, String> {
    let Some(text) = config.get(key) else {
        return Ok(Vec::new());
    };
    if !text.trim_start().starts_with('[') {
        return Ok(vec![text.to_string()]);
    }
    match parse(text).map_err(|e| format!("config key `{key}`: {e}"))? {
        Value::List(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s),
                other => Err(format!(
                    "config key `{key}`: expected strings, got {other:?}"
                )),
            })
            .collect(),
        other => Err(format!(
            "config key `{key}`: expected a list, got {other:?}"
        )),
    }
}

/// A table of string values at `key` (`[plugin.config.key]` or an inline table), in the order
/// given; an absent key is an empty table.
pub fn string_table(config: &Config, key: &str) -> Result<Vec<(String, String)>, String> {
    let Some(text) = config.get(key) else {
        return Ok(Vec::new());
    };
    match parse(text).map_err(|e| format!("config key `{key}`: {e}"))? {
        Value::Table(entries) => entries
            .into_iter()
            .map(|(k, v)| match v {
                Value::Str(s) => Ok((k, s)),
                other => Err(format!(
                    "config key `{key}`: value of `{k}` must be a string, got {other:?}"
                )),
            })
            .collect(),
        _ => Err(format!(
            "config key `{key}`: expected a table such as {{ \"a\" = \"b\" }}"
        )),
    }
}

/// A boolean at `key`, `default` when absent.
pub fn flag(config: &Config, key: &str, default: bool) -> Result<bool, String> {
    Ok(config.parse::<bool>(key)?.unwrap_or(default))
}

/// Parses one TOML value; trailing text other than white space or a comment is an error.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.skip_space();
    if p.i < p.s.len() {
        return Err(format!("unexpected text after the value at offset {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// White space, newlines and `#` comments may appear between the parts of arrays and tables.
    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_space();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at offset {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        match self.peek() {
            Some(b'"' | b'\'') => self.string().map(Value::Str),
            Some(b'[') => self.list(),
            Some(b'{') => self.table(),
            Some(_) => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| !b",]}#".contains(&c) && !c.is_ascii_whitespace())
                {
                    self.i += 1;
                }
                if start == self.i {
                    return Err(format!("missing value at offset {start}"));
                }
                let raw = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                Ok(Value::Scalar(raw))
            }
            None => Err("missing value".to_string()),
        }
    }

    /// Both separators allow a trailing comma, as TOML 1.1 and hand-written configs do.
    fn list(&mut self) -> Result<Value, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some(b']') {
                self.i += 1;
                return Ok(Value::List(items));
            }
            items.push(self.value()?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {}
                _ => return Err(format!("expected `,` or `]` at offset {}", self.i)),
            }
        }
    }

    fn table(&mut self) -> Result<Value, String> {
        self.expect(b'{')?;
        let mut entries: Vec<(String, Value)> = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(Value::Table(entries));
            }
            let key = self.key()?;
            self.expect(b'=')?;
            let value = self.value()?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(format!("duplicate key {key:?}"));
            }
            entries.push((key, value));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected `,` or `}}` at offset {}", self.i)),
            }
        }
    }

    fn key(&mut self) -> Result<String, String> {
        self.skip_space();
        if matches!(self.peek(), Some(b'"' | b'\'')) {
            return self.string();
        }
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            self.i += 1;
        }
        if start == self.i || self.peek() == Some(b'.') {
            return Err(format!(
                "expected a key at offset {} (quote keys such as \"a@b.example\")",
                start
            ));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn string(&mut self) -> Result<String, String> {
        let Some(quote) = self.peek() else {
            return Err("missing string".to_string());
        };
        if self.s[self.i..].starts_with(&[quote; 3]) {
            return Err("multi-line strings are not supported here".to_string());
        }
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err("unterminated string".to_string());
            };
            self.i += 1;
            match c {
                c if c == quote => break,
                b'\\' if quote == b'"' => self.escape(&mut out)?,
                b'\n' => return Err("newline in a string".to_string()),
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| "string is not UTF-8".to_string())
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let c = self.peek().ok_or("unterminated escape")?;
        self.i += 1;
        let simple = match c {
            b'"' => Some('"'),
            b'\\' => Some('\\'),
            b'n' => Some('\n'),
            b't' => Some('\t'),
            b'r' => Some('\r'),
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{c}'),
            b'e' => Some('\u{1b}'),
            _ => None,
        };
        let ch = match (simple, c) {
            (Some(ch), _) => ch,
            (None, b'u' | b'U') => {
                let len = if c == b'u' { 4 } else { 8 };
                let hex = self
                    .s
                    .get(self.i..self.i + len)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .ok_or("bad unicode escape")?;
                self.i += len;
                hex
            }
            _ => return Err(format!("unknown escape `\\{}`", c as char)),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.to_string())
    }

    #[test]
    fn parses_what_the_host_prints() {
        // Exactly what `toml::Value::to_string` produced for these values.
        assert_eq!(
            parse(r#"["a@b.example", "@spam.example", 'x"y@z']"#),
            Ok(Value::List(vec![
                s("a@b.example"),
                s("@spam.example"),
                s("x\"y@z")
            ]))
        );
        assert_eq!(
            parse(r#"{ "@old.example" = "@new.example", plain = "x", n = 5 }"#),
            Ok(Value::Table(vec![
                ("@old.example".into(), s("@new.example")),
                ("plain".into(), s("x")),
                ("n".into(), Value::Scalar("5".into())),
            ]))
        );
        assert_eq!(parse(r#""a\"b\\c\u00e9""#), Ok(s("a\"b\\cé")));
        assert_eq!(
            parse("[ 'a' , \n 'b', ] # note"),
            Ok(Value::List(vec![s("a"), s("b")]))
        );
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "[\"a\"",
            "{ a = }",
            "{ a.b = \"c\" }",
            "\"open",
            "{ a = \"1\", a = \"2\" }",
            "[\"a\"] x",
            "\"\\q\"",
            "\"\"\"multi\"\"\"",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn lists_and_tables_from_a_config() {
        let c = Config::from_pairs([
            ("one", "solo@x.example"),
            ("many", r#"["a", "b"]"#),
            ("map", r#"{ "k" = "v" }"#),
            ("nested", r#"{ "k" = ["v"] }"#),
        ]);
        assert_eq!(
            string_list(&c, "one"),
            Ok(vec!["solo@x.example".to_string()])
        );
        assert_eq!(string_list(&c, "many").map(|v| v.len()), Ok(2));
        assert_eq!(string_list(&c, "absent"), Ok(vec![]));
        assert_eq!(string_table(&c, "map"), Ok(vec![("k".into(), "v".into())]));
        assert!(string_table(&c, "nested").is_err());
        assert!(string_table(&c, "one").is_err());
        assert!(check_keys(&c, &["one", "many", "map"]).is_err());
        assert!(check_keys(&c, &["one", "many", "map", "nested"]).is_ok());
    }
}

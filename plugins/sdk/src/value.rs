//! TOML values of a plugin's config table.
//!
//! The host hands every top-level key of `[plugin.config]` over as text: strings as they are,
//! anything else in TOML syntax as the `toml` crate prints it (`["a", 'b"c']`,
//! `{ "@old.example" = "@new.example" }`). This module parses that text into a [`Value`]. It is
//! hand-written because the `toml` crate would make each component about 240 KB larger; it
//! reads every value a TOML 1.0 document can hold except multi-line strings, which the host
//! never prints (it escapes newlines).

/// A TOML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string.
    String(String),
    /// An integer (decimal, or `0x`/`0o`/`0b`; `_` separators allowed).
    Integer(i64),
    /// A float (also `inf` and `nan`).
    Float(f64),
    /// `true` or `false`.
    Boolean(bool),
    /// A date, time or date-time, as written.
    Datetime(String),
    /// An array.
    Array(Vec<Value>),
    /// A table (inline or `[plugin.config.x]`), in the order given.
    Table(Table),
}

/// A table of values, in the order the configuration gives them. A table read through
/// [`crate::Config`] knows its key path, so its errors name `parent.key`.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub(crate) entries: Vec<(String, Value)>,
    pub(crate) path: String,
}

/// Equal entries make equal tables, wherever they were found.
impl PartialEq for Table {
    fn eq(&self, other: &Table) -> bool {
        self.entries == other.entries
    }
}

impl Table {
    /// A table of these entries (for tests and defaults).
    pub fn from_entries(entries: Vec<(String, Value)>) -> Table {
        Table {
            entries,
            path: String::new(),
        }
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// All entries, in order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Value {
    /// What kind of value this is, for error messages (`"a string"`, `"an array"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
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

/// A bare word: a number, boolean or date-time (TOML 1.0 §Integer, §Float, §Boolean,
/// §Offset Date-Time and friends).
fn scalar(raw: &str) -> Result<Value, String> {
    match raw {
        "true" => return Ok(Value::Boolean(true)),
        "false" => return Ok(Value::Boolean(false)),
        "inf" | "+inf" => return Ok(Value::Float(f64::INFINITY)),
        "-inf" => return Ok(Value::Float(f64::NEG_INFINITY)),
        "nan" | "+nan" | "-nan" => return Ok(Value::Float(f64::NAN)),
        _ => {}
    }
    let bad = || format!("{raw:?} is not a TOML value (quote strings)");
    // Underscores only between digits, as TOML requires.
    if raw.starts_with('_') || raw.ends_with('_') || raw.contains("__") {
        return Err(bad());
    }
    let clean = raw.replace('_', "");
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(digits) = clean.strip_prefix(prefix) {
            return i64::from_str_radix(digits, radix)
                .map(Value::Integer)
                .map_err(|_| bad());
        }
    }
    let digits = clean.trim_start_matches(['+', '-']);
    if digits.is_empty() || !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    // A date (`1979-05-27`) or time (`07:32:00`): kept as text.
    if digits.len() >= 5 && (digits.as_bytes()[4] == b'-' || digits.as_bytes()[2] == b':') {
        return Ok(Value::Datetime(raw.to_string()));
    }
    if digits.len() > 1 && digits.starts_with('0') && digits.as_bytes()[1].is_ascii_digit() {
        return Err(format!("{raw:?}: leading zeros are not allowed"));
    }
    if let Ok(n) = clean.parse::<i64>() {
        return Ok(Value::Integer(n));
    }
    if clean.contains(['.', 'e', 'E']) {
        if let Ok(f) = clean.parse::<f64>() {
            return Ok(Value::Float(f));
        }
    }
    Err(bad())
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
            Some(b'"' | b'\'') => self.string().map(Value::String),
            Some(b'[') => self.array(),
            Some(b'{') => self.table(),
            Some(_) => {
                let start = self.i;
                while self.peek().is_some_and(|c| !b",]}#\r\n".contains(&c)) {
                    self.i += 1;
                }
                let raw = String::from_utf8_lossy(&self.s[start..self.i]);
                let raw = raw.trim_end();
                if raw.is_empty() {
                    return Err(format!("missing value at offset {start}"));
                }
                // A space is only allowed inside a date-time (`1979-05-27 07:32:00Z`).
                scalar(raw)
            }
            None => Err("missing value".to_string()),
        }
    }

    /// Both separators allow a trailing comma, as TOML 1.1 and hand-written configs do.
    fn array(&mut self) -> Result<Value, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some(b']') {
                self.i += 1;
                return Ok(Value::Array(items));
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
        let mut table = Table::default();
        loop {
            self.skip_space();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(Value::Table(table));
            }
            let path = self.dotted_key()?;
            self.expect(b'=')?;
            let value = self.value()?;
            insert(&mut table, &path, value)?;
            self.skip_space();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected `,` or `}}` at offset {}", self.i)),
            }
        }
    }

    /// `a.b."c.d"`: the host prints nested tables inline, but people write dotted keys.
    fn dotted_key(&mut self) -> Result<Vec<String>, String> {
        let mut path = vec![self.key()?];
        loop {
            self.skip_space();
            if self.peek() != Some(b'.') {
                return Ok(path);
            }
            self.i += 1;
            path.push(self.key()?);
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
        if start == self.i {
            return Err(format!(
                "expected a key at offset {start} (quote keys such as \"a@b.example\")"
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

/// Puts `value` at the dotted `path` in `table`, creating the tables on the way; a key given
/// twice is an error (TOML 1.0 §Keys: "Defining a key multiple times is invalid").
fn insert(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut t = table;
    for part in parents {
        let pos = match t.entries.iter().position(|(k, _)| k == part) {
            Some(pos) => pos,
            None => {
                t.entries
                    .push((part.clone(), Value::Table(Table::default())));
                t.entries.len() - 1
            }
        };
        t = match &mut t.entries[pos].1 {
            Value::Table(inner) => inner,
            _ => return Err(format!("key {part:?} is not a table")),
        };
    }
    if t.get(last).is_some() {
        return Err(format!("duplicate key {:?}", path.join(".")));
    }
    t.entries.push((last.clone(), value));
    Ok(())
}

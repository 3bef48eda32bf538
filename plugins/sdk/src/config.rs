//! The plugin's configuration table, as the server config gives it, with typed access.
//!
//! ```ignore
//! let zones: Vec<String> = config.get_list("zones")?;            // ["a", "b"] or "a"
//! let window: u32 = config.get_or("window_secs", 3600)?;          // typed, with a default
//! let routes = config.get_table("routes")?;                       // a (nested) table
//! for (domain, to) in routes.entries() { /* ... */ }
//! let port: Option<u16> = routes.get_as("port")?;                // error names `routes.port`
//! ```
//!
//! Every error is a [`ConfigError`] naming the full key path (`routes.example.com`,
//! `zones[2]`); it converts into the `String` that [`crate::Plugin::new`] returns, so `?` works.

use crate::value::{parse, Table, Value};
use crate::ConfigTable;

/// A configuration value that is missing something or has the wrong type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, e.g. `routes.example.com` or `zones[2]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error at `key`.
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.to_string()
    }
}

/// A type a config value converts into. Implemented for strings, booleans, the integer types,
/// `f64`, [`Value`], [`Table`], and `Vec<T>` of any of them.
pub trait FromValue: Sized {
    /// Converts `value`, found at key path `path` (for the error).
    fn from_value(value: &Value, path: &str) -> Result<Self, ConfigError>;
}

fn wrong(path: &str, want: &str, got: &Value) -> ConfigError {
    ConfigError::new(path, format!("expected {want}, got {}", got.kind()))
}

impl FromValue for Value {
    fn from_value(value: &Value, _path: &str) -> Result<Self, ConfigError> {
        Ok(value.clone())
    }
}

impl FromValue for String {
    fn from_value(value: &Value, path: &str) -> Result<Self, ConfigError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            other => Err(wrong(path, "a string", other)),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value, path: &str) -> Result<Self, ConfigError> {
        match value {
            Value::Boolean(b) => Ok(*b),
            other => Err(wrong(path, "true or false", other)),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value, path: &str) -> Result<Self, ConfigError> {
        match value {
            Value::Float(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            other => Err(wrong(path, "a number", other)),
        }
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value, path: &str) -> Result<Self, ConfigError> {
                match value {
                    Value::Integer(i) => <$t>::try_from(*i).map_err(|_| {
                        ConfigError::new(path, format!(
                            "{i} is out of range ({} to {})", <$t>::MIN, <$t>::MAX
                        ))
                    }),
                    other => Err(wrong(path, "an integer", other)),
                }
            }
        }
    )*};
}
integers!(i8, i16, i32, i64, u8, u16, u32, u64, usize);

impl FromValue for Table {
    fn from_value(value: &Value, path: &str) -> Result<Self, ConfigError> {
        match value {
            Value::Table(t) => Ok(t.at(path)),
            other => Err(wrong(path, "a table such as { \"a\" = \"b\" }", other)),
        }
    }
}

/// An array; a single value that is not an array counts as a list of one.
impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(value: &Value, path: &str) -> Result<Self, ConfigError> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| T::from_value(v, &format!("{path}[{i}]")))
                .collect(),
            single => Ok(vec![T::from_value(single, path)?]),
        }
    }
}

impl Table {
    /// This table, remembering the key path it was found at (for errors).
    pub(crate) fn at(&self, path: &str) -> Table {
        Table {
            entries: self.entries.clone(),
            path: path.to_string(),
        }
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value at `key` converted to `T`; `Ok(None)` when absent.
    pub fn get_as<T: FromValue>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.get(key)
            .map(|v| T::from_value(v, &self.child(key)))
            .transpose()
    }

    /// The value at `key` converted to `T`, or `default` when absent.
    pub fn get_or<T: FromValue>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.get_as(key)?.unwrap_or(default))
    }

    /// The value at `key` converted to `T`; absent is an error.
    pub fn require<T: FromValue>(&self, key: &str) -> Result<T, ConfigError> {
        self.get_as(key)?
            .ok_or_else(|| ConfigError::new(&self.child(key), "is required"))
    }

    /// The table at `key`; absent is an empty table.
    pub fn get_table(&self, key: &str) -> Result<Table, ConfigError> {
        Ok(self
            .get_as::<Table>(key)?
            .unwrap_or_else(|| Table::default().at(&self.child(key))))
    }

    /// Every entry converted to `T`, in order (a map such as `{ "a" = "b" }`).
    pub fn to_map<T: FromValue>(&self) -> Result<Vec<(String, T)>, ConfigError> {
        self.entries
            .iter()
            .map(|(k, v)| Ok((k.clone(), T::from_value(v, &self.child(k))?)))
            .collect()
    }
}

/// The `[plugin.config]` table: top-level keys whose values the host hands over as text
/// (strings as they are, other TOML values in TOML syntax), and the whole table as JSON.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    entries: Vec<(String, String)>,
    json: String,
}

impl Config {
    /// Wraps the table handed over by the host.
    pub fn from_table(table: ConfigTable) -> Self {
        Config {
            entries: table.entries,
            json: table.json,
        }
    }

    /// A config from key/value pairs in the host's form (for tests): `("zones", r#"["a"]"#)`.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Config {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            json: String::new(),
        }
    }

    /// The text of a top-level key, as the host gave it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The parsed value of a top-level key. The host gives strings unquoted, so text that is
    /// not an array, table, number, boolean or date-time is a string (and `"5"` reads as 5:
    /// [`Config::get_as`] gives it back as a string when a string is asked for).
    pub fn value(&self, key: &str) -> Result<Option<Value>, ConfigError> {
        let Some(text) = self.get(key) else {
            return Ok(None);
        };
        if text.trim_start().starts_with(['[', '{']) {
            return parse(text).map(Some).map_err(|e| ConfigError::new(key, e));
        }
        Ok(Some(
            parse(text).unwrap_or_else(|_| Value::String(text.to_string())),
        ))
    }

    /// A top-level key converted to `T`; `Ok(None)` when absent.
    pub fn get_as<T: FromValue>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.value(key)? else {
            return Ok(None);
        };
        match T::from_value(&value, key) {
            Ok(v) => Ok(Some(v)),
            // `name = "5"` arrives as the text 5: a string was meant when one is asked for.
            Err(e) => match (&value, self.get(key)) {
                (Value::Array(_) | Value::Table(_), _) | (_, None) => Err(e),
                (_, Some(text)) => T::from_value(&Value::String(text.to_string()), key)
                    .map(Some)
                    .map_err(|_| e),
            },
        }
    }

    /// A top-level key converted to `T`, or `default` when absent.
    pub fn get_or<T: FromValue>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.get_as(key)?.unwrap_or(default))
    }

    /// A top-level key converted to `T`; absent is an error.
    pub fn require<T: FromValue>(&self, key: &str) -> Result<T, ConfigError> {
        self.get_as(key)?
            .ok_or_else(|| ConfigError::new(key, "is required"))
    }

    /// A list at `key` (`["a", "b"]`; a single value is a list of one; absent is empty).
    pub fn get_list<T: FromValue>(&self, key: &str) -> Result<Vec<T>, ConfigError> {
        Ok(self.get_as::<Vec<T>>(key)?.unwrap_or_default())
    }

    /// The table at `key` (`[plugin.config.key]` or an inline table); absent is empty.
    pub fn get_table(&self, key: &str) -> Result<Table, ConfigError> {
        Ok(self
            .get_as::<Table>(key)?
            .unwrap_or_else(|| Table::default().at(key)))
    }

    /// The table at `key` with every value converted to `T`, in order; absent is empty.
    pub fn get_map<T: FromValue>(&self, key: &str) -> Result<Vec<(String, T)>, ConfigError> {
        self.get_table(key)?.to_map()
    }

    /// The text of a top-level key parsed with `FromStr`; `Ok(None)` when absent.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::new(key, format!("cannot parse {v:?}"))),
        }
    }

    /// A list of strings at `key`, empty when absent or malformed.
    #[deprecated(note = "use `get_list::<String>`, which reports a malformed value")]
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get_list(key).unwrap_or_default()
    }

    /// Refuses keys not in `known`, so a typo is a load error instead of an ignored setting.
    pub fn check_keys(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self
            .entries
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((key, _)) => Err(ConfigError::new(
                key,
                format!("unknown key (known keys: {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// All top-level entries, as text.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The whole table as a JSON object (empty in configs built with [`Config::from_pairs`]).
    pub fn json(&self) -> &str {
        &self.json
    }
}

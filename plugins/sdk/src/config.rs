//! The plugin's configuration table, as the server config gives it.

use crate::ConfigTable;

/// The `[plugin.config]` table: top-level keys with string values (strings as they are, other
/// TOML values in TOML syntax), and the whole table as JSON for nested settings.
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

    /// A config from key/value pairs (for tests).
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

    /// The value of a top-level key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a top-level key parsed with `FromStr`; `Err` names the key when it does
    /// not parse, `Ok(None)` when it is absent.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("config key `{key}`: cannot parse {v:?}")),
        }
    }

    /// A TOML array of strings at `key` (`["a", "b"]`), as a list; a plain string counts as
    /// a list of one.
    pub fn list(&self, key: &str) -> Vec<String> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let t = v.trim();
        if !(t.starts_with('[') && t.ends_with(']')) {
            return vec![v.to_string()];
        }
        t[1..t.len() - 1]
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// All top-level entries.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The whole table as a JSON object (empty in configs built with [`Config::from_pairs`]).
    pub fn json(&self) -> &str {
        &self.json
    }
}

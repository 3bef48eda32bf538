//! Listing a namespace for `corvid kv list`: an administrator's command, never a hook's (it
//! walks the database with SCAN, round trip by round trip, each within `kv.timeout`).

use crate::RedisKv;
use corvid_types::KvError;
use std::time::{SystemTime, UNIX_EPOCH};

/// One live entry of a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Unix time in ms when it expires; `None`: never.
    pub expires_ms: Option<u64>,
}

/// Keys Redis walks per SCAN round trip.
const SCAN_COUNT: usize = 1000;
/// Matching keys gathered before sorting: a namespace larger than this is listed from the
/// first ones SCAN returns (in key order among them), so the command's memory stays bounded.
const MAX_GATHERED: usize = 100_000;

impl RedisKv {
    /// Up to `limit` live entries of `namespace` whose key starts with `prefix`, in key order.
    pub fn list(
        &self,
        namespace: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<ListedEntry>, KvError> {
        let (base, _) = self.keys(namespace, b"");
        let pattern = [base.as_slice(), &glob_escaped(prefix), b"*"].concat();
        let mut found: Vec<Vec<u8>> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut conn = self.conn.clone();
            let pattern = pattern.clone();
            let (next, keys): (u64, Vec<Vec<u8>>) = self.bridge.call("list", async move {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn)
                    .await
            })?;
            found.extend(keys);
            cursor = next;
            if cursor == 0 || found.len() >= MAX_GATHERED {
                break;
            }
        }
        found.sort();
        found.dedup();
        let mut out = Vec::new();
        for full in found {
            if out.len() >= limit {
                break;
            }
            let mut conn = self.conn.clone();
            let key = full.clone();
            let (value, pttl): (Option<Vec<u8>>, i64) = self.bridge.call("list", async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            })?;
            // Expired (or deleted) since the SCAN saw it.
            let Some(value) = value else { continue };
            let expires_ms = u64::try_from(pttl)
                .ok()
                .filter(|ms| *ms > 0)
                .map(|ms| unix_ms().saturating_add(ms));
            out.push(ListedEntry {
                key: full.get(base.len()..).unwrap_or_default().to_vec(),
                value,
                expires_ms,
            });
        }
        Ok(out)
    }
}

/// `prefix` with Redis glob's special characters escaped, so it matches only itself.
fn glob_escaped(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len());
    for &b in prefix {
        if b"*?[]\\^".contains(&b) {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::glob_escaped;

    #[test]
    fn glob_characters_match_only_themselves() {
        assert_eq!(glob_escaped(b"msg:1.2"), b"msg:1.2".to_vec());
        assert_eq!(glob_escaped(b"a*b?[c]\\"), b"a\\*b\\?\\[c\\]\\\\".to_vec());
    }
}

//! The Lua scripts that make each write one atomic step on the server, quota check included
//! (Redis runs a script without interleaving any other command, on every node's behalf).
//!
//! Per namespace (hash tag `{ns}`, so that a namespace lives in one Cluster slot) there are:
//! - `<p>{ns}:k:<key>`: the value, a plain string; its TTL is Redis's own, so expiry needs no
//!   sweep on our side;
//! - `<p>{ns}:sz`: hash, key -> octets the entry counts (key plus value);
//! - `<p>{ns}:idx`: sorted set, key -> expiry in unix ms, for the entries that expire;
//! - `<p>{ns}:use`: hash with `keys` and `bytes`, the namespace's usage for the quota.
//!
//! Redis drops an expired value by itself; `reap` then forgets its size and usage, a bounded
//! number per call, so an expired entry stops counting against the quota at the next write of
//! its namespace. As with the sled store, an entry that expired but is not yet reaped still
//! counts, and a write that does not grow the usage always passes.
//!
//! Common arguments: KEYS = value, idx, sz, use; ARGV[1] = value-key prefix of the namespace,
//! ARGV[2] = the plugin's key, ARGV[3] = most keys, ARGV[4] = most octets.

const COMMON: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[2]
-- Forget entries Redis expired (at most 32 per call, so a call stays short).
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, 32)
for _, m in ipairs(gone) do
  if redis.call('EXISTS', ARGV[1] .. m) == 0 then
    local sz = redis.call('HGET', KEYS[3], m)
    if sz then
      redis.call('HDEL', KEYS[3], m)
      redis.call('HINCRBY', KEYS[4], 'keys', -1)
      redis.call('HINCRBY', KEYS[4], 'bytes', -tonumber(sz))
    end
    redis.call('ZREM', KEYS[2], m)
  end
end
-- The usage after the entry goes from old_size to new_size octets (-1: absent); 0 and the
-- new usage when it is allowed, -1 (keys) or -2 (octets) when it is over a quota and grows it.
local function admit(old_size, new_size)
  local keys = tonumber(redis.call('HGET', KEYS[4], 'keys') or '0')
  local bytes = tonumber(redis.call('HGET', KEYS[4], 'bytes') or '0')
  local ak = keys + (new_size >= 0 and 1 or 0) - (old_size >= 0 and 1 or 0)
  local ab = bytes + math.max(new_size, 0) - math.max(old_size, 0)
  if ak > tonumber(ARGV[3]) and ak > keys then return -1 end
  if ab > tonumber(ARGV[4]) and ab > bytes then return -2 end
  return 0, ak, ab
end
local function commit(new_size, ak, ab)
  if new_size >= 0 then
    redis.call('HSET', KEYS[3], member, new_size)
  else
    redis.call('HDEL', KEYS[3], member)
  end
  redis.call('HSET', KEYS[4], 'keys', ak, 'bytes', ab)
end
local old_size = tonumber(redis.call('HGET', KEYS[3], member) or '-1')
"#;

/// set, delete and compare-and-swap. ARGV[5] = `set` (unconditional) or `cas`; ARGV[6] = `1`
/// when a value is expected, ARGV[7] that value; ARGV[8] = `1` when there is a new value
/// (else delete), ARGV[9] the new value; ARGV[10] = TTL in ms or empty.
/// Returns {status, existed}: status 1 written, 0 not swapped, -1/-2 over quota; existed 1
/// when a live value was there.
const WRITE: &str = r#"
local old = redis.call('GET', KEYS[1])
local existed = old and 1 or 0
if ARGV[5] == 'cas' then
  if ARGV[6] == '1' then
    if old ~= ARGV[7] then return {0, existed} end
  elseif old then
    return {0, existed}
  end
end
local new_size = -1
if ARGV[8] == '1' then new_size = #member + #ARGV[9] end
local status, ak, ab = admit(old_size, new_size)
if status ~= 0 then return {status, existed} end
if new_size >= 0 then
  if ARGV[10] ~= '' then
    redis.call('SET', KEYS[1], ARGV[9], 'PX', ARGV[10])
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[10]), member)
  else
    redis.call('SET', KEYS[1], ARGV[9])
    redis.call('ZREM', KEYS[2], member)
  end
else
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], member)
end
commit(new_size, ak, ab)
return {1, existed}
"#;

/// increment. ARGV[5] = delta, ARGV[6] = the bound it saturates at, ARGV[7] = TTL in ms (on
/// create only) or empty. Returns {status, value}: 1 and the new value as a decimal string
/// (strings, because Lua numbers are doubles and would round an i64), -1/-2 over quota,
/// -3 not an integer.
const INCREMENT: &str = r#"
local old = redis.call('GET', KEYS[1])
if not old then
  local new_size = #member + #ARGV[5]
  local status, ak, ab = admit(old_size, new_size)
  if status ~= 0 then return {status, ''} end
  if ARGV[7] ~= '' then
    redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[7])
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), member)
  else
    redis.call('SET', KEYS[1], ARGV[5])
    redis.call('ZREM', KEYS[2], member)
  end
  commit(new_size, ak, ab)
  return {1, ARGV[5]}
end
-- INCRBY keeps the TTL and parses exactly as an i64; it refuses anything else.
local r = redis.pcall('INCRBY', KEYS[1], ARGV[5])
if type(r) == 'table' and r.err then
  if string.find(r.err, 'overflow', 1, true) then
    redis.call('SET', KEYS[1], ARGV[6], 'KEEPTTL')
  else
    return {-3, ''}
  end
end
local v = redis.call('GET', KEYS[1])
local new_size = #member + #v
local status, ak, ab = admit(old_size, new_size)
if status ~= 0 then
  redis.call('SET', KEYS[1], old, 'KEEPTTL')
  return {status, ''}
end
commit(new_size, ak, ab)
return {1, v}
"#;

/// The write script.
pub(crate) fn write() -> redis::Script {
    redis::Script::new(&format!("{COMMON}{WRITE}"))
}

/// The increment script.
pub(crate) fn increment() -> redis::Script {
    redis::Script::new(&format!("{COMMON}{INCREMENT}"))
}

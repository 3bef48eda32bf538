// corvid.js: a small helper layer over the `corvid:plugin@0.1.0` world for JavaScript plugins
// built with componentize-js. Copy it next to your plugin; it has no dependencies.
//
// How componentize-js maps the WIT contract (see README.md for the full table):
//
// * Exports are named ES-module exports in camelCase (`on-rcpt` -> `export function onRcpt`).
// * Imports are ES modules named after the interface: `import { get } from
//   'corvid:plugin/kv@0.1.0'`. They are only callable while a hook runs, never at module top
//   level: the top level is executed once at build time (Wizer snapshots the initialised heap).
// * Records are plain objects with camelCase fields (`conn.clientIp`, `conn.authUser`).
// * Variants are `{ tag, val }` with the case name in kebab-case (`{ tag: 'add-header', val }`);
//   enums are kebab-case strings (`'rcpt'`, `'info'`).
// * `option<T>` is the value or `undefined`.
// * `result<T, E>` returned by an import is the plain `T`; the error case is thrown as an
//   Error whose `payload` property holds the `E` value (for kv, `{ tag: 'storage', val }`...).
// * u64/s64 are BigInt (`clock.nowMs()` is `1732265000000n`); smaller integers are Numbers.
// * `list<u8>` arrives as a Uint8Array and may be passed as a Uint8Array or an array of numbers.

import { log as hostLog } from 'corvid:plugin/log@0.1.0';
import { table as configTable } from 'corvid:plugin/config@0.1.0';

// --- decisions ------------------------------------------------------------------------------

/** An SMTP reply: a three-digit code, an RFC 3463 enhanced code (or ''), and the text. */
export function reply(code, enhanced, text) {
  return { code, enhanced, text };
}

function decision(verdict, modifications) {
  return { verdict, modifications };
}

/** No opinion: the next plugin, then the server's own rules, decide. Named `proceed` because
 * `continue` is a reserved word. Modifications (e.g. `addHeader(...)`) may follow. */
export function proceed(...modifications) {
  return decision({ tag: 'continue' }, modifications);
}

/** Accept at this stage and skip the rest of the chain (at `rcpt`: the explicit accept a
 * non-local recipient needs, so use it with care). */
export function accept(...modifications) {
  return decision({ tag: 'accept' }, modifications);
}

/** Refuse permanently; the host requires a 5xx code, e.g. `reject(550, '5.7.1', 'No')`. */
export function reject(code, enhanced, text) {
  return decision({ tag: 'reject', val: reply(code, enhanced, text) }, []);
}

/** Refuse for now; the host requires a 4xx code, e.g. `tempfail(451, '4.7.1', 'Later')`. */
export function tempfail(code, enhanced, text) {
  return decision({ tag: 'tempfail', val: reply(code, enhanced, text) }, []);
}

/** Send this 4xx or 5xx reply and close the connection. */
export function disconnect(code, enhanced, text) {
  return decision({ tag: 'disconnect', val: reply(code, enhanced, text) }, []);
}

/** Accept the message, then drop it silently (meaningful at `data` only). */
export function discard() {
  return decision({ tag: 'discard' }, []);
}

/** Accept the message and hold it for an administrator, with this reason. */
export function quarantine(reason) {
  return decision({ tag: 'quarantine', val: reason }, []);
}

// --- modifications --------------------------------------------------------------------------

/** Append a header field at the end of the header section. */
export function addHeader(name, value) {
  return { tag: 'add-header', val: { name, value } };
}

/** Insert a header field before the field at `index` (0 = first). */
export function insertHeader(index, name, value) {
  return { tag: 'insert-header', val: { index, name, value } };
}

/** Change the value of occurrence `index` (0 = first) of the field `name`. */
export function changeHeader(name, index, value) {
  return { tag: 'change-header', val: { name, index, value } };
}

/** Remove occurrence `index` (0 = first) of the field `name`. */
export function removeHeader(name, index = 0) {
  return { tag: 'remove-header', val: { name, index } };
}

/** Replace the reverse-path; `undefined` makes it the null sender. */
export function changeSender(address) {
  return { tag: 'change-sender', val: address };
}

/** Add a recipient, e.g. `addRecipient({ local: 'archive', domain: 'example.org' })`. */
export function addRecipient(address) {
  return { tag: 'add-recipient', val: address };
}

/** Remove a recipient from the envelope. */
export function removeRecipient(address) {
  return { tag: 'remove-recipient', val: address };
}

/** Replace the body (needs the `replace-body` capability); a Uint8Array or a string. */
export function replaceBody(body) {
  return {
    tag: 'replace-body',
    val: typeof body === 'string' ? new TextEncoder().encode(body) : body,
  };
}

// --- the world's hooks, answering "no opinion" ------------------------------------------------
//
// The world exports every hook, so a component must define all of them even though the host
// only calls the stages `describe` lists. Re-export the ones you do not implement:
//
//   export { onConnect, onHelo, onAuth, onMail, onRoute, onDeferred, onBounced, onDelivered }
//     from './corvid.js';

export function onConnect(_conn) {
  return proceed();
}
export function onHelo(_conn) {
  return proceed();
}
export function onAuth(_conn, _auth) {
  // `_auth.password` may be set (with the `credentials` capability): never log it.
  return proceed();
}
export function onMail(_conn, _env) {
  return proceed();
}
export function onRcpt(_conn, _env, _rcpt) {
  return proceed();
}
export function onData(_conn, _env, _msg) {
  return proceed();
}
export function onRoute(_req) {
  return { tag: 'continue' };
}
export function onDeferred(_info) {
  return { tag: 'continue' };
}
export function onBounced(_info) {
  return { tag: 'continue' };
}
export function onDelivered(_info) {
  // A notification: the WIT function returns nothing.
}

// --- configuration --------------------------------------------------------------------------

/**
 * Throw this from `configure` to refuse the configuration; the message is what the server
 * logs. Why a class: componentize-js turns a thrown value into the `err` of `result<_, string>`
 * only when it is a string or carries a `payload` property; any other Error (a TypeError from
 * a bug, `new Error('...')`) is a trap, which the host reports as a crash, not as a refusal.
 */
export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConfigError';
    // An own property, as componentize-js checks with hasOwnProperty.
    Object.defineProperty(this, 'payload', { value: message, enumerable: true });
  }
}

/**
 * The `[plugin.config]` table with typed values.
 *
 * The host gives the table twice: `entries` (every value as text; non-strings in TOML syntax)
 * and `json` (the whole table as JSON). `json` keeps TOML's types, so `delay = "300"` (a
 * string) is told apart from `delay = 300`; `entries` keeps what JSON loses, such as `1.0`
 * being a float (JSON.parse makes it the Number 1, an integer).
 */
export class Config {
  /** @param table the `config-table` record (`{ entries, json }`). */
  constructor(table) {
    let values;
    try {
      values = JSON.parse(table.json || '{}');
    } catch {
      throw new ConfigError('the configuration table is not readable');
    }
    if (values === null || typeof values !== 'object' || Array.isArray(values)) {
      throw new ConfigError('the configuration table is not readable');
    }
    this.values = values;
    this.text = new Map(table.entries);
  }

  /** The table of this plugin, read through the `config` import (for hooks). */
  static fromHost() {
    return new Config(configTable());
  }

  has(key) {
    return Object.prototype.hasOwnProperty.call(this.values, key);
  }

  /** Refuses keys outside `known`, so a typo is a load error instead of a silent default. */
  checkKeys(known) {
    for (const key of Object.keys(this.values)) {
      if (!known.includes(key)) throw new ConfigError(`unknown config key ${key}`);
    }
  }

  /** A string value, or `fallback` when absent. */
  string(key, fallback) {
    if (!this.has(key)) return fallback;
    const v = this.values[key];
    if (typeof v !== 'string') throw new ConfigError(`${key} must be a string`);
    return v;
  }

  /** A TOML integer >= 0, or `fallback` when absent. Returned as a BigInt, so that values
   * beyond 2^53 stay exact and mix with u64 values such as `clock.nowMs()`. */
  nonNegativeInteger(key, fallback) {
    if (!this.has(key)) return fallback;
    const v = this.values[key];
    const text = this.text.get(key) ?? '';
    // TOML prints an integer as plain digits (a float always has a `.` or an exponent).
    if (typeof v !== 'number' || !/^[0-9]+$/.test(text)) {
      throw new ConfigError(`${key} must be a non-negative integer`);
    }
    return BigInt(text);
  }

  /** A boolean value, or `fallback` when absent. */
  boolean(key, fallback) {
    if (!this.has(key)) return fallback;
    const v = this.values[key];
    if (typeof v !== 'boolean') throw new ConfigError(`${key} must be true or false`);
    return v;
  }
}

/**
 * Settings parsed once per instance, for hooks.
 *
 * `configure` runs on an instance of its own that is then thrown away, so nothing it stores in
 * a global reaches the hooks: they must read the table through the `config` import. Parsing it
 * once per instance is enough, because the table cannot change under a running instance (a
 * reload makes new instances); with `instance = "pool"` that one parse serves many
 * transactions. `parse` is the same function `configure` validated the table with.
 */
export function settingsFromHost(parse) {
  let cached;
  return () => {
    if (cached === undefined) cached = parse(Config.fromHost());
    return cached;
  };
}

// --- logging and small helpers --------------------------------------------------------------

/** Writes to the server log (tagged with the plugin's name and session id). */
export const log = {
  trace: (message) => hostLog('trace', message),
  debug: (message) => hostLog('debug', message),
  info: (message) => hostLog('info', message),
  warn: (message) => hostLog('warn', message),
  error: (message) => hostLog('error', message),
};

/** ASCII-only lower case: `toLowerCase()` would also fold non-ASCII letters, which the
 * other languages' versions of a policy (and DNS) do not do. */
export function asciiLower(text) {
  return text.replace(/[A-Z]+/g, (s) => s.toLowerCase());
}

/** `local@domain` with the domain lower-cased; `<>` for the null sender (`undefined`). */
export function mailbox(address) {
  return address === undefined ? '<>' : `${address.local}@${asciiLower(address.domain)}`;
}

/** A readable text for an error thrown by an import (kv, dns): its payload variant. */
export function errorText(e) {
  const p = e?.payload;
  if (p === undefined) return String(e);
  if (typeof p === 'object' && p !== null && 'tag' in p) {
    return p.val === undefined ? p.tag : `${p.tag}: ${p.val}`;
  }
  return String(p);
}

// Greylisting, a subject filter and a header stamp: the `greylist` example policy in
// JavaScript. The policy is specified in `examples/README.md` and is identical in every
// language, down to the reply codes and texts. componentize-js compiles this module (with
// `corvid.js`) into a WebAssembly component of the world `plugin` (see build.sh).

import { get as kvGet, set as kvSet } from 'corvid:plugin/kv@0.1.0';
import { nowMs } from 'corvid:plugin/clock@0.1.0';
import {
  proceed,
  tempfail,
  reject,
  addHeader,
  Config,
  ConfigError,
  settingsFromHost,
  log,
  asciiLower,
  mailbox,
  errorText,
} from './corvid.js';

// The stages this plugin does not implement. `describe` does not list them, so the host never
// calls them, but the world exports every hook and a component must define them all.
export {
  onConnect,
  onHelo,
  onAuth,
  onMail,
  onRoute,
  onDeferred,
  onBounced,
  onDelivered,
} from './corvid.js';

const NAME = 'greylist';
const VERSION = '1.0.0';

// Triplet records outlive the greylisting delay by far: a sender that retried once is
// remembered for a day (the TTL restarts only when a triplet is first seen).
const TRIPLET_TTL_SECONDS = 86400;

const GREYLISTED = [451, '4.7.1', 'Greylisted, please try again later'];
const REFUSED = [550, '5.7.1', 'Message refused by content policy'];

// --- configuration ----------------------------------------------------------------------------

/** Validates the config table; throws a ConfigError naming the key. */
function parseSettings(config) {
  config.checkKeys(['delay_seconds', 'reject_subject', 'header']);
  const delaySeconds = config.nonNegativeInteger('delay_seconds', 300n);
  const rejectSubject = config.string('reject_subject', 'BUY NOW');
  const header = config.has('header') ? config.values.header : 'X-Greylist';
  if (typeof header !== 'string' || !isFieldName(header)) {
    throw new ConfigError(
      "header must be a header field name (1-64 printable ASCII characters, no ':' or space)",
    );
  }
  // Milliseconds as a BigInt, to compare with `clock.nowMs()` (a u64, so a BigInt too).
  return { delayMs: delaySeconds * 1000n, rejectSubject, header };
}

/** 1 to 64 printable ASCII characters (0x21-0x7E) other than `:`. */
function isFieldName(name) {
  return /^[\x21-\x39\x3b-\x7e]{1,64}$/.test(name);
}

// Hooks read the configuration through the `config` import, parsed once per instance.
const settings = settingsFromHost(parseSettings);

// --- the world's exports ----------------------------------------------------------------------

export function describe() {
  return { name: NAME, version: VERSION, stages: ['rcpt', 'data'] };
}

export function configure(table) {
  // Only validation: this instance is thrown away afterwards (see `settingsFromHost`).
  // A ConfigError thrown here becomes the `err` string, which refuses the configuration.
  parseSettings(new Config(table));
}

export function onRcpt(conn, env, rcpt) {
  // Authenticated clients are our own users: never make them wait.
  if (conn.authUser !== undefined) return proceed();

  const sender = mailbox(env.sender);
  const recipient = mailbox(rcpt.address);
  const key = `grey/${conn.clientIp}/${sender}/${recipient}`;
  const now = nowMs(); // BigInt
  let stored;
  try {
    stored = kvGet(key); // a Uint8Array, or undefined when absent or expired
    if (stored === undefined) {
      kvSet(key, new TextEncoder().encode(String(now)), TRIPLET_TTL_SECONDS);
      log.info(`greylisted ${conn.clientIp} ${sender} -> ${recipient}`);
      return tempfail(...GREYLISTED);
    }
  } catch (e) {
    // A kv error is thrown with the `kv.error` variant as `e.payload`. The store failing is
    // not the client's fault: fail open rather than hold all mail.
    log.warn(`kv failed, not greylisting ${key}: ${errorText(e)}`);
    return proceed();
  }

  const text = new TextDecoder().decode(stored);
  if (!/^[0-9]+$/.test(text)) {
    // Only this plugin writes its keys, so this does not happen; if it does, the entry is
    // useless and letting the mail through is the safe side.
    log.warn(`unreadable kv value at ${key}, not greylisting`);
    return proceed();
  }
  if (now - BigInt(text) < settings().delayMs) {
    // Retried too early: same answer, the first-seen time stays.
    return tempfail(...GREYLISTED);
  }
  // Old enough. `continue` only means "no objection": the server's own rules still decide
  // whether the recipient is local, so this never opens a relay.
  return proceed();
}

export function onData(conn, env, msg) {
  // `msg` is a borrowed handle: valid only during this call, so never keep it in a global.
  const s = settings();
  const needle = asciiLower(s.rejectSubject);
  if (needle !== '' && msg.header('subject').some((v) => asciiLower(v).includes(needle))) {
    log.info('subject refused');
    return reject(...REFUSED);
  }
  return proceed(addHeader(s.header, 'pass'));
}

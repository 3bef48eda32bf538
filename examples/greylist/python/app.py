"""Greylisting, a subject filter and a header stamp: the `greylist` example policy in Python.

The policy is specified in `examples/README.md` and is identical in every language, down to the
reply codes and texts. This module is compiled into a WebAssembly component by componentize-py
(see `build.sh`); the generated `wit_world` package is the contract in `wit/` as Python.

How the contract maps to Python:

* The world's exports are the methods of the class `WitWorld` below (WIT `on-rcpt` becomes
  `on_rcpt`). componentize-py creates one instance of it and calls its methods.
* WIT records are dataclasses (`types.Decision(verdict, modifications)`), variants are one
  dataclass per case (`types.Verdict_Tempfail(reply)`), `option<T>` is `Optional[T]`.
* A `result<T, E>` return is the plain `T`; the error case is the exception
  `componentize_py_types.Err(value)`: imports raise it and `configure` raises it to refuse.
"""

import json
from dataclasses import dataclass
from typing import Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import clock, config, kv, log, message, types

NAME = "greylist"
VERSION = "1.0.0"

# Triplet records outlive the greylisting delay by far: a sender that retried once is
# remembered for a day (the TTL restarts only when a triplet is first seen).
TRIPLET_TTL_SECONDS = 86400

GREYLISTED = types.Reply(451, "4.7.1", "Greylisted, please try again later")
REFUSED = types.Reply(550, "5.7.1", "Message refused by content policy")


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The validated `[plugin.config]` table."""

    delay_seconds: int = 300
    reject_subject: str = "BUY NOW"
    header: str = "X-Greylist"


def parse_settings(table: types.ConfigTable) -> Settings:
    """Validates the config table; raises `ValueError` with a message naming the key.

    The `json` form of the table keeps TOML's types, so `delay_seconds = "300"` (a string) and
    `delay_seconds = 1.5` are told apart from `delay_seconds = 300`; the `entries` form would
    show all three as text.
    """
    try:
        values = json.loads(table.json or "{}")
    except ValueError:
        raise ValueError("the configuration table is not readable") from None
    defaults = Settings()
    for key in values:
        if key not in ("delay_seconds", "reject_subject", "header"):
            raise ValueError(f"unknown config key {key}")

    delay = values.get("delay_seconds", defaults.delay_seconds)
    # bool is a subclass of int in Python, and `true` is not a number of seconds.
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError("delay_seconds must be a non-negative integer")

    subject = values.get("reject_subject", defaults.reject_subject)
    if not isinstance(subject, str):
        raise ValueError("reject_subject must be a string")

    header = values.get("header", defaults.header)
    if not (isinstance(header, str) and is_field_name(header)):
        raise ValueError("header must be a header field name (1-64 printable ASCII characters, no ':' or space)")

    return Settings(delay, subject, header)


def is_field_name(name: str) -> bool:
    """1 to 64 printable ASCII characters (0x21-0x7E) other than `:`."""
    return 1 <= len(name) <= 64 and all("!" <= c <= "~" and c != ":" for c in name)


# Hooks read the configuration through the `config` import, because `configure` runs on an
# instance of its own and whatever it stored in a global is gone. Parsing once per instance is
# enough: the table cannot change under a running instance (a reload makes new instances), so
# caching it stays correct when the host reuses the instance for many transactions.
_settings: Optional[Settings] = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        # `configure` accepted this table before any hook could run, so it parses here.
        _settings = parse_settings(config.table())
    return _settings


# --- helpers ---------------------------------------------------------------------------------

# ASCII-only case folding, as the policy says: `str.lower()` would also fold non-ASCII letters
# (and can change the length of a string), which the other languages do not do.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def mailbox(address: Optional[types.Address]) -> str:
    """`local@domain` with the domain lower-cased; `<>` for the null sender."""
    if address is None:
        return "<>"
    return f"{address.local}@{ascii_lower(address.domain)}"


def decide(verdict: types.Verdict, *modifications: types.Modification) -> types.Decision:
    return types.Decision(verdict, list(modifications))


CONTINUE = types.Verdict_Continue()


# --- the plugin ------------------------------------------------------------------------------


class WitWorld(wit_world.WitWorld):
    """The exports of the world `plugin`.

    There is no per-transaction state on `self` or in globals: with `instance = "pool"` one
    instance serves many transactions (and connections) one after another, so anything kept
    here would leak from one client into the next. State that must last goes into `kv`.
    """

    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(NAME, VERSION, [types.Stage.RCPT, types.Stage.DATA])

    def configure(self, config: types.ConfigTable) -> None:
        # Only validation: this instance is thrown away afterwards (see `settings()`).
        try:
            parse_settings(config)
        except ValueError as e:
            raise Err(str(e))

    def on_rcpt(
        self, conn: types.ConnectionInfo, env: types.Envelope, rcpt: types.Recipient
    ) -> types.Decision:
        # Authenticated clients are our own users: never make them wait.
        if conn.auth_user is not None:
            return decide(CONTINUE)

        sender, recipient = mailbox(env.sender), mailbox(rcpt.address)
        key = f"grey/{conn.client_ip}/{sender}/{recipient}"
        now = clock.now_ms()
        try:
            first_seen = kv.get(key)
            if first_seen is None:
                kv.set(key, str(now).encode("ascii"), TRIPLET_TTL_SECONDS)
                log.log(log.Level.INFO, f"greylisted {conn.client_ip} {sender} -> {recipient}")
                return decide(types.Verdict_Tempfail(GREYLISTED))
        except Err as e:
            # The store failing is not the client's fault: fail open rather than hold all mail.
            log.log(log.Level.WARN, f"kv failed, not greylisting {key}: {e.value}")
            return decide(CONTINUE)

        try:
            first = int(first_seen.decode("ascii"))
        except ValueError:
            # Only this plugin writes its keys, so this does not happen; if it does, the
            # entry is useless and letting the mail through is the safe side.
            log.log(log.Level.WARN, f"unreadable kv value at {key}, not greylisting")
            return decide(CONTINUE)
        if now - first < settings().delay_seconds * 1000:
            # Retried too early: same answer, the first-seen time stays.
            return decide(types.Verdict_Tempfail(GREYLISTED))
        # Old enough. `continue` only means "no objection": the server's own rules still decide
        # whether the recipient is local, so this never opens a relay.
        return decide(CONTINUE)

    def on_data(
        self, conn: types.ConnectionInfo, env: types.Envelope, msg: message.Message
    ) -> types.Decision:
        # `msg` is a borrowed handle: valid only during this call, so never keep it.
        s = settings()
        needle = ascii_lower(s.reject_subject)
        if needle and any(needle in ascii_lower(v) for v in msg.header("subject")):
            log.log(log.Level.INFO, "subject refused")
            return decide(types.Verdict_Reject(REFUSED))
        return decide(
            CONTINUE, types.Modification_AddHeader(types.HeaderField(s.header, "pass"))
        )

    # The stages this plugin does not implement. `describe` does not list them, so the host
    # never calls these, but the world exports them and every export needs a body.

    def on_connect(self, conn: types.ConnectionInfo) -> types.Decision:
        return decide(CONTINUE)

    def on_helo(self, conn: types.ConnectionInfo) -> types.Decision:
        return decide(CONTINUE)

    def on_auth(self, conn: types.ConnectionInfo, auth: types.AuthInfo) -> types.Decision:
        # `auth.password` may be set (with the `credentials` capability): never log it.
        return decide(CONTINUE)

    def on_mail(self, conn: types.ConnectionInfo, env: types.Envelope) -> types.Decision:
        return decide(CONTINUE)

    def on_route(self, req: types.RouteRequest) -> types.RouteDecision:
        return types.RouteDecision_Continue()

    def on_deferred(self, info: types.DeliveryInfo) -> types.DeferredDecision:
        return types.DeferredDecision_Continue()

    def on_bounced(self, info: types.DeliveryInfo) -> types.BounceDecision:
        return types.BounceDecision_Continue()

    def on_delivered(self, info: types.DeliveryInfo) -> None:
        return None

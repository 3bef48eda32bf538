"""Unit tests of app.py on the native CPython, with the host's imports replaced by fakes.

The stubs that `build.sh --stubs` generates are ordinary Python (records are dataclasses, the
import functions raise NotImplementedError), so the policy can be tested without WebAssembly:

    examples/greylist/python/build.sh --test
"""

import json
import unittest
from typing import Dict, List, Optional, Tuple

import app
from componentize_py_types import Err
from wit_world.imports import clock, config, kv, log, message, types


class FakeHost:
    """Stands in for the host: a dict as kv store, a settable clock, a log list, a config."""

    def __init__(self, cfg: Optional[dict] = None) -> None:
        self.store: Dict[str, bytes] = {}
        self.ttls: Dict[str, Optional[int]] = {}
        self.now = 1_700_000_000_000
        self.logs: List[Tuple[log.Level, str]] = []
        self.kv_error: Optional[kv.Error] = None
        self.table = types.ConfigTable(
            [(k, str(v)) for k, v in (cfg or {}).items()], json.dumps(cfg or {})
        )

    def install(self, test: unittest.TestCase) -> None:
        patches = {
            (kv, "get"): self.kv_get,
            (kv, "set"): self.kv_set,
            (clock, "now_ms"): lambda: self.now,
            (log, "log"): lambda level, text: self.logs.append((level, text)),
            (config, "table"): lambda: self.table,
        }
        for (module, name), fake in patches.items():
            original = getattr(module, name)
            setattr(module, name, fake)
            test.addCleanup(setattr, module, name, original)
        # Every test starts with a fresh instance's globals.
        app._settings = None
        test.addCleanup(setattr, app, "_settings", None)

    def kv_get(self, key: str) -> Optional[bytes]:
        if self.kv_error is not None:
            raise Err(self.kv_error)
        return self.store.get(key)

    def kv_set(self, key: str, value: bytes, ttl: Optional[int]) -> None:
        if self.kv_error is not None:
            raise Err(self.kv_error)
        self.store[key] = value
        self.ttls[key] = ttl


class FakeMessage(message.Message):
    """The one method of the message resource the policy uses."""

    def __init__(self, headers: List[Tuple[str, str]]) -> None:
        self._headers = headers

    def header(self, name: str) -> List[str]:
        return [v for n, v in self._headers if n.lower() == name.lower()]


def conn(ip: str = "192.0.2.10", auth_user: Optional[str] = None) -> types.ConnectionInfo:
    return types.ConnectionInfo(
        1, 1, "smtp", ip, 40000, "127.0.0.1", 25, None, "client.example", True, None, auth_user
    )


def address(text: str) -> types.Address:
    local, domain = text.rsplit("@", 1)
    return types.Address(local, domain)


def envelope(sender: str) -> types.Envelope:
    params = types.MailParams(None, types.BodyType.SEVEN_BIT, False, None, None, None)
    return types.Envelope(address(sender) if sender else None, params, [])


def rcpt(text: str) -> types.Recipient:
    return types.Recipient(address(text), types.RcptParams(None, None))


GREY = types.Verdict_Tempfail(types.Reply(451, "4.7.1", "Greylisted, please try again later"))
CONTINUE = types.Verdict_Continue()


class Greylisting(unittest.TestCase):
    def setUp(self) -> None:
        self.host = FakeHost({"delay_seconds": 60})
        self.host.install(self)
        self.plugin = app.WitWorld()

    def rcpt(self, sender="alice@Sender.Example", to="bob@rcpt.example", **kw) -> types.Verdict:
        return self.plugin.on_rcpt(conn(**kw), envelope(sender), rcpt(to)).verdict

    def test_new_triplet_waits_for_the_delay(self) -> None:
        self.assertEqual(self.rcpt(), GREY)
        key = "grey/192.0.2.10/alice@sender.example/bob@rcpt.example"
        self.assertEqual(self.host.store, {key: str(self.host.now).encode()})
        self.assertEqual(self.host.ttls[key], 86400)
        self.assertEqual(
            self.host.logs,
            [(log.Level.INFO, "greylisted 192.0.2.10 alice@sender.example -> bob@rcpt.example")],
        )
        self.host.now += 59_999
        self.assertEqual(self.rcpt(), GREY)
        self.host.now += 1
        self.assertEqual(self.rcpt(), CONTINUE)
        self.assertEqual(self.rcpt(sender="alice@SENDER.example"), CONTINUE, "domain case")

    def test_triplet_parts_are_separate(self) -> None:
        self.assertEqual(self.rcpt(), GREY)
        self.host.now += 60_000
        self.assertEqual(self.rcpt(to="carol@rcpt.example"), GREY)
        self.assertEqual(self.rcpt(ip="192.0.2.11"), GREY)
        self.assertEqual(self.rcpt(sender="Alice@sender.example"), GREY, "local part kept")
        self.assertEqual(self.rcpt(sender=""), GREY)
        self.assertIn("grey/192.0.2.10/<>/bob@rcpt.example", self.host.store)

    def test_authenticated_clients_pass_untouched(self) -> None:
        self.assertEqual(self.rcpt(auth_user="alice"), CONTINUE)
        self.assertEqual(self.host.store, {})

    def test_a_failing_store_fails_open(self) -> None:
        self.host.kv_error = kv.Error_Storage("disk full")
        self.assertEqual(self.rcpt(), CONTINUE)
        self.assertEqual(self.host.logs[0][0], log.Level.WARN)


class ContentPolicy(unittest.TestCase):
    def data(self, cfg: dict, *subjects: str) -> types.Decision:
        host = FakeHost(cfg)
        host.install(self)
        msg = FakeMessage([("From", "a@b.example")] + [("Subject", s) for s in subjects])
        return app.WitWorld().on_data(conn(), envelope("a@b.example"), msg)

    def test_subject_is_refused_case_insensitively(self) -> None:
        refused = types.Verdict_Reject(types.Reply(550, "5.7.1", "Message refused by content policy"))
        self.assertEqual(self.data({}, "please buy NOW").verdict, refused)
        self.assertEqual(self.data({}, "hi", "Buy now").verdict, refused, "any Subject field")
        self.assertEqual(self.data({"reject_subject": "viagra"}, "VIAGRA").verdict, refused)

    def test_accepted_messages_get_the_header(self) -> None:
        d = self.data({}, "hello")
        self.assertEqual(d.verdict, CONTINUE)
        self.assertEqual(
            d.modifications, [types.Modification_AddHeader(types.HeaderField("X-Greylist", "pass"))]
        )
        d = self.data({"header": "X-Test", "reject_subject": ""}, "buy now")
        self.assertEqual(d.verdict, CONTINUE, "empty reject_subject disables the filter")
        self.assertEqual(
            d.modifications, [types.Modification_AddHeader(types.HeaderField("X-Test", "pass"))]
        )

    def test_ascii_folding_only(self) -> None:
        # "İ".lower() is two characters in Python; the policy folds ASCII letters only.
        self.assertEqual(self.data({"reject_subject": "i"}, "İ").verdict, CONTINUE)


class Configure(unittest.TestCase):
    def configure(self, cfg: dict) -> Optional[str]:
        table = types.ConfigTable([(k, str(v)) for k, v in cfg.items()], json.dumps(cfg))
        try:
            app.WitWorld().configure(table)
        except Err as e:
            return e.value
        return None

    def test_good_configurations(self) -> None:
        cfgs: List[dict] = [{}, {"delay_seconds": 0}, {"reject_subject": ""}, {"header": "X-" + "a" * 62}]
        for cfg in cfgs:
            self.assertIsNone(self.configure(cfg), cfg)

    def test_bad_configurations_name_the_key(self) -> None:
        cases: List[Tuple[dict, str]] = [
            ({"delay_seconds": -1}, "delay_seconds"),
            ({"delay_seconds": "300"}, "delay_seconds"),
            ({"delay_seconds": 1.5}, "delay_seconds"),
            ({"delay_seconds": True}, "delay_seconds"),
            ({"reject_subject": 1}, "reject_subject"),
            ({"header": "X-Grey list"}, "header"),
            ({"header": "X:Grey"}, "header"),
            ({"header": ""}, "header"),
            ({"header": "X" * 65}, "header"),
            ({"header": "X-Grëy"}, "header"),
            ({"delay": 1}, "delay"),
        ]
        for cfg, key in cases:
            error = self.configure(cfg)
            assert error is not None, cfg
            self.assertIn(key, error, cfg)
        self.assertEqual(
            self.configure({"delay_seconds": -1}), "delay_seconds must be a non-negative integer"
        )

    def test_describe(self) -> None:
        info = app.WitWorld().describe()
        self.assertEqual((info.name, info.version), ("greylist", "1.0.0"))
        self.assertEqual(info.stages, [types.Stage.RCPT, types.Stage.DATA])


if __name__ == "__main__":
    unittest.main()

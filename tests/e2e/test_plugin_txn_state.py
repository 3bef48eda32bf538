"""Issue 11, over SMTP: the Rust SDK gives every transaction a fresh plugin value, also on a
warm pooled instance (`instance = "pool"`, as config/dev.toml ships the bundled plugins).

The fixture plugin (host/plugin-host/tests/fixtures/txn-state) keeps the first sender, its
MAIL count and its RCPT count in its struct and writes them into an `X-Txn-State` header at
DATA, with a global count of the transactions its instance served. With a pool of one
instance, every transaction below runs on the same warm instance (the global keeps counting),
and each must see only itself: on one connection, after an aborted (RSET) transaction, and on
a second connection."""

import re
import smtplib

import pytest

from conftest import build_wasm, IO_TIMEOUT, REPO

FIXTURE = REPO / "host" / "plugin-host" / "tests" / "fixtures" / "txn-state"
FIXTURE_WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release" / "fixture_txn_state.wasm"

STATE = re.compile(
    rb"^X-Txn-State: first-sender=(\S*) mails=(\d+) rcpts=(\d+) instance-transactions=(\d+)\r?$",
    re.M,
)


@pytest.fixture(scope="session")
def txn_state_wasm():
    """The fixture plugin, built for wasm32-wasip2 inside the test run."""
    return build_wasm(FIXTURE, FIXTURE_WASM)


def transaction(s: smtplib.SMTP, sender: str, rcpts: list[str], subject: str) -> None:
    code, msg = s.mail(sender)
    assert code == 250, (code, msg)
    for r in rcpts:
        code, msg = s.rcpt(r)
        assert code == 250, (r, code, msg)
    code, msg = s.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    assert code == 250, (code, msg)


def states(server, user: str, count: int) -> dict[str, tuple[str, int, int, int]]:
    """What the plugin saw, by the Subject of each message delivered to `user`."""
    out = {}
    for path in server.wait_mail(user, count=count):
        # Unfolded (RFC 5322 2.2.3): the host folds the long header value.
        raw = re.sub(rb"\r\n(?=[ \t])", b"", path.read_bytes())
        subject = re.search(rb"^Subject: (\S+)", raw, re.M).group(1).decode()
        found = STATE.findall(raw)
        assert len(found) == 1, (subject, raw)
        sender, mails, rcpts, instance = found[0]
        out[subject] = (sender.decode(), int(mails), int(rcpts), int(instance))
    return out


def test_pooled_sdk_plugin_state_does_not_leak_between_transactions(make_server, txn_state_wasm):
    plugin = {"name": "txn-state", "path": str(txn_state_wasm), "order": 1,
              "instance": "pool", "pool_size": 1}
    server = make_server({"plugin": [plugin]})

    with server.smtp() as s:
        s.ehlo()
        transaction(s, "a@example.org", ["alice@corvid.test", "bob@corvid.test"], "A")
        transaction(s, "b@example.org", ["alice@corvid.test"], "B")
        # An aborted transaction: its sender and recipients must not reach the next one.
        code, _ = s.mail("c@example.org")
        assert code == 250
        for r in ("alice@corvid.test", "bob@corvid.test", "postmaster@corvid.test"):
            assert s.rcpt(r)[0] == 250
        assert s.rset()[0] == 250
        transaction(s, "d@example.org", ["alice@corvid.test"], "D")
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=IO_TIMEOUT) as s:
        s.ehlo()
        transaction(s, "e@example.org", ["alice@corvid.test"], "E")

    seen = states(server, "alice", 4)
    assert {k: v[:3] for k, v in seen.items()} == {
        "A": ("a@example.org", 1, 2),
        "B": ("b@example.org", 1, 1),
        "D": ("d@example.org", 1, 1),
        "E": ("e@example.org", 1, 1),
    }, seen
    # One warm instance served them all (its global counted every MAIL, the aborted one too):
    # the values above were fresh because the SDK renewed them, not because the instance was.
    assert [seen[k][3] for k in "ABDE"] == [1, 2, 4, 5], seen
    assert states(server, "bob", 1)["A"] == seen["A"]


def test_call_mode_gives_every_hook_a_fresh_value_on_one_warm_instance(make_server, txn_state_wasm):
    # `instance = "call"`: the instance goes back to the pool after each hook, and the next
    # hook, on the same warm instance (a pool of one), gets a fresh plugin value: nothing the
    # plugin kept at MAIL or RCPT is there at DATA. This is the mode's promise (no state
    # between hooks); with "pool" the same transaction sees its MAIL and RCPTs (test above).
    plugin = {"name": "txn-state", "path": str(txn_state_wasm), "order": 1,
              "instance": "call", "pool_size": 1}
    server = make_server({"plugin": [plugin]})
    with server.smtp() as s:
        s.ehlo()
        transaction(s, "a@example.org", ["alice@corvid.test", "bob@corvid.test"], "A")
        transaction(s, "b@example.org", ["alice@corvid.test"], "B")
    seen = states(server, "alice", 2)
    assert {k: v[:3] for k, v in seen.items()} == {"A": ("-", 0, 0), "B": ("-", 0, 0)}, seen
    # The same instance served every transaction: its global kept counting.
    assert [seen[k][3] for k in "AB"] == [1, 2], seen

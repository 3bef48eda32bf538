"""Local delivery at intake (`delivery.local_at_intake`, on in config/dev.toml's defaults):
a message for local mailboxes only is in its Maildirs when the client reads the 250, and
the queue gets only what that first attempt left pending. Over real SMTP; the syscall-level
proof that the 250 follows the Maildir fsyncs is in test_durability_syscalls.py, success DSNs
of a message delivered at intake in test_lifecycle.py, quarantine (always queued, held) in
test_mail_auth.py and test_queue_hold.py.
"""

from __future__ import annotations

import json
import time

from conftest import deep_merge

# Retries far away, so that what the test sees is the first attempt's record.
NO_RETRY_SOON = {"queue": {"retry": {"delays": ["1h"]}}}


def queue_cli(server, *args):
    return server.cli("queue", "--config", str(server.config_path), *args)


def queue_show(server, qid) -> dict:
    r = queue_cli(server, "show", qid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.split("--- headers ---")[0])


def addr(r: dict) -> str:
    a = r["recipient"]["address"]
    return f"{a['local']}@{a['domain']}"


def states(shown: dict) -> dict[str, str]:
    return {addr(r): r["status"] for r in shown["recipients"]}


def delivered_before_250(server, qid) -> bool:
    """Whether the server logged a recipient of `qid` done before its `transaction` line (the
    line the session writes once the intake answered): the order of one process's log."""
    server.wait_log(lambda e: e.get("message") == "recipient done" and e.get("queue_id") == qid)
    events = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    order = [e["message"] for e in events if e.get("queue_id") == qid
             and e.get("message") in ("recipient done", "transaction")]
    assert "transaction" in order, order
    return order.index("recipient done") < order.index("transaction")


def test_a_local_message_is_in_the_mailbox_when_the_250_arrives(make_server):
    server = make_server()
    qid = server.send(b"Subject: at once\r\n\r\nbody\r\n", rcpts=("alice@corvid.test", "bob@corvid.test"))
    # No waiting: the files were synced before the reply.
    [a] = server.mail_files("alice")
    [b] = server.mail_files("bob")
    assert b"Subject: at once" in a.read_bytes() and b"Subject: at once" in b.read_bytes()
    assert a.read_bytes().startswith(b"Return-Path: <sender@example.org>\r\n")
    assert queue_cli(server, "list").stdout.strip() == "queue is empty"
    # The per-recipient lines are the queue's own, with the id of the 250, logged before it.
    server.wait_log(lambda e: e.get("message") == "recipient done" and e.get("queue_id") == qid
                    and e.get("rcpt") == "bob@corvid.test" and e.get("outcome") == "delivered")
    assert delivered_before_250(server, qid)


def test_switched_off_the_250_comes_before_the_delivery(make_server):
    server = make_server({"delivery": {"local_at_intake": False}})
    qid = server.send(b"Subject: queued\r\n\r\nbody\r\n")
    server.wait_mail("alice")
    assert not delivered_before_250(server, qid)


def test_a_failed_mailbox_is_queued_and_the_delivered_one_is_not_delivered_twice(make_server):
    server = make_server(NO_RETRY_SOON)
    blocker = server.mail_root / "corvid.test" / "bob"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way\n")
    qid = server.send(b"Subject: half\r\n\r\nbody\r\n", rcpts=("alice@corvid.test", "bob@corvid.test"))
    assert len(server.mail_files("alice")) == 1
    assert delivered_before_250(server, qid)
    shown = queue_show(server, qid)
    assert states(shown) == {"alice@corvid.test": "delivered", "bob@corvid.test": "pending"}, shown
    bob = next(r for r in shown["recipients"] if addr(r) == "bob@corvid.test")
    assert bob["attempts"] == 1 and "4." in (bob.get("diagnostic") or bob.get("last_reply") or ""), bob

    # The queue takes over: bob gets it once the way is clear, alice does not get it again.
    blocker.unlink()
    assert queue_cli(server, "flush").returncode == 0
    [mail] = server.wait_mail("bob")
    assert b"Subject: half" in mail.read_bytes()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and queue_cli(server, "list").stdout.strip() != "queue is empty":
        time.sleep(0.1)
    assert queue_cli(server, "list").stdout.strip() == "queue is empty"
    assert len(server.mail_files("alice")) == 1, "delivered twice"


def test_a_message_with_a_remote_recipient_is_queued_first(make_server):
    # The remote domain goes to a port nothing listens on: its recipient stays pending.
    server = make_server(deep_merge(NO_RETRY_SOON, {
        "server": {"relay_networks": ["127.0.0.0/8"]},
        "delivery": {"route": [{"domain": "remote.test", "to": "smtp://127.0.0.1:9"}]}}))
    qid = server.send(b"Subject: mixed\r\n\r\nbody\r\n", rcpts=("alice@corvid.test", "carol@remote.test"))
    # alice's copy comes from the queue's attempt, after the 250.
    server.wait_mail("alice")
    assert not delivered_before_250(server, qid)
    server.wait_log(lambda e: e.get("message") == "recipient deferred" and e.get("queue_id") == qid)
    shown = queue_show(server, qid)
    assert states(shown) == {"alice@corvid.test": "delivered", "carol@remote.test": "pending"}, shown


def test_a_long_recipient_list_is_queued_first(make_server):
    # More than 16 envelope recipients would each be delivered before the 250: queued first.
    rcpts = tuple(f"alice+{n}@corvid.test" for n in range(17))
    server = make_server()
    qid = server.send(b"Subject: many\r\n\r\nbody\r\n", rcpts=rcpts)
    server.wait_mail("alice")
    assert not delivered_before_250(server, qid)

"""The delivery lifecycle seen by plugins (the `deferred`, `bounced` and `delivered` stages of
the fixture plugin) and success notices (RCPT NOTIFY=SUCCESS, RFC 3461), over real SMTP between
two Corvid instances."""

import json
import time

import pytest

from conftest import domain, with_domains
from outbound_support import DnsServer, free_port, relay_overrides
from test_plugins import behave, behave_wasm  # noqa: F401  (the fixture is used by name)

MESSAGE = b"From: <alice@corvid.test>\r\nTo: <carol@far.test>\r\nSubject: lifecycle\r\n\r\nhello\r\n"


@pytest.fixture
def dns():
    server = DnsServer()
    yield server
    server.stop()


def pair(make_server, dns, wasm, **hooks):
    receiver = make_server(with_domains(domain("far.test", ["carol"])), name="rcv")
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    overrides = relay_overrides(dns, receiver.port)
    overrides["plugin"] = [behave(wasm, **hooks)]
    return receiver, make_server(overrides, name="snd")


def test_bounced_hook_annotates_the_dsn(make_server, dns, behave_wasm):
    receiver, sender = pair(make_server, dns, behave_wasm, bounced="annotate")
    qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("nobody@far.test",))
    [dsn] = sender.wait_mail("alice")
    text = dsn.read_bytes().decode("utf-8", "replace")
    assert "Action: failed\r\nStatus: 5.1.1\r\n" in text, text
    assert f"    see {qid}\r\n" in text, text


def test_bounced_hook_can_suppress_the_dsn(make_server, dns, behave_wasm):
    receiver, sender = pair(make_server, dns, behave_wasm, bounced="suppress")
    qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("nobody@far.test",))
    sender.wait_log(lambda e: e.get("message") == "recipient failed" and e.get("queue_id") == qid)
    sender.wait_queue_empty()
    time.sleep(0.5)
    assert sender.mail_files("alice") == []
    assert not [e for e in sender.events() if e.get("message") == "DSN queued"]


def test_deferred_hook_can_give_up_at_once(make_server, behave_wasm):
    port = free_port()  # nothing listens: every attempt fails temporarily
    overrides = relay_overrides(routes=[{"domain": "later.test", "to": f"smtp://127.0.0.1:{port}"}])
    overrides["plugin"] = [behave(behave_wasm, deferred="bounce")]
    sender = make_server(overrides, name="snd")
    qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("carol@later.test",))
    [dsn] = sender.wait_mail("alice")
    text = dsn.read_bytes().decode("utf-8", "replace")
    # Given up after one attempt, with the transient reason of that attempt.
    assert "Final-Recipient: rfc822; carol@later.test\r\nAction: failed\r\nStatus: 4.4.1\r\n" in text, text
    assert sender.wait_log(lambda e: e.get("message") == "policy gave up on a deferred recipient"
                           and e.get("queue_id") == qid)


def test_deferred_hook_sets_the_retry_time(make_server, behave_wasm):
    port = free_port()
    overrides = relay_overrides(routes=[{"domain": "later.test", "to": f"smtp://127.0.0.1:{port}"}])
    overrides["plugin"] = [behave(behave_wasm, deferred="retry")]  # 60 s times the attempt
    sender = make_server(overrides, name="snd")
    before = int(time.time())
    qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("carol@later.test",))
    sender.wait_log(lambda e: e.get("message") == "recipient deferred" and e.get("queue_id") == qid)
    # The outcome is recorded right after that log line: poll `corvid queue show` briefly.
    deadline = time.monotonic() + 10
    while True:
        shown = sender.cli("queue", "show", qid, "--config", str(sender.config_path))
        assert shown.returncode == 0, shown.stderr
        state = json.loads(shown.stdout.split("--- headers ---")[0])["recipients"][0]
        if state["attempts"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # The schedule says 1 s; the plugin said 60 s.
    assert state["next_attempt"] >= before + 55, state
    assert state["status"] == "pending", state


def test_success_notice_when_asked(make_server):
    # Success reports go to trusted clients only (dsn.notify_success_from = "trusted"):
    # a relay-network client is one. test_queue_hold.py checks that a stranger gets none.
    srv = make_server({"server": {"relay_networks": ["127.0.0.0/8"]}})
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<alice@corvid.test>", 250)
        c.expect("RCPT TO:<bob@corvid.test> NOTIFY=SUCCESS", 250)
        c.expect("RCPT TO:<postmaster@corvid.test>", 250)  # did not ask: no notice
        c.expect("DATA", 354)
        c.expect(b"Subject: tell me\r\n\r\nhi\r\n.", 250)
    srv.wait_mail("bob")
    [notice] = srv.wait_mail("alice")
    text = notice.read_bytes().decode("utf-8", "replace")
    assert "Subject: Successful Mail Delivery Report\r\n" in text, text
    assert "Final-Recipient: rfc822; bob@corvid.test\r\nAction: delivered\r\nStatus: 2.0.0\r\n" in text, text
    assert "postmaster@corvid.test" not in text.split("Content-Type: text/rfc822-headers")[0]

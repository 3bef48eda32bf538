"""DSN parameters of recipients a plugin adds (wit/dsn.wit, issue 11): the `contract` fixture
adds recipients with NOTIFY/ORCPT at RCPT over real SMTP, and the queue and the delivery
reports honour them as they honour a client's RCPT parameters (RFC 3461)."""

import json
import time

import pytest

from conftest import domain, with_domains
from contract_plugin import contract, contract_wasm  # noqa: F401  (the fixture is used by name)
from outbound_support import DnsServer, free_port, relay_overrides

MESSAGE = b"From: <alice@corvid.test>\r\nTo: <carol@far.test>\r\nSubject: added\r\n\r\nhello\r\n"


@pytest.fixture
def dns():
    server = DnsServer()
    yield server
    server.stop()


def recipients_of(srv, qid: str) -> dict:
    shown = srv.cli("queue", "show", qid, "--config", str(srv.config_path))
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout.split("--- headers ---")[0])
    return {f"{r['recipient']['address']['local']}@{r['recipient']['address']['domain']}": r
            for r in record["recipients"]}


def test_the_queued_recipient_carries_the_parameters(make_server, contract_wasm):
    port = free_port()  # nothing listens: the recipients stay in the queue
    overrides = relay_overrides(routes=[{"domain": "later.test", "to": f"smtp://127.0.0.1:{port}"}])
    overrides["queue"]["retry"]["delays"] = ["1h"]
    overrides["plugin"] = [contract(contract_wasm, adds=[
        "quiet@later.test NOTIFY=NEVER ORCPT=rfc822;orig+40later.test",
        "plain@later.test",
    ])]
    srv = make_server(overrides, name="snd")
    qid = srv.send(MESSAGE, sender="alice@corvid.test", rcpts=("carol@later.test",))
    rcpts = recipients_of(srv, qid)
    assert set(rcpts) == {"carol@later.test", "quiet@later.test", "plain@later.test"}, rcpts
    quiet = rcpts["quiet@later.test"]["recipient"]["params"]
    assert quiet["notify"] == {"never": True, "success": False, "failure": False, "delay": False}, quiet
    assert quiet["orcpt"] == "rfc822;orig+40later.test", quiet
    assert rcpts["plain@later.test"]["recipient"]["params"] == {"notify": None, "orcpt": None}


def test_notify_never_gets_no_report_and_failure_gets_one_with_orcpt(make_server, dns, contract_wasm):
    receiver = make_server(with_domains(domain("far.test", ["carol"])), name="rcv")
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    overrides = relay_overrides(dns, receiver.port)
    # The receiver knows neither: both fail with 550 5.1.1 at its RCPT.
    overrides["plugin"] = [contract(contract_wasm, adds=[
        "quiet@far.test NOTIFY=NEVER",
        "ghost@far.test NOTIFY=FAILURE ORCPT=rfc822;orig+40far.test",
    ])]
    sender = make_server(overrides, name="snd")
    qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("carol@far.test",))
    receiver.wait_mail("carol", domain="far.test")
    sender.wait_queue_empty()
    [dsn] = sender.wait_mail("alice")
    time.sleep(0.5)  # a second report, if one were wrongly sent, would be queued by now
    assert len(sender.mail_files("alice")) == 1
    text = dsn.read_bytes().decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; ghost@far.test\r\nOriginal-Recipient: rfc822; orig@far.test\r\n" \
        "Action: failed\r\nStatus: 5.1.1\r\n" in text, text
    report = text.split("Content-Type: text/rfc822-headers")[0]
    assert "quiet@far.test" not in report, text
    assert qid


def test_notify_success_gets_a_success_notice(make_server, contract_wasm):
    # Success notices go to trusted clients (relay networks) only, as for a client's RCPT.
    # (RCPT TO:<postmaster> skips the plugins, RFC 5321 4.5.1: the client writes to bob.)
    srv = make_server({"server": {"relay_networks": ["127.0.0.0/8"]},
                       "plugin": [contract(contract_wasm, adds=[
                           "postmaster@corvid.test NOTIFY=SUCCESS ORCPT=rfc822;pm+40corvid.test"])]})
    srv.send(b"Subject: tell me\r\n\r\nhi\r\n", sender="alice@corvid.test", rcpts=("bob@corvid.test",))
    srv.wait_mail("bob")
    srv.wait_mail("postmaster")
    [notice] = srv.wait_mail("alice")
    text = notice.read_bytes().decode("utf-8", "replace")
    assert "Subject: Successful Mail Delivery Report\r\n" in text, text
    assert "Final-Recipient: rfc822; postmaster@corvid.test\r\nOriginal-Recipient: rfc822; pm@corvid.test\r\n" \
        "Action: delivered\r\n" in text, text
    # bob did not ask (the client gave no NOTIFY): no notice for him.
    assert "bob@corvid.test" not in text.split("Content-Type: text/rfc822-headers")[0], text


@pytest.mark.parametrize("bad", ["x@corvid.test NOTIFY=NEVER,SUCCESS", "x@corvid.test ORCPT=rfc822;a+4"])
def test_parameters_a_client_could_not_send_apply_the_failure_policy(make_server, contract_wasm, bad):
    srv = make_server({"plugin": [contract(contract_wasm, adds=[bad])]})
    with srv.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<alice@corvid.test>", 451, "4.3.0")
    srv.wait_log(lambda e: "invalid decision refused" in e.get("message", "")
                 and "DSN parameters for x@corvid.test" in e.get("message", ""))


def test_a_refused_rcpt_adds_nobody_whatever_the_parameters(make_server, contract_wasm):
    srv = make_server({"plugin": [contract(contract_wasm, verdict="reject",
                                           adds=["bob@corvid.test NOTIFY=SUCCESS"])]})
    with srv.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<alice@corvid.test>", 550, "5.7.1")
        c.expect("DATA", 503)
    assert srv.mail_files("bob") == []

"""Plugins and mail authentication over real SMTP (wit/auth.wit, `auth-results`): a plugin
reads the host's results (SPF at MAIL, DMARC at DATA) and overrides the default DMARC policy
with its data verdict, both ways, and a plugin suppresses or steers DKIM signing of an
authenticated submission. The fixture plugin is host/plugin-host/tests/fixtures/authwit; DNS
comes from the loopback server of test_mail_auth, signatures are checked by dkimpy.
"""

from __future__ import annotations

import smtplib

import pytest

from conftest import build_wasm, IO_TIMEOUT, REPO, split_delivered
from test_auth_smtp import SENDER, ar_fields, checking_server, delivered, publish, send
from test_mail_auth import MESSAGE, dkimpy_dns_verify
from test_mail_auth import dns  # noqa: F401  (the loopback DNS fixture)
from test_tls_auth import PASSWORD, cli, tls_client_context

pytest.importorskip("dkim")

FIXTURE = REPO / "host" / "plugin-host" / "tests" / "fixtures" / "authwit"
WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release" / "fixture_authwit.wasm"


@pytest.fixture(scope="session")
def authwit_wasm():
    return build_wasm(FIXTURE, WASM)


def authwit(wasm, **config) -> dict:
    return {"name": "authwit", "path": str(wasm), "order": 1,
            "limits": {"hook_time_ms": 2000, "memory_mb": 32}, "config": config}


def plugin_server(make_server, dns, wasm, checks: dict | None = None, **config):
    cfg = {"enabled": True, "nameservers": [dns.address], "dns_timeout": "2s", **(checks or {})}
    return make_server({"auth_checks": cfg, "plugin": [authwit(wasm, **config)]})


def test_mail_sees_spf_and_no_message_results(make_server, dns, authwit_wasm):
    publish(dns, "v=DMARC1; p=reject")  # SPF: -all for everyone but 192.0.2.1
    srv = plugin_server(make_server, dns, authwit_wasm, report_mail="yes")
    with srv.smtp() as s:
        s.ehlo()
        code, msg = s.mail(SENDER)
    assert code == 550, (code, msg)
    assert msg.decode() == "5.7.1 spf=fail/mailfrom/sender.test dkim= dmarc=- arc=-", msg


def test_data_sees_dmarc_with_its_policy(make_server, dns, authwit_wasm):
    publish(dns, "v=DMARC1; p=quarantine; pct=50")
    srv = plugin_server(make_server, dns, authwit_wasm, report="yes")
    code, text = send(srv, MESSAGE)
    assert code == 550, text
    assert text == ("5.7.1 spf=fail/mailfrom/sender.test dkim= "
                    "dmarc=fail/quarantine/sender.test/50/00 arc=none/0"), text


def test_plugin_rejects_a_dmarc_failure_the_config_lets_through(make_server, dns, authwit_wasm):
    publish(dns, "v=DMARC1; p=none")
    srv = plugin_server(make_server, dns, authwit_wasm, {"dmarc_policy": "off"}, dmarc="reject")
    code, text = send(srv, MESSAGE)
    assert code == 550 and text == "5.7.1 DMARC policy violation", (code, text)
    assert srv.queue() == [] and srv.mail_files("alice") == []


def test_plugin_accept_overrides_the_default_dmarc_reject(make_server, dns, authwit_wasm):
    publish(dns, "v=DMARC1; p=reject")
    # Control: without the plugin the default policy refuses this unsigned message.
    code, text = send(checking_server(make_server, dns), MESSAGE)
    assert code == 550 and text.startswith("5.7.1"), (code, text)
    srv = plugin_server(make_server, dns, authwit_wasm, dmarc="accept")
    code, text = send(srv, MESSAGE)
    assert code == 250, text
    assert b"dmarc=fail (p=reject" in ar_fields(delivered(srv))[0]


def submit(make_server, dns, wasm, **config) -> bytes:
    """An authenticated submission from alice@corvid.test with the dev key configured and
    published; returns what bob received."""
    return submit_to(make_server, dns, wasm, **config)[0]


def submit_to(make_server, dns, wasm, **config):
    """`submit`, returning what bob received and the server."""
    srv = make_server({
        "auth_checks": {"enabled": True, "nameservers": [dns.address]},
        "dkim": {"key": [{"domain": "corvid.test", "selector": "dev", "generate": True}]},
        "plugin": [authwit(wasm, **config)],
    })
    record = cli(srv, "dkim", "record")
    assert record.returncode == 0, record.stderr
    line = next(l for l in record.stdout.splitlines() if " IN TXT " in l)
    dns.txt("dev._domainkey.corvid.test", "".join(line.split('"')[1::2]))
    r = cli(srv, "user", "add", "alice@corvid.test", "--password-stdin", input_text=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    message = MESSAGE.replace(b"alice@sender.test", b"alice@corvid.test")
    with smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], local_hostname="client.test",
                          timeout=IO_TIMEOUT, context=tls_client_context()) as s:
        s.login("alice@corvid.test", PASSWORD)
        s.sendmail("alice@corvid.test", ["bob@corvid.test"], message)
    content = split_delivered(srv.wait_mail("bob")[0]).content
    assert content.endswith(message)
    return content, srv


def test_plugin_suppresses_signing(make_server, dns, authwit_wasm):
    content = submit(make_server, dns, authwit_wasm, signing="suppress")
    assert b"DKIM-Signature:" not in content, content[:400]


def test_plugin_chosen_selector_signs_and_an_unknown_one_does_not(make_server, dns, authwit_wasm):
    content = submit(make_server, dns, authwit_wasm, signing="choose", sign_selector="dev")
    assert content.startswith(b"DKIM-Signature:") and b"s=dev" in content, content[:400]
    assert dkimpy_dns_verify(content)
    # No key for this domain: the message goes out unsigned rather than wrongly signed.
    content, srv = submit_to(make_server, dns, authwit_wasm, signing="choose",
                             sign_domain="brand.test")
    assert b"DKIM-Signature:" not in content, content[:400]
    # ... and the log says why, naming the domain the plugin asked for.
    refused = [e for e in srv.events() if "has no active [[dkim.key]]" in e.get("message", "")]
    assert len(refused) == 1 and refused[0].get("domain") == "brand.test", refused

"""Mail authentication over real SMTP: SPF at MAIL, DKIM/ARC/DMARC at the end of DATA and BDAT,
the default DMARC policy (`[auth_checks] dmarc_policy`), Authentication-Results: (RFC 8601),
and DKIM signing of authenticated submissions. Messages are signed and verified by dkimpy (no
code of ours); all DNS comes from a dnslib server on loopback.
"""

from __future__ import annotations

import smtplib
import subprocess

import pytest

from conftest import HOSTNAME, IO_TIMEOUT, split_delivered
from test_mail_auth import MESSAGE, Dns, dkimpy_dns_verify, ed25519_keypair, tamper_body
from test_mail_auth import dns  # noqa: F401  (the loopback DNS fixture)
from test_tls_auth import PASSWORD, cli, tls_client_context

dkim = pytest.importorskip("dkim")

SENDER = "bounce@sender.test"


def publish(dns: Dns, dmarc: str | None) -> tuple[bytes, str]:
    """sender.test: an SPF record the loopback client fails (so only DKIM can align), a DKIM
    key for selector `py`, and the DMARC record `dmarc`. Returns dkimpy's private key."""
    priv, pub = ed25519_keypair()
    dns.txt("py._domainkey.sender.test", f"v=DKIM1; k=ed25519; p={pub}")
    dns.txt("sender.test", "v=spf1 ip4:192.0.2.1 -all")
    if dmarc:
        dns.txt("_dmarc.sender.test", dmarc)
    return priv, pub


def signed(priv: bytes, message: bytes = MESSAGE) -> bytes:
    return dkim.sign(message, b"py", b"sender.test", priv, signature_algorithm=b"ed25519-sha256",
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + message


def checking_server(make_server, dns: Dns, **checks):
    cfg = {"enabled": True, "nameservers": [dns.address], "dns_timeout": "2s", **checks}
    return make_server({"auth_checks": cfg})


def send(srv, content: bytes, sender: str = SENDER) -> tuple[int, str]:
    """MAIL, RCPT alice, DATA over smtplib; the final reply (code, text)."""
    with srv.smtp() as s:
        s.ehlo()
        code, msg = s.mail(sender)
        assert code == 250, (code, msg)
        code, msg = s.rcpt("alice@corvid.test")
        assert code == 250, (code, msg)
        try:
            code, msg = s.data(content)
        except smtplib.SMTPDataError as e:
            code, msg = e.smtp_code, e.smtp_error
        return code, msg.decode(errors="replace")


def ar_fields(content: bytes) -> list[bytes]:
    """The Authentication-Results: fields of the header section, unfolded."""
    head = content.split(b"\r\n\r\n", 1)[0]
    fields, cur = [], None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and cur is not None:
            cur += b" " + line.strip()
            continue
        if cur is not None:
            fields.append(cur)
        cur = line
    if cur is not None:
        fields.append(cur)
    return [f for f in fields if f.lower().startswith(b"authentication-results:")]


def delivered(srv, count: int = 1) -> bytes:
    return split_delivered(srv.wait_mail("alice", count)[-1]).content


def test_dkimpy_signed_message_passes_dmarc_reject_and_gets_our_ar(make_server, dns):
    priv, _ = publish(dns, "v=DMARC1; p=reject")
    srv = checking_server(make_server, dns)
    message = signed(priv)
    code, text = send(srv, message)
    assert code == 250, text
    content = delivered(srv)
    ours = ar_fields(content)
    assert len(ours) == 1 and ours[0].startswith(f"Authentication-Results: {HOSTNAME};".encode())
    assert b"spf=fail smtp.mailfrom=bounce@sender.test" in ours[0], ours
    assert b"dkim=pass header.d=sender.test header.s=py" in ours[0], ours
    assert b"dmarc=pass (p=reject pct=100) header.from=sender.test" in ours[0], ours
    # Our field is prepended; the message itself arrives unchanged and still verifies.
    assert content.endswith(message)
    assert dkimpy_dns_verify(content)


def test_tampered_and_forged_messages_get_550_5_7_1(make_server, dns):
    priv, _ = publish(dns, "v=DMARC1; p=reject")
    srv = checking_server(make_server, dns)
    code, text = send(srv, tamper_body(signed(priv)))
    assert code == 550 and text.startswith("5.7.1") and "DMARC" in text, (code, text)
    # No signature at all: the From: domain is forged as far as DMARC can tell.
    code, text = send(srv, MESSAGE)
    assert code == 550 and text.startswith("5.7.1"), (code, text)
    assert srv.queue() == [] and srv.mail_files("alice") == []
    refused = [e for e in srv.events() if e.get("message") == "transaction"]
    assert len(refused) == 2 and all("550 5.7.1" in e["reply"] for e in refused), refused


def test_tampered_message_over_bdat_gets_550_and_signed_one_passes(make_server, dns):
    priv, _ = publish(dns, "v=DMARC1; p=reject")
    srv = checking_server(make_server, dns)
    for content, code, enhanced in ((tamper_body(signed(priv)), 550, "5.7.1"),
                                    (signed(priv), 250, "2.0.0")):
        with srv.connect() as c:
            c.greet()
            c.ehlo()
            c.expect(f"MAIL FROM:<{SENDER}>", 250)
            c.expect("RCPT TO:<alice@corvid.test>", 250)
            half = len(content) // 2
            c.send(f"BDAT {half}\r\n".encode() + content[:half])
            c.expect(None, 250)
            c.send(f"BDAT {len(content) - half} LAST\r\n".encode() + content[half:])
            c.expect(None, code, enhanced)
            c.expect("QUIT", 221)
    content = delivered(srv)
    assert b"dkim=pass" in ar_fields(content)[0] and dkimpy_dns_verify(content)


def test_dmarc_quarantine_holds_the_message(make_server, dns):
    publish(dns, "v=DMARC1; p=quarantine")
    srv = checking_server(make_server, dns)
    code, text = send(srv, MESSAGE)
    assert code == 250, text
    r = cli(srv, "queue", "list", "--held")
    assert r.returncode == 0, r.stderr
    assert SENDER in r.stdout and "held" in r.stdout and "DMARC" in r.stdout, r.stdout
    assert srv.mail_files("alice") == []


def test_dmarc_none_is_delivered_with_the_failure_in_ar(make_server, dns):
    publish(dns, "v=DMARC1; p=none")
    srv = checking_server(make_server, dns)
    code, text = send(srv, MESSAGE)
    assert code == 250, text
    ours = ar_fields(delivered(srv))
    assert len(ours) == 1 and b"dmarc=fail (p=none pct=100) header.from=sender.test" in ours[0]


def test_dmarc_policy_off_delivers_a_failing_message(make_server, dns):
    publish(dns, "v=DMARC1; p=reject")
    srv = checking_server(make_server, dns, dmarc_policy="off")
    code, text = send(srv, MESSAGE)
    assert code == 250, text
    assert b"dmarc=fail (p=reject" in ar_fields(delivered(srv))[0]


def test_forged_ar_with_our_authserv_id_is_removed(make_server, dns):
    priv, _ = publish(dns, "v=DMARC1; p=reject")
    srv = checking_server(make_server, dns)
    forged = (f"Authentication-Results: {HOSTNAME}; dkim=pass; dmarc=pass\r\n"
              f"Authentication-Results: (comment) {HOSTNAME.upper()};\r\n spf=pass\r\n"
              "Authentication-Results: elsewhere.test; spf=pass\r\n").encode()
    code, text = send(srv, signed(priv, forged + MESSAGE))
    assert code == 250, text
    fields = ar_fields(delivered(srv))
    assert len(fields) == 2, fields
    assert b"dkim=pass header.d=sender.test" in fields[0]
    assert fields[1] == b"Authentication-Results: elsewhere.test; spf=pass"


def test_dns_failure_is_temperror_and_the_message_is_accepted(make_server):
    dead = Dns()
    address = dead.address
    dead.stop()  # nothing answers there any more
    srv = make_server({"auth_checks": {"enabled": True, "nameservers": [address],
                                       "dns_timeout": "1s", "spf_timeout": "5s",
                                       "message_timeout": "5s"}})
    code, text = send(srv, MESSAGE)
    assert code == 250, text
    ours = ar_fields(delivered(srv))[0]
    assert b"spf=temperror" in ours and b"dmarc=temperror" in ours, ours


def test_trusted_clients_are_not_checked(make_server, dns):
    publish(dns, "v=DMARC1; p=reject")
    srv = make_server({"auth_checks": {"enabled": True, "nameservers": [dns.address]},
                       "server": {"relay_networks": ["127.0.0.1/32"]}})
    code, text = send(srv, MESSAGE)
    assert code == 250, text
    assert ar_fields(delivered(srv)) == []


# ---------------------------------------------------------------------------------------------
# Outbound: mail from authenticated users is signed at queue time


def test_authenticated_submission_is_signed_and_verifies_with_dkimpy(make_server, dns):
    srv = make_server({
        "auth_checks": {"enabled": True, "nameservers": [dns.address]},
        "dkim": {"key": [{"domain": "corvid.test", "selector": "dev", "generate": True}]},
    })
    key = srv.data_dir / "dkim" / "corvid.test.dev.pem"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    record = cli(srv, "dkim", "record")
    assert record.returncode == 0, record.stderr
    line = next(l for l in record.stdout.splitlines() if " IN TXT " in l)
    assert line.startswith("dev._domainkey.corvid.test. IN TXT")
    dns.txt("dev._domainkey.corvid.test", "".join(line.split('"')[1::2]))
    r = cli(srv, "user", "add", "alice@corvid.test", "--password-stdin", input_text=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr

    message = MESSAGE.replace(b"alice@sender.test", b"alice@corvid.test")
    with smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], local_hostname="client.test",
                          timeout=IO_TIMEOUT, context=tls_client_context()) as s:
        s.login("alice@corvid.test", PASSWORD)
        # A result in our name is removed from a trusted client's mail too (RFC 8601 5).
        forged = f"Authentication-Results: {HOSTNAME}; dmarc=pass\r\n".encode()
        s.sendmail("alice@corvid.test", ["bob@corvid.test"], forged + message)
    content = split_delivered(srv.wait_mail("bob")[0]).content
    assert content.startswith(b"DKIM-Signature:") and content.endswith(message), content[:400]
    assert b"d=corvid.test" in content and b"s=dev" in content
    assert ar_fields(content) == [], "not checked, and the forged field is gone"
    assert dkimpy_dns_verify(content), "dkimpy verifies Corvid's signature against the DNS record"
    assert not dkimpy_dns_verify(tamper_body(content))


def test_dkim_record_on_the_built_in_config_generates_the_dev_key_once(tmp_path):
    """What `make serve` prints before starting: the dev config's corvid.test key, made in
    ./data/dkim on first use (mode 0600), the same record every time after."""
    from conftest import run_cli
    first = run_cli("dkim", "record", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    key = tmp_path / "data" / "dkim" / "corvid.test.dev.pem"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    assert "PRIVATE KEY" not in first.stdout
    line = next(l for l in first.stdout.splitlines() if " IN TXT " in l)
    assert line.startswith('dev._domainkey.corvid.test. IN TXT ( "v=DKIM1; k=ed25519; p=')
    again = run_cli("dkim", "record", cwd=tmp_path)
    assert again.stdout == first.stdout


def test_null_sender_is_checked_by_its_helo_name(make_server, dns):
    """RFC 7208 section 2.4: for MAIL FROM:<> SPF checks the HELO identity."""
    publish(dns, None)
    dns.txt("client.test", "v=spf1 ip4:127.0.0.1 -all")
    srv = checking_server(make_server, dns)
    code, text = send(srv, MESSAGE, sender="")
    assert code == 250, text
    ours = ar_fields(delivered(srv))[0]
    assert b"spf=pass smtp.helo=client.test" in ours and b"dmarc=none" in ours, ours

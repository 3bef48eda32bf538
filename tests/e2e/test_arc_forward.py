"""ARC sealing (RFC 8617) of mail Corvid forwards, over real SMTP: a message from outside
(checked at DATA) for a local domain routed to another host (`[[delivery.route]]`, smtp://) is
sealed with the RSA key of `dkim.arc_seal_domains` and delivered to a second Corvid; the copy
that arrives there is verified by dkimpy's ARC verifier (no code of ours), which also sees a
tampered copy fail. All DNS comes from a dnslib server on loopback.
"""

from __future__ import annotations

import re

import pytest

from conftest import PLUGIN_DIR, domain, split_delivered, with_domains
from test_mail_auth import MESSAGE, Dns, ed25519_keypair, keygen, rsa_keypair, tamper_body
from test_mail_auth import dns  # noqa: F401  (the loopback DNS fixture, dkimpy's resolver too)

dkim = pytest.importorskip("dkim")

LIST = "lists.test"


def forwarding_pair(make_server, dns: Dns, tmp_path, seal: bool = True, plugins=()):
    """A receiver for lists.test, and a checking forwarder that takes carol@lists.test from
    anyone and routes lists.test to the receiver. Its sealing key is corvid.test's RSA key;
    `plugins` are its [[plugin]] tables."""
    receiver = make_server(with_domains(domain(LIST, ["carol"])), name="rcv")
    key = keygen(tmp_path, "corvid.test", "arc", "rsa", dns)
    overrides = with_domains(domain(LIST, ["carol"]))
    overrides.update({
        "auth_checks": {"enabled": True, "nameservers": [dns.address], "dns_timeout": "2s"},
        "dkim": {"arc_seal_domains": ["corvid.test"] if seal else [],
                 "key": [{"domain": "corvid.test", "selector": "arc", "algorithm": "rsa",
                          "key_file": str(key)}]},
        "delivery": {"route": [{"domain": LIST, "to": f"smtp://127.0.0.1:{receiver.port}"}],
                     "timeouts": {"connect": "3s"}},
        "queue": {"retry": {"delays": ["1s"], "jitter": 0.0}},
    })
    if plugins:
        overrides["plugin"] = list(plugins)
    forwarder = make_server(overrides, name="fwd")
    return forwarder, receiver


def forward(forwarder, receiver, content: bytes, count: int = 1) -> bytes:
    forwarder.send(content, sender="bounce@sender.test", rcpts=(f"carol@{LIST}",))
    path = receiver.wait_mail("carol", count, domain=LIST)[-1]
    return split_delivered(path).content


def dkimpy_signed(dns: Dns) -> bytes:
    priv, pub = ed25519_keypair()
    dns.txt("py._domainkey.sender.test", f"v=DKIM1; k=ed25519; p={pub}")
    return dkim.sign(MESSAGE, b"py", b"sender.test", priv, signature_algorithm=b"ed25519-sha256",
                     include_headers=[b"from", b"to", b"subject", b"date"]) + MESSAGE


def arc_field(content: bytes, name: bytes, instance: int) -> bytes:
    """The unfolded `name:` field of ARC instance `instance`."""
    head = content.split(b"\r\n\r\n", 1)[0]
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", head)
    for line in unfolded.split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":") and re.search(
                rb"\bi=%d;" % instance, line):
            return line
    raise AssertionError(f"no {name!r} i={instance} in {head[:1500]!r}")


def test_forwarded_message_is_sealed_and_verifies_with_dkimpy(make_server, dns, tmp_path):
    forwarder, receiver = forwarding_pair(make_server, dns, tmp_path)
    signed = dkimpy_signed(dns)
    content = forward(forwarder, receiver, signed)
    assert content.endswith(signed)
    cv, results, reason = dkim.arc_verify(content)
    assert cv == dkim.CV_Pass, (cv, results, reason)
    seal = arc_field(content, b"ARC-Seal", 1)
    assert b"cv=none" in seal and b"d=corvid.test" in seal and b"s=arc" in seal, seal
    aar = arc_field(content, b"ARC-Authentication-Results", 1)
    # The authserv-id is ours (server.hostname), the DKIM result the one seen at receipt.
    assert aar.startswith(b"ARC-Authentication-Results: i=1; mx.corvid.test;"), aar
    assert b"dkim=pass header.i=@sender.test header.s=py" in aar, aar
    # The original DKIM signature still verifies, and a body change breaks the chain.
    assert dkim.DKIM(content).verify()
    cv, _, _ = dkim.arc_verify(tamper_body(content))
    assert cv == dkim.CV_Fail
    sealed_logs = [e for e in forwarder.events() if "ARC" in e.get("message", "")]
    assert sealed_logs == [], sealed_logs
    # Mail that stays here (alice@corvid.test, a local mailbox) is not forwarded: no seal.
    forwarder.send(signed, sender="bounce@sender.test", rcpts=("alice@corvid.test",))
    local = split_delivered(forwarder.wait_mail("alice")[-1]).content
    assert b"Authentication-Results:" in local and b"ARC-Seal" not in local


def test_local_delivery_and_no_sealing_domain_are_not_sealed(make_server, dns, tmp_path):
    forwarder, receiver = forwarding_pair(make_server, dns, tmp_path, seal=False)
    signed = dkimpy_signed(dns)
    content = forward(forwarder, receiver, signed)
    assert b"ARC-Seal" not in content and content.endswith(signed)
    assert b"Authentication-Results:" in content


def test_second_hop_seals_i2_with_the_chain_result_at_receipt(make_server, dns, tmp_path):
    # A first forwarder (dkimpy) sealed the message: Corvid adds i=2, cv=pass.
    priv, pub = rsa_keypair(tmp_path)
    dns.txt("arc._domainkey.forwarder.test", f"v=DKIM1; k=rsa; p={pub}")
    signed = dkimpy_signed(dns)
    msg = b"Authentication-Results: forwarder.test; dkim=pass header.d=sender.test\r\n" + signed
    first = b"".join(dkim.arc_sign(msg, b"arc", b"forwarder.test", priv, b"forwarder.test")) + msg
    assert dkim.arc_verify(first)[0] == dkim.CV_Pass
    forwarder, receiver = forwarding_pair(make_server, dns, tmp_path)
    content = forward(forwarder, receiver, first)
    cv, results, reason = dkim.arc_verify(content)
    assert cv == dkim.CV_Pass, (cv, results, reason)
    assert b"cv=pass" in arc_field(content, b"ARC-Seal", 2)
    assert b"arc=pass" in arc_field(content, b"ARC-Authentication-Results", 2)

    # The same chain broken before it reached Corvid (body changed after the first seal): the
    # chain failed at receipt, so Corvid's set says cv=fail and the chain stays failed.
    content = forward(forwarder, receiver, tamper_body(first), count=2)
    assert b"cv=fail" in arc_field(content, b"ARC-Seal", 2)
    cv, results, reason = dkim.arc_verify(content)
    # dkimpy answers a chain whose last seal says cv=fail with no result and this reason.
    assert cv != dkim.CV_Pass and "ARC-Seal[2] reported failure" in reason, (cv, results, reason)

    # A chain that arrives already failed (its last seal says cv=fail) is not sealed again
    # (RFC 8617 section 5.1.2), and the log says so.
    again = forward(forwarder, receiver, content, count=3)
    assert not re.search(rb"(?im)^ARC-Seal:[^\r]*\bi=3;", again)
    assert len(re.findall(rb"(?im)^ARC-Seal:", again)) == 2
    assert any(e.get("message", "").startswith("forwarded message not ARC-sealed")
               for e in forwarder.events())


def unfolded_field(content: bytes, name: bytes) -> bytes:
    """The first unfolded `name:` field of the header section."""
    head = re.sub(rb"\r\n[ \t]+", b" ", content.split(b"\r\n\r\n", 1)[0])
    return next(line for line in head.split(b"\r\n") if line.lower().startswith(name.lower() + b":"))


def test_seal_carries_the_results_at_receipt_after_a_plugin_breaks_dkim(make_server, dns, tmp_path):
    # A data-stage plugin (header-stamp) removes the Date: field the sender's DKIM signature
    # covers, after the checks: the message Corvid forwards no longer verifies. The ARC set is
    # made after that change, and its ARC-Authentication-Results is this hop's
    # Authentication-Results (RFC 8617 section 4.1.1): dkim=pass, as seen at receipt.
    stamp = {"name": "header-stamp", "path": str(PLUGIN_DIR / "header_stamp.wasm"), "order": 50,
             "config": {"remove": ["Date"], "add": {}}}
    dns.txt("_dmarc.sender.test", "v=DMARC1; p=none")
    forwarder, receiver = forwarding_pair(make_server, dns, tmp_path, plugins=[stamp])
    signed = dkimpy_signed(dns)
    content = forward(forwarder, receiver, signed)
    assert not re.search(rb"(?im)^Date:", content), content[:2000]
    assert not dkim.DKIM(content).verify(), "the plugin's change must break the DKIM signature"
    ar = unfolded_field(content, b"Authentication-Results")
    assert b"dkim=pass" in ar and b"dmarc=pass" in ar, ar
    aar = arc_field(content, b"ARC-Authentication-Results", 1)
    assert b"dkim=pass header.i=@sender.test header.s=py" in aar, aar
    assert b"dmarc=pass header.from=sender.test policy.dmarc=none" in aar, aar
    assert b"spf=" in aar and b"arc=none" in aar, aar
    cv, results, reason = dkim.arc_verify(content)
    assert cv == dkim.CV_Pass, (cv, results, reason)

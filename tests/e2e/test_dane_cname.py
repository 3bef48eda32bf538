"""DANE (RFC 7672) for an MX host that is an alias: the TLSA base domain (RFC 7672 2.2.3).

The MX host names of `dane.test` (signed, served by NSD: tests/e2e/dnssec_zone.py) are secure
CNAMEs to target names in the same zone. TLSA records are looked up first under the final
target of the chain, and under the MX host name only when the target has none; the name that
gave the records is sent in SNI (RFC 7672 8.1), and a DANE-TA(2) chain may be issued for it
or for the MX host name (RFC 7672 3.2.2), never for the recipient domain. The peer is the
SMTP server of test_outbound_tls.py; it records the SNI names it was asked for and picks its
certificate by them (an expired self-signed one for another name otherwise, which only
DANE-EE accepts).

Cases: a DANE-EE record at the target of a two-CNAME chain matches (a wrong one at the MX
host name and at the middle of the chain do not count): delivered verified, SNI the target;
a wrong record at the target defers 4.7.5 although the MX host name's matches; no record at
the target: the MX host name's decides, and is the SNI name; DANE-TA at the target with a
chain issued for the target name, or for the MX host name, delivers verified; one issued for
the recipient domain defers 4.7.5."""

from __future__ import annotations

import ssl
from types import SimpleNamespace

import pytest

import dnssec_zone
from dnssec_zone import SignedZone, spki_sha256
from test_dane import cert_sha256, send_deferred, send_done, sender
from test_outbound_tls import CaFiles, TlsPeer

pytestmark = pytest.mark.skipif(not dnssec_zone.available(), reason="needs nsd and ldnsutils")


@pytest.fixture
def aliases(tmp_path):
    d = tmp_path / "ca"
    d.mkdir()
    ca = CaFiles(d)
    cert, key = ca.issue("peer", "elsewhere.invalid", kind="expired")
    peer = TlsPeer(cert, key)
    # DANE-TA chains by SNI name: (the name the leaf is issued for, then the CA).
    contexts = {}
    for target, named in (("target-ta", "target-ta"), ("target-tamx", "mx-tamx"),
                          ("target-tadom", "tadom")):
        host = f"{target}.dane.test"
        leaf, leaf_key = ca.issue(target, f"{named}.dane.test")
        chain = d / f"{target}.chain.pem"
        chain.write_bytes(leaf.read_bytes() + ca.pem.read_bytes())
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        c.load_cert_chain(chain, leaf_key)
        contexts[host] = c
    sni: list[str | None] = []

    def pick(sslobj, name, _ctx):
        sni.append(name)
        if name in contexts:
            sslobj.context = contexts[name]

    peer.ctx.sni_callback = pick
    digest, wrong, ca_digest = spki_sha256(cert), "00" * 32, cert_sha256(ca.pem)
    tlsa = f"_{peer.port}._tcp"
    records = []
    for name in ("ee", "mis", "fb", "ta", "tamx", "tadom"):
        records += [f"{name} IN MX 10 mx-{name}", f"target-{name} IN A 127.0.0.1"]
        if name != "ee":
            records.append(f"mx-{name} IN CNAME target-{name}")
    records += [
        # A chain of two CNAMEs: only its final target's records count.
        "mx-ee IN CNAME hop-ee", "hop-ee IN CNAME target-ee",
        f"{tlsa}.target-ee IN TLSA 3 1 1 {digest}",
        f"{tlsa}.hop-ee IN TLSA 3 1 1 {wrong}",
        f"{tlsa}.mx-ee IN TLSA 3 1 1 {wrong}",
        # The target's records decide, even when the MX host name's would match.
        f"{tlsa}.target-mis IN TLSA 3 1 1 {wrong}",
        f"{tlsa}.mx-mis IN TLSA 3 1 1 {digest}",
        # None at the target (NODATA, proven by NSEC): the MX host name's.
        f"{tlsa}.mx-fb IN TLSA 3 1 1 {digest}",
        f"{tlsa}.target-ta IN TLSA 2 0 1 {ca_digest}",
        f"{tlsa}.target-tamx IN TLSA 2 0 1 {ca_digest}",
        f"{tlsa}.target-tadom IN TLSA 2 0 1 {ca_digest}",
    ]
    zone = SignedZone("dane.test", records)
    yield SimpleNamespace(peer=peer, zone=zone, sni=sni)
    peer.stop()
    zone.stop()


def test_tlsa_at_the_cname_target_comes_first(make_server, aliases):
    w = aliases
    s = sender(make_server, w)
    tls = send_done(s, w, "x@ee.dane.test")
    assert tls.endswith(" verified"), tls
    # RFC 7672 8.1: SNI is the TLSA base domain, the chain's final target.
    assert "target-ee.dane.test" in w.sni and "mx-ee.dane.test" not in w.sni, w.sni
    # A wrong record at the target defers, whatever the MX host name has.
    reason = send_deferred(s, w, "x@mis.dane.test")
    assert reason.startswith("4.7.5 "), reason
    assert "target-mis.dane.test" in w.sni, w.sni


def test_no_tlsa_at_the_target_falls_back_to_the_mx_host_name(make_server, aliases):
    w = aliases
    tls = send_done(sender(make_server, w), w, "x@fb.dane.test")
    assert tls.endswith(" verified"), tls
    assert "mx-fb.dane.test" in w.sni and "target-fb.dane.test" not in w.sni, w.sni


def test_dane_ta_names_are_the_base_domain_and_the_mx_host_name(make_server, aliases):
    w = aliases
    s = sender(make_server, w)
    for rcpt in ("x@ta.dane.test", "x@tamx.dane.test"):
        tls = send_done(s, w, rcpt)
        assert tls.endswith(" verified"), (rcpt, tls)
    # A chain from the anchor issued for the recipient domain: not a reference identifier.
    reason = send_deferred(s, w, "x@tadom.dane.test")
    assert reason.startswith("4.7.5 "), reason
    assert "target-tadom.dane.test" in w.sni, w.sni

"""DANE (RFC 7672) on the sending side, with a real DNSSEC-signed zone: NSD serves `dane.test`
signed by ldns-signzone (tests/e2e/dnssec_zone.py) on loopback, and Corvid's resolver talks to
it directly, validating from the zone's own DNSKEY as trust anchor
(`delivery.dane.trust_anchor`). The MX peer is an SMTP server with STARTTLS and a certificate
made at test time (self-signed for another name, and expired: DANE-EE ignores both,
RFC 7672 3.1.1).

Cases: a DANE-TA(2) record for the test CA delivers to an MX presenting a chain from it for
its own name, and defers one whose certificate names another host; only unusable records
(PKIX-EE) deliver over TLS without authentication; a DANE-EE record matching the peer's key delivers over verified TLS; a record that
does not match defers 4.7.5, the message stays queued and its TLS record says `dane`; a TLSA RRset whose
signature is broken (bogus) defers 4.7.5, as does validating from a wrong trust anchor; an MX
host without TLSA records (proven absent by NSEC) gets the usual opportunistic TLS; `dane-only`
defers such a host; `tls = "dane"` for one domain works with `delivery.dane.enabled` off; a
REQUIRETLS message goes to an MX host DANE authenticates, and bounces 5.7.30 to one without
TLSA records (RFC 8689 4.2.1).

Which MX hosts get a TLSA lookup (RFC 7672 2.2.1, 2.2.2): `insecure.dane.test` is an unsigned
child zone delegated without DS. Its (insecure) MX RRset names `mx-bad`, and a secure MX RRset
names `mx-alias`, a CNAME into the unsigned zone (insecure addresses): both have secure TLSA
records that do not match the peer, and both deliver with opportunistic TLS, as DANE does not
apply; `dane-only` defers the insecure MX. A bogus MX RRset (broken RRSIG, pointing at `mx-good`
whose TLSA record matches) and bogus address records defer 4.7.5 without a connection."""

from __future__ import annotations

import hashlib
import json
import smtplib
import ssl

from conftest import IO_TIMEOUT
from test_requiretls import tls_client_context

import pytest

import dnssec_zone
from dnssec_zone import SignedZone, make_key, spki_sha256
from outbound_support import relay_overrides
from test_outbound_tls import CaFiles, TlsPeer

pytestmark = pytest.mark.skipif(not dnssec_zone.available(), reason="needs nsd and ldnsutils")


def message(rcpt: str) -> bytes:
    return f"From: alice@corvid.test\r\nTo: {rcpt}\r\nSubject: dane {rcpt}\r\n\r\nhello\r\n".encode()


@pytest.fixture
def world(tmp_path):
    """The peer (an expired self-signed certificate for a name no MX has) and the zone:
    `good` has a matching 3 1 1 record, `bad` a wrong one, `bogus` a matching one with a broken
    signature, `plain` none."""
    d = tmp_path / "ca"
    d.mkdir()
    ca = CaFiles(d)
    cert, key = ca.issue("peer", "elsewhere.invalid", kind="expired")
    peer = TlsPeer(cert, key, requiretls=True)
    # By SNI: mx-ta and mx-tawrong present a chain from the test CA (leaf, then the CA), the
    # first for its own name, the second for another.
    contexts = {}
    for host, named in (("mx-ta.dane.test", "mx-ta.dane.test"), ("mx-tawrong.dane.test", "other.test")):
        leaf, leaf_key = ca.issue(host, named)
        chain = d / f"{host}.chain.pem"
        chain.write_bytes(leaf.read_bytes() + ca.pem.read_bytes())
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        c.load_cert_chain(chain, leaf_key)
        contexts[host] = c

    def pick(sslobj, name, _ctx):
        if name in contexts:
            sslobj.context = contexts[name]

    peer.ctx.sni_callback = pick
    digest = spki_sha256(cert)
    ca_digest = cert_sha256(ca.pem)
    tlsa = f"_{peer.port}._tcp"
    records = []
    for name in ("good", "bad", "bogus", "plain", "only", "pkix", "ta", "tawrong", "bogusa"):
        records += [f"{name} IN MX 10 mx-{name}", f"mx-{name} IN A 127.0.0.1"]
    records += ["bogusmx IN MX 10 mx-good", "alias IN MX 10 mx-alias",
                "mx-alias IN CNAME mx.insecure.dane.test.",
                f"{tlsa}.mx-alias IN TLSA 3 1 1 {'00' * 32}",
                f"{tlsa}.mx-bogusa IN TLSA 3 1 1 {digest}",
                # A good A record and a bogus AAAA record (broken RRSIG) beside a matching TLSA.
                "bogus6 IN MX 10 mx-bogus6", "mx-bogus6 IN A 127.0.0.1", "mx-bogus6 IN AAAA ::1",
                f"{tlsa}.mx-bogus6 IN TLSA 3 1 1 {digest}"]
    # Unsigned, delegated without DS: its MX RRset is insecure. It names mx-bad (a secure TLSA
    # record that does not match the peer).
    children = {"insecure": ["@ IN MX 10 mx-bad.dane.test.", "mx IN A 127.0.0.1",
                             f"{tlsa}.mx IN TLSA 3 1 1 {'00' * 32}"]}
    records += [f"{tlsa}.mx-good IN TLSA 3 1 1 {digest}",
                f"{tlsa}.mx-bad IN TLSA 3 1 1 {'00' * 32}",
                f"{tlsa}.mx-bogus IN TLSA 3 1 1 {digest}",
                # PKIX-EE is not for SMTP (RFC 7672 3.1.3): unusable.
                f"{tlsa}.mx-pkix IN TLSA 1 1 1 {digest}",
                f"{tlsa}.mx-ta IN TLSA 2 0 1 {ca_digest}",
                f"{tlsa}.mx-tawrong IN TLSA 2 0 1 {ca_digest}"]
    zone = SignedZone("dane.test", records, children)
    zone.proc.terminate()
    zone.proc.wait()
    zone.sign(corrupt=[f"{tlsa}.mx-bogus", "bogusmx/MX", "mx-bogusa/A", "mx-bogus6/AAAA"])
    zone.start()

    class World:
        pass

    w = World()
    w.peer, w.zone, w.dir = peer, zone, d
    yield w
    peer.stop()
    zone.stop()


def cert_sha256(pem) -> str:
    """The SHA-256 of a PEM certificate's DER: the data of a `2 0 1` TLSA record."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


def sender(make_server, w, anchor=None, name="snd", log_level=None, ipv6=None):
    overrides = relay_overrides(None, w.peer.port,
                                dane={"enabled": True, "trust_anchor": str(anchor or w.zone.anchor)})
    overrides["delivery"]["nameservers"] = [w.zone.address]
    if ipv6 is not None:
        overrides["delivery"]["ipv6"] = ipv6
    if log_level:
        overrides["log"] = {"level": log_level}
    return make_server(overrides, name=name)


def delivered(w, rcpt: str) -> bool:
    return any(f"Subject: dane {rcpt}".encode() in m for m in w.peer.messages)


def deferred_reason(server, rcpt: str) -> str:
    e = server.wait_log(lambda e: e.get("rcpt") == rcpt and e.get("message") == "recipient deferred")
    return e.get("reason", "")


def done(server, rcpt: str) -> dict:
    return server.wait_log(lambda e: e.get("rcpt") == rcpt and e.get("outcome") == "delivered")


def queue_show(server, qid: str) -> dict:
    r = server.cli("queue", "--config", str(server.config_path), "show", qid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.split("--- headers ---")[0])


def test_dane_ee_match_delivers_and_a_mismatch_defers(make_server, world):
    w = world
    s = sender(make_server, w)
    s.send(message("x@good.dane.test"), sender="alice@corvid.test", rcpts=("x@good.dane.test",))
    e = done(s, "x@good.dane.test")
    assert e.get("tls", "").endswith(" verified"), e
    assert delivered(w, "x@good.dane.test")
    qid = s.send(message("x@bad.dane.test"), sender="alice@corvid.test", rcpts=("x@bad.dane.test",))
    reason = deferred_reason(s, "x@bad.dane.test")
    assert reason.startswith("4.7.5 "), reason
    assert not delivered(w, "x@bad.dane.test")
    # Still queued, with the attempt's TLS record.
    [r] = queue_show(s, qid)["recipients"]
    tls = r["tls"]
    assert tls["policy"] == "dane" and tls["source"] == "tlsa", tls
    assert tls["verified"] is False and "certificate" in tls["failure"], tls
    assert any(m.get("id") == qid for m in s.queue()), s.queue()


def test_a_bogus_signature_defers(make_server, world):
    w = world
    s = sender(make_server, w)
    s.send(message("x@bogus.dane.test"), sender="alice@corvid.test", rcpts=("x@bogus.dane.test",))
    reason = deferred_reason(s, "x@bogus.dane.test")
    assert reason.startswith("4.7.5 ") and "DANE" in reason, reason
    assert not delivered(w, "x@bogus.dane.test")
    # The peer was never asked to take it: the host is unusable before connecting.
    assert not any("bogus" in c for c in w.peer.commands), w.peer.commands


def test_a_wrong_trust_anchor_defers(make_server, world):
    w = world
    _, other = make_key(w.dir, "dane.test")
    s = sender(make_server, w, anchor=other)
    s.send(message("z@good.dane.test"), sender="alice@corvid.test", rcpts=("z@good.dane.test",))
    reason = deferred_reason(s, "z@good.dane.test")
    assert reason.startswith("4.7.5 ") and "DANE" in reason, reason
    assert not delivered(w, "z@good.dane.test")


def test_no_tlsa_falls_back_to_opportunistic_tls(make_server, world):
    w = world
    s = sender(make_server, w)
    s.send(message("x@plain.dane.test"), sender="alice@corvid.test", rcpts=("x@plain.dane.test",))
    e = done(s, "x@plain.dane.test")
    # Opportunistic: TLS, and the (expired, wrong-name) certificate is not verified.
    assert " unverified (" in e.get("tls", ""), e
    assert delivered(w, "x@plain.dane.test")


def test_dane_only_defers_a_host_without_tlsa_and_per_domain_dane_works(make_server, world):
    w = world
    overrides = relay_overrides(None, w.peer.port, dane={"trust_anchor": str(w.zone.anchor)},
                                tls={"domains": {"only.dane.test": "dane-only",
                                                 "good.dane.test": "dane"}})
    overrides["delivery"]["nameservers"] = [w.zone.address]
    s = make_server(overrides, name="only")
    s.send(message("x@only.dane.test"), sender="alice@corvid.test", rcpts=("x@only.dane.test",))
    reason = deferred_reason(s, "x@only.dane.test")
    assert reason.startswith("4.7.5 ") and "dane-only" in reason, reason
    assert not delivered(w, "x@only.dane.test")
    s.send(message("w@good.dane.test"), sender="alice@corvid.test", rcpts=("w@good.dane.test",))
    e = done(s, "w@good.dane.test")
    assert e.get("tls", "").endswith(" verified"), e
    # DANE off by default: a domain without a `dane` mode gets no TLSA lookup, and delivers
    # opportunistically although its TLSA record does not match.
    s.send(message("v@bad.dane.test"), sender="alice@corvid.test", rcpts=("v@bad.dane.test",))
    e = done(s, "v@bad.dane.test")
    assert " unverified (" in e.get("tls", ""), e


def submit_requiretls(srv, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test", timeout=IO_TIMEOUT) as c:
        c.ehlo()
        c.starttls(context=tls_client_context())
        c.ehlo()
        assert c.sendmail("alice@corvid.test", [rcpt], message(rcpt), mail_options=["REQUIRETLS"]) == {}


def test_requiretls_goes_over_dane_and_bounces_without_tlsa(make_server, world):
    w = world
    s = sender(make_server, w)
    submit_requiretls(s, "r@good.dane.test")
    e = done(s, "r@good.dane.test")
    assert e.get("tls", "").endswith(" verified"), e
    assert delivered(w, "r@good.dane.test")
    assert any(c.upper().startswith("MAIL FROM:") and "REQUIRETLS" in c.upper() for c in w.peer.commands), \
        w.peer.commands
    submit_requiretls(s, "r@plain.dane.test")
    [dsn] = s.wait_mail("alice")
    text = dsn.read_bytes().decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; r@plain.dane.test\r\nAction: failed\r\nStatus: 5.7.30\r\n" in text, text
    assert not delivered(w, "r@plain.dane.test")


def test_unusable_records_still_deliver_over_tls_unauthenticated(make_server, world):
    w = world
    s = sender(make_server, w)
    s.send(message("x@pkix.dane.test"), sender="alice@corvid.test", rcpts=("x@pkix.dane.test",))
    e = done(s, "x@pkix.dane.test")
    assert " unverified (" in e.get("tls", ""), e
    assert delivered(w, "x@pkix.dane.test")


def test_dane_ta_checks_the_chain_and_the_name(make_server, world):
    w = world
    s = sender(make_server, w)
    s.send(message("x@ta.dane.test"), sender="alice@corvid.test", rcpts=("x@ta.dane.test",))
    e = done(s, "x@ta.dane.test")
    assert e.get("tls", "").endswith(" verified"), e
    assert delivered(w, "x@ta.dane.test")
    # The same anchor, a certificate for another name (RFC 7672 3.2.3): deferred.
    s.send(message("x@tawrong.dane.test"), sender="alice@corvid.test", rcpts=("x@tawrong.dane.test",))
    reason = deferred_reason(s, "x@tawrong.dane.test")
    assert reason.startswith("4.7.5 "), reason
    assert not delivered(w, "x@tawrong.dane.test")


def send_deferred(server, w, rcpt: str) -> str:
    """Sends to `rcpt`; the reason it is deferred with, once it is (and it was not delivered)."""
    server.send(message(rcpt), sender="alice@corvid.test", rcpts=(rcpt,))
    reason = deferred_reason(server, rcpt)
    assert not delivered(w, rcpt), rcpt
    return reason


def send_done(server, w, rcpt: str) -> str:
    """Sends to `rcpt`; the TLS summary of its delivery, once delivered."""
    server.send(message(rcpt), sender="alice@corvid.test", rcpts=(rcpt,))
    e = done(server, rcpt)
    assert delivered(w, rcpt), rcpt
    return e.get("tls", "")


def test_no_tlsa_lookup_for_an_insecure_mx_or_insecure_addresses(make_server, world):
    w = world
    s = sender(make_server, w)
    # RFC 7672 2.2.1: the insecure MX RRset of insecure.dane.test names mx-bad, whose secure
    # TLSA record does not match the peer: not looked at, so delivered opportunistically.
    tls = send_done(s, w, "x@insecure.dane.test")
    assert " unverified (" in tls, tls
    # RFC 7672 2.2.2: a secure MX RRset, but the host's address records are insecure (a
    # CNAME into the unsigned zone): its non-matching TLSA record is not looked at either.
    tls = send_done(s, w, "x@alias.dane.test")
    assert " unverified (" in tls, tls


def test_dane_only_defers_an_insecure_mx(make_server, world):
    w = world
    overrides = relay_overrides(None, w.peer.port, dane={"trust_anchor": str(w.zone.anchor)},
                                tls={"domains": {"insecure.dane.test": "dane-only"}})
    overrides["delivery"]["nameservers"] = [w.zone.address]
    s = make_server(overrides, name="onlyinsecure")
    reason = send_deferred(s, w, "y@insecure.dane.test")
    assert reason.startswith("4.7.5 ") and "dane-only" in reason, reason


def test_a_bogus_mx_or_address_rrset_defers(make_server, world):
    w = world
    s = sender(make_server, w)
    # The MX RRset's signature is broken; it names mx-good, whose TLSA record matches: a
    # validator that let the bogus MX through would deliver.
    reason = send_deferred(s, w, "x@bogusmx.dane.test")
    assert reason.startswith("4.7.5 DANE: MX lookup for bogusmx.dane.test"), reason
    # The address records' signature is broken (the TLSA record matches).
    reason = send_deferred(s, w, "x@bogusa.dane.test")
    assert reason.startswith("4.7.5 DANE: address lookup for mx-bogusa.dane.test"), reason
    # Neither host was asked to take the mail.
    assert not any("bogus" in c for c in w.peer.commands), w.peer.commands


def test_aaaa_records_count_only_when_ipv6_is_on(make_server, world):
    """mx-bogus6 has a good A record and a bogus AAAA record. Without IPv6 its AAAA records are
    never used, so they are not looked up and DANE delivers; with IPv6 the bogus answer defers
    4.7.5 (RFC 7672 2.1.1: never a downgrade)."""
    w = world
    v4 = sender(make_server, w, name="v4", ipv6=False)
    v4.send(message("x@bogus6.dane.test"), sender="alice@corvid.test", rcpts=("x@bogus6.dane.test",))
    e = done(v4, "x@bogus6.dane.test")
    assert e.get("tls", "").endswith(" verified"), e
    v6 = sender(make_server, w, name="v6", ipv6=True)
    reason = send_deferred(v6, w, "y@bogus6.dane.test")
    assert reason.startswith("4.7.5 DANE: address lookup for mx-bogus6.dane.test"), reason


def test_tls_required_no_sets_discovered_dane_aside_but_not_a_configured_one(make_server, world):
    """RFC 8689: `TLS-Required: No` asks that recipient-side policies (MTA-STS, DANE) be
    ignored. DANE found through `delivery.dane.enabled` is the recipient's; a `tls = "dane"`
    the administrator set for a domain is this server's own rule and still holds."""
    w = world
    overrides = relay_overrides(None, w.peer.port,
                                dane={"enabled": True, "trust_anchor": str(w.zone.anchor)},
                                tls={"domains": {"good.dane.test": "dane-only"}})
    overrides["delivery"]["nameservers"] = [w.zone.address]
    s = make_server(overrides, name="tlsno")

    def optional(rcpt: str) -> bytes:
        return b"TLS-Required: No\r\n" + message(rcpt)

    # The TLSA record of bad.dane.test does not match: without the field it defers (first
    # test); with it the message goes over TLS without DANE's check.
    s.send(optional("x@bad.dane.test"), sender="alice@corvid.test", rcpts=("x@bad.dane.test",))
    e = done(s, "x@bad.dane.test")
    assert " unverified (" in e.get("tls", ""), e
    assert delivered(w, "x@bad.dane.test")
    s.wait_log(lambda e: e.get("message") == "TLS-Required: No: DANE not applied")
    # `dane-only` for good.dane.test is the administrator's own rule: DANE still checks it.
    s.send(optional("y@good.dane.test"), sender="alice@corvid.test", rcpts=("y@good.dane.test",))
    e = done(s, "y@good.dane.test")
    assert e.get("tls", "").endswith(" verified"), e

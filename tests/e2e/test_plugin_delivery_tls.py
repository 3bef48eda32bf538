"""TLS at the delivery stages (wit/delivery-tls.wit, issue 13): a delivery plugin (the
`contract` fixture) sees each attempt's TLS (version, cipher, verified, policy and its
source, failure) at `delivered` and `deferred`, and a `route` plugin that asks for `verify`
gets a peer with a wrong certificate deferred (4.7.5) where the default would deliver; a
plugin cannot loosen a configured `verify`. Peers and certificates are test_outbound_tls.py's
(a test CA made with openssl, Python SMTP peers with STARTTLS)."""

import json

from contract_plugin import contract, contract_wasm  # noqa: F401  (fixture used by name)
from outbound_support import relay_overrides
from test_outbound_tls import MESSAGE, ca, dns, peers, wait_deferred  # noqa: F401  (fixtures)


def seen(server, stage: str, rcpt: str) -> str:
    """The fixture's log line for `stage` and `rcpt`, without its prefix."""
    prefix = f"attempt-tls {stage} {rcpt} "
    e = server.wait_log(lambda e: e.get("message", "").startswith(prefix))
    return e["message"][len(prefix):]


def fields(line: str) -> dict:
    return dict(word.split("=", 1) for word in line.split(" ") if "=" in word)


def test_a_delivery_plugin_sees_the_attempt_tls(make_server, ca, dns, peers, contract_wasm):
    good = peers(ca.issue("good", "mx.far.test"))
    bad = peers(ca.issue("self", "mx.selfsigned.test", "self-signed"))
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test").a("mx.selfsigned.test")
    # far.test by MX with the default policy; selfsigned.test behind a `verify` route.
    routes = [{"domain": "selfsigned.test", "to": f"smtp://mx.selfsigned.test:{bad.port}", "tls": "verify"}]
    overrides = relay_overrides(dns, good.port, routes=routes, tls={"ca_file": str(ca.pem)})
    overrides["plugin"] = [contract(contract_wasm)]
    sender = make_server(overrides, name="snd")
    sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@far.test",))
    ok = fields(seen(sender, "delivered", "x@far.test"))
    assert ok["version"].startswith("TLSv1_"), ok
    assert ok["cipher"].startswith("TLS"), ok
    assert ok["verified"] == "true" and ok["failure"] == "-", ok
    assert ok["policy"] == "opportunistic" and ok["source"] == "default", ok
    assert len(good.messages) == 1
    sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("y@selfsigned.test",))
    line = seen(sender, "deferred", "y@selfsigned.test")
    ko = fields(line)
    assert ko["verified"] == "false" and ko["policy"] == "verify" and ko["source"] == "config", line
    assert "certificate" in line.split("failure=", 1)[1].lower(), line
    assert bad.messages == []


def test_a_route_plugin_asking_verify_defers_a_wrong_certificate(make_server, ca, dns, peers, contract_wasm):
    # The default (opportunistic) would deliver to this self-signed peer; the plugin's ask
    # for `verify` makes it a 4.7.5 deferral, and the queue records where the policy came from.
    peer = peers(ca.issue("self", "mx.far.test", "self-signed"))
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    overrides = relay_overrides(dns, peer.port, tls={"ca_file": str(ca.pem)})
    overrides["plugin"] = [contract(contract_wasm, route_tls="verify")]
    sender = make_server(overrides, name="snd")
    qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@far.test",))
    reason = wait_deferred(sender, "x@far.test")
    assert reason.startswith("4.7.5 "), reason
    assert peer.messages == [] and any(c.upper() == "STARTTLS" for c in peer.commands), peer.commands
    line = seen(sender, "deferred", "x@far.test")
    assert "policy=verify source=plugin" in line, line
    shown = sender.cli("queue", "show", qid, "--config", str(sender.config_path))
    assert shown.returncode == 0, shown.stderr
    [state] = json.loads(shown.stdout.split("--- headers ---")[0])["recipients"]
    assert state["tls"]["policy"] == "verify" and state["tls"]["source"] == "plugin", state["tls"]
    assert state["tls"]["verified"] is False, state["tls"]


def test_a_route_plugin_cannot_loosen_a_configured_verify(make_server, ca, dns, peers, contract_wasm):
    peer = peers(ca.issue("wrong", "mx.elsewhere.test"))
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    overrides = relay_overrides(dns, peer.port, tls={"ca_file": str(ca.pem), "domains": {"far.test": "verify"}})
    overrides["plugin"] = [contract(contract_wasm, route_tls="none")]
    sender = make_server(overrides, name="snd")
    sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@far.test",))
    reason = wait_deferred(sender, "x@far.test")
    assert reason.startswith("4.7.5 "), reason
    assert peer.messages == []
    assert "policy=verify source=config" in seen(sender, "deferred", "x@far.test")

"""SIGHUP reads the whole config file again: a file that does not load keeps the running config
(the log says why), the plugins, the local domains, mailboxes, aliases and postmaster, the routes,
the limits, the relay networks and the hostname of a good file are applied while a session in
progress goes on with the settings it started with, and the changes a running server does not
apply (listener addresses, data_dir) are named in the log as needing a restart."""

import json
import signal
import time

from conftest import bundled_plugins, domain, to_toml, with_domains
from outbound_support import relay_overrides


def hup(srv, *messages: str) -> dict:
    """Sends SIGHUP and waits for the log line with one of `messages` written after it."""
    with srv.cond:
        start = len(srv.lines)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while True:
        for e in _events_since(srv, start):
            if e.get("message") in messages:
                return e
        assert time.monotonic() < deadline, f"no {messages} after SIGHUP\n{srv.log_text()}"
        time.sleep(0.05)


def _events_since(srv, start: int) -> list[dict]:
    with srv.cond:
        lines = srv.lines[start:]
    out = []
    for l in lines:
        try:
            out.append(json.loads(l))
        except ValueError:
            pass
    return out


RESTART = ("config reloaded: TLS certificate files, plugins, local domains, routes, limits, "
           "relay networks and the hostname applied; these changes need a restart")
REFUSED = "config reload refused: the running config stays"


def test_a_broken_config_keeps_the_running_one(server):
    good = server.config_path.read_text()
    assert "max_recipients = 100" in good
    server.config_path.write_text(good.replace("max_recipients = 100", 'max_recipients = "lots"'))
    e = hup(server, REFUSED, "config reloaded", RESTART)
    assert e["message"] == REFUSED
    assert "limits.max_recipients" in e["error"], e
    # Still serving, on the old config.
    server.send(b"Subject: still here\r\n\r\nok\r\n")
    server.wait_mail("alice")
    # A missing file is refused the same way.
    server.config_path.unlink()
    e = hup(server, REFUSED, "config reloaded", RESTART)
    assert e["message"] == REFUSED and "cannot read" in e["error"], e
    server.config_path.write_text(good)
    assert hup(server, REFUSED, "config reloaded", RESTART)["message"] == "config reloaded"


def test_what_needs_a_restart_is_named(server):
    cfg = dict(server.config)
    cfg["listener"] = [dict(l) for l in cfg["listener"]]
    cfg["listener"][0]["address"] = "127.0.0.1:1"
    cfg["server"] = dict(cfg["server"], data_dir=str(server.workdir / "elsewhere"))
    cfg["limits"] = dict(cfg["limits"], max_recipients=200)
    cfg["local"] = dict(cfg["local"])
    cfg["local"]["domain"] = cfg["local"]["domain"] + [{"name": "new.test", "mailboxes": ["dana"]}]
    cfg["local"]["postmaster"] = "alice@corvid.test"
    server.config_path.write_text(to_toml(cfg))
    e = hup(server, REFUSED, "config reloaded", RESTART)
    assert e["message"] == RESTART, e
    keys = e["keys"].split(", ")
    # The new domain, the recipient limit and the postmaster are applied, so they are not named.
    assert keys == ["listener (addresses)", "server.data_dir"], keys
    # Nothing of it was applied: the old listener still serves, the old data_dir still holds
    # the queue and the mail.
    server.send(b"Subject: same\r\n\r\nok\r\n")
    server.wait_mail("alice")
    assert not (server.workdir / "elsewhere").exists()


def test_a_new_plugin_applies_to_new_sessions_while_an_open_one_goes_on(server):
    deny = [p for p in bundled_plugins() if p["name"] == "recipient-list"]
    deny[0]["config"] = {"deny": ["bob@corvid.test"]}
    c = server.connect()
    c.greet()
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<bob@corvid.test>", 250)
    server.config_path.write_text(to_toml(dict(server.config, plugin=deny)))
    e = hup(server, REFUSED, "config reloaded", RESTART)
    assert e["message"] == "config reloaded", e
    server.wait_log(lambda e: e.get("message") == "plugins reloaded")
    # The open session finishes its transaction on the generation it started with.
    c.expect("DATA", 354)
    c.send(b"Subject: in flight\r\n\r\nok\r\n.\r\n")
    assert c.reply().code == 250
    c.expect("QUIT", 221)
    c.close()
    server.wait_mail("bob")
    # A new session gets the new plugin.
    with server.connect() as d:
        d.greet()
        d.ehlo()
        d.expect("MAIL FROM:<sender@example.org>", 250)
        assert d.cmd("RCPT TO:<bob@corvid.test>").code == 550


def _with_domain(cfg: dict, domain: dict) -> dict:
    cfg = dict(cfg)
    cfg["local"] = dict(cfg["local"])
    cfg["local"]["domain"] = cfg["local"]["domain"] + [domain]
    return cfg


def test_a_new_domain_takes_mail_at_once_while_an_open_session_goes_on(server):
    """Issue 14: a SIGHUP with a new domain accepts mail for it without dropping a running
    session; a broken config keeps the old one."""
    with server.smtp() as s:
        s.ehlo()
        assert s.mail("sender@example.org")[0] == 250
        assert s.rcpt("dana@new.test")[0] == 550, "not a local domain yet"
    old = server.connect()
    old.greet()
    old.ehlo()
    old.expect("MAIL FROM:<sender@example.org>", 250)

    new = _with_domain(server.config, {"name": "new.test", "mailboxes": ["dana"],
                                       "aliases": {"team": ["dana", "alice@corvid.test"]}})
    server.config_path.write_text(to_toml(new))
    e = hup(server, REFUSED, "config reloaded", RESTART)
    assert e["message"] == "config reloaded", e

    # A new session delivers to the new domain's mailbox, and through its alias.
    server.send(b"Subject: to dana\r\n\r\nhello dana\r\n", rcpts=("dana@new.test",))
    [msg] = server.wait_mail("dana", domain="new.test")
    assert b"hello dana" in msg.read_bytes()
    server.send(b"Subject: to team\r\n\r\nhello team\r\n", rcpts=("team@new.test",))
    server.wait_mail("dana", count=2, domain="new.test")
    server.wait_mail("alice")

    # The session opened before the reload finishes its transaction, to the new domain too.
    old.expect("RCPT TO:<bob@corvid.test>", 250)
    old.expect("RCPT TO:<dana@new.test>", 250)
    old.expect("DATA", 354)
    old.send(b"Subject: in flight\r\n\r\nstarted before the reload\r\n.\r\n")
    assert old.reply().code == 250
    old.expect("QUIT", 221)
    old.close()
    server.wait_mail("bob")
    server.wait_mail("dana", count=3, domain="new.test")

    # A broken config is refused; new.test (and the old domains) go on serving.
    text = to_toml(_with_domain(new, {"name": "broken.test", "mailboxes": ["eve"],
                                      "aliases": {"x": ["nobody@nowhere.test"]}}))
    server.config_path.write_text(text)
    e = hup(server, REFUSED, "config reloaded", RESTART)
    assert e["message"] == REFUSED and "aliases.x" in e["error"], e
    server.send(b"Subject: still\r\n\r\nstill here\r\n", rcpts=("dana@new.test",))
    server.wait_mail("dana", count=4, domain="new.test")
    with server.smtp() as s:
        s.ehlo()
        assert s.mail("sender@example.org")[0] == 250
        assert s.rcpt("eve@broken.test")[0] == 550, "the refused file added nothing"

    # A good file without new.test takes it away again for new sessions.
    server.config_path.write_text(to_toml(server.config))
    assert hup(server, REFUSED, "config reloaded", RESTART)["message"] == "config reloaded"
    with server.smtp() as s:
        s.ehlo()
        assert s.mail("sender@example.org")[0] == 250
        assert s.rcpt("dana@new.test")[0] == 550


def _rcpts(c, n: int) -> list[int]:
    """Sends `n` RCPT commands for alice (duplicates count towards the limit) in one write."""
    c.send(b"RCPT TO:<alice@corvid.test>\r\n" * n)
    return [c.reply().code for _ in range(n)]


def test_new_limits_hostname_and_postmaster_apply_to_new_sessions_only(make_server):
    """Lowered max_recipients and max_message_size, a new hostname and a new postmaster: a
    session opened before the SIGHUP keeps the old ones to its end, the next one gets the new."""
    server = make_server({"limits": {"max_recipients": 200}})
    big = b"Subject: big\r\n\r\n" + b"x" * 4000 + b"\r\n"
    old = server.connect()
    assert "mx.corvid.test" in old.greet().text
    assert "SIZE 26214400" in old.ehlo().lines
    old.expect("MAIL FROM:<sender@example.org>", 250)

    cfg = dict(server.config)
    cfg["limits"] = dict(cfg["limits"], max_recipients=100, max_message_size=1000)
    cfg["server"] = dict(cfg["server"], hostname="mx2.corvid.test")
    cfg["local"] = dict(cfg["local"], postmaster="alice@corvid.test")
    server.config_path.write_text(to_toml(cfg))
    e = hup(server, REFUSED, "config reloaded", RESTART)
    # Outbound (EHLO name, DSNs) keeps the name it started with until a restart.
    assert e["message"] == RESTART and e["keys"] == "server.hostname (delivery)", e

    with server.connect() as new:
        assert new.greet().text.startswith("mx2.corvid.test"), "the new hostname"
        assert "SIZE 1000" in new.ehlo().lines
        new.expect("MAIL FROM:<sender@example.org>", 250)
        codes = _rcpts(new, 101)
        assert codes[:100] == [250] * 100 and codes[100] == 452, codes[95:]
        new.expect("DATA", 354)
        new.send(big + b".\r\n")
        assert new.reply().code == 552, "over the new message size limit"
        new.expect("QUIT", 221)

    # The old session: 101 recipients and 4000 octets are still within its limits.
    assert _rcpts(old, 101) == [250] * 101
    old.expect("DATA", 354)
    old.send(big + b".\r\n")
    assert old.reply().code == 250
    old.expect("QUIT", 221)
    old.close()
    [msg] = server.wait_mail("alice")
    assert b"by mx.corvid.test" in msg.read_bytes(), "the old session's Received: keeps its name"

    # <postmaster> now reaches alice, and the trace field names the new host.
    server.send(b"Subject: pm\r\n\r\nto the postmaster\r\n", rcpts=("postmaster",))
    mails = server.wait_mail("alice", count=2)
    newest = [m.read_bytes() for m in mails if b"to the postmaster" in m.read_bytes()]
    assert newest and b"by mx2.corvid.test" in newest[0], mails
    assert not server.mail_files("postmaster")


def test_relay_networks_and_routes_apply_to_new_mail(make_server):
    """A relay network added by SIGHUP allows relay from it; a changed route sends the next
    message to the new peer."""
    peers = [make_server(with_domains(domain("far.test", ["carol"])), name=f"peer{i}") for i in (1, 2)]
    routes = [{"domain": "far.test", "to": f"smtp://127.0.0.1:{peers[0].port}"}]
    overrides = relay_overrides(routes=routes)
    overrides["server"]["relay_networks"] = []
    sender = make_server(overrides, name="snd")
    with sender.smtp() as s:
        s.ehlo()
        assert s.mail("sender@example.org")[0] == 250
        assert s.rcpt("carol@far.test")[0] == 550, "no relay networks yet"

    cfg = dict(sender.config, server=dict(sender.config["server"], relay_networks=["127.0.0.0/8"]))
    sender.config_path.write_text(to_toml(cfg))
    assert hup(sender, REFUSED, "config reloaded", RESTART)["message"] == "config reloaded"
    sender.send(b"Subject: one\r\n\r\nvia peer one\r\n", rcpts=("carol@far.test",))
    peers[0].wait_mail("carol", domain="far.test")

    delivery = dict(cfg["delivery"], route=[{"domain": "far.test",
                                             "to": f"smtp://127.0.0.1:{peers[1].port}"}])
    sender.config_path.write_text(to_toml(dict(cfg, delivery=delivery)))
    assert hup(sender, REFUSED, "config reloaded", RESTART)["message"] == "config reloaded"
    sender.send(b"Subject: two\r\n\r\nvia peer two\r\n", rcpts=("carol@far.test",))
    [msg] = peers[1].wait_mail("carol", domain="far.test")
    assert b"via peer two" in msg.read_bytes()
    assert len(peers[0].mail_files("carol", domain="far.test")) == 1


def test_connection_caps_apply_to_new_connections(server):
    """A lowered limits.max_connections_per_ip: connections already open stay, the next one
    beyond the new cap gets 421 4.7.0 (RFC 5321 3.8), and raising it again admits it."""
    first, second = server.connect(), server.connect()
    first.greet()
    second.greet()
    cfg = dict(server.config)
    cfg["limits"] = dict(cfg["limits"], max_connections_per_ip=1)
    server.config_path.write_text(to_toml(cfg))
    e = hup(server, REFUSED, "config reloaded", RESTART)
    assert e["message"] == "config reloaded", e
    with server.connect() as third:
        r = third.reply()
        assert (r.code, r.enhanced) == (421, "4.7.0"), r
    # the two open sessions were not cut and still work
    first.expect("NOOP", 250)
    second.expect("NOOP", 250)
    first.expect("QUIT", 221)
    second.expect("QUIT", 221)
    first.close()
    second.close()
    cfg["limits"] = dict(cfg["limits"], max_connections_per_ip=50)
    server.config_path.write_text(to_toml(cfg))
    assert hup(server, REFUSED, "config reloaded", RESTART)["message"] == "config reloaded"
    a, b = server.connect(), server.connect()
    assert a.greet().code == 220 and b.greet().code == 220
    a.close()
    b.close()

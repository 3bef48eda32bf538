"""SIGHUP reads the whole config file again: a file that does not load keeps the running config
(the log says why), the plugins of a good file are applied while a session in progress goes
on, and the changes a running server does not apply (listener addresses, data_dir, domains,
limits) are named in the log as needing a restart."""

import json
import signal
import time

from conftest import bundled_plugins, to_toml


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


RESTART = "config reloaded: TLS certificate files and plugins applied; these changes need a restart"
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
    server.config_path.write_text(to_toml(cfg))
    e = hup(server, REFUSED, "config reloaded", RESTART)
    assert e["message"] == RESTART, e
    keys = e["keys"].split(", ")
    assert keys == ["listener (addresses)", "server.data_dir", "limits", "local"], keys
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

"""Record and replay: a server with `[record]` writes each sampled SMTP session as a capture
file; `corvid plugin replay` runs it offline through the same chain with identical decisions,
and through a changed chain (another config, another component) showing what differs."""

import copy
import json
import re
import smtplib
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import BIN, PLUGIN_CACHE, PLUGIN_DIR, base_config, bundled_plugins, to_toml


def replay(capture, *extra, extra_captures=()):
    captures = [str(capture), *map(str, extra_captures)]
    return subprocess.run([str(BIN), "plugin", "replay", *captures, "--cache", str(PLUGIN_CACHE), *extra],
                          capture_output=True, text=True, timeout=120)


def wait_captures(srv, count, timeout=20.0):
    """The capture files (written when a session ends) of sessions with a transaction, once
    there are `count` of them (the test harness's readiness probe is a session without one)."""
    deadline = time.monotonic() + timeout
    while True:
        files = []
        for f in sorted((srv.data_dir / "captures").glob("*.json")):
            if json.loads(f.read_text())["script"]["transaction"]:
                files.append(f)
        if len(files) >= count or time.monotonic() > deadline:
            return files
        time.sleep(0.05)


def changed_config(srv, tmp_path, deny):
    """The server's config with recipient-list refusing `deny` too."""
    cfg = copy.deepcopy(srv.config)
    for p in cfg["plugin"]:
        if p["name"] == "recipient-list":
            p["config"]["deny"] = p["config"]["deny"] + [deny]
    path = tmp_path / "changed.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    return path


HAND_WRITTEN = {
    "corvid_capture": 1,
    "plugins": ["recipient-list"],
    "script": {
        "connection": {"client": "192.0.2.7:40000", "helo": "client.example"},
        "clock": {"start": "2026-12-07T13:00:00Z"},
        "transaction": [{
            "mail_from": "a@sender.example",
            "rcpt_to": ["x@spam.example", "y@ok.example"],
            "expect": {"rcpt": [{"verdict": "reject", "code": 550, "enhanced": "5.7.1"},
                                {"verdict": "continue", "modifications": []}]},
        }],
    },
}


def test_a_hand_written_capture_replays_and_an_override_shows_the_difference(tmp_path):
    capture = tmp_path / "c.json"
    capture.write_text(json.dumps(HAND_WRITTEN))
    cfg = base_config(tmp_path / "data")
    cfg["plugin"] = [{"name": "recipient-list", "path": str(PLUGIN_DIR / "recipient_list.wasm"),
                      "config": {"deny": ["@spam.example"]}}]
    config = tmp_path / "replay.toml"
    config.write_text(to_toml(cfg), encoding="utf-8")
    r = replay(capture, "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rcpt <x@spam.example>: reject 550 5.7.1" in r.stdout and "5 checks, 0 failed" in r.stdout, r.stdout
    # A new component under the same name (here the fixture plugin, which lets everything
    # through): the refusal it would no longer make is the difference.
    behave = PLUGIN_DIR / "fixture_behave.wasm"
    if not behave.exists():
        pytest.skip(f"{behave} is not built")
    r = replay(capture, "--config", str(config), "--plugin", f"recipient-list={behave}")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "FAIL rcpt <x@spam.example>: continue" in out, out
    for line in ["- verdict: reject", "+ verdict: continue", "- code: 550", "+ code: (none)"]:
        assert line in out, out
    assert "rcpt <y@ok.example>: continue" in out and "FAIL rcpt <y@ok.example>" not in out, out
    assert "1 of 5 decisions differ from the recording" in r.stderr, r.stderr
    # Without a config every plugin must come from --plugin.
    r = replay(capture)
    assert r.returncode == 1 and "neither the --config file nor a --plugin" in r.stderr, r.stderr


@pytest.fixture
def recording_server(make_server):
    return make_server({"plugin": bundled_plugins(), "record": {"rate": 1.0}})


def run_sessions(srv, sessions, per_session):
    """`sessions` SMTP sessions of `per_session` transactions each: accepted mail, a refused
    recipient (recipient-list), a rewritten one (address-rewrite), stamped messages
    (header-stamp)."""
    for i in range(sessions):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.ehlo("client.test")
            for j in range(per_session):
                rcpts = ["alice@corvid.test"]
                if j % 2:
                    rcpts.append("blocked@corvid.test")
                if j % 3 == 2:
                    rcpts.append("webmaster@corvid.test")
                msg = f"Subject: replay {i}.{j}\r\n\r\nbody {i}.{j}\r\n".encode()
                refused = s.sendmail(f"sender{i}@example.org", rcpts, msg)
                assert set(refused) == ({"blocked@corvid.test"} if j % 2 else set()), refused


def test_recorded_transactions_replay_identically_and_a_changed_chain_differs(recording_server, tmp_path):
    srv = recording_server
    sessions, per_session = 25, 4
    run_sessions(srv, sessions, per_session)
    files = wait_captures(srv, sessions)
    assert len(files) == sessions, files
    transactions = 0
    for f in files:
        capture = json.loads(f.read_text())
        assert capture["partial"] == []
        assert capture["plugins"][:3] == ["dnsbl", "rate-limit", "recipient-list"]
        transactions += len(capture["script"]["transaction"])
    assert transactions == sessions * per_session
    # All of them in one process, one after the other (the directory holds the harness's
    # readiness probe too, a session without a transaction).
    r = replay(srv.data_dir / "captures", "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout and r.stdout.count(", 0 failed") >= sessions, r.stdout
    # For CI, several captures are one JUnit document (a suite per capture) and one TAP plan.
    r = replay(srv.data_dir / "captures", "--config", str(srv.config_path), "--format", "junit")
    assert r.returncode == 0, r.stdout + r.stderr
    suites = ET.fromstring(r.stdout)
    assert suites.tag == "testsuites" and suites.get("failures") == "0", r.stdout[:500]
    assert len(suites.findall("testsuite")) >= sessions
    r = replay(srv.data_dir / "captures", "--config", str(srv.config_path), "--format", "tap")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("TAP version 13") == 1 and "not ok" not in r.stdout, r.stdout[:500]
    [plan] = [line for line in r.stdout.splitlines() if line.startswith("1..")]
    assert int(plan[3:]) == r.stdout.count("\nok "), plan
    # The recorded decisions are the server's: the refusal and the stamp are in the capture.
    last = json.loads(files[-1].read_text())["script"]["transaction"][1]
    assert last["expect"]["rcpt"][1]["code"] == 550
    assert any(m.startswith("insert-header 0 X-Corvid-Stamp:") for m in last["expect"]["data"]["modifications"])

    # Another config: recipient-list now refuses alice too; every transaction differs.
    changed = changed_config(srv, tmp_path, "alice@corvid.test")
    r = replay(files[0], "--config", str(changed))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL rcpt <alice@corvid.test>: reject 550 5.7.1" in r.stdout, r.stdout
    assert "- verdict: continue" in r.stdout and "+ verdict: reject" in r.stdout, r.stdout
    assert f"decisions differ from the recording in {files[0]}" in r.stderr, r.stderr

    # Another component as header-stamp (a new build, here a plugin that stamps nothing):
    # the DATA decisions lose their modification.
    other = PLUGIN_DIR / "address_rewrite.wasm"
    r = replay(files[0], "--config", str(srv.config_path), "--plugin", f"header-stamp={other}")
    # address-rewrite refuses header-stamp's config: the replay says so.
    assert r.returncode == 1 and "header-stamp did not load" in r.stderr, r.stderr


def test_only_refused_sessions_are_kept(make_server):
    srv = make_server({"plugin": bundled_plugins(), "record": {"rate": 1.0, "only": "refused"}})
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.sendmail("a@example.org", ["alice@corvid.test"], b"Subject: ok\r\n\r\nok\r\n")
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.sendmail("b@example.org", ["alice@corvid.test", "blocked@corvid.test"], b"Subject: x\r\n\r\nx\r\n")
    srv.stop()
    files = sorted((srv.data_dir / "captures").glob("*.json"))
    assert len(files) == 1, files
    tx = json.loads(files[0].read_text())["script"]["transaction"][0]
    assert tx["mail_from"] == "b@example.org"


def test_a_long_message_is_cut_and_the_replay_says_the_capture_is_partial(make_server):
    srv = make_server({"plugin": bundled_plugins(), "record": {"rate": 1.0, "max_bytes": 64}})
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.sendmail("a@example.org", ["alice@corvid.test"], b"Subject: long\r\n\r\n" + b"x" * 500 + b"\r\n")
    [f] = wait_captures(srv, 1)
    capture = json.loads(f.read_text())
    assert len(capture["script"]["transaction"][0]["data"]) == 64
    assert any("cut at 64" in p for p in capture["partial"]), capture["partial"]
    r = replay(f, "--config", str(srv.config_path))
    assert "partial capture: a message was cut at 64" in r.stdout, r.stdout


def with_config(plugins, name, **config):
    """`plugins` with the config of plugin `name` updated."""
    plugins = copy.deepcopy(plugins)
    for p in plugins:
        if p["name"] == name:
            p["config"].update(config)
    return plugins


def test_dns_answers_are_recorded_so_that_a_listing_replays_without_the_server(make_server):
    from outbound_support import DnsServer

    dns = DnsServer()
    try:
        plugins = with_config(bundled_plugins(), "dnsbl", check_private=True)
        srv = make_server({"plugin": plugins, "record": {"rate": 1.0},
                           "delivery": {"nameservers": [dns.address]}})
        # Listed once the server is up (its start-up probe is a connection too).
        dns.a("1.0.0.127.dnsbl.corvid.test", "127.0.0.2")
        with pytest.raises(smtplib.SMTPException):
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
                s.sendmail("a@example.org", ["alice@corvid.test"], b"Subject: x\r\n\r\nx\r\n")
        deadline = time.monotonic() + 20
        while True:
            files = [f for f in sorted((srv.data_dir / "captures").glob("*.json"))
                     if "1.0.0.127.dnsbl.corvid.test" in json.loads(f.read_text())["script"].get("dns", {})]
            if files or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert files, sorted((srv.data_dir / "captures").glob("*.json"))
    finally:
        dns.stop()
    capture = json.loads(files[-1].read_text())
    assert capture["script"]["dns"]["1.0.0.127.dnsbl.corvid.test"]["A"] == ["127.0.0.2"]
    # The DNS server is gone: the replay answers from the capture.
    r = replay(files[-1], "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^connect: (reject|disconnect) 5\d\d", r.stdout, re.M), r.stdout


def test_http_answers_are_recorded_so_that_a_scanner_replays_without_the_scanner(make_server, tmp_path):
    """The rspamd plugin asks an HTTP scanner (here a stand-in on loopback answering by the
    subject); the capture holds its answers, and the replay runs with the scanner gone."""
    import http.server
    import threading

    class Scanner(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            spam = b"Subject: spam" in body
            answer = (b'{"action":"reject","score":20,"required_score":15,"messages":{"smtp_message":"spam here"}}'
                      if spam else b'{"action":"no action","score":1.5,"required_score":15}')
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Set-Cookie", "session=secret-cookie")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    scanner = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scanner)
    threading.Thread(target=scanner.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{scanner.server_address[1]}"
    try:
        rspamd = {"name": "rspamd", "path": str(PLUGIN_DIR / "rspamd.wasm"), "order": 60,
                  "capabilities": ["log", "config"], "http": [url + "/"],
                  "config": {"url": url, "fail": "closed"}}
        srv = make_server({"plugin": [rspamd], "record": {"rate": 1.0}})
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.sendmail("a@example.org", ["alice@corvid.test"], b"Subject: lunch\r\n\r\nnoon\r\n")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                s.sendmail("a@example.org", ["alice@corvid.test"], b"Subject: spam\r\n\r\nbuy\r\n")
            assert refused.value.smtp_code == 550
        [f] = wait_captures(srv, 1)
    finally:
        scanner.shutdown()
    text = f.read_text()
    assert "secret-cookie" not in text
    http_answers = json.loads(text)["script"]["http"]
    assert [h["status"] for h in http_answers] == [200, 200], http_answers
    assert "spam here" in http_answers[1]["body"]
    r = replay(f, "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "data: reject 550 5.7.1" in r.stdout and "spam here" in r.stdout, r.stdout


def test_a_recipient_the_server_refuses_after_the_chain_is_left_out_of_the_replayed_envelope(recording_server):
    srv = recording_server
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        refused = s.sendmail("a@example.org", ["nobody@corvid.test", "alice@corvid.test"], b"Subject: x\r\n\r\nx\r\n")
        assert refused["nobody@corvid.test"][0] == 550, refused  # unknown user: the server's rule
    [f] = wait_captures(srv, 1)
    tx = json.loads(f.read_text())["script"]["transaction"][0]
    assert tx["rcpt_to"] == [{"address": "nobody@corvid.test", "server_refused": True}, "alice@corvid.test"], tx
    assert tx["expect"]["rcpt"][0]["verdict"] == "continue"
    r = replay(f, "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_only_the_refusals_of_one_plugin_are_kept(make_server):
    srv = make_server({"plugin": bundled_plugins(), "record": {"plugin": "recipient-list"}})
    for rcpts in (["alice@corvid.test"], ["alice@corvid.test", "blocked@corvid.test"],
                  ["alice@corvid.test", "nobody@corvid.test"]):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.sendmail("a@example.org", rcpts, b"Subject: x\r\n\r\nx\r\n")
    srv.stop()
    files = sorted((srv.data_dir / "captures").glob("*.json"))
    assert len(files) == 1, files
    capture = json.loads(files[0].read_text())
    assert capture["refused_by"] == ["recipient-list"]
    assert capture["script"]["transaction"][0]["rcpt_to"][1] == "blocked@corvid.test"
    r = replay(files[0], "--config", str(srv.config_path))
    assert r.returncode == 0 and "refused by recipient-list" in r.stdout, r.stdout + r.stderr


def test_a_capture_lists_the_chain_of_the_time_after_a_reload(recording_server):
    srv = recording_server
    cfg = copy.deepcopy(srv.config)
    cfg["plugin"] = [p for p in cfg["plugin"] if p["name"] != "header-stamp"]
    srv.config_path.write_text(to_toml(cfg), encoding="utf-8")
    r = subprocess.run([str(BIN), "plugins", "reload", "--config", str(srv.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.sendmail("a@example.org", ["alice@corvid.test"], b"Subject: x\r\n\r\nx\r\n")
    [f] = wait_captures(srv, 1)
    capture = json.loads(f.read_text())
    assert "header-stamp" not in capture["plugins"] and "recipient-list" in capture["plugins"], capture["plugins"]
    r = replay(f, "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_auth_password_is_never_recorded(make_server):
    """An `auth` plugin checks the password (the fixture accepts carol's `sesame`): the capture
    holds the mechanism and the user, never the password, and says so; the replayed hook gets
    an empty password, which is the difference the replay shows."""
    from test_tls_auth import tls_client_context

    behave = PLUGIN_DIR / "fixture_behave.wasm"
    if not behave.exists():
        pytest.skip(f"{behave} is not built")
    plugin = {"name": "behave", "path": str(behave), "capabilities": ["log", "config", "credentials"],
              "config": {"auth": "check"}}
    srv = make_server({"plugin": [plugin], "record": {"rate": 1.0}})
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="client.test", timeout=10) as s:
        s.starttls(context=tls_client_context())
        assert s.login("carol@corvid.test", "sesame")[0] == 235
        assert s.sendmail("carol@corvid.test", ["someone@far-away.example"], b"Subject: out\r\n\r\nhi\r\n") == {}
    [f] = wait_captures(srv, 1)
    text = f.read_text()
    assert "sesame" not in text
    capture = json.loads(text)
    assert capture["script"]["auth"]["user"] == "carol@corvid.test"
    assert capture["script"]["auth"]["expect"]["verdict"] == "accept"
    assert capture["script"]["connection"]["tls"]["version"].startswith("TLSv1")
    assert any("password is not recorded" in p for p in capture["partial"]), capture["partial"]
    r = replay(f, "--config", str(srv.config_path))
    assert "partial capture: the AUTH password is not recorded" in r.stdout, r.stdout
    assert r.returncode == 1 and "FAIL auth PLAIN carol@corvid.test: reject 535" in r.stdout, r.stdout


@pytest.fixture
def auth_dns():
    """The loopback DNS server of test_mail_auth (skipped without its Python packages)."""
    mail_auth = pytest.importorskip("test_mail_auth")
    server = mail_auth.Dns()
    try:
        yield server
    finally:
        server.stop()


def test_auth_results_are_recorded_so_that_a_plugin_reading_them_replays_the_same(make_server, auth_dns):
    """The authwit fixture rejects at DATA with the SPF/DKIM/DMARC/ARC results it read: the
    capture holds them per transaction, and the replay hands the same ones over."""
    from conftest import REPO, build_wasm
    auth_smtp = pytest.importorskip("test_auth_smtp")
    mail_auth = pytest.importorskip("test_mail_auth")
    fixture = REPO / "host" / "plugin-host" / "tests" / "fixtures" / "authwit"
    wasm = build_wasm(fixture, REPO / "target" / "plugins" / "wasm32-wasip2" / "release"
                      / "fixture_authwit.wasm")
    auth_smtp.publish(auth_dns, "v=DMARC1; p=quarantine; pct=50")
    srv = make_server({
        "auth_checks": {"enabled": True, "nameservers": [auth_dns.address], "dns_timeout": "2s"},
        "plugin": [{"name": "authwit", "path": str(wasm), "order": 1,
                    "config": {"report": "yes"}}],
        "record": {"rate": 1.0},
    })
    code, text = auth_smtp.send(srv, mail_auth.MESSAGE)
    seen = "spf=fail/mailfrom/sender.test dkim= dmarc=fail/quarantine/sender.test/50/00 arc=none/0"
    assert code == 550 and text == "5.7.1 " + seen, (code, text)
    files = wait_captures(srv, 1)
    assert len(files) == 1, files
    tx = json.loads(files[0].read_text())["script"]["transaction"][0]
    assert tx["auth_results"] == {
        "spf": {"result": "fail", "domain": "sender.test", "identity": "mailfrom"},
        "dmarc": {"result": "fail", "policy": "quarantine", "domain": "sender.test", "pct": 50,
                  "spf_aligned": False, "dkim_aligned": False},
        "arc": {"result": "none", "sets": 0},
    }, tx
    r = replay(files[0], "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"data: reject 550 5.7.1 {seen}" in r.stdout, r.stdout

"""WebAssembly plugins over real SMTP: the bundled chain of config/dev.toml, a misbehaving
fixture plugin (trap, endless loop, memory bomb, invalid decision) that must not stop the
server, and hot reload with `corvid plugins reload`."""

import os
import subprocess
import threading
import time

import pytest

from conftest import BIN, build_wasm, bundled_plugins, IO_TIMEOUT, REPO, split_delivered

FIXTURE = REPO / "host" / "plugin-host" / "tests" / "fixtures" / "behave"
FIXTURE_WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release" / "fixture_behave.wasm"


@pytest.fixture(scope="session")
def behave_wasm():
    """The fixture plugin, built for wasm32-wasip2 inside the test run."""
    return build_wasm(FIXTURE, FIXTURE_WASM)


def behave(wasm, **stages) -> dict:
    return {"name": "behave", "path": str(wasm), "order": 1, "limits": {"hook_time_ms": 500, "memory_mb": 32},
            "config": stages}


def cli(srv, *args):
    return subprocess.run([str(BIN), *args, "--config", str(srv.config_path)], cwd=srv.workdir,
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})


def test_bundled_chain_acts_over_smtp(make_server):
    srv = make_server({"plugin": bundled_plugins()})
    with srv.connect() as c:
        c.begin(rcpts=())
        r = c.expect("RCPT TO:<blocked@corvid.test>", 550, "5.7.1")  # recipient-list
        assert "blocked@corvid.test" in r.text
    qid = srv.send(b"Subject: plugins\r\n\r\nhello\r\n", rcpts=("webmaster@corvid.test",))  # address-rewrite
    [path] = srv.wait_mail("alice")
    d = split_delivered(path)
    assert f"id {qid}".encode() in d.received
    assert d.content.startswith(b"X-Corvid-Stamp: mx.corvid.test; client=127.0.0.1;"), d.content[:120]  # header-stamp
    listed = cli(srv, "plugins", "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("dnsbl", "rate-limit", "recipient-list", "address-rewrite", "header-stamp", "route-table"):
        assert any(line.startswith(name) and line.rstrip().endswith("active") for line in listed.stdout.splitlines()), listed.stdout


@pytest.mark.parametrize("failure", ["trap", "loop", "oom", "bad-reject"])
def test_broken_plugin_gets_failure_policy_and_server_keeps_serving(make_server, behave_wasm, failure):
    srv = make_server({"plugin": [behave(behave_wasm, rcpt=failure)]})
    with srv.connect() as c:
        c.begin(rcpts=())
        # tempfail is the default failure policy where mail can be accepted: 451 4.3.0.
        c.expect("RCPT TO:<alice@corvid.test>", 451, "4.3.0")
        c.expect("QUIT", 221)
    # The server is up and the next transaction gets a fresh instance (and fails the same way).
    with srv.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<bob@corvid.test>", 451, "4.3.0")
    assert srv.running()


def test_endless_loop_does_not_stall_other_sessions(make_server, behave_wasm):
    """A looping plugin at DATA (cut off after its limit) while other sessions send mail: each
    other session completes in a small fraction of the limit, while the loop still runs."""
    limit = 3.0
    plugin = behave(behave_wasm, data="loop", mail="continue")
    plugin["limits"]["hook_time_ms"] = int(limit * 1000)
    if "hook_fuel" in (REPO / "host" / "plugin-host" / "src" / "manifest.rs").read_text():
        # The CPU budget would stop the loop within milliseconds: here the loop must last.
        plugin["limits"]["hook_fuel"] = 10**15
    srv = make_server({"plugin": [plugin]})
    loop_started = threading.Event()
    loop_done: list[float] = []

    def looping():
        with srv.connect() as c:
            c.begin()
            c.expect("DATA", 354)
            c.send(b"Subject: loop\r\n\r\nx\r\n.\r\n")
            loop_started.set()
            c.expect(None, 451, "4.3.0")
            loop_done.append(time.monotonic())

    t = threading.Thread(target=looping)
    start_loop = time.monotonic()
    t.start()
    assert loop_started.wait(IO_TIMEOUT)
    time.sleep(0.2)  # setup: the server has read the final dot and is in the plugin's loop
    # Meanwhile, other sessions (their MAIL goes through the same plugin) complete promptly.
    latencies, finished = [], []
    for _ in range(5):
        start = time.monotonic()
        with srv.connect() as c:
            c.begin()
            c.expect("RSET", 250)
            c.expect("QUIT", 221)
        finished.append(time.monotonic())
        latencies.append(finished[-1] - start)
    t.join(IO_TIMEOUT + limit)
    assert not t.is_alive()
    # The loop was really cut off at its limit, and really overlapped the other sessions.
    assert loop_done and loop_done[0] - start_loop >= limit * 0.9, loop_done
    assert max(finished) < loop_done[0], "the other sessions did not run while the plugin looped"
    # Each other session (greeting, EHLO, MAIL, RCPT, RSET, QUIT) took well under the limit:
    # stalled behind the loop, one would take up to `limit`.
    print("other sessions:", [f"{x:.3f}s" for x in latencies])
    assert max(latencies) < limit / 6, [f"{x:.3f}s" for x in latencies]


def test_reload_swaps_and_a_broken_version_keeps_the_old_one(make_server, behave_wasm, tmp_path):
    srv = make_server({"plugin": [behave(behave_wasm, rcpt="reject")]})
    with srv.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<alice@corvid.test>", 550, "5.7.1")
    # New config: the plugin now accepts.
    srv.config["plugin"][0]["config"] = {"rcpt": "continue"}
    from conftest import to_toml
    srv.config_path.write_text(to_toml(srv.config))
    r = cli(srv, "plugins", "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    with srv.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<alice@corvid.test>", 250)
    # A broken component: the reload reports it, and the working version keeps serving.
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\0asm not really")
    srv.config["plugin"][0]["path"] = str(broken)
    srv.config_path.write_text(to_toml(srv.config))
    r = cli(srv, "plugins", "reload")
    assert r.returncode != 0 and "behave" in r.stdout, r.stdout + r.stderr
    with srv.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<alice@corvid.test>", 250)
    listed = cli(srv, "plugins", "list").stdout
    assert "stale" in listed, listed


def test_reload_under_load_fails_no_transaction(make_server, behave_wasm):
    srv = make_server({"plugin": [behave(behave_wasm, data="stamp")]})
    errors, sent = [], []
    stop = threading.Event()

    def sender(n):
        while not stop.is_set():
            try:
                sent.append(srv.send(f"Subject: load {n}\r\n\r\nx\r\n".encode()))
            except Exception as e:  # noqa: BLE001 - any failure is a failed transaction
                errors.append(repr(e))

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for _ in range(3):
        r = cli(srv, "plugins", "reload")
        assert r.returncode == 0, r.stdout + r.stderr
    stop.set()
    for t in threads:
        t.join(IO_TIMEOUT * 3)
    assert errors == [], errors[:3]
    assert len(sent) >= 3


def test_auth_plugin_checks_passwords_over_smtp(make_server, behave_wasm):
    """The `auth` stage decides SMTP AUTH: the fixture accepts carol's password `sesame` when
    granted `credentials` (no users file entry needed), refuses other passwords with 535, and
    the authenticated identity may then relay."""
    import smtplib

    from test_tls_auth import tls_client_context

    plugin = behave(behave_wasm, auth="check")
    plugin["capabilities"] = ["log", "config", "credentials"]
    srv = make_server({"plugin": [plugin], "auth": {"failure_delay": "100ms"}})

    def submission() -> smtplib.SMTP:
        s = smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="client.test", timeout=IO_TIMEOUT)
        s.starttls(context=tls_client_context())
        return s

    with submission() as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("carol@corvid.test", "wrong")
        assert e.value.smtp_code == 535
    with submission() as s:
        code, _ = s.login("carol@corvid.test", "sesame")
        assert code == 235
        refused = s.sendmail("carol@corvid.test", ["someone@far-away.example"], b"Subject: out\r\n\r\nhi\r\n")
        assert refused == {}
    assert "sesame" not in srv.log_text(), "a password reached the log"
    assert srv.wait_log(lambda e: e.get("message") == "authenticated" and e.get("user") == "carol@corvid.test")


def test_plugins_list_stats_counts_what_happened(make_server, behave_wasm):
    """`corvid plugins list --stats` shows the running server's per plugin and stage counters."""
    srv = make_server({"plugin": bundled_plugins() + [behave(behave_wasm, data="trap")]})
    with srv.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<blocked@corvid.test>", 550, "5.7.1")  # recipient-list rejects
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        c.expect("DATA", 354)
        c.expect("Subject: x\r\n\r\nhello\r\n.", 451, "4.3.0")  # the fixture traps at DATA
        c.expect("QUIT", 221)
    out = cli(srv, "plugins", "list", "--stats")
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines()[1:]:
        f = line.split()
        rows[(f[0], f[1])] = dict(zip(["calls", "continue", "accept", "reject", "tempfail", "other",
                                       "failed", "trap", "time", "oom", "trips"], map(int, f[2:13])))
    assert rows[("recipient-list", "rcpt")]["calls"] == 2, out.stdout
    assert rows[("recipient-list", "rcpt")]["reject"] == 1, out.stdout
    assert rows[("recipient-list", "rcpt")]["continue"] == 1, out.stdout
    trapped = [r for (p, st), r in rows.items() if st == "data" and r["trap"] == 1]
    assert len(trapped) == 1 and trapped[0]["failed"] == 1, out.stdout
    # against a stopped server it says so and fails
    srv.stop()
    gone = cli(srv, "plugins", "list", "--stats")
    assert gone.returncode != 0 and "no server is running" in gone.stderr, gone

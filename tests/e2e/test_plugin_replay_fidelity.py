"""Record and replay, what a capture must hold beyond the session's commands for the replay to
decide the same: kv values and their expiries, the time of each hook, TLS as it was at
connect, recipients the server took without the chain; and several captures in one
`corvid plugin replay`."""

import copy
import json
import smtplib
import time

import pytest

from conftest import REPO, bundled_plugins, to_toml
from test_plugin_replay import replay, wait_captures, with_config
from test_tls_auth import tls_client_context


def without_ttls(capture_path, out_path):
    """The capture with every kv value's expiry dropped (the format before TTLs were kept)."""
    capture = json.loads(capture_path.read_text())
    for keys in capture["kv"].values():
        for k, v in list(keys.items()):
            if isinstance(v, dict):
                keys[k] = v["value"]
    out_path.write_text(json.dumps(capture))
    return out_path


def test_kv_reads_are_recorded_so_that_a_counter_replays_the_same(make_server):
    """rate-limit counts MAILs per client in kv: the sessions past the limit are tempfailed,
    and each capture holds the counters as the session found them."""
    plugins = with_config(bundled_plugins(), "rate-limit", messages_per_window=5)
    srv = make_server({"plugin": plugins, "record": {"rate": 1.0}})
    codes = []
    for i in range(3):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.ehlo("client.test")
            for j in range(3):
                code, _ = s.mail(f"s{i}.{j}@example.org")
                codes.append(code)
                if code == 250:
                    s.rcpt("alice@corvid.test")
                    s.rset()
    assert codes == [250] * 5 + [450] * 4, codes
    files = wait_captures(srv, 3)
    assert len(files) == 3, files
    later = json.loads(files[1].read_text())
    counters = later["kv"]["rate-limit"]
    # The count, with the time its window had left (rate-limit's window is 60 s).
    assert counters["msg:127.0.0.1"]["value"] == "3", later["kv"]
    assert 0 < int(counters["msg:127.0.0.1"]["ttl"].removesuffix("ms")) <= 60_000, later["kv"]
    for f in files:
        r = replay(f, "--config", str(srv.config_path))
        assert r.returncode == 0, r.stdout + r.stderr
    r = replay(files[2], "--config", str(srv.config_path))
    assert "mail <s2.0@example.org>: tempfail 450" in r.stdout, r.stdout
    # A higher limit: the refused MAILs of the last session would now pass.
    roomy = srv.config_path.parent / "roomy.toml"
    cfg = copy.deepcopy(srv.config)
    cfg["plugin"] = with_config(cfg["plugin"], "rate-limit", messages_per_window=100)
    roomy.write_text(to_toml(cfg), encoding="utf-8")
    r = replay(files[2], "--config", str(roomy))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL mail <s2.0@example.org>: continue" in r.stdout, r.stdout
    assert "- verdict: tempfail" in r.stdout and "+ verdict: continue" in r.stdout, r.stdout


def test_a_counter_window_that_ends_within_a_session_replays_the_same(make_server, tmp_path):
    """rate-limit allows 2 MAILs per 2-second window. A first session opens the window; the
    recorded one counts the 2nd MAIL in it, waits for the window to end, and its 3rd MAIL
    opens a new window and passes. The capture holds the counter with its time left, so the
    replay's counter expires too; without it the replay would count a 3rd MAIL and refuse."""
    plugins = with_config(bundled_plugins(), "rate-limit", messages_per_window=2, window_secs=2)
    srv = make_server({"plugin": plugins, "record": {"rate": 1.0}})
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("first@example.org")[0] == 250
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("second@example.org")[0] == 250
        s.rset()
        time.sleep(2.3)
        assert s.mail("third@example.org")[0] == 250, "a new window"
        s.rset()
    files = [f for f in wait_captures(srv, 2)
             if any(t["mail_from"] == "third@example.org"
                    for t in json.loads(f.read_text())["script"]["transaction"])]
    assert len(files) == 1, files
    capture = json.loads(files[0].read_text())
    seed = capture["kv"]["rate-limit"]["msg:127.0.0.1"]
    assert seed["value"] == "1" and seed["ttl"].endswith("ms"), seed
    assert 0 < int(seed["ttl"][:-2]) <= 2500, seed
    r = replay(files[0], "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mail <third@example.org>: continue" in r.stdout, r.stdout
    # The same capture without the expiry: the counter outlives its window in the replay.
    r = replay(without_ttls(files[0], tmp_path / "no-ttl.json"), "--config", str(srv.config_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL mail <third@example.org>: tempfail 450" in r.stdout, r.stdout


GREYLIST = REPO / "target" / "examples" / "greylist-rust.wasm"


def without_hook_times(capture_path, out_path):
    """The capture without the time of each hook (the format before they were kept)."""
    capture = json.loads(capture_path.read_text())
    capture["script"]["connection"].pop("at", None)
    for tx in capture["script"]["transaction"]:
        tx.pop("at", None)
    out_path.write_text(json.dumps(capture))
    return out_path


def test_a_greylisting_window_that_ends_within_a_transaction_replays_the_same(make_server, tmp_path):
    """The greylist example reads the clock at RCPT: the first RCPT is greylisted, the same
    RCPT 1.3 s later (one transaction: no `advance` between them) passes. The capture holds
    the time of each hook and the replay sets its clock to it."""
    if not GREYLIST.exists():
        pytest.skip(f"{GREYLIST} is not built (examples/greylist/rust/build.sh)")
    grey = {"name": "greylist", "path": str(GREYLIST), "capabilities": ["log", "config", "kv", "clock"],
            "config": {"delay_seconds": 1}}
    srv = make_server({"plugin": [grey], "record": {"rate": 1.0}})
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("sender@example.org")[0] == 250
        assert s.rcpt("alice@corvid.test")[0] == 451
        time.sleep(1.3)
        assert s.rcpt("alice@corvid.test")[0] == 250
        assert s.data(b"Subject: x\r\n\r\nx\r\n")[0] == 250
    [f] = wait_captures(srv, 1)
    tx = json.loads(f.read_text())["script"]["transaction"][0]
    first, second = tx["at"]["rcpt"]
    assert 1300 <= second - first < 5000 and tx["at"]["mail"] <= first <= second <= tx["at"]["data"], tx["at"]
    r = replay(f, "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("rcpt <")] == [
        "rcpt <alice@corvid.test>: tempfail 451 4.7.1 Greylisted, please try again later",
        "rcpt <alice@corvid.test>: continue"], r.stdout
    # Without the times the clock stands at the transaction's start: greylisted twice.
    r = replay(without_hook_times(f, tmp_path / "no-times.json"), "--config", str(srv.config_path))
    assert r.returncode == 1 and "FAIL rcpt <alice@corvid.test>: tempfail 451" in r.stdout, r.stdout


def stamping(rcpt_count: bool = False, **extra):
    """header-stamp alone, stamping the TLS facts (and the number of recipients)."""
    stamp = [p for p in bundled_plugins() if p["name"] == "header-stamp"]
    value = "tls={tls}" + (" rcpts={rcpt_count}" if rcpt_count else "")
    stamp[0]["config"]["add"] = {"X-Corvid-Stamp": value}
    return {"plugin": stamp, "record": {"rate": 1.0}, **extra}


def test_tls_is_recorded_as_it_was_at_connect(make_server):
    """STARTTLS: the capture says the TLS came after connect (the replay's connect hook gets
    none, EHLO and DATA get it); implicit TLS: it was there at connect."""
    srv = make_server(stamping())
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=tls_client_context())
        s.sendmail("a@example.org", ["alice@corvid.test"], b"Subject: x\r\n\r\nx\r\n")
    with smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], local_hostname="client.test",
                          timeout=10, context=tls_client_context()) as s:
        s.ehlo()
        assert s.mail("a@example.org")[0] in (250, 530)
    files = wait_captures(srv, 1)
    deadline = time.monotonic() + 10
    while len(list((srv.data_dir / "captures").glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    conns = {}
    for f in sorted((srv.data_dir / "captures").glob("*.json")):
        c = json.loads(f.read_text())["script"]["connection"]
        if "tls" in c:
            conns[c["listener"]] = (f, c)
    f, starttls = conns["smtp"]
    assert starttls["starttls"] is True and starttls["tls"]["version"].startswith("TLSv1"), starttls
    assert starttls["at"]["connect"] <= starttls["at"]["helo"], starttls
    _, implicit = conns["submissions"]
    assert "starttls" not in implicit and implicit["tls"]["version"].startswith("TLSv1"), implicit
    r = replay(f, "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "X-Corvid-Stamp: tls=TLSv1" in r.stdout, r.stdout
    # Both EHLOs ran: the one before STARTTLS without TLS, then the one after.
    assert starttls["pre_tls_helo"]["helo"] == "client.test", starttls
    assert "helo (before STARTTLS): continue" in r.stdout and "\nhelo: continue" in r.stdout, r.stdout
    assert files


def test_recipients_the_server_takes_without_the_chain_are_in_the_replayed_envelope(make_server, tmp_path):
    """The postmaster (RFC 5321 4.5.1) and a repeated RCPT never reach the chain; the DATA
    stamp counts the envelope's recipients, which the replay must have the same."""
    srv = make_server(stamping(rcpt_count=True))
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test", timeout=10) as s:
        assert s.sendmail("a@example.org", ["alice@corvid.test", "postmaster@corvid.test",
                                            "alice@corvid.test"], b"Subject: x\r\n\r\nx\r\n") == {}
    [f] = wait_captures(srv, 1)
    tx = json.loads(f.read_text())["script"]["transaction"][0]
    assert tx["rcpt_to"] == ["alice@corvid.test",
                             {"address": "postmaster@corvid.test", "server_accepted": True}], tx
    assert len(tx["expect"]["rcpt"]) == len(tx["at"]["rcpt"]) == 2, tx
    assert "insert-header 0 X-Corvid-Stamp: tls=none rcpts=2" in tx["expect"]["data"]["modifications"], tx
    r = replay(f, "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rcpt <postmaster@corvid.test>: accepted by the server without the chain" in r.stdout, r.stdout


def test_several_captures_replay_in_one_process_each_on_its_own_clock_and_store(make_server, tmp_path):
    """Greylisted in a first session, passed in a second: replayed together, each capture runs
    on its own clock, kv store and http answers. The directory run (first, then second) is
    the one that shows the clock is installed again per capture: on the first capture's
    clock the second's retry would come too early and be greylisted. The run in the other
    order shows the first capture's kv store does not see the second's entry."""
    if not GREYLIST.exists():
        pytest.skip(f"{GREYLIST} is not built (examples/greylist/rust/build.sh)")
    grey = {"name": "greylist", "path": str(GREYLIST), "capabilities": ["log", "config", "kv", "clock"],
            "config": {"delay_seconds": 1}}
    srv = make_server({"plugin": [grey], "record": {"rate": 1.0}})
    for code in (451, 250):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("sender@example.org")
            assert s.rcpt("alice@corvid.test")[0] == code
        time.sleep(1.3)
    first, second = wait_captures(srv, 2)
    r = replay(srv.data_dir / "captures", "--config", str(srv.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("replaying ") == len(list((srv.data_dir / "captures").glob("*.json"))), r.stdout
    r = replay(second, "--config", str(srv.config_path), extra_captures=[first])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.index("rcpt <alice@corvid.test>: continue") < r.stdout.index(
        "rcpt <alice@corvid.test>: tempfail 451"), r.stdout
    # A capture that differs fails the run, after the others ran.
    broken = json.loads(first.read_text())
    broken["script"]["transaction"][0]["expect"]["rcpt"][0] = {"verdict": "continue"}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    r = replay(tmp_path / "broken.json", "--config", str(srv.config_path), extra_captures=[second])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 of 2 captures did not replay as recorded" in r.stderr, r.stderr
    assert r.stdout.count("replaying ") == 2, r.stdout

"""Record and replay, what a capture must hold beyond the session's commands for the replay to
decide the same: kv expiries, the time of each hook, TLS as it was at connect, recipients the
server took without the chain, and several captures in one `corvid plugin replay`."""

import copy
import json
import smtplib
import time

from conftest import bundled_plugins
from test_plugin_replay import replay, wait_captures, with_config


def without_ttls(capture_path, out_path):
    """The capture with every kv value's expiry dropped (the format before TTLs were kept)."""
    capture = json.loads(capture_path.read_text())
    for keys in capture["kv"].values():
        for k, v in list(keys.items()):
            if isinstance(v, dict):
                keys[k] = v["value"]
    out_path.write_text(json.dumps(capture))
    return out_path


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

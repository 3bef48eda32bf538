"""Shadow mode over real SMTP: a `[[plugin]]` with `mode = "shadow"` that rejects at RCPT and DATA
(and rewrites the sender at MAIL) changes no outcome: the mail is accepted and delivered as the
active chain decided. `corvid plugins diff NAME` shows where it differed from the chain (and
`plugins list --stats` its counts), its kv writes land in `shadow:NAME` only, and a sample
difference is logged. The fixture plugin is
host/plugin-host/tests/fixtures/behave (built by test_plugins.behave_wasm)."""

import re
import time

from conftest import base_config, run_cli, split_delivered, to_toml
from test_metrics import metrics_port, scrape
from test_plugins import behave, behave_wasm, cli  # noqa: F401  (the fixture is used by name)


def shadow(wasm, **stages) -> dict:
    p = behave(wasm, **stages)
    p.update(name="cand", order=2, mode="shadow", capabilities=["log", "config", "clock", "kv"])
    return p


def diff_rows(out: str) -> dict[str, tuple[int, int, int]]:
    """The per-stage table of `plugins diff`: stage -> (agree, differ, skipped)."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(connect|helo|auth|mail|rcpt|data)\s+(\d+)\s+(\d+)\s+(\d+)$", line)
        if m:
            rows[m.group(1)] = tuple(int(x) for x in m.groups()[1:])
    return rows


def test_a_shadow_that_rejects_everything_changes_no_outcome(make_server, behave_wasm):
    active = behave(behave_wasm, data="stamp")
    active["name"] = "gate"
    cand = shadow(behave_wasm, mail="stamp", rcpt="kv", data="reject")
    srv = make_server({"plugin": [active, cand], "metrics": {"listen": "127.0.0.1:0"}})

    for i in range(2):
        srv.send(f"Subject: shadow {i}\r\nX-Remove: 1\r\n\r\nhello\r\n".encode())
    files = srv.wait_mail("alice", 2)
    for path in files:
        d = split_delivered(path)
        # The shadow's sender rewrite at MAIL was dropped; the active plugin's stamp applied.
        assert d.return_path == b"Return-Path: <sender@example.org>\r\n", d.return_path
        assert b"X-Fixture: " in d.content and b"Subject: changed" in d.content, d.content[:200]

    # The shadow task runs after the replies: wait for both transactions to be compared.
    deadline = time.monotonic() + 15
    while True:
        r = cli(srv, "plugins", "diff", "cand")
        assert r.returncode == 0, r.stderr
        rows = diff_rows(r.stdout)
        if rows.get("data", (0, 0, 0))[1] == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows.get("rcpt") == (0, 2, 0) and rows.get("data") == (0, 2, 0), r.stdout
    assert rows.get("mail") == (2, 0, 0), r.stdout  # `stamp` continues, as the chain did
    lines = [l for l in r.stdout.splitlines() if " rcpt " in l and "reject 550" in l]
    assert len(lines) == 2 and "accept" not in lines[0] and "continue" in lines[0], r.stdout
    assert "5.7.1 count=2" in lines[1], r.stdout  # the shadow's own counter, in its namespace
    assert any(" data " in l and "5.7.1 data rejected by fixture" in l for l in r.stdout.splitlines()), r.stdout

    # kv: the shadow wrote `count` under shadow:cand, nothing under its own name.
    assert srv.admin("kv-list", plugin="cand", limit=100) == {"ok": True, "data": []}
    kept = srv.admin("kv-list", plugin="shadow:cand", limit=100)["data"]
    assert [(e["key"], e["value"]) for e in kept] == [("count", "2")], kept

    e = srv.wait_log(lambda e: str(e.get("message", "")).startswith("shadow plugin differs"))
    assert e.get("plugin") == "cand", e

    # The same counts in /metrics; only the shadow has the series.
    m = scrape(metrics_port(srv))
    family = "corvid_plugin_shadow_decisions"
    assert m.value(family, plugin="cand", stage="rcpt", result="differ") == 2, m.samples[family]
    assert m.value(family, plugin="cand", stage="mail", result="agree") == 2, m.samples[family]
    assert not [l for l, _ in m.samples[family] if l["plugin"] == "gate"], m.samples[family]

    listed = cli(srv, "plugins", "list").stdout
    assert re.search(r"^cand .* active, shadow$", listed, re.M), listed
    assert re.search(r"^gate .* active$", listed, re.M), listed
    # The admin answer carries each plugin's mode itself.
    modes = {p["name"]: p["mode"] for p in srv.admin("plugins-list")["data"]}
    assert modes == {"gate": "active", "cand": "shadow"}, modes

    # `plugins list --stats` ends a shadow's lines with its comparisons.
    stats = cli(srv, "plugins", "list", "--stats").stdout
    assert re.search(r"^cand\s+rcpt\s.*  shadow: 0 agree, 2 differ, 0 skipped$", stats, re.M), stats
    assert re.search(r"^cand\s+mail\s.*  shadow: 2 agree, 0 differ, 0 skipped$", stats, re.M), stats
    assert not re.search(r"^gate .*shadow:", stats, re.M), stats

    r = cli(srv, "plugins", "diff", "gate")
    assert r.returncode != 0 and "not in shadow mode" in r.stderr, (r.stdout, r.stderr)


def test_check_config_refuses_an_unknown_mode(tmp_path, behave_wasm):
    cfg = base_config(tmp_path / "data")
    p = shadow(behave_wasm)
    p["mode"] = "dry-run"
    cfg["plugin"] = [p]
    path = tmp_path / "check.toml"
    path.write_text(to_toml(cfg))
    r = run_cli("check-config", str(path), timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "plugin[0]" in r.stderr and "shadow" in r.stderr, r.stderr
    p["mode"] = "shadow"
    path.write_text(to_toml(cfg))
    r = run_cli("check-config", str(path), timeout=120)
    assert r.returncode == 0, r.stderr

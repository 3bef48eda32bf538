"""Host calls cost fuel: a plugin that busy-waits on host calls (the clock import's `now-ms`, or
the WASI monotonic clock) is stopped by its CPU budget (`limits.hook_fuel`), well before the
wall-time backstop (`limits.hook_time_ms`, 5 s), and a plugin making many legitimate host calls
within its budget still succeeds."""

import time

import pytest

from test_plugins import behave, behave_wasm, cli  # noqa: F401 - behave_wasm is a fixture

BACKSTOP_MS = 5000


def stats_row(srv, stage: str) -> dict:
    """The `behave` plugin's row of `plugins list --stats` at `stage`, by column name."""
    out = cli(srv, "plugins", "list", "--stats")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0].split()
    for line in lines[1:]:
        cols = line.split()
        if cols[:2] == ["behave", stage]:
            return dict(zip(header, cols))
    raise AssertionError(out.stdout)


LOG_EVERY = 10_000


def spinner(wasm, spin_ms: int, spin_on: str) -> dict:
    plugin = behave(wasm, data="spin", spin_ms=str(spin_ms), spin_on=spin_on,
                    spin_log_every=str(LOG_EVERY))
    plugin["failure_policy"] = "continue"
    # The default CPU budget (100 M fuel) and the default 5 s wall-time backstop.
    plugin["limits"] = {"hook_time_ms": BACKSTOP_MS, "memory_mb": 32}
    return plugin


@pytest.mark.parametrize("spin_on", ["clock", "wasi"])
def test_a_plugin_spinning_on_host_calls_runs_out_of_fuel(make_server, behave_wasm, spin_on):
    srv = make_server({"plugin": [spinner(behave_wasm, 60_000, spin_on)]})
    started = time.monotonic()
    srv.send(b"Subject: spin\r\n\r\nx\r\n")  # failure policy `continue`: accepted
    took = time.monotonic() - started
    # Stopped by fuel, far from the backstop (without the charge it ran the whole 5 s).
    assert took < BACKSTOP_MS / 1000 / 2, took
    failed = [e for e in srv.events() if "applying its failure policy" in e.get("message", "")]
    assert len(failed) == 1, failed
    assert "cpu budget (hook_fuel) exhausted" in failed[0]["message"], failed[0]
    row = stats_row(srv, "data")
    assert (row["failed"], row["time"], row["trap"]) == ("1", "0", "0"), row
    assert int(row["max_us"]) < BACKSTOP_MS * 1000 / 2, row
    # Deterministic, whatever the machine's load: each turn is a host call costing 1000 fuel,
    # so the 100 M budget allows fewer than 100 000 turns (it logs every 10 000). Charged only
    # the guest's own instructions around each call, it made about 3 000 000 (clock) and
    # 930 000 (WASI) turns before running out: under load, 50 of them side by side ran into
    # the wall-time backstop.
    turns = [e for e in srv.events() if e.get("message", "").startswith("spin turns=")]
    assert 1 <= len(turns) < 100_000 // LOG_EVERY, turns[-1:]


def test_a_plugin_making_many_host_calls_within_its_budget_succeeds(make_server, behave_wasm):
    # 5 ms of back-to-back `now-ms` calls (thousands of them) fit in the default budget.
    srv = make_server({"plugin": [spinner(behave_wasm, 5, "clock")]})
    for _ in range(3):
        srv.send(b"Subject: short spin\r\n\r\nx\r\n")
    row = stats_row(srv, "data")
    assert (row["calls"], row["continue"], row["failed"]) == ("3", "3", "0"), row
    assert not [e for e in srv.events() if "failure policy" in e.get("message", "")]

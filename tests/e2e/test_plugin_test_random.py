"""`corvid plugin test` grants `random` by default (the operating system's entropy, as a server
granting it would), and a script that lists its capabilities without `random` gets the server's
deterministic, per-instance seeded generator (issue 11). The plugin-host's `behave` fixture at
MAIL answers with what it senses: `hash=` is std's HashMap RandomState, which WASI random keys."""

import re
import subprocess

import pytest

from conftest import BIN, REPO

FIXTURE = REPO / "target" / "plugins" / "wasm32-wasip2" / "release" / "fixture_behave.wasm"

SCRIPT = """
[plugin]
config = {{ mail = "senses" }}
{caps}

[[transaction]]
mail_from = "a@sender.example"
rcpt_to = ["b@ok.example"]
"""


def senses(tmp_path, caps):
    if not FIXTURE.exists():
        pytest.skip(f"{FIXTURE} is not built (make plugins)")
    script = tmp_path / "senses.toml"
    script.write_text(SCRIPT.format(caps=caps))
    r = subprocess.run([str(BIN), "plugin", "test", str(FIXTURE), "--script", str(script)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"wall=(\d+) mono=(\d+) hash=(\d+) now_ms=(\d+)", r.stdout)
    assert m, r.stdout
    return {k: int(v) for k, v in zip(("wall", "mono", "hash", "now_ms"), m.groups())}


def test_plugin_test_grants_random_by_default(tmp_path):
    a, b = senses(tmp_path, ""), senses(tmp_path, "")
    assert a["hash"] != b["hash"], "default capabilities: OS entropy, so two runs differ"
    assert a["wall"] > 0 and a["now_ms"] > 0, "and the clock, like the other defaults"


def test_plugin_test_without_random_is_seeded_like_the_server(tmp_path):
    caps = 'capabilities = ["log", "config"]'
    a, b = senses(tmp_path, caps), senses(tmp_path, caps)
    assert a["hash"] == b["hash"], "without random: the seeded generator, the same every run"
    assert (a["wall"], a["mono"], a["now_ms"]) == (0, 0, 0), "without clock: the epoch"
    granted = senses(tmp_path, 'capabilities = ["log", "config", "random"]')
    assert granted["hash"] != a["hash"], "granting random alone brings the OS entropy back"

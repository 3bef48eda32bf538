"""`corvid plugin test` as a test runner: the bundled plugins' and the examples' scripts pass
(exit 0), a broken expectation fails with a readable diff (exit 1), TAP and JUnit output, and the
script's kv seed, TLS facts, auth and delivery hooks reach the plugin."""

import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import BIN, PLUGIN_CACHE, REPO

WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release"
EXAMPLES = REPO / "target" / "examples"
BUNDLED = ["recipient-list", "address-rewrite", "header-stamp", "rate-limit", "dnsbl", "route-table", "rspamd"]


def plugin_test(wasm, script, *extra):
    # The e2e servers' compile cache: each component is compiled once per run, not per script.
    cache = ["--cache", str(PLUGIN_CACHE)]
    return subprocess.run([str(BIN), "plugin", "test", str(wasm), "--script", str(script), *cache, *extra],
                          capture_output=True, text=True, timeout=120)


def component(name):
    path = WASM / (name.replace("-", "_") + ".wasm")
    if not path.exists():
        pytest.skip(f"{path} is not built (make plugins)")
    return path


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_plugin_scripts_pass(name):
    r = plugin_test(component(name), REPO / "plugins" / name / "plugin-test.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^\d+ checks, 0 failed$", r.stdout, re.M), r.stdout
    assert "FAIL" not in r.stdout


@pytest.mark.parametrize("lang", ["rust", "c", "javascript", "python"])
def test_example_scripts_pass(lang):
    wasm = EXAMPLES / f"greylist-{lang}.wasm"
    if not wasm.exists():
        pytest.skip(f"{wasm} is not built (examples/build.sh {lang})")
    scripts = sorted((REPO / "examples" / "greylist" / lang).glob("test-*.toml"))
    assert scripts
    for script in scripts:
        r = plugin_test(wasm, script)
        assert r.returncode == 0, script.name + r.stdout + r.stderr
        assert re.search(r"^\d+ checks, 0 failed$", r.stdout, re.M), r.stdout
        if script.name == "test-script.toml":
            assert "add-header X-Greylist: pass" in r.stdout


BROKEN = """
[plugin]
config = { deny = ["@spam.example"] }

[[transaction]]
mail_from = "a@sender.example"
rcpt_to = ["x@spam.example", "y@ok.example"]
expect.rcpt = [
  { verdict = "tempfail", code = 451, enhanced = "4.7.1", text = "Access denied" },
  { verdict = "continue", modifications = ["add-header X-Never: 1"] },
]
"""


def test_a_broken_expectation_exits_1_with_a_diff(tmp_path):
    script = tmp_path / "broken.toml"
    script.write_text(BROKEN)
    r = plugin_test(component("recipient-list"), script)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "FAIL rcpt <x@spam.example>: reject 550 5.7.1" in out
    for line in ["- verdict: tempfail", "+ verdict: reject", "- code: 451", "+ code: 550",
                 "- enhanced: 4.7.1", "+ enhanced: 5.7.1", "- add-header X-Never: 1"]:
        assert line in out, out
    # The text expectation held, so it is not in the diff.
    assert "- text" not in out
    assert "5 checks, 2 failed" in out
    assert "2 of 5 checks failed" in r.stderr


def test_tap_and_junit_formats(tmp_path):
    script = tmp_path / "broken.toml"
    script.write_text(BROKEN)
    r = plugin_test(component("recipient-list"), script, "--format", "tap")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[:2] == ["TAP version 13", "1..5"]
    assert "not ok 4 - rcpt <x@spam.example>" in lines
    assert "ok 1 - connect" in lines
    r = plugin_test(component("recipient-list"), script, "--format", "junit")
    assert r.returncode == 1
    suite = ET.fromstring(r.stdout)
    assert suite.get("tests") == "5" and suite.get("failures") == "2"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["rcpt <x@spam.example>", "rcpt <y@ok.example>"]


def test_json_scripts_tls_kv_and_skipped_hooks(tmp_path):
    # JSON works too; TLS facts reach the plugin (header-stamp prints them); an expectation on a
    # hook that is never called (DATA without an accepted recipient) is a failure.
    script = tmp_path / "s.json"
    script.write_text("""{
      "plugin": {"config": {"add": {"X-TLS": "{tls}"}}},
      "connection": {"tls": {"version": "TLSv1.2", "cipher": "ECDHE-RSA-AES128-GCM-SHA256"}},
      "transaction": [{"mail_from": "a@b.example", "rcpt_to": ["c@d.example"], "data": "Subject: x\\n\\nbody\\n",
                       "expect": {"data": {"modifications": ["insert-header 0 X-TLS: TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256"]}}}]
    }""")
    r = plugin_test(component("header-stamp"), script)
    assert r.returncode == 0, r.stdout + r.stderr
    script = tmp_path / "rl.toml"
    script.write_text("""
[plugin]
config = { messages_per_window = 1 }
[kv]
"msg:192.0.2.10" = "5"
[[transaction]]
mail_from = "a@b.example"
rcpt_to = ["c@d.example"]
data = "x"
expect.mail = { verdict = "tempfail" }
expect.data = { verdict = "continue" }
[expect_kv]
"msg:192.0.2.10" = "6"
"conn:192.0.2.10" = ""
""")
    r = plugin_test(component("rate-limit"), script)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL data: not called: MAIL was refused" in r.stdout
    assert "- called: yes" in r.stdout
    assert "7 checks, 1 failed" in r.stdout


def test_unknown_keys_are_refused_and_help_lists_the_tls_key(tmp_path):
    script = tmp_path / "typo.toml"
    script.write_text('[connection]\nclient = "192.0.2.1:25"\ntsl = {}\n')
    r = plugin_test(component("recipient-list"), script)
    assert r.returncode == 1 and "tsl" in r.stderr
    script.write_text('[connection]\ntls = { version = "TLSv1.3", sni = "mx.example" }\n')
    r = plugin_test(component("dnsbl"), script)
    # dnsbl refuses an empty config: the load error is reported, not a pass.
    assert r.returncode == 1 and "did not load" in r.stderr
    r = subprocess.run([str(BIN), "plugin", "--help"], capture_output=True, text=True, timeout=30)
    assert "tls = { version" in r.stdout, r.stdout
    r = subprocess.run([str(BIN), "plugin", "test", "--help"], capture_output=True, text=True, timeout=30)
    assert "--format" in r.stdout and "junit" in r.stdout, r.stdout


def test_the_documented_script_is_accepted(tmp_path):
    # The example script of plugins/sdk/README.md ("Testing a component") parses with every key
    # it shows; against recipient-list its expectations are not met, which is a failure (1),
    # not a script error.
    readme = (REPO / "plugins" / "sdk" / "README.md").read_text()
    section = readme.split("### Testing a component", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    block = block.replace("blocked_domains = [\"spam.example\"]", "deny = [\"@spam.example\"]")
    script = tmp_path / "doc.toml"
    script.write_text(block)
    r = plugin_test(component("recipient-list"), script)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "checks failed" in r.stderr, r.stderr
    assert "auth PLAIN alice: continue" in r.stdout
    assert "route <b@example.org>: continue" in r.stdout
    assert 'kv "seen:alice": 1' in r.stdout

"""`corvid plugin test` with what a script sets around the plugin (issue 16): a scripted clock
(`[clock]`, moved by the steps' `advance`) that the plugin's WASI clocks read and the kv TTLs
run on, kv entries with a TTL (`[kv]`, `[expect_kv]`), and scripted answers of the `http`
capability (`[[http]]`); AUTH credentials and delivery-info reach the plugin. A wrong
expectation exits 1 with a readable diff."""

import re
import subprocess

import pytest

from conftest import BIN, PLUGIN_CACHE, REPO

WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release"
EXAMPLES = REPO / "target" / "examples"
START_MS = 1796648400000  # 2026-12-07T13:00:00Z


def plugin_test(wasm, script_text, tmp_path, name="script.toml"):
    if not wasm.exists():
        pytest.skip(f"{wasm} is not built (make plugins / examples/build.sh)")
    script = tmp_path / name
    script.write_text(script_text)
    return subprocess.run([str(BIN), "plugin", "test", str(wasm), "--script", str(script),
                           "--cache", str(PLUGIN_CACHE)],
                          capture_output=True, text=True, timeout=120)


SENSES = """
[plugin]
config = { mail = "senses" }
capabilities = ["log", "config", "clock"]

[clock]
start = "2026-12-07T13:00:00Z"

[[transaction]]
mail_from = "a@sender.example"
rcpt_to = ["b@ok.example"]
expect.mail = { text = "wall=%d mono=0 " }

[[transaction]]
advance = "1h 30s"
mail_from = "a@sender.example"
rcpt_to = ["b@ok.example"]
expect.mail = { text = "wall=%d mono=0 " }
"""


def test_wasi_clocks_read_the_scripted_clock(tmp_path):
    # The behave fixture reports at MAIL what std's SystemTime and Instant see: the scripted
    # wall clock, and a monotonic clock that stands still while the hook runs.
    later = START_MS + 3630 * 1000
    r = plugin_test(WASM / "fixture_behave.wasm", SENSES % (START_MS, later), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    walls = [int(w) for w in re.findall(r"wall=(\d+) mono=0 ", r.stdout)]
    assert walls == [START_MS, later], r.stdout


def test_the_clock_import_reads_the_scripted_clock(tmp_path):
    script = SENSES % (START_MS, START_MS + 3630 * 1000)
    r = plugin_test(WASM / "fixture_behave.wasm", script, tmp_path)
    now = [int(n) for n in re.findall(r"now_ms=(\d+)", r.stdout)]
    assert now == [START_MS, START_MS + 3630 * 1000], r.stdout


# rate-limit, one message per 10-minute window, with a counter seeded to run out at 13:05.
RATE_SEEDED = """
[plugin]
name = "rate-limit"
config = { messages_per_window = 1, window_secs = 600 }

[clock]
start = "2026-12-07T13:00:00Z"

[kv]
"msg:192.0.2.10" = { value = "1", ttl = "5m" }
"""

RATE = RATE_SEEDED + """
[[transaction]]
mail_from = "a@client.example"
rcpt_to = ["b@example.org"]
expect.mail = { verdict = "tempfail", code = 450 }

[[transaction]]
advance = "5m"
mail_from = "a@client.example"
rcpt_to = ["b@example.org"]
expect.mail = { verdict = "%s" }

[[transaction]]
advance = "4m"
mail_from = "a@client.example"
rcpt_to = ["b@example.org"]
expect.mail = { verdict = "tempfail" }

[expect_kv]
"msg:192.0.2.10" = { value = "2", ttl = "%s" }
"""


def test_kv_ttls_run_on_the_scripted_clock(tmp_path):
    # The seeded counter expires with the clock; the new window's counter is kept 10 minutes
    # from the first message in it, 6 minutes left after 4 more.
    r = plugin_test(WASM / "rate_limit.wasm", RATE % ("continue", "6m"), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'kv "msg:192.0.2.10": 2 (ttl 6m)' in r.stdout
    assert re.search(r"^9 checks, 0 failed$", r.stdout, re.M), r.stdout


def test_a_wrong_time_expectation_exits_1_with_a_diff(tmp_path):
    r = plugin_test(WASM / "rate_limit.wasm", RATE % ("tempfail", "10m"), tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "FAIL mail <a@client.example>: continue" in out
    for line in ["    - verdict: tempfail", "    + verdict: continue",
                 '''FAIL kv "msg:192.0.2.10": 2 (ttl 6m)''', "    - ttl: 10m", "    + ttl: 6m"]:
        assert line in out.splitlines(), out
    assert "9 checks, 2 failed" in out
    assert "2 of 9 checks failed" in r.stderr


def test_advance_without_a_clock_is_refused(tmp_path):
    script = RATE.replace('[clock]\nstart = "2026-12-07T13:00:00Z"\n', "") % ("continue", "6m")
    r = plugin_test(WASM / "rate_limit.wasm", script, tmp_path)
    assert r.returncode != 0
    assert "`advance` needs a scripted clock" in r.stderr, r.stderr
    r = plugin_test(WASM / "rate_limit.wasm", '[clock]\nstart = "tomorrow"\n', tmp_path)
    assert r.returncode != 0 and "not an RFC 3339 time" in r.stderr, r.stderr


GREYLIST = """
[plugin]
capabilities = ["log", "config", "kv", "clock"]

[clock]
start = "2026-12-07T13:00:00Z"

[[transaction]]
mail_from = "alice@sender.example"
rcpt_to = ["bob@example.org"]
expect.rcpt = [{ verdict = "tempfail", code = 451, enhanced = "4.7.1" }]

[[transaction]]
advance = "4m 59s"
mail_from = "alice@sender.example"
rcpt_to = ["bob@example.org"]
expect.rcpt = [{ verdict = "tempfail", code = 451, enhanced = "4.7.1" }]

[[transaction]]
advance = "1s"
mail_from = "alice@sender.example"
rcpt_to = ["bob@example.org"]
data = "Subject: lunch\\n\\nbody\\n"
expect.rcpt = [{ verdict = "continue" }]
expect.data = { verdict = "continue", modifications = ["add-header X-Greylist: pass"] }

[expect_kv]
"grey/192.0.2.10/alice@sender.example/bob@example.org" = { value = "%d", ttl = "23h 55m" }
"""


@pytest.mark.parametrize("lang", ["rust", "python", "javascript", "c"])
def test_greylisting_passes_once_the_scripted_window_passed(tmp_path, lang):
    r = plugin_test(EXAMPLES / f"greylist-{lang}.wasm", GREYLIST % START_MS, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rspamd_answers_are_scripted(tmp_path):
    r = plugin_test(WASM / "rspamd.wasm", (REPO / "plugins" / "rspamd" / "plugin-test.toml").read_text(),
                    tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_unscripted_url_fails_clearly(tmp_path):
    script = """
[plugin]
config = { url = "http://127.0.0.1:11333", fail = "open" }
capabilities = ["log", "config"]
http = ["http://127.0.0.1:11333/"]

[[transaction]]
mail_from = "a@client.example"
rcpt_to = ["b@example.org"]
data = "Subject: x\\n\\nbody\\n"
"""
    r = plugin_test(WASM / "rspamd.wasm", script, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL http POST http://127.0.0.1:11333/checkv2: no scripted answer" in r.stdout
    assert "no scripted answer for POST http://127.0.0.1:11333/checkv2" in r.stderr


AUTH_AND_DELIVERY = """
[plugin]
config = { auth = "check", deferred = "retry", bounced = "quarantined" }
capabilities = ["log", "config", "kv"%s]

[auth]
user = "alice"
password = "sesame"
expect = { verdict = "accept" }

[[deferred]]
recipient = "b@example.org"
attempt = 3
reply = "451 4.3.0 try later"
expect = "retry-after 180s"

[[bounced]]
recipient = "b@example.org"
quarantined = "virus found"
expect = 'annotate quarantined=Some("virus found")'

[[delivered]]
recipient = "b@example.org"

[expect_kv]
"delivered" = "1"
"""


def test_auth_credentials_and_delivery_info_reach_the_plugin(tmp_path):
    # The behave fixture accepts the password `sesame`, which only the `credentials`
    # capability shows it; its delivery hooks answer from the delivery-info the script gives.
    wasm = WASM / "fixture_behave.wasm"
    r = plugin_test(wasm, AUTH_AND_DELIVERY % ', "credentials"', tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = plugin_test(wasm, AUTH_AND_DELIVERY % "", tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL auth PLAIN alice: tempfail 454 4.7.0 no password" in r.stdout


AUTH_RESULTS = """
[plugin]
config = { report = "yes", report_mail = "%s" }

[[transaction]]
mail_from = "a@sender.example"
rcpt_to = ["b@ok.example"]
data = "From: a@sender.example\\nSubject: x\\n\\nhi\\n"
expect.mail = { verdict = "%s" }
expect.data = { verdict = "reject", text = "%s" }
[transaction.auth_results]
spf = { result = "softfail", domain = "sender.example" }
dkim = [{ result = "pass", domain = "sender.example", selector = "s1", algorithm = "rsa-sha256" }]
dmarc = { result = "fail", policy = "quarantine", domain = "sender.example", pct = 50, dkim_aligned = true }
arc = { result = "pass", sets = 2 }

[[transaction]]
mail_from = "a@sender.example"
rcpt_to = ["b@ok.example"]
data = "Subject: y\\n\\nhi\\n"
expect.data = { verdict = "reject", text = "spf=- dkim= dmarc=- arc=-" }
"""


def test_auth_results_reach_the_plugin_per_transaction(tmp_path):
    # The authwit fixture rejects with what the auth-results import answered. SPF is there
    # from MAIL on, DKIM/DMARC/ARC at DATA; a transaction without the section reads nothing
    # (the results of the one before do not leak into it).
    from conftest import build_wasm
    wasm = build_wasm(REPO / "host" / "plugin-host" / "tests" / "fixtures" / "authwit",
                      WASM / "fixture_authwit.wasm")
    at_data = ("spf=softfail/mailfrom/sender.example dkim=pass/sender.example/s1/rsa-sha256 "
               "dmarc=fail/quarantine/sender.example/50/01 arc=pass/2")
    r = plugin_test(wasm, AUTH_RESULTS % ("no", "continue", at_data), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = plugin_test(wasm, AUTH_RESULTS % ("yes", "reject", at_data), tmp_path)
    # At MAIL only SPF: the mail hook now rejects, so DATA is skipped (and its check fails).
    assert r.returncode == 1, r.stdout + r.stderr
    assert "spf=softfail/mailfrom/sender.example dkim= dmarc=- arc=-" in r.stdout, r.stdout


RECORDED_TIMES = RATE_SEEDED + """
[[transaction]]
advance = "4m"
at = { mail = %d }
mail_from = "a@client.example"
rcpt_to = ["b@example.org"]
expect.mail = { verdict = "tempfail", code = 450 }

[[transaction]]
advance = "4m"
at = { mail = %d }
mail_from = "a@client.example"
rcpt_to = ["b@example.org"]
expect.mail = { verdict = "tempfail", code = 450 }
"""


def test_recorded_hook_times_win_over_advance(tmp_path):
    # A capture has both `advance` and `at`. The recorded times (13:01, 13:02) win: the seeded
    # counter, kept until 13:05, still refuses the second MAIL. Advancing first (4m + 4m) and
    # setting the wall clock back after would have left the monotonic clock, on which kv keys
    # expire, at 8 minutes, and the counter gone.
    script = RECORDED_TIMES % (START_MS + 60_000, START_MS + 120_000)
    r = plugin_test(WASM / "rate_limit.wasm", script, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("mail <a@client.example>: tempfail 450") == 2, r.stdout
    assert re.search(r"^6 checks, 0 failed$", r.stdout, re.M), r.stdout

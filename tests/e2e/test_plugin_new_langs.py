"""`corvid plugin new --lang python|javascript|c`: each template builds into a component with
its one command (./build.sh, on the toolchains the examples install), its native unit tests
pass, its `corvid plugin test` script passes, and the [[plugin]] table of its README, as
written, puts it in a running server where it acts over SMTP. A language is skipped only
when its toolchain is absent (CI installs all of them: tests/run builds the examples first)."""

import os
import re
import shutil
import subprocess
import tomllib

import pytest

from conftest import BIN, PLUGIN_CACHE, REPO, split_delivered

TOOLCHAINS = REPO / "target" / "toolchains"
JS_EXAMPLE = REPO / "examples" / "greylist" / "javascript"
ENV = {**os.environ, "CORVID_TOOLCHAINS": str(TOOLCHAINS), "CORVID_JS_TOOLCHAIN": str(JS_EXAMPLE)}
ENV.pop("RUST_LOG", None)
NAME = "e2e-policy"


def missing_toolchain(lang: str) -> str | None:
    """What is missing to build `lang`, or None; build.sh would download it otherwise."""
    need = {
        "python": [TOOLCHAINS / "python" / "bin" / "componentize-py"],
        "javascript": [JS_EXAMPLE / "node_modules" / ".bin" / "componentize-js"],
        "c": [TOOLCHAINS / "wit-bindgen" / "bin" / "wit-bindgen"],
    }[lang]
    absent = [str(p) for p in need if not p.exists()]
    tools = {"python": ["python3"], "javascript": ["node"], "c": ["clang", "wasm-ld", "cc", "make"]}
    absent += [t for t in tools[lang] if shutil.which(t) is None]
    return ", ".join(absent) or None


def run(*args, cwd=None, timeout=600):
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


NATIVE = {
    "python": (["python3", "-m", "unittest"], r"Ran 3 tests.*\n\nOK"),
    "javascript": (["node", "--test"], r"# pass 3\n# fail 0"),
    "c": (["make", "test"], r"policy tests passed"),
}


@pytest.fixture(scope="module", params=["python", "javascript", "c"])
def project(request, tmp_path_factory):
    """`plugin new --lang LANG` with the default stages, built by ./build.sh."""
    lang = request.param
    if why := missing_toolchain(lang):
        pytest.skip(f"{lang} toolchain absent: {why} (examples/build.sh installs it)")
    d = tmp_path_factory.mktemp(lang) / NAME
    r = run(BIN, "plugin", "new", NAME, "--lang", lang, "--dir", d)
    assert r.returncode == 0, r.stderr
    assert "./build.sh" in r.stdout and NATIVE[lang][0][0] in r.stdout
    r = run("./build.sh", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installing" not in r.stdout, "the examples' toolchain was not found"
    assert (d / f"{NAME}.wasm").exists()
    return lang, d


def test_native_tests_and_the_plugin_test_script_pass(project):
    lang, d = project
    cmd, ok = NATIVE[lang]
    readme = (d / "README.md").read_text()
    assert " ".join(cmd) in readme
    r = run(*cmd, cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(ok, r.stdout + r.stderr), r.stdout + r.stderr
    assert f"corvid plugin test {NAME}.wasm --script plugin-test.toml" in readme
    # The servers' compilation cache: the server below then loads the component compiled.
    r = run(BIN, "plugin", "test", f"{NAME}.wasm", "--script", "plugin-test.toml",
            "--cache", PLUGIN_CACHE, cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ["mail <friend@example.net>: continue",
                 "rcpt <someone@spam.example>: reject 550 5.7.1 Recipient domain refused",
                 "add-header X-E2ePolicy: checked",
                 "mail <someone@Spam.Example>: reject 550 5.7.1 Sender domain refused"]:
        assert line in r.stdout, r.stdout


def test_the_readme_config_makes_it_act_in_a_running_server(project, make_server):
    lang, d = project
    readme = (d / "README.md").read_text()
    block = re.search(r"```toml\n(\[\[plugin\]\].*?)```", readme, re.S)
    assert block, readme
    plugins = tomllib.loads(block.group(1))["plugin"]
    assert plugins[0]["path"] == str(d / f"{NAME}.wasm")
    # Compiling an 18 MB Python or 12 MB JavaScript component takes a while in a debug build
    # when the cache is cold (this test run alone).
    srv = make_server({"plugin": plugins}, start_timeout=180)
    with srv.smtp() as s:
        s.ehlo()
        code, msg = s.mail("someone@spam.example")
        assert (code, msg) == (550, b"5.7.1 Sender domain refused"), (lang, code, msg)
        s.rset()
        assert s.mail("friend@example.net")[0] == 250
        code, msg = s.rcpt("user@Spam.Example")
        assert (code, msg) == (550, b"5.7.1 Recipient domain refused"), (lang, code, msg)
    srv.send(b"Subject: hi\r\n\r\nbody\r\n", sender="friend@example.net")
    (path,) = srv.wait_mail("alice")
    assert b"\r\nX-E2ePolicy: checked\r\n" in split_delivered(path).data, lang



def test_plugin_test_shows_why_a_hook_failed(tmp_path):
    """docs/plugin-debugging.md: a trapping hook's error and backtrace reach stderr unasked."""
    if why := missing_toolchain("c"):
        pytest.skip(f"c toolchain absent: {why}")
    d = tmp_path / "trap"
    r = run(BIN, "plugin", "new", "trap", "--lang", "c", "--stages", "mail", "--dir", d)
    assert r.returncode == 0, r.stderr
    plugin = d / "plugin.c"
    plugin.write_text(plugin.read_text().replace(
        "    const policy_reply *r = policy_sender(", "    if (sender) abort();\n"
        "    const policy_reply *r = policy_sender(", 1))
    assert run("./build.sh", cwd=d).returncode == 0
    r = run(BIN, "plugin", "test", "trap.wasm", "--script", "plugin-test.toml", cwd=d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL mail <friend@example.net>: tempfail 451 4.3.0" in r.stdout, r.stdout
    assert "plugin failed, applying its failure policy" in r.stderr, r.stderr
    assert "wasm backtrace" in r.stderr and 'plugin="trap" stage="mail" session=1' in r.stderr

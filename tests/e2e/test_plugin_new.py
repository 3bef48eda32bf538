"""`corvid plugin new`: the Rust template builds with one command, its unit tests and its
`corvid plugin test` script pass, it acts in a running server as its README says, and the
SDK's STAGES check refuses a hook missing from STAGES (in `cargo test` and at load time)."""

import os
import re
import subprocess

import pytest

from conftest import BIN, REPO, split_delivered  # noqa: F401

# The plugins' shared target directory: the SDK and wit-bindgen are already built there.
ENV = {**os.environ, "CARGO_TARGET_DIR": str(REPO / "target" / "plugins")}
ENV.pop("RUST_LOG", None)


def run(*args, cwd=None, timeout=900):
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def new_project(tmp_path, name, *extra):
    d = tmp_path / name
    r = run(BIN, "plugin", "new", name, "--dir", d, *extra)
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`plugin new` with the default stages, built with ./build.sh (the README's one command)."""
    d = new_project(tmp_path_factory.mktemp("new"), "e2e-policy")
    assert sorted(p.name for p in d.iterdir()) == [
        ".gitignore", "Cargo.toml", "README.md", "build.sh", "plugin-test.toml", "src"]
    r = run("./build.sh", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (d / "e2e-policy.wasm").exists()
    return d


def test_the_rust_template_builds_and_its_tests_pass(built):
    readme = (built / "README.md").read_text()
    assert "./build.sh" in readme and "cargo test" in readme
    assert "corvid plugin test e2e-policy.wasm --script plugin-test.toml" in readme
    r = run("cargo", "test", cwd=built)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"test result: ok\. 5 passed", r.stdout), r.stdout
    r = run("cargo", "fmt", "--check", cwd=built)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(BIN, "plugin", "test", "e2e-policy.wasm", "--script", "plugin-test.toml", cwd=built)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "add-header X-E2ePolicy: checked" in r.stdout
    assert "mail <someone@Spam.Example>: reject 550 5.7.1 Sender domain refused" in r.stdout


def test_the_template_acts_in_a_running_server(built, make_server):
    # The [[plugin]] table of the generated README, pointed at the built component.
    readme = (built / "README.md").read_text()
    assert 'blocked_domains = ["spam.example"]' in readme
    srv = make_server({"plugin": [{
        "name": "e2e-policy", "path": str(built / "e2e-policy.wasm"), "order": 10,
        "failure_policy": "tempfail", "capabilities": ["log", "config", "clock"],
        "config": {"blocked_domains": ["spam.example"], "header": "X-E2ePolicy"}}]})
    with srv.smtp() as s:
        s.ehlo()
        code, msg = s.mail("someone@spam.example")
        assert (code, msg[:5]) == (550, b"5.7.1"), (code, msg)
    qid = srv.send(b"Subject: hi\r\n\r\nbody\r\n", sender="friend@example.net")
    assert qid


def test_every_stage_and_a_broken_expectation(tmp_path):
    d = new_project(tmp_path, "all-stages", "--stages",
                    "connect,helo,auth,mail,rcpt,data,route,deferred,bounced,delivered")
    assert run("./build.sh", cwd=d).returncode == 0
    r = run(BIN, "plugin", "test", "all-stages.wasm", "--script", "plugin-test.toml", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ["auth PLAIN alice: continue", "route <user@example.org>: continue",
                 "deferred <user@example.org>: continue", "bounced <user@example.org>: continue"]:
        assert line in r.stdout
    # A deliberately broken plugin: it now refuses with another text; the script catches it.
    lib = d / "src" / "lib.rs"
    lib.write_text(lib.read_text().replace('"Sender domain refused"', '"Go away"'))
    assert run("./build.sh", cwd=d).returncode == 0
    r = run(BIN, "plugin", "test", "all-stages.wasm", "--script", "plugin-test.toml", cwd=d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL mail <someone@Spam.Example>: reject 550 5.7.1 Go away" in r.stdout
    assert '- text: contains "Sender domain refused"' in r.stdout
    assert "+ text: Go away" in r.stdout


def test_a_hook_missing_from_stages_is_refused(built, tmp_path):
    d = tmp_path / "forgetful"
    subprocess.run(["cp", "-r", str(built), str(d)], check=True)
    lib = d / "src" / "lib.rs"
    lib.write_text(lib.read_text().replace(", Stage::Data]", "]"))
    r = run("cargo", "test", cwd=d)
    assert r.returncode != 0
    assert "implements on_data (Stage::Data) but STAGES does not list it" in r.stdout + r.stderr
    assert run("./build.sh", cwd=d).returncode == 0
    r = run(BIN, "plugin", "test", "e2e-policy.wasm", "--script", "plugin-test.toml", cwd=d)
    assert r.returncode == 1
    assert "did not load" in r.stderr and "on_data (Stage::Data)" in r.stderr, r.stderr


def test_bad_names_stages_and_languages_are_refused(tmp_path):
    for args, why in [(["Bad_Name"], "lower-case"), (["ok", "--stages", "mial"], "unknown stage"),
                      (["ok", "--lang", "cobol"], "invalid value 'cobol'")]:
        r = run(BIN, "plugin", "new", *args, "--dir", tmp_path / "x")
        assert r.returncode in (1, 2) and why in r.stderr, (args, r.stderr)
        assert not (tmp_path / "x").exists()

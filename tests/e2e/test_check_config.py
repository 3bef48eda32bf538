"""`corvid check-config` loads what `serve` loads at start: each TLS certificate and key, and
each [[plugin]] (compiled through the plugin cache, `configure` run on its config table). The
first problem is named by its key path and the command exits 1; a good config passes."""

import subprocess
from pathlib import Path

import pytest

from conftest import PLUGIN_CACHE, REFERENCE_CONFIG, base_config, bundled_plugins, run_cli, to_toml


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=mx.example.org", "-days", "2",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def check(tmp_path: Path, cfg: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "check.toml"
    path.write_text(to_toml(cfg))
    return run_cli("check-config", str(path), timeout=120)


def with_plugins(tmp_path: Path) -> dict:
    cfg = base_config(tmp_path / "data")
    cfg["plugin"] = bundled_plugins()
    return cfg


def test_the_dev_plugins_and_a_real_certificate_pass(tmp_path, cert_pair):
    cfg = with_plugins(tmp_path)
    cfg["tls"] = {"certificates": [{"cert": str(cert_pair[0]), "key": str(cert_pair[1])}]}
    r = check(tmp_path, cfg)
    assert r.returncode == 0, r.stderr
    assert "1 certificate(s), 6 plugin(s)" in r.stdout, r.stdout
    assert PLUGIN_CACHE.is_dir() and any(PLUGIN_CACHE.iterdir()), "compiled through the cache"


def test_the_reference_config_passes_with_its_certificate_present(tmp_path, cert_pair):
    text = REFERENCE_CONFIG.read_text()
    assert "/etc/corvid/tls/mx.example.org.pem" in text
    text = (text.replace("/etc/corvid/tls/mx.example.org.pem", str(cert_pair[0]))
                .replace("/etc/corvid/tls/mx.example.org.key", str(cert_pair[1])))
    path = tmp_path / "corvid.toml"
    path.write_text(text)
    r = run_cli("check-config", str(path), timeout=120)
    assert r.returncode == 0, r.stderr
    # As shipped, the certificate it names is the administrator's to provide.
    r = run_cli("check-config", str(REFERENCE_CONFIG))
    assert r.returncode == 1 and "key `tls.certificates[0].cert`" in r.stderr, r


def test_a_bad_certificate_path_or_key_is_named(tmp_path, cert_pair):
    cfg = base_config(tmp_path / "data")
    missing = tmp_path / "nowhere.pem"
    cfg["tls"] = {"certificates": [{"cert": str(cert_pair[0]), "key": str(cert_pair[1])},
                                   {"cert": str(missing), "key": str(cert_pair[1])}]}
    r = check(tmp_path, cfg)
    assert r.returncode == 1, r
    assert r.stderr.startswith("corvid: key `tls.certificates[1].cert`"), r.stderr
    assert str(missing) in r.stderr, r.stderr
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    cfg["tls"]["certificates"] = [{"cert": str(cert_pair[0]), "key": str(garbage)}]
    r = check(tmp_path, cfg)
    assert r.returncode == 1 and "key `tls.certificates[0].key`" in r.stderr, r


def test_a_plugin_whose_configure_refuses_its_config(tmp_path):
    cfg = with_plugins(tmp_path)
    names = [p["name"] for p in cfg["plugin"]]
    i = names.index("rate-limit")
    cfg["plugin"][i]["config"]["messages_per_window"] = "lots"
    r = check(tmp_path, cfg)
    assert r.returncode == 1, r
    assert f"key `plugin[{i}].config` (rate-limit)" in r.stderr, r.stderr
    assert "configure failed" in r.stderr and "messages_per_window" in r.stderr, r.stderr


def test_a_missing_component_file(tmp_path):
    cfg = with_plugins(tmp_path)
    cfg["plugin"][2]["path"] = str(tmp_path / "gone.wasm")
    r = check(tmp_path, cfg)
    assert r.returncode == 1, r
    assert r.stderr.startswith("corvid: key `plugin[2].path`: cannot read"), r.stderr
    assert "gone.wasm" in r.stderr, r.stderr
    # A file that is not a component at all is a compile failure of the same key.
    (tmp_path / "gone.wasm").write_bytes(b"\0asm but not really")
    r = check(tmp_path, cfg)
    assert r.returncode == 1 and "key `plugin[2].path`" in r.stderr and "compile" in r.stderr, r

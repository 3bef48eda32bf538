"""The `contract` fixture plugin (host/plugin-host/tests/fixtures/contract) for the e2e tests
of the contract's additions: DSN parameters of added recipients (wit/dsn.wit) and the TLS of
delivery attempts and routes (wit/delivery-tls.wit). Built like test_plugins.behave_wasm."""

import subprocess

import pytest

from conftest import REPO

FIXTURE = REPO / "host" / "plugin-host" / "tests" / "fixtures" / "contract"
WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release" / "fixture_contract.wasm"


@pytest.fixture(scope="session")
def contract_wasm():
    """The fixture plugin, built for wasm32-wasip2 inside the test run."""
    r = subprocess.run(["cargo", "build", "--quiet", "--manifest-path", str(FIXTURE / "Cargo.toml"),
                        "--target", "wasm32-wasip2", "--release", "--target-dir", str(REPO / "target" / "plugins")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert WASM.exists()
    return WASM


def contract(wasm, adds=(), **settings) -> dict:
    """A [[plugin]] table for the fixture: `adds` are `address [NOTIFY=..] [ORCPT=..]`."""
    config = dict(settings)
    if adds:
        config["adds"] = list(adds)
    return {"name": "contract", "path": str(wasm), "order": 1, "capabilities": ["log", "config", "kv"],
            "limits": {"hook_time_ms": 2000, "memory_mb": 32}, "config": config}

"""The `contract` fixture plugin (host/plugin-host/tests/fixtures/contract) for the e2e tests
of the contract's additions: DSN parameters of added recipients (wit/dsn.wit) and the TLS of
delivery attempts and routes (wit/delivery-tls.wit). Built like test_plugins.behave_wasm."""


import pytest

from conftest import build_wasm, REPO

FIXTURE = REPO / "host" / "plugin-host" / "tests" / "fixtures" / "contract"
WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release" / "fixture_contract.wasm"


@pytest.fixture(scope="session")
def contract_wasm():
    """The fixture plugin, built for wasm32-wasip2 inside the test run."""
    return build_wasm(FIXTURE, WASM)


def contract(wasm, adds=(), **settings) -> dict:
    """A [[plugin]] table for the fixture: `adds` are `address [NOTIFY=..] [ORCPT=..]`."""
    config = dict(settings)
    if adds:
        config["adds"] = list(adds)
    return {"name": "contract", "path": str(wasm), "order": 1, "capabilities": ["log", "config", "kv"],
            "limits": {"hook_time_ms": 2000, "memory_mb": 32}, "config": config}

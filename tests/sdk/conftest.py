"""Fixtures of the SDK suite: one real daemon for the session, the SDK pointed at it through
SAFEHOUSE_URL / SAFEHOUSE_API_KEY, and a fresh sandbox per test that wants one."""
import os
import uuid

import pytest

from e2e.support import Daemon, running_daemon, skip_or_fail

try:
    import safehouse  # noqa: F401
    SDK_ERR = None
except ImportError as e:  # the venv predates ./sdk/python in tests/requirements.txt
    SDK_ERR = f"the safehouse SDK is not installed ({e}); pip install -r tests/requirements.txt"


@pytest.fixture(scope="session")
def daemon():
    if SDK_ERR:
        skip_or_fail(SDK_ERR)
    # Tenant `sdk-quota` has a quota of one sandbox (test_features.py); nobody else has one.
    d = running_daemon(args=["--tenant-quota", "sdk-quota:sandboxes=1"])
    yield d
    d.cleanup()


@pytest.fixture(autouse=True)
def sdk_env(request, monkeypatch):
    """Every test but the pure unit tests talks to the session daemon through the env vars."""
    if "unit" in request.keywords:
        return None
    d = request.getfixturevalue("daemon")
    monkeypatch.setenv("SAFEHOUSE_URL", d.url)
    monkeypatch.setenv("SAFEHOUSE_API_KEY", d.admin_key)
    return d


@pytest.fixture
def tag():
    return uuid.uuid4().hex[:12]


@pytest.fixture
def sbx(daemon, tag):
    from safehouse import Sandbox

    s = Sandbox.create(timeout=120, metadata={"suite": "sdk", "test": tag})
    daemon.created.append((daemon.admin_key, s.id))
    yield s
    s.kill()
    s.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "unit: needs no daemon")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        d = item.funcargs.get("daemon")
        if isinstance(d, Daemon):
            rep.sections.append(("daemon log (tail)", d.log_tail(3000)))


def pytest_report_header(config):
    return [f"sdk: SAFEHOUSE_BIN={os.environ.get('SAFEHOUSE_BIN', '(auto)')}"]

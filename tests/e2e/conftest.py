"""Fixtures of the end-to-end suite: one real daemon for the session (tests that must crash
a daemon start their own), an admin client, and a fresh sandbox per test that wants one."""
import os
import uuid

import pytest

from .support import IS_ROOT, Api, Daemon, binary_serves, running_daemon, skip_or_fail


@pytest.fixture(scope="session")
def daemon():
    d = running_daemon()
    yield d
    d.cleanup()


@pytest.fixture
def api(daemon) -> Api:
    return daemon.admin()


@pytest.fixture
def sandbox(api):
    """A running sandbox of the admin tenant, killed afterwards."""
    sb = api.create(metadata={"suite": "e2e", "test": uuid.uuid4().hex[:12]}, timeout_s=120)
    yield sb
    api.kill(sb["id"])


@pytest.fixture
def tenant_key(api):
    """A key of a fresh tenant (not admin)."""
    r = api.post("/v1/keys", {"tenant": f"t-{uuid.uuid4().hex[:8]}", "name": "e2e"})
    assert r.status == 201, r
    return r.json()["key"]


def pytest_report_header(config):
    return [f"e2e: root={IS_ROOT} SAFEHOUSE_BIN={os.environ.get('SAFEHOUSE_BIN', '(auto)')}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, show what the daemon said (its log is deleted at the end of the session)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for name in ("daemon", "own_daemon"):
            d = item.funcargs.get(name)
            if isinstance(d, Daemon):
                rep.sections.append((f"{name} log (tail)", d.log_tail(3000)))


@pytest.fixture
def own_daemon():
    """A daemon of the test's own (to crash and restart), cleaned up afterwards."""
    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    d = Daemon()
    yield d
    d.cleanup()

"""What the E2B suites share: the SDK release under test, the fixtures an E2B user's setup
amounts to (E2B_API_URL, E2B_SANDBOX_URL and an `e2b_` key of a fresh tenant), and raw HTTP
helpers for what the SDK cannot show (error bodies, headers, old route generations).

The suites run against several SDK releases (scripts/e2b-sdks: the oldest 2.x, one from the
middle that validates the key's format client-side, the newest); a test that needs an SDK
call a release does not have skips on that release, saying so."""
import asyncio
import http.client
import json
import re
import uuid
from importlib.metadata import version as _dist_version

import pytest

from .support import Api

SDK_VERSION_TEXT = _dist_version("e2b")
SDK_VERSION = tuple(int(x) for x in re.findall(r"\d+", SDK_VERSION_TEXT)[:3])
E2B_KEY_RE = re.compile(r"\Ae2b_[0-9a-f]+\Z")


def sdk_at_least(*v, what):
    """Skips the test on SDK releases older than `v` (which lack `what`)."""
    if SDK_VERSION < v:
        pytest.skip(f"e2b {SDK_VERSION_TEXT} has no {what} (added in {'.'.join(map(str, v))})")


def new_key(api, name="e2b"):
    """A key of a fresh tenant, as POST /v1/keys answers it (`key` and its `e2b_key` form)."""
    r = api.post("/v1/keys", {"tenant": f"t-{uuid.uuid4().hex[:8]}", "name": name})
    assert r.status == 201, r
    k = r.json()
    assert E2B_KEY_RE.match(k.get("e2b_key") or ""), k
    return k


@pytest.fixture
def e2b_key(api):
    return new_key(api)


@pytest.fixture
def e2b_env(daemon, e2b_key, monkeypatch):
    """The variables (and the key, in the `e2b_` form every SDK release accepts) an E2B
    user sets to move to safehouse. Returns a native client with the same tenant's key."""
    monkeypatch.setenv("E2B_API_URL", daemon.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", daemon.url)
    monkeypatch.setenv("E2B_API_KEY", e2b_key["e2b_key"])
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_VALIDATE_API_KEY", raising=False)
    return Api(daemon, e2b_key["key"])


@pytest.fixture
def sbx(e2b_env):
    from e2b import Sandbox
    s = Sandbox.create(metadata={"suite": "e2b", "run": uuid.uuid4().hex}, envs={"GREETING": "hello"},
                       timeout=120, request_timeout=60)
    yield s
    try:
        s.kill()
    except Exception:
        pass


def pause(s):
    """`Sandbox.pause()`; 2.0-2.x releases before it call it `beta_pause()`."""
    return s.pause() if hasattr(s, "pause") else s.beta_pause()


_LOOP = None


def arun(coro, timeout=120):
    """Runs `coro` on the session's one event loop, as an application does (some SDK
    releases keep their async transport across calls, bound to the loop that made it)."""
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(asyncio.wait_for(coro, timeout=timeout))


def raw(daemon, method, path, body=b"", headers=None, timeout=30):
    conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = dict(headers or {}, **{"Content-Type": "application/json"})
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def control(daemon, key, method, path, body=b""):
    """A control-plane call with `X-API-Key`: (status, headers, parsed JSON or raw bytes)."""
    status, headers, data = raw(daemon, method, path, body, {"X-API-Key": key})
    try:
        data = json.loads(data) if data else None
    except ValueError:
        pass
    return status, headers, data


def envd_headers(sid, token, port=49983):
    return {"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": str(port), "X-Access-Token": token,
            "Content-Type": "application/json", "Connect-Protocol-Version": "1"}


def assert_e2b_error(status, body, want_status=None, mentions=()):
    """E2B's error shape: `{"code": <int>, "message": <str>}` (what the SDK reads)."""
    assert status >= 400, (status, body)
    if want_status is not None:
        assert status == want_status, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("code"), int) and isinstance(body.get("message"), str), \
        (status, body)
    for word in mentions:
        assert word.lower() in body["message"].lower(), (word, body)


"""E2B's `e2b-code-interpreter` SDK, unchanged, against a daemon with a warm pool of one:
state, a chart, an error, contexts, and the base SDK's calls on the same sandbox.
Configured only by E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY. The daemon's store holds
the code-interpreter template (built from templates/code-interpreter/Dockerfile), so
the SDK's default template runs on that image's root, not the host's."""
import os
import tempfile
import time
import uuid

import pytest

from e2e.support import Api, running_daemon
from e2e.test_events import read_sse

from .image import import_image
from .pngcheck import decode

if not os.environ.get("CI"):
    pytest.importorskip("e2b_code_interpreter", reason="pip install -r tests/requirements.txt")


@pytest.fixture(scope="module")
def pool_daemon():
    """A daemon of its own with a warm pool of one."""
    data = tempfile.mkdtemp(prefix="safehouse-interp-e2b-")
    import_image(data)
    d = running_daemon(data_dir=data, env={"SAFEHOUSE_CODE_POOL": "1"})
    yield d
    d.cleanup()


@pytest.fixture
def e2b_env(pool_daemon, monkeypatch):
    api = pool_daemon.admin()
    r = api.post("/v1/keys", {"tenant": f"ci-{uuid.uuid4().hex[:8]}", "name": "e2b-ci"})
    assert r.status == 201, r
    key = r.json()["key"]
    monkeypatch.setenv("E2B_API_URL", pool_daemon.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", pool_daemon.url)
    monkeypatch.setenv("E2B_API_KEY", key)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    return Api(pool_daemon, key)


def test_sdk_session_state_chart_error_contexts(e2b_env):
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create()
    try:
        assert sbx.get_info().template_id == "code-interpreter-v1"
        # Its root is the image (pinned by digest in the recorded policy), not the host's.
        policy = e2b_env.get(f"/v1/sandboxes/{sbx.sandbox_id}/policy").json()["policy"]
        assert policy["filesystem"]["rootfs"].startswith("image:sha256:"), policy["filesystem"]
        ex = sbx.run_code("x = 1; x += 1; x")
        assert ex.text == "2" and ex.error is None, ex
        assert sbx.run_code("x * 21").text == "42"  # state
        out = []
        ex = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [2, 4, 8]); plt.title('t')\nplt.show()",
                          on_stdout=out.append)
        (fig,) = [r for r in ex.results if r.png]
        assert decode(fig.png)[0] > 100
        assert fig.chart is not None and fig.chart.type.value == "line" and fig.chart.title == "t", fig.chart
        assert [tuple(p) for p in fig.chart.elements[0].points] == [(1, 2), (2, 4), (3, 8)]
        ex = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
        assert "<table" in ex.results[0].html and ex.results[0].is_main_result
        ex = sbx.run_code("int('nope')")
        assert ex.error.name == "ValueError" and "nope" in ex.error.value and ex.error.traceback, ex.error
        ctx = sbx.create_code_context(cwd="/tmp")
        assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "'/tmp'"
        assert sbx.run_code("x", context=ctx).error.name == "NameError"  # its own state
        assert ctx.id in [c.id for c in sbx.list_code_contexts()]
        sbx.restart_code_context(ctx)
        sbx.remove_code_context(ctx)
        assert ctx.id not in [c.id for c in sbx.list_code_contexts()]
        ex = sbx.run_code("echo $((40 + 2))", language="bash")
        assert ex.logs.stdout == ["42\n"], ex.logs
        ex = sbx.run_code("import os; os.environ['K']", envs={"K": "v"})
        assert ex.text == "'v'"
        # The base SDK's calls reach the same sandbox.
        sbx.files.write("/tmp/from-files.txt", "hello")
        assert sbx.run_code("open('/tmp/from-files.txt').read()").text == "'hello'"
        assert sbx.commands.run("python3 -c 'print(6 * 7)'").stdout == "42\n"
    finally:
        sbx.kill()


def test_context_calls_need_the_traffic_token(e2b_env, pool_daemon):
    """Port 49999 takes E2B-Traffic-Access-Token (what the SDK sends on context calls), and
    nothing else opens it."""
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create()
    try:
        assert sbx.traffic_access_token
        api = Api(pool_daemon, None)
        base = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999"}
        r = api.get("/contexts", headers=base)
        assert r.status == 401, r
        r = api.get("/contexts", headers={**base, "E2B-Traffic-Access-Token": "sht_forged.abc"})
        assert r.status == 401, r
        r = api.get("/contexts", headers={**base, "E2B-Traffic-Access-Token": sbx.traffic_access_token})
        assert r.status == 200 and isinstance(r.json(), list), r
        # The traffic token opens the interpreter's port only, not envd's.
        r = api.post("/filesystem.Filesystem/ListDir", {"path": "/"},
                     headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2B-Traffic-Access-Token": sbx.traffic_access_token,
                              "Connect-Protocol-Version": "1"})
        assert r.status == 401, r
    finally:
        sbx.kill()


def test_warm_pool_hands_out_ready_kernels(e2b_env, pool_daemon):
    from e2b_code_interpreter import Sandbox

    # The first create of this tenant was cold and started the pool; wait for it.
    Sandbox.create().kill()
    api = e2b_env
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pools = api.get("/v1/code/pool").json()
        if pools["pools"] and pools["pools"][0]["ready"]:
            break
        time.sleep(0.5)
    pools = api.get("/v1/code/pool").json()
    assert pools["size"] == 1, pools
    (pool,) = pools["pools"]
    assert pool["label"] == "code-interpreter-v1" and len(pool["ready"]) == 1, pool
    assert pool["memory_bytes"] > 10 << 20, pool  # its cost: a kernel is up in it
    warm = pool["ready"][0]
    t0 = time.monotonic()
    sbx = Sandbox.create(metadata={"who": "pool-test"})
    try:
        assert sbx.sandbox_id == warm
        assert sbx.run_code("1 + 1").text == "2"
        took = time.monotonic() - t0
        info = api.get(f"/v1/sandboxes/{warm}").json()
        assert info["metadata"] == {"who": "pool-test"}, info
        _, events = read_sse(api, f"/v1/sandboxes/{warm}/events", {"follow": "false"})
        assert "code.pool.claimed" in [e["event"] for e in events], events
        print(f"pool create -> first result: {took * 1000:.0f} ms")
    finally:
        sbx.kill()
    after = api.get("/v1/code/pool").json()["pools"][0]
    assert after["hits"] >= 1 and warm not in after["ready"], after

"""The code interpreter against a real daemon and real Jupyter kernels: state across
calls, rich results (a PNG that decodes, chart data, a DataFrame's HTML), structured
exceptions, timeouts that interrupt and keep state, a dead kernel reported and restarted,
the memory limit, contexts with their own cwd and env, the network policy, the Python
SDK's Execution, MCP's run_code, and the raw stream's shape."""
import base64
import json
import uuid

import pytest

from e2e.support import Api

from .pngcheck import decode


@pytest.fixture
def sbx(daemon):
    from safehouse import Sandbox

    s = Sandbox.create(timeout=300, metadata={"suite": "interp", "test": uuid.uuid4().hex[:8]},
                       api_key=daemon.admin_key, url=daemon.url)
    daemon.created.append((daemon.admin_key, s.id))
    yield s
    s.kill()
    s.close()


def code(api: Api, sid: str, body: dict, expect=200):
    """POST /code: the status and the stream's objects."""
    r = api.post(f"/v1/sandboxes/{sid}/code", body, timeout=180)
    assert r.status == expect, r
    if expect != 200:
        return r.json()
    assert r.headers["content-type"] == "application/x-ndjson", r.headers
    return [json.loads(line) for line in r.body.decode().splitlines() if line.strip()]


def test_state_results_and_structured_errors(sbx):
    r = sbx.run_code("x = 41\nprint('set', flush=True)")
    assert (r.stdout, r.error, r.results) == ("set\n", None, []), r
    r = sbx.run_code("x + 1")
    assert r.text == "42" and r.results[0].is_main_result, r
    assert r.execution_count == 2, r
    r = sbx.run_code("import sys\nprint('to stderr', file=sys.stderr)\n{'k': [1, 2]}")
    assert r.stderr == "to stderr\n" and r.text == "{'k': [1, 2]}", r
    r = sbx.run_code("def f():\n    raise ValueError('bad value: ' + str(x))\nf()")
    assert (r.error.name, r.error.value) == ("ValueError", "bad value: 41"), r
    assert "Traceback" in r.error.traceback or "ValueError" in r.error.traceback, r.error.traceback
    assert "in f()" in r.error.traceback or "f()" in r.error.traceback, r.error.traceback
    assert "\x1b[" not in r.error.traceback  # no terminal colours for a program to parse
    # A failed cell keeps the state.
    assert sbx.run_code("x").text == "41"
    streamed = []
    r = sbx.run_code("for i in range(3): print(i, flush=True)", on_stdout=lambda m: streamed.append(m.line))
    assert "".join(streamed) == "0\n1\n2\n" == r.stdout, (streamed, r)


def test_plot_becomes_a_png_that_decodes_with_chart_data(sbx):
    r = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "xs = list(range(1000))\n"
        "plt.plot(xs, [v * v for v in xs], label='squares')\n"
        "plt.title('growth'); plt.xlabel('n'); plt.ylabel('n^2')\n"
        "None")
    assert r.error is None, r.error
    figs = [x for x in r.results if x.png]
    assert len(figs) == 1, r
    width, height = decode(figs[0].png)
    assert width > 100 and height > 100, (width, height)
    chart = figs[0].chart
    assert chart["type"] == "line" and chart["title"] == "growth", chart
    assert (chart["x_label"], chart["y_label"]) == ("n", "n^2"), chart
    (line,) = chart["elements"]
    assert line["label"] == "squares" and len(line["points"]) == 1000 and line["points"][999] == [999, 998001]
    # A bar chart carries its bars.
    r = sbx.run_code("plt.figure(); plt.bar(['a', 'b', 'c'], [3, 1, 2]); None")
    (bar,) = [x.chart for x in r.results if x.chart]
    assert bar["type"] == "bar" and [(e["label"], e["value"]) for e in bar["elements"]] == [
        ("a", 3), ("b", 1), ("c", 2)], bar


def test_dataframe_gives_html_and_text_and_display_data(sbx):
    r = sbx.run_code("import pandas as pd\ndf = pd.DataFrame({'city': ['Oslo', 'Lima'], 'pop': [0.7, 10.0]})\ndf")
    (main,) = r.results
    assert main.is_main_result and "<table" in main.html and "Oslo" in main.html, main.html
    assert "city" in main.text and "Lima" in main.text, main.text
    r = sbx.run_code("from IPython.display import display, JSON, SVG, HTML\n"
                     "display(HTML('<b>hi</b>'))\n"
                     "display(JSON({'a': 1}))\n"
                     "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1\" height=\"1\"/>'))\n")
    assert [x.is_main_result for x in r.results] == [False, False, False], r
    assert r.results[0].html == "<b>hi</b>" and r.results[1].json == {"a": 1}, r
    assert r.results[2].svg.startswith("<svg"), r.results[2].svg


def test_timeout_interrupts_and_keeps_state(sbx):
    sbx.run_code("kept = 'still here'")
    r = sbx.run_code("while True:\n    pass", timeout=1)
    assert r.error.name == "TimeoutError" and "keeps its state" in r.error.value, r.error
    assert sbx.run_code("kept").text == "'still here'"


def test_dead_kernel_is_reported_then_restart_works(sbx):
    sbx.run_code("y = 1")
    r = sbx.run_code("import os\nos._exit(3)")
    assert r.error.name == "DeadKernelError" and "died while running this code" in r.error.value, r.error
    r = sbx.run_code("y")
    assert r.error.name == "DeadKernelError" and "restart the context" in r.error.value, r.error
    (ctx,) = [c for c in sbx.list_code_contexts() if c.language == "python"]
    assert ctx.state == "dead" and ctx.default, ctx
    again = sbx.restart_code_context(ctx)
    assert again.id == ctx.id and again.state == "running", again
    r = sbx.run_code("y")
    assert r.error.name == "NameError", r  # a fresh kernel: the old state is gone
    assert sbx.run_code("1 + 1").text == "2"


def test_memory_limit_kills_the_kernel_with_a_clear_error(daemon):
    from safehouse import Sandbox

    s = Sandbox.create(timeout=300, policy={"version": 1, "limits": {"memory": "128MiB"}},
                       api_key=daemon.admin_key, url=daemon.url)
    daemon.created.append((daemon.admin_key, s.id))
    try:
        assert s.run_code("2 + 2").text == "4"
        r = s.run_code("blob = b'x' * (200 * 1024 * 1024)\nlen(blob)", timeout=120)
        assert r.error is not None and r.error.name == "OutOfMemoryError", r
        assert "memory" in r.error.value and "restart" in r.error.value, r.error.value
        s.restart_code_context([c for c in s.list_code_contexts() if c.language == "python"][0])
        assert s.run_code("3 + 3").text == "6"
    finally:
        s.kill()


def test_contexts_have_their_own_state_cwd_and_env(sbx):
    sbx.run_code("shared = 'default context'")
    other = sbx.create_code_context(cwd="/tmp", envs={"GREETING": "hej"})
    assert (other.language, other.cwd) == ("python", "/tmp"), other
    r = sbx.run_code("import os\n(os.getcwd(), os.environ['GREETING'], 'shared' in globals())", context=other)
    assert r.text == "('/tmp', 'hej', False)", r
    # Per-execution env: set for that call only.
    r = sbx.run_code("import os\nos.environ.get('ONCE')", envs={"ONCE": "1"})
    assert r.text == "'1'", r
    assert sbx.run_code("import os\nos.environ.get('ONCE')").text is None
    sh = sbx.create_code_context(language="bash", cwd="/tmp")
    r = sbx.run_code("N=7; cd /; echo $N", context=sh)
    assert r.stdout == "7\n" and r.error is None, r
    r = sbx.run_code("echo $N $(pwd); false", context=sh)
    assert r.stdout == "7 /\n" and r.error.name == "ExitStatus", r
    assert sbx.run_code("echo $((6 * 7))", language="bash").stdout == "42\n"
    ids = {c.id for c in sbx.list_code_contexts()}
    assert {other.id, sh.id} <= ids
    sbx.remove_code_context(other)
    assert other.id not in {c.id for c in sbx.list_code_contexts()}
    from safehouse import NotFoundError

    with pytest.raises(NotFoundError, match="no context"):
        sbx.run_code("1", context=other.id)


def test_the_stream_and_bad_requests(api):
    sb = api.create()
    sid = sb["id"]
    events = code(api, sid, {"code": "print('a')\n1 + 1"})
    assert [e["type"] for e in events] == ["stdout", "result", "number_of_executions"], events
    assert events[0]["text"] == "a\n" and events[1] == {"type": "result", "is_main_result": True, "text": "2"}
    bad = code(api, sid, {"code": "1", "language": "cobol"}, expect=400)
    assert "cobol" in bad["error"]["message"] and "python" in bad["error"]["message"], bad
    bad = code(api, sid, {"code": "1", "language": "python", "context": "x"}, expect=400)
    assert "not both" in bad["error"]["message"], bad
    bad = code(api, sid, {"code": "1", "context": "nope"}, expect=404)
    assert "no context 'nope'" in bad["error"]["message"], bad
    bad = code(api, sid, {"code": "1", "timeout_s": -1}, expect=400)
    assert "timeout_s" in bad["error"]["message"], bad
    bad = code(api, sid, {"code": 5}, expect=400)
    r = api.post(f"/v1/sandboxes/{sid}/contexts", {"language": "python", "cwd": "/nonexistent"})
    assert r.status == 400 and "/nonexistent" in r.json()["error"]["message"], r
    assert api.delete(f"/v1/sandboxes/{sid}/contexts/nope").status == 404
    # Another tenant sees nothing.
    assert api.post("/v1/sandboxes/sb_doesnotexist/code", {"code": "1"}).status == 404


def test_network_rules_hold_for_code(api):
    """The kernel is a sandboxed process: only the gateway leads out, and it says no."""
    sb = api.create(policy={"version": 1, "network": {"allow": ["web.test:9"]}})
    get = ("import os, urllib.request, urllib.error\n"
           "os.environ.pop('NO_PROXY', None); os.environ.pop('no_proxy', None)\n"
           "try:\n    urllib.request.urlopen('http://other.test:9/x', timeout=20)\n"
           "except urllib.error.HTTPError as e:\n    print(e.code, e.headers.get('X-Safehouse-Denied'))\n")
    events = code(api, sb["id"], {"code": get})
    assert [e["text"] for e in events if e["type"] == "stdout"] == ["403 default deny\n"], events
    direct = ("import socket\ns = socket.socket()\ns.settimeout(5)\n"
              "try:\n    s.connect(('1.1.1.1', 80))\n    print('connected')\n"
              "except OSError as e:\n    print('refused', e.errno)\n")
    events = code(api, sb["id"], {"code": direct})
    (out,) = [e["text"] for e in events if e["type"] == "stdout"]
    assert out.startswith("refused") and out.split()[1] in ("101", "113"), out  # ENETUNREACH/EHOSTUNREACH


def test_mcp_run_code_keeps_state_and_returns_images(daemon):
    import asyncio

    from e2e.test_mcp import http_session, ok

    async def go():
        async with http_session(daemon, daemon.admin_key) as s:
            sb = ok(await s.call_tool("sandbox_create", {}))
            sid = sb["id"]
            try:
                r = await s.call_tool("run_code", {"sandbox_id": sid, "code": "total = 40"})
                assert not r.isError, r
                r = await s.call_tool("run_code", {"sandbox_id": sid, "code": "total + 2"})
                assert r.structuredContent["results"][0]["text"] == "42", r.structuredContent
                r = await s.call_tool("run_code", {"sandbox_id": sid, "code":
                                      "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]); None"})
                images = [c for c in r.content if c.type == "image"]
                assert len(images) == 1 and images[0].mimeType == "image/png", r.content
                decode(images[0].data)
                r = await s.call_tool("run_code", {"sandbox_id": sid, "code": "1/0"})
                assert r.structuredContent["error"]["name"] == "ZeroDivisionError", r.structuredContent
                assert "ZeroDivisionError" in r.content[0].text
            finally:
                await s.call_tool("sandbox_kill", {"sandbox_id": sid})

    asyncio.run(go())


def test_async_sdk(daemon):
    import asyncio

    from safehouse import AsyncSandbox

    async def go():
        s = await AsyncSandbox.create(timeout=120, api_key=daemon.admin_key, url=daemon.url)
        daemon.created.append((daemon.admin_key, s.id))
        try:
            await s.run_code("a = 20")
            seen = []

            async def on_result(res):
                seen.append(res.text)

            r = await s.run_code("a + 22", on_result=on_result)
            assert r.text == "42" and seen == ["42"], r
            ctx = await s.create_code_context(language="bash")
            r = await s.run_code("echo hi", context=ctx)
            assert r.stdout == "hi\n", r
        finally:
            await s.kill()

    asyncio.run(go())


def test_execution_shape_is_e2b_s(sbx):
    r = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2]); 7")
    data = json.loads(r.to_json())
    assert set(data) == {"results", "logs", "error"}, data
    assert base64.b64decode(r.results[1].png)[:4] == b"\x89PNG", r.results
    assert r.results[1].formats()[:2] == ["text", "png"], r.results[1].formats()


def test_langchain_code_interpreter_tool(sbx):
    pytest.importorskip("langchain_core")
    from safehouse.integrations.langchain import SafehouseCodeInterpreterTool

    tool = SafehouseCodeInterpreterTool(sandbox=sbx)
    assert tool.invoke({"code": "rows = [1, 2, 3]"}) == "ok (no output)"
    out = tool.invoke({"code": "print('sum'); sum(rows)"})
    assert out == "stdout:\nsum\n\nresult:\n6", out
    out = tool.invoke({"code": "import matplotlib.pyplot as plt\nplt.plot(rows); None"})
    assert "1 image(s) displayed" in out, out
    out = tool.invoke({"code": "rows[10]"})
    assert out.startswith("error: IndexError: list index out of range") and "rows[10]" in out, out

"""MCP, end to end, with the official `mcp` Python client: the daemon's streamable HTTP
endpoint (/mcp) and `safehouse mcp` on stdio. Every tool is called on both transports;
results carry exit codes and the resource envelope; denials come back as tool errors
(isError) with the daemon's explanation; keys, tenants and sessions are enforced. Raw HTTP
covers the protocol's edges (JSON-RPC errors, batches, versions, sessions, Origin)."""
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import traceback

import pytest

from .support import BIN, free_port, pid_alive, require_root, skip_or_fail, wait_for

try:
    import mcp
except ImportError:
    if os.environ.get("CI"):
        raise  # a broken test environment, not a skip
    pytest.skip("needs the `mcp` package (tests/requirements.txt)", allow_module_level=True)
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402

TOOLS = {"sandbox_create", "sandbox_list", "sandbox_kill", "sandbox_pause", "sandbox_resume", "run_command",
         "run_code", "read_file", "write_file", "list_files"}
TIMEOUT = 120
# streamablehttp_client (headers=...) is deprecated in favour of streamable_http_client, which
# takes a whole httpx client; the old one is kept by the tested range.
pytestmark = pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


@contextlib.asynccontextmanager
async def http_session(daemon, key):
    headers = {"Authorization": f"Bearer {key}"}
    async with streamablehttp_client(daemon.url + "/mcp", headers=headers, timeout=30) as (r, w, _):
        async with ClientSession(r, w) as s:
            await s.initialize()
            yield s


def stdio_params(daemon, key, *args, url=None):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SAFEHOUSE_URL": url or daemon.url}
    if key is not None:
        env["SAFEHOUSE_API_KEY"] = key
    return StdioServerParameters(command=BIN, args=["mcp", *args], env=env)


@contextlib.asynccontextmanager
async def stdio_session(daemon, key, url=None):
    async with stdio_client(stdio_params(daemon, key, url=url)) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            yield s


def ok(result):
    assert not result.isError, result.content[0].text
    return result.structuredContent


def err(result):
    assert result.isError, result
    return result.content[0].text


async def exercise_every_tool(s, api):
    """Calls each tool once (and a few twice) and checks what comes back."""
    listed = {t.name: t for t in (await s.list_tools()).tools}
    assert set(listed) == TOOLS
    for t in listed.values():
        assert t.inputSchema["type"] == "object" and t.outputSchema["type"] == "object", t
        assert len(t.description) > 30, t

    sb = ok(await s.call_tool("sandbox_create", {"preset": "default", "metadata": {"via": "mcp"}}))
    sid = sb["id"]
    assert sb["state"] == "running" and sb["preset"] == "default", sb
    assert api.info(sid)["metadata"] == {"via": "mcp"}  # the same sandbox the API sees

    src = "import sys\nprint('hello', sys.argv[1])\n"
    w = ok(await s.call_tool("write_file", {"sandbox_id": sid, "path": "/workspace/app/hello.py", "content": src}))
    assert w["path"] == "/workspace/app/hello.py" and w["size"] == len(src) and w["type"] == "file", w
    ls = ok(await s.call_tool("list_files", {"sandbox_id": sid, "path": "/workspace", "depth": 2}))
    assert "/workspace/app/hello.py" in [e["path"] for e in ls["entries"]], ls
    rd = ok(await s.call_tool("read_file", {"sandbox_id": sid, "path": "/workspace/app/hello.py"}))
    assert rd["encoding"] == "utf-8" and rd["content"].startswith("import sys") and not rd["truncated"], rd

    r = ok(await s.call_tool("run_command", {"sandbox_id": sid, "command": ["python3", "app/hello.py", "mcp"],
                                             "cwd": "/workspace"}))
    assert r["exit_code"] == 0 and r["stdout"] == "hello mcp\n", r
    assert r["wall_ms"] >= 0 and r["cpu_ms"] >= 0 and r["peak_memory_bytes"] > 0, r
    assert r["timed_out"] is False and r["oom_killed"] is False and r["network_denials"] == [], r
    # A command that fails still ran: its exit code is the answer, not a tool error.
    r = await s.call_tool("run_command", {"sandbox_id": sid, "command": "echo oops >&2; exit 3"})
    assert not r.isError and r.structuredContent["exit_code"] == 3, r
    assert r.structuredContent["stderr"] == "oops\n" and "exit_code 3" in r.content[0].text, r
    r = ok(await s.call_tool("run_command", {"sandbox_id": sid, "command": "sleep 5", "timeout_s": 0.5}))
    assert r["timed_out"] is True and r["exit_code"] is None and r["signal"] is not None, r

    code = "import os\nprint(open('/workspace/app/hello.py').read().count('print'), os.getuid() != 0)"
    r = ok(await s.call_tool("run_code", {"sandbox_id": sid, "code": code}))
    assert r["stdout"] == "1 True\n" and r["one_shot"] is False and r["sandbox_id"] == sid, r
    r = ok(await s.call_tool("run_code", {"sandbox_id": sid, "code": "echo $((6*7))", "language": "bash"}))
    assert r["stdout"] == "42\n", r
    one = ok(await s.call_tool("run_code", {"code": "print(sum(range(10)))"}))
    assert one["stdout"] == "45\n" and one["one_shot"] is True and one["sandbox_id"] != sid, one
    assert api.info(one["sandbox_id"])["state"] == "killed"  # the one-shot sandbox is gone

    listed = ok(await s.call_tool("sandbox_list", {"state": "running"}))
    assert sid in [x["id"] for x in listed["sandboxes"]], listed
    k = ok(await s.call_tool("sandbox_kill", {"sandbox_id": sid}))
    assert k == {"sandbox_id": sid, "state": "killed"}
    assert api.info(sid)["state"] == "killed"
    text = err(await s.call_tool("run_command", {"sandbox_id": sid, "command": "true"}))
    assert text == "error (not_running): the sandbox is killed", text
    text = err(await s.call_tool("run_command", {"sandbox_id": "sb_" + "z" * 26, "command": "true"}))
    assert text == "error (not_found): no such sandbox; check the id with the sandbox_list tool", text


def test_every_tool_over_streamable_http(daemon, api):
    async def main():
        async with http_session(daemon, daemon.admin_key) as s:
            await exercise_every_tool(s, api)
    run(main())


def test_every_tool_over_stdio(daemon, api):
    async def main():
        async with stdio_session(daemon, daemon.admin_key) as s:
            await s.send_ping()
            await exercise_every_tool(s, api)
    run(main())


def test_stdio_speaks_the_protocol_versions_the_client_offers(daemon):
    async def main():
        async with stdio_client(stdio_params(daemon, daemon.admin_key)) as (r, w):
            async with ClientSession(r, w) as s:
                init = await s.initialize()
                assert init.serverInfo.name == "safehouse"
                assert init.protocolVersion == mcp.types.LATEST_PROTOCOL_VERSION
                assert init.capabilities.tools is not None
    run(main())


def test_denials_explain_themselves(daemon, api, tenant_key):
    async def main():
        async with http_session(daemon, daemon.admin_key) as s:
            sb = ok(await s.call_tool("sandbox_create", {}))
            sid = sb["id"]
            # The policy's read-only host system: the write is refused, with the reason.
            text = err(await s.call_tool("write_file", {"sandbox_id": sid, "path": "/usr/local/evil",
                                                         "content": "x"}))
            assert "permission denied" in text and "/usr/local/evil" in text, text
            # A preset that does not exist: the answer lists the ones that do.
            text = err(await s.call_tool("sandbox_create", {"preset": "nope"}))
            assert "nope" in text and "web-research" in text, text
            # Arguments a tool does not take.
            text = err(await s.call_tool("run_command", {"sandbox_id": sid, "cmd": "ls"}))
            assert "run_command" in text and "cmd" in text, text
            # A request the network policy denies: the daemon's reason in the result.
            policy = 'version = 1\n[network]\nallow = ["web.test:9"]\n'
            net = ok(await s.call_tool("sandbox_create", {"policy": policy}))
            get = ("import os, urllib.request, urllib.error\n"
                   "os.environ.pop('NO_PROXY', None); os.environ.pop('no_proxy', None)\n"
                   "try:\n    urllib.request.urlopen('http://other.test:9/x', timeout=20)\n"
                   "except urllib.error.HTTPError as e:\n    print(e.code, e.headers.get('X-Safehouse-Denied'))\n")
            r = ok(await s.call_tool("run_code", {"sandbox_id": net["id"], "code": get}))
            assert r["stdout"] == "403 default deny\n", r
            assert [d["target"] for d in r["network_denials"]] == ["other.test:9"], r
            await s.call_tool("sandbox_kill", {"sandbox_id": net["id"]})
            await s.call_tool("sandbox_kill", {"sandbox_id": sid})
        async with http_session(daemon, tenant_key) as s:
            # Host paths in a policy are the admin's: another tenant is told so.
            policy = {"version": 1, "filesystem": {"read_only": [{"host": "/etc", "path": "/mnt/etc"}]}}
            text = err(await s.call_tool("sandbox_create", {"policy": policy}))
            assert "admin tenant only" in text, text
    run(main())


def test_output_is_capped(daemon):
    async def main():
        async with http_session(daemon, daemon.admin_key) as s:
            r = await s.call_tool("run_code", {"code": "print('x' * 300000)"})
            sc = r.structuredContent
            assert sc["exit_code"] == 0 and sc["stdout_truncated"] is True, sc
            assert len(sc["stdout"]) == 64 * 1024, len(sc["stdout"])
            assert "stdout cut" in r.content[0].text and len(r.content[0].text) < 70_000
    run(main())


def test_a_second_tenant_cannot_touch_the_first_ones_sandbox(daemon, api, tenant_key):
    async def main():
        async with http_session(daemon, daemon.admin_key) as a:
            sid = ok(await a.call_tool("sandbox_create", {}))["id"]
            async with http_session(daemon, tenant_key) as b:
                calls = [("run_command", {"command": "id"}), ("run_code", {"code": "print(1)"}),
                         ("read_file", {"path": "/etc/hostname"}), ("write_file", {"path": "/tmp/x", "content": ""}),
                         ("list_files", {"path": "/"}), ("sandbox_pause", {}), ("sandbox_resume", {}),
                         ("sandbox_kill", {})]
                for tool, args in calls:
                    text = err(await b.call_tool(tool, {"sandbox_id": sid, **args}))
                    assert "no such sandbox" in text, (tool, text)
                assert sid not in [x["id"] for x in ok(await b.call_tool("sandbox_list", {}))["sandboxes"]]
            assert api.info(sid)["state"] == "running"
            ok(await a.call_tool("sandbox_kill", {"sandbox_id": sid}))
    run(main())


def test_pause_and_resume_tools(daemon, api):
    """sandbox_pause keeps the files (and says the memory is not kept), stops every process;
    a paused sandbox refuses commands by name; sandbox_resume brings it back with its files."""
    require_root("disk-backed layers live in a loop-mounted pool: root only")
    if not shutil.which("mkfs.btrfs"):
        skip_or_fail("mkfs.btrfs is missing (scripts/test installs btrfs-progs)")

    async def main():
        async with http_session(daemon, daemon.admin_key) as s:
            mem = ok(await s.call_tool("sandbox_create", {}))
            text = err(await s.call_tool("sandbox_pause", {"sandbox_id": mem["id"]}))
            assert "storage" in text, text  # a RAM layer cannot be paused: the answer says what to change
            ok(await s.call_tool("sandbox_kill", {"sandbox_id": mem["id"]}))

            sb = ok(await s.call_tool("sandbox_create", {"storage": "disk", "env": {"WHO": "mcp"}}))
            sid = sb["id"]
            assert sb["storage"] == "disk", sb
            ok(await s.call_tool("write_file", {"sandbox_id": sid, "path": "/workspace/kept", "content": "kept"}))
            agent = api.info(sid)["pid"]
            r = await s.call_tool("sandbox_pause", {"sandbox_id": sid})
            p = ok(r)
            assert p == {"sandbox_id": sid, "state": "paused", "filesystem": True, "memory": False,
                         "note": p["note"]}, p
            assert "CRIU" in p["note"] and "memory" in r.content[0].text, r
            assert wait_for(lambda: not pid_alive(agent), 5), "a process outlived the pause"
            assert api.info(sid)["state"] == "paused"
            listed = ok(await s.call_tool("sandbox_list", {"state": "paused"}))
            assert [x["id"] for x in listed["sandboxes"]] == [sid], listed
            text = err(await s.call_tool("run_command", {"sandbox_id": sid, "command": "true"}))
            assert text.startswith("error (paused):") and "resume" in text, text

            rs = ok(await s.call_tool("sandbox_resume", {"sandbox_id": sid}))
            assert rs["id"] == sid and rs["state"] == "running", rs
            r = ok(await s.call_tool("run_command", {"sandbox_id": sid, "command": "cat /workspace/kept; echo $WHO"}))
            assert r["stdout"] == "keptmcp\n", r
            ok(await s.call_tool("sandbox_kill", {"sandbox_id": sid}))
    run(main())


async def failure(cm):
    """The text of every exception (groups unpacked) that opening `cm` raises."""
    try:
        async with cm:
            pass
    except BaseException as e:  # the client raises inside task groups
        return "".join(traceback.format_exception(e))
    raise AssertionError("the session opened")


def test_a_bad_key_is_refused(daemon):
    text = run(failure(http_session(daemon, "sh_not_a_key")))
    assert "401 Unauthorized" in text, text
    text = run(failure(stdio_session(daemon, "sh_not_a_key")))
    assert "McpError" in text and "HTTP 401" in text and "check SAFEHOUSE_API_KEY" in text, text


def test_stdio_names_an_unreachable_daemon_and_a_missing_key(daemon):
    text = run(failure(stdio_session(daemon, daemon.admin_key, url=f"http://127.0.0.1:{free_port()}")))
    assert "McpError" in text and "cannot reach the safehouse daemon" in text and "SAFEHOUSE_URL" in text, text
    text = run(failure(stdio_session(daemon, None)))
    assert "McpError" in text and "set SAFEHOUSE_API_KEY" in text, text


class StdioProc:
    """`safehouse mcp` driven by hand: one JSON line in, one out."""

    def __init__(self, daemon, key, *args, url=None):
        p = stdio_params(daemon, key, *args, url=url)
        self.p = subprocess.Popen([p.command, *p.args], env=p.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.next_id = 0

    def send(self, msg):
        self.p.stdin.write((json.dumps(msg) + "\n").encode())
        self.p.stdin.flush()

    def request(self, method, params=None):
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        line = self.p.stdout.readline()
        assert line, self.p.stderr.read().decode(errors="replace")
        return json.loads(line)

    def initialize(self):
        r = self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                        "clientInfo": {"name": "e2e", "version": "0"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return r

    def close(self, timeout=30):
        self.p.stdin.close()
        rc = self.p.wait(timeout=timeout)
        rest = self.p.stdout.read()
        self.stderr = self.p.stderr.read().decode(errors="replace")
        self.p.stdout.close()
        self.p.stderr.close()
        return rc, rest


def test_stdio_eof_ends_the_session_and_its_sandboxes(daemon, api):
    proc = StdioProc(daemon, daemon.admin_key)
    try:
        assert proc.initialize()["result"]["protocolVersion"] == "2025-06-18"
        made = proc.request("tools/call", {"name": "sandbox_create", "arguments": {}})
        kept = proc.request("tools/call", {"name": "sandbox_create", "arguments": {"keep": True}})
        sid, kept_id = made["result"]["structuredContent"]["id"], kept["result"]["structuredContent"]["id"]
        daemon.created.append((daemon.admin_key, kept_id))
        assert proc.request("ping") == {"jsonrpc": "2.0", "id": proc.next_id, "result": {}}
        # Garbage gets a parse error, and stdout stays JSON-RPC only.
        proc.p.stdin.write(b"{not json\n")
        proc.p.stdin.flush()
        assert json.loads(proc.p.stdout.readline())["error"]["code"] == -32700
    finally:
        rc, rest = proc.close()
    assert rc == 0 and rest == b"", (rc, rest)
    assert api.info(sid)["state"] == "killed"
    assert api.info(kept_id)["state"] == "running"
    api.kill(kept_id)


def test_stdio_keep_sandboxes_flag(daemon, api):
    proc = StdioProc(daemon, daemon.admin_key, "--keep-sandboxes")
    try:
        proc.initialize()
        sid = proc.request("tools/call", {"name": "sandbox_create", "arguments": {}})["result"]["structuredContent"]["id"]
        daemon.created.append((daemon.admin_key, sid))
    finally:
        assert proc.close()[0] == 0
    assert api.info(sid)["state"] == "running"
    api.kill(sid)


def test_tool_calls_are_audited(daemon, api):
    async def main():
        async with http_session(daemon, daemon.admin_key) as s:
            r = ok(await s.call_tool("run_code", {"code": "print(1)"}))
            return r["sandbox_id"]
    sid = run(main())

    def records():
        r = api.get("/v1/audit", query={"sandbox": sid, "kind": "api"})
        assert r.status == 200, r
        return [json.loads(ln) for ln in r.body.decode().splitlines()]
    recs = wait_for(lambda: [x for x in records() if x["data"].get("tool") == "run_code"], 5)
    assert recs, records()
    d = recs[0]["data"]
    assert (d["method"], d["path"], d["status"], d["is_error"]) == ("MCP", "tools/call run_code", 200, False), d
    assert recs[0]["tenant"] == "admin" and d["session"].startswith("mcp_") and d["ms"] >= 0, recs[0]


# ---------------------------------------------------------------- raw HTTP


class Raw:
    """JSON-RPC over plain HTTP to /mcp."""

    def __init__(self, api):
        self.api = api
        self.session = None

    def post(self, body, session=True, headers=None, raw=False, key=None):
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if session and self.session:
            h["Mcp-Session-Id"] = self.session
        h.update(headers or {})
        data = body if raw else json.dumps(body).encode()
        kw = {} if key is None else {"key": key}
        return self.api.request("POST", "/mcp", data, headers=h, timeout=60, **kw)

    def initialize(self, version="2025-06-18", headers=None):
        r = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                       "params": {"protocolVersion": version, "capabilities": {},
                                  "clientInfo": {"name": "raw", "version": "0"}}}, session=False, headers=headers)
        assert r.status == 200, r
        self.session = r.headers["mcp-session-id"]
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status == 202
        return r.json()

    def call(self, method, params=None, id=1):
        r = self.post({"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}})
        assert r.status == 200, r
        return r.json()


def test_jsonrpc_errors(api):
    raw = Raw(api)
    init = raw.initialize()
    assert init["result"]["protocolVersion"] == "2025-06-18" and init["id"] == 0
    assert raw.session.startswith("mcp_")
    assert raw.call("ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}
    e = raw.call("resources/list", id="r")
    assert e["id"] == "r" and e["error"]["code"] == -32601 and "tools/call" in e["error"]["message"], e
    e = raw.call("tools/call", {"arguments": {}})
    assert e["error"]["code"] == -32602 and "name" in e["error"]["message"], e
    e = raw.call("tools/call", {"name": "rm_rf", "arguments": {}})
    assert e["error"]["code"] == -32602 and "run_code" in e["error"]["message"], e
    e = raw.call("tools/call", {"name": "run_code", "arguments": ["x"]})
    assert e["error"]["code"] == -32602, e
    r = raw.post(b'{"jsonrpc": "2.0", "id": 1, "method": ', raw=True)
    assert r.status == 400 and r.json()["error"]["code"] == -32700 and r.json()["id"] is None, r
    r = raw.post({"id": 5, "method": "ping"})
    assert r.status == 400 and r.json()["error"]["code"] == -32600 and r.json()["id"] == 5, r
    r = raw.post({"jsonrpc": "2.0", "id": 6, "method": "ping", "params": [1]})
    assert r.status == 400 and r.json()["error"]["code"] == -32602, r
    # Answers to requests we never sent, and unknown notifications, are accepted silently.
    assert raw.post({"jsonrpc": "2.0", "id": 9, "result": {}}).status == 202
    assert raw.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}).status == 202
    # 2025-06-18 has no batches.
    r = raw.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
    assert r.status == 400 and r.json()["error"]["code"] == -32600 and "batch" in r.json()["error"]["message"], r
    big = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": "write_file", "arguments": {"sandbox_id": "x", "path": "/tmp/x", "content": "x" * (2 << 20)}}}
    r = raw.post(big)
    assert r.status == 413 and r.json()["error"]["code"] == -32000 and "1048576" in r.json()["error"]["message"], r
    r = raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"Content-Type": "text/plain"})
    assert r.status == 415, r
    r = raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"MCP-Protocol-Version": "1999-01-01"})
    assert r.status == 400 and "1999-01-01" in r.json()["error"]["message"], r


def test_batches_in_2025_03_26(api):
    raw = Raw(api)
    assert raw.initialize("2025-03-26")["result"]["protocolVersion"] == "2025-03-26"
    r = raw.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                  {"jsonrpc": "2.0", "method": "notifications/initialized"},
                  {"jsonrpc": "2.0", "id": 2, "method": "nope"},
                  {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}},
                  {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}])
    assert r.status == 200, r
    out = {m["id"]: m for m in r.json()}
    assert sorted(out) == [1, 2, 3, 4], out
    assert out[1]["result"] == {} and out[2]["error"]["code"] == -32601 and out[3]["error"]["code"] == -32600
    assert len(out[4]["result"]["tools"]) == len(TOOLS)
    assert raw.post([{"jsonrpc": "2.0", "method": "notifications/initialized"}]).status == 202
    assert raw.post([]).status == 400


def test_version_negotiation(api):
    assert Raw(api).initialize("2024-11-05")["result"]["protocolVersion"] == "2024-11-05"
    assert Raw(api).initialize("2025-11-25")["result"]["protocolVersion"] == "2025-11-25"
    # A version the server does not speak: it answers with its newest and the client decides.
    assert Raw(api).initialize("1999-01-01")["result"]["protocolVersion"] == "2025-11-25"
    raw = Raw(api)
    r = raw.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, session=False)
    assert r.status == 400 and r.json()["error"]["code"] == -32602, r


def test_sessions_are_required_and_bound_to_their_tenant(api, tenant_key):
    raw = Raw(api)
    r = raw.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status == 400 and "Mcp-Session-Id" in r.json()["error"]["message"], r
    r = raw.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Mcp-Session-Id": "mcp_bogus"})
    assert r.status == 404, r
    raw.initialize()
    # Another tenant's key cannot use this session.
    r = raw.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, key=tenant_key)
    assert r.status == 404, r
    r = api.request("DELETE", "/mcp", headers={"Mcp-Session-Id": raw.session}, key=tenant_key)
    assert r.status == 404, r
    assert raw.call("ping")["result"] == {}
    # No key at all, or a wrong one: refused before MCP.
    assert raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, key="sh_wrong").status == 401
    # No server stream.
    assert api.get("/mcp", headers={"Mcp-Session-Id": raw.session}).status == 405
    # Ending the session.
    assert api.request("DELETE", "/mcp", headers={"Mcp-Session-Id": raw.session}).status == 204
    assert raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status == 404
    assert api.request("DELETE", "/mcp", headers={"Mcp-Session-Id": raw.session}).status == 404


def test_foreign_origin_is_refused(api):
    raw = Raw(api)
    r = raw.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}},
                 session=False, headers={"Origin": "https://evil.example"})
    assert r.status == 403, r
    assert "mcp-session-id" not in r.headers


def test_session_end_kills_its_sandboxes_unless_kept(api):
    def make(raw, **args):
        r = raw.call("tools/call", {"name": "sandbox_create", "arguments": args})
        assert r["result"]["isError"] is False, r
        sid = r["result"]["structuredContent"]["id"]
        api.daemon.created.append((api.key, sid))
        return sid

    raw = Raw(api)
    raw.initialize()
    gone, kept = make(raw), make(raw, keep=True)
    assert api.request("DELETE", "/mcp", headers={"Mcp-Session-Id": raw.session}).status == 204
    assert api.info(gone)["state"] == "killed"
    assert api.info(kept)["state"] == "running"
    raw2 = Raw(api)
    raw2.initialize(headers={"Safehouse-Keep-Sandboxes": "true"})
    also_kept = make(raw2)
    assert api.request("DELETE", "/mcp", headers={"Mcp-Session-Id": raw2.session}).status == 204
    assert api.info(also_kept)["state"] == "running"
    api.kill(kept)
    api.kill(also_kept)


def test_stdio_reopens_the_session_after_a_daemon_restart(own_daemon):
    d = own_daemon.start()
    api = d.admin()
    proc = StdioProc(d, d.admin_key)
    try:
        proc.initialize()
        sid = proc.request("tools/call", {"name": "sandbox_create", "arguments": {"keep": True}})
        sid = sid["result"]["structuredContent"]["id"]
        d.created.append((d.admin_key, sid))
        d.stop()
        d.start()  # same port and data dir: the sandbox is re-attached, the session is forgotten
        r = proc.request("tools/call", {"name": "run_command", "arguments": {"sandbox_id": sid, "command": "echo back"}})
        assert r["result"]["structuredContent"]["stdout"] == "back\n", r
    finally:
        rc, _ = proc.close()
    assert rc == 0
    assert "the daemon forgot the session; opening a new one" in proc.stderr, proc.stderr
    assert api.info(sid)["state"] == "running"  # kept
    api.kill(sid)


def test_tool_schemas_are_valid_and_match_what_the_tools_take(daemon):
    import jsonschema  # a dependency of mcp

    async def main():
        async with http_session(daemon, daemon.admin_key) as s:
            return {t.name: t for t in (await s.list_tools()).tools}
    tools = run(main())
    for t in tools.values():
        jsonschema.Draft202012Validator.check_schema(t.inputSchema)
        jsonschema.Draft202012Validator.check_schema(t.outputSchema)
    good = {"run_command": {"sandbox_id": "sb_x", "command": ["ls", "-l"], "timeout_s": 1.5},
            "run_code": {"code": "print(1)", "language": "bash"},
            "sandbox_create": {"policy": "version = 1\n", "keep": True},
            "write_file": {"sandbox_id": "sb_x", "path": "/a", "content": "", "encoding": "base64"}}
    for name, args in good.items():
        jsonschema.validate(args, tools[name].inputSchema)
    bad = {"run_command": {"sandbox_id": "sb_x", "cmd": "ls"}, "run_code": {"code": "x", "language": "cobol"},
           "read_file": {"sandbox_id": "sb_x"}, "list_files": {"sandbox_id": "sb_x", "depth": 17}}
    for name, args in bad.items():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(args, tools[name].inputSchema)


def test_stdio_forwards_batches_of_2025_03_26(daemon):
    proc = StdioProc(daemon, daemon.admin_key)
    try:
        r = proc.request("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                                        "clientInfo": {"name": "e2e", "version": "0"}})
        assert r["result"]["protocolVersion"] == "2025-03-26", r
        proc.send([{"jsonrpc": "2.0", "method": "notifications/initialized"},
                   {"jsonrpc": "2.0", "id": "a", "method": "ping"},
                   {"jsonrpc": "2.0", "id": "b", "method": "tools/list"}])
        answers = json.loads(proc.p.stdout.readline())
        assert [a["id"] for a in answers] == ["a", "b"] and answers[0]["result"] == {}, answers
    finally:
        assert proc.close()[0] == 0

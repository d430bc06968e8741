"""safehouse.integrations.langchain: the tools invoked directly (no model), against a real
sandbox. Output carries exit code and stderr; refusals say what refused and why."""
import pytest

pytest.importorskip("safehouse")
pytest.importorskip("langchain_core")
from langchain_core.tools import BaseTool  # noqa: E402

from safehouse import Policy, Sandbox  # noqa: E402
from safehouse.integrations.langchain import SafehouseToolkit  # noqa: E402


def tools_of(sbx):
    return {t.name: t for t in SafehouseToolkit(sandbox=sbx).get_tools()}


def test_toolkit_shape(sbx):
    tools = tools_of(sbx)
    assert set(tools) == {"safehouse_shell", "safehouse_python", "safehouse_read_file", "safehouse_write_file"}
    assert all(isinstance(t, BaseTool) and t.description for t in tools.values())
    assert set(tools["safehouse_shell"].args) == {"command", "timeout"}
    assert set(tools["safehouse_write_file"].args) == {"path", "content"}
    assert tools["safehouse_shell"].tool_call_schema.model_json_schema()["required"] == ["command"]
    assert [t.name for t in SafehouseToolkit(sbx).get_tools()] == [t.name for t in tools.values()]


def test_shell_and_python_tools(sbx):
    tools = tools_of(sbx)
    out = tools["safehouse_shell"].invoke({"command": "echo out; echo err >&2; exit 4"})
    assert out.startswith("exit code: 4") and "stdout:\nout\n" in out and "stderr:\nerr\n" in out
    out = tools["safehouse_python"].invoke({"code": "print(sum(range(5)))"})
    assert out.startswith("exit code: 0") and "stdout:\n10\n" in out and "stderr:\n(empty)" in out
    out = tools["safehouse_python"].invoke({"code": "1/0"})
    assert out.startswith("exit code: 1") and "ZeroDivisionError" in out
    out = tools["safehouse_shell"].invoke({"command": "sleep 5", "timeout": 0.3})
    assert "killed by signal 9" in out and "denied: the command was killed when its time limit ran out" in out
    # a tool call in the shape a model produces
    msg = tools["safehouse_shell"].invoke({"name": "safehouse_shell", "args": {"command": "echo via-call"},
                                           "id": "call_1", "type": "tool_call"})
    assert "via-call" in msg.content and msg.tool_call_id == "call_1"


def test_file_tools_round_trip_and_errors(sbx):
    tools = tools_of(sbx)
    assert tools["safehouse_write_file"].invoke({"path": "/workspace/n/notes.md", "content": "héllo"}) == \
        "wrote 6 bytes to /workspace/n/notes.md"
    assert tools["safehouse_read_file"].invoke({"path": "/workspace/n/notes.md"}) == "héllo"
    assert "héllo" in tools["safehouse_shell"].invoke({"command": "cat /workspace/n/notes.md"})
    out = tools["safehouse_read_file"].invoke({"path": "/workspace/missing"})
    assert out == "error (not_found): reading /workspace/missing failed: /workspace/missing: no such file or directory"
    assert tools["safehouse_write_file"].invoke({"path": "rel.txt", "content": "x"}) == \
        "wrote 1 bytes to /workspace/rel.txt"  # relative to /workspace
    out = tools["safehouse_write_file"].invoke({"path": "/workspace/n", "content": "x"})
    assert out.startswith("error (is_a_directory): writing /workspace/n failed:"), out


def test_denials_explain_themselves(daemon):
    policy = Policy().allow_tools("/bin/sh", "/usr/bin/python3*").hidden("/etc/hostname")
    with Sandbox.create(policy=policy, timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        tools = tools_of(s)
        out = tools["safehouse_shell"].invoke({"command": "/bin/ls /"})
        assert out.startswith("exit code: 126") and "denied: the sandbox's policy does not allow running" in out
        assert "tools.allow" in out and "Permission denied" in out
        out = tools["safehouse_read_file"].invoke({"path": "/etc/hostname"})
        assert out.startswith("denied: reading /etc/hostname was refused by the sandbox's policy:"), out
        assert "permission denied" in out
        out = tools["safehouse_write_file"].invoke({"path": "/usr/bin/evil", "content": "x"})
        assert out.startswith("denied: writing /usr/bin/evil was refused") and "read-only file system" in out, out
        code = "import urllib.request as u; u.urlopen('http://example.com', timeout=3)"
        out = tools["safehouse_python"].invoke({"code": code})
        assert out.startswith("exit code: 1") and "denied: the sandbox may have no network" in out, out
    with Sandbox.create(timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        tools = tools_of(s)
        s.kill()
        out = tools["safehouse_shell"].invoke({"command": "echo x"})
        assert out.startswith("error: running `echo x` failed, the sandbox is not running:") and "killed" in out


def test_tools_async_with_async_and_sync_sandboxes(daemon, sbx):
    import asyncio

    from safehouse import AsyncSandbox

    async def main():
        async with await AsyncSandbox.create(timeout=60) as s:
            daemon.created.append((daemon.admin_key, s.id))
            tools = {t.name: t for t in SafehouseToolkit(s).get_tools()}
            out = await tools["safehouse_shell"].ainvoke({"command": "echo async; exit 2"})
            assert out.startswith("exit code: 2") and "stdout:\nasync\n" in out
            assert (await tools["safehouse_write_file"].ainvoke({"path": "/workspace/a.txt", "content": "abc"})
                    == "wrote 3 bytes to /workspace/a.txt")
            assert await tools["safehouse_read_file"].ainvoke({"path": "/workspace/a.txt"}) == "abc"
            out = await tools["safehouse_python"].ainvoke({"code": "print(open('/workspace/a.txt').read()[::-1])"})
            assert "stdout:\ncba\n" in out
            with pytest.raises(TypeError, match="ainvoke"):
                tools["safehouse_shell"].invoke({"command": "true"})
        # a sync Sandbox's tools work under ainvoke too (in a worker thread)
        sync_tools = tools_of(sbx)
        out = await sync_tools["safehouse_shell"].ainvoke({"command": "echo from-thread"})
        assert "stdout:\nfrom-thread\n" in out
    asyncio.run(asyncio.wait_for(main(), 60))


def test_network_denials_are_named(daemon):
    policy = Policy().allow_hosts("pypi.org:443")
    with Sandbox.create(policy=policy, timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        tools = tools_of(s)
        out = tools["safehouse_shell"].invoke({"command": "curl -sS -m 5 https://example.org/"})
        assert "denied: the network policy refused example.org:443 (rule: default deny;" in out, out
        assert "no network.allow entry matches example.org:443" in out
        code = "import urllib.request as u; u.urlopen('http://example.net/', timeout=5)"
        out = tools["safehouse_python"].invoke({"code": code})
        assert out.startswith("exit code: 1") and "refused example.net:80" in out, out
        assert "example.org" not in out  # only this run's refusals
        out = tools["safehouse_shell"].invoke({"command": "exit 1"})
        assert "denied" not in out


@pytest.mark.unit
def test_net_denials_pick_the_run_between_its_start_and_exit():
    from safehouse import SandboxEvent
    from safehouse.integrations.langchain import net_denials

    def ev(kind, **data):
        return SandboxEvent(sandbox="sb_x", seq=None, time=None, kind=kind, data=data)

    denied = lambda t: ev("net.denied", target=t, rule="default deny", reason=f"no entry matches {t}")  # noqa: E731
    events = [ev("exec.started", argv=["/bin/sh", "-c", "curl a"], pid=5), denied("a:443"), ev("exec.exited", pid=5),
              ev("exec.started", argv=["/bin/sh", "-c", "curl b"], pid=6), denied("b:80"), denied("b:80"),
              ev("exec.exited", pid=6), denied("later:1")]
    line = "the network policy refused {0} (rule: default deny; no entry matches {0})"
    assert net_denials(events, "curl b") == [line.format("b:80")]
    assert net_denials(events, "curl a") == [line.format("a:443")]
    assert net_denials(events, "never ran") == []

"""The sync SDK's newer surface against a real daemon: run_code, PTY, directory watches,
metrics, the event streams, freeze/thaw, kill-all, keys, audit, the error classes of every
code the daemon emits, and the policy builder's network/tools/control sections."""
import hashlib
import io
import os
import re
import threading
import time
from pathlib import Path

import pytest

safehouse = pytest.importorskip("safehouse")
from safehouse import (ERROR_CODES, Admin, AuthenticationError, FilesystemEventType, ForbiddenError,  # noqa: E402
                       InvalidRequestError, NotFoundError, Policy, PtySize, Sandbox,
                       SandboxFrozenError, SandboxNotRunningError)
from safehouse import RateLimitError, TenantQuotaError  # noqa: E402
from safehouse.exceptions import error_from_response  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- run_code


def test_run_code_python_shell_and_errors(sbx):
    """run_code is the code interpreter (tests/interp has the rest): an Execution."""
    r = sbx.run_code("import sys; print(sum(range(10))); print('warn', file=sys.stderr)")
    assert (r.stdout, r.stderr, r.error) == ("45\n", "warn\n", None)
    r = sbx.run_code("raise ValueError('boom')")  # an error in the code is a result, not an exception
    assert (r.error.name, r.error.value) == ("ValueError", "boom") and "ValueError" in r.error.traceback
    assert sbx.run_code("echo $((6*7))", language="sh").stdout == "42\n"
    assert sbx.run_code("echo ${BASH_VERSION:+bash}", language="bash").stdout == "bash\n"
    streamed = []
    r = sbx.run_code("print('a'); print('b')", on_stdout=lambda m: streamed.append(m.line))
    assert "".join(streamed) == "a\nb\n" == r.stdout
    with pytest.raises(InvalidRequestError, match="cobol"):
        sbx.run_code("x", language="cobol")


# ---------------------------------------------------------------- pty


def test_pty_shell_echo_resize_exit(sbx):
    out = bytearray()
    lock = threading.Lock()

    def on_data(b):
        with lock:
            out.extend(b)

    term = sbx.pty.create(PtySize(rows=24, cols=80), on_data=on_data, cwd="/tmp", envs={"PS1": "$ "},
                          cmd=["/bin/sh"])
    assert any(p.pid == term.pid and p.pty for p in sbx.commands.list())
    waiter = threading.Thread(target=lambda: term.wait(timeout=30, raise_on_error=False), daemon=True)
    waiter.start()
    sbx.pty.send_stdin(term.pid, b"echo hi\n")
    wait_for(lambda: b"hi\r\n" in out, what="echo output")  # a tty: \r\n line ends
    sbx.pty.send_stdin(term.pid, "stty size; pwd; tty; echo $TERM\n")
    wait_for(lambda: b"24 80" in out, what="stty size 24 80")
    term.resize(PtySize(rows=50, cols=132))
    sbx.pty.send_stdin(term.pid, b"stty size\n")
    wait_for(lambda: b"50 132" in out, what="resized 50 132")
    sbx.pty.resize(term.pid, PtySize(rows=30, cols=100))  # by pid, over its own connection
    sbx.pty.send_stdin(term.pid, b"stty size\n")
    wait_for(lambda: b"30 100" in out, what="resized 30 100")
    sbx.pty.send_stdin(term.pid, b"exit 7\n")
    waiter.join(30)
    assert not waiter.is_alive()
    assert term.exit_code == 7
    text = out.decode(errors="replace")
    assert "/tmp" in text and "/dev/pts/" in text and "xterm-256color" in text and not term.errors


def test_pty_iterate_kill_and_timeout(sbx):
    term = sbx.pty.create(cmd=["/bin/sh", "-c", "echo ready; sleep 60"])
    first = next(iter(term))
    assert first[0] is None and first[1] is None and b"ready" in first[2]
    assert sbx.pty.kill(term.pid) is True
    r = term.wait(timeout=10, raise_on_error=False)
    assert r.signal == 9
    # timeout= kills it from the client side
    t0 = time.monotonic()
    term = sbx.pty.create(cmd=["sleep", "60"], timeout=0.5)
    assert term.wait(timeout=15, raise_on_error=False).signal == 9 and time.monotonic() - t0 < 10
    # a frame the daemon refuses (a zero-row terminal) is recorded with its message
    term = sbx.pty.create(cmd=["sleep", "60"])
    term.resize(PtySize(0, 10))
    term.kill()
    term.wait(timeout=10, raise_on_error=False)
    assert term.errors == ["invalid_request: rows and cols must be at least 1"]


# ---------------------------------------------------------------- watch


def test_watch_dir_callback_sees_command_writes(sbx):
    sbx.files.make_dir("/workspace/w")
    seen = []
    exits = []
    handle = sbx.files.watch_dir("/workspace/w", on_event=seen.append, on_exit=exits.append)
    sbx.commands.run("echo data > /workspace/w/from-cmd.txt")
    wait_for(lambda: any(e.name == "from-cmd.txt" and e.type == FilesystemEventType.CREATE for e in seen),
             what="create event")
    sbx.commands.run("rm /workspace/w/from-cmd.txt")
    wait_for(lambda: any(e.type == FilesystemEventType.REMOVE for e in seen), what="delete event")
    assert all(e.path == "/workspace/w/" + e.name for e in seen)
    handle.stop()
    assert exits == [None]  # stopped, not failed
    n = len(seen)
    sbx.commands.run("touch /workspace/w/after-stop")
    time.sleep(0.5)
    assert len(seen) == n


def test_watch_dir_iterator_recursive_and_errors(sbx):
    sbx.files.make_dir("/workspace/r/deep")
    with sbx.files.watch_dir("/workspace/r", recursive=True) as handle:
        sbx.files.write("/workspace/r/deep/x.txt", "x")
        ev = next(iter(handle))
        assert ev.path == "/workspace/r/deep/x.txt" and ev.name == "deep/x.txt"
        time.sleep(0.3)
        assert all(e.path.startswith("/workspace/r/") for e in handle.get_new_events())
    with pytest.raises(NotFoundError):
        sbx.files.watch_dir("/workspace/no-such-dir")


# ---------------------------------------------------------------- metrics, events


def test_metrics_with_history(sbx):
    sbx.commands.run("head -c 3000000 /dev/zero > /dev/shm/blob")
    m = sbx.get_metrics()
    assert m.state == "running" and m.memory_bytes > 0 and m.pids >= 1 and m.cpu_usage_ns > 0
    assert m.violations == 0 and m.disk_bytes >= 3_000_000
    wait_for(lambda: len(sbx.get_metrics().history) >= 2, timeout=5, what="two samples")
    h = sbx.get_metrics().history
    assert h[0].t <= h[-1].t and h[-1].memory_bytes > 0 and h[-1].timestamp.year >= 2024


def test_events_iterator_sees_exec_and_end(daemon, tag):
    s = Sandbox.create(timeout=60)
    daemon.created.append((daemon.admin_key, s.id))
    marker = f"marker-{tag}"
    with s.events(timeout=30) as events:
        s.commands.run(f"echo {marker} > /dev/null")
        for ev in events:
            assert ev.sandbox == s.id
            if ev.kind == "proc.exec" and marker in str(ev.data):
                break
    # the replay without follow ends by itself, in order, from sandbox.created
    kinds = [(e.seq, e.kind) for e in s.events(follow=False, timeout=10)]
    assert kinds[0] == (1, "sandbox.created") and [k for k, _ in kinds] == sorted(k for k, _ in kinds)
    since = kinds[-1][0]
    # following: the stream ends after the sandbox's terminal event
    live = []
    t = threading.Thread(target=lambda: live.extend(s.events(since_seq=since, timeout=30)), daemon=True)
    t.start()
    time.sleep(0.3)
    s.kill()
    t.join(30)
    assert not t.is_alive() and live and live[-1].kind == "sandbox.killed"
    assert all(e.seq > since for e in live)
    s.close()


def test_all_events_stream(daemon, tag):
    with Sandbox.all_events(replay=False, timeout=30) as events:
        s = Sandbox.create(timeout=60, metadata={"t": tag})
        daemon.created.append((daemon.admin_key, s.id))
        for ev in events:
            if ev.sandbox == s.id and ev.kind == "sandbox.created":
                break
    s.kill()
    s.close()


# ---------------------------------------------------------------- freeze, kill-all, keys, audit


def test_freeze_thaw(sbx):
    h = sbx.commands.run("while :; do date +%s%N > /workspace/tick; sleep 0.05; done", background=True)
    time.sleep(0.3)
    assert sbx.freeze().state == "frozen" and sbx.get_info().state == "frozen"
    with pytest.raises(SandboxFrozenError) as e:
        sbx.commands.run("true")
    assert isinstance(e.value, SandboxNotRunningError) and e.value.code == "frozen" and "thaw" in str(e.value)
    before = sbx.files.read("/workspace/tick")  # files still work while frozen
    time.sleep(0.4)
    assert sbx.files.read("/workspace/tick") == before
    assert sbx.freeze().state == "frozen"  # idempotent
    assert sbx.thaw().state == "running"
    wait_for(lambda: sbx.files.read("/workspace/tick") != before, what="ticks after thaw")
    h.kill()
    assert sbx.freeze().state == "frozen" and sbx.thaw().state == "running"


def test_keys_tenant_and_kill_all(daemon, tag):
    admin = Admin()
    key = admin.create_key(f"t{tag}", name="sdk-test")
    assert key.key and key.key.startswith("sh_") and key.tenant == f"t{tag}" and key.name == "sdk-test"
    listed = {k.id: k for k in admin.list_keys()}
    assert key.id in listed and listed[key.id].key is None and listed[key.id].revoked_at is None
    # a tenant key: no key management, and kill-all stops only its own sandboxes
    with pytest.raises(ForbiddenError) as e:
        Admin(api_key=key.key).list_keys()
    assert e.value.status == 403 and "admin" in str(e.value)
    mine = [Sandbox.create(timeout=60, api_key=key.key) for _ in range(2)]
    for s in mine:
        daemon.created.append((key.key, s.id))
    bystander = Sandbox.create(timeout=60)
    daemon.created.append((daemon.admin_key, bystander.id))
    res = Sandbox.kill_all(api_key=key.key)
    assert res.killed == 2 and res.ms >= 0
    assert all(s.get_info().state == "killed" for s in mine)
    assert bystander.is_running()
    bystander.kill()
    # revoked: the key stops working at once
    admin.revoke_key(key.id)
    with pytest.raises(AuthenticationError):
        Sandbox.list(api_key=key.key)
    with pytest.raises(NotFoundError):
        admin.revoke_key("key_" + "z" * 16)
    admin.close()


def test_audit_export(daemon, sbx):
    sbx.commands.run("true")
    with Admin() as admin:
        records = admin.audit(sandbox=sbx.id, kind=["api"], limit=50)
        assert records and all(r.get("kind") == "api" for r in records)
        assert any("/exec" in str(r) for r in records)
        assert len(admin.audit(sandbox=sbx.id, limit=1)) == 1
        with pytest.raises(InvalidRequestError):
            admin.audit(since="yesterday")


# ---------------------------------------------------------------- errors


def daemon_error_codes():
    """Every `"code"` literal the daemon's API can answer, read from its sources."""
    codes = set()
    daemon_crates = ("manager", "hostfs", "http", "api", "mcp", "e2b", "daemon")
    for rs in (rs for c in daemon_crates for rs in (ROOT / "crates" / c / "src").rglob("*.rs")):
        text = rs.read_text()
        codes |= set(re.findall(r'StatusCode::[A-Z_]+,\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'ApiError::new\(\s*StatusCode::[A-Z_]+,\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'=> "([a-z_]+)",', text)) if rs.name == "error.rs" else set()
    return codes


@pytest.mark.unit
def test_every_daemon_error_code_has_a_class():
    codes = daemon_error_codes()
    assert {"not_found", "frozen", "capacity", "port_closed", "already_exists", "audit_off"} <= codes
    missing = codes - set(ERROR_CODES)
    assert not missing, f"codes the daemon emits without an SDK class: {sorted(missing)}"
    for code, cls in ERROR_CODES.items():
        e = error_from_response(400, f'{{"error":{{"code":"{code}","message":"m {code}"}}}}'.encode())
        assert type(e) is cls and e.code == code and str(e) == f"m {code}"


def test_over_a_tenant_quota_is_tenant_quota_error(daemon):
    with Admin() as admin:
        key = admin.create_key("sdk-quota")
    first = Sandbox.create(timeout=60, api_key=key.key)
    daemon.created.append((key.key, first.id))
    try:
        with pytest.raises(TenantQuotaError) as e:
            Sandbox.create(timeout=60, api_key=key.key)
        assert isinstance(e.value, RateLimitError), type(e.value)
        assert (e.value.status, e.value.code) == (429, "tenant_quota")
        assert str(e.value).startswith("tenant sdk-quota has 1 of its 1 sandboxes running (quota sandboxes=1)"), e.value
        # What the tenant holds, as it sees it and as the admin sees it.
        with Admin(api_key=key.key) as mine:
            q = mine.quota()
        assert (q["tenant"], q["usage"]["sandboxes"], q["limits"]["sandboxes"]) == ("sdk-quota", 1, 1), q
        with Admin() as admin:
            assert admin.quota("sdk-quota")["usage"]["sandboxes"] == 1
        # Outside control: the admin tenant creates meanwhile.
        other = Sandbox.create(timeout=60)
        daemon.created.append((daemon.admin_key, other.id))
        other.kill()
    finally:
        first.kill()
    # The slot is free again.
    Sandbox.create(timeout=60, api_key=key.key).kill()


def test_unknown_sandbox_and_bad_key(daemon):
    with pytest.raises(NotFoundError) as e:
        Sandbox.connect("sb_" + "c" * 26)
    assert str(e.value) == "no such sandbox; check the id with Sandbox.list()"
    with pytest.raises(AuthenticationError) as e:
        Sandbox.create(api_key="sh_" + "q" * 32)
    assert e.value.status == 401 and e.value.code == "unauthorized" and str(e.value)


# ---------------------------------------------------------------- policy builder


@pytest.mark.unit
def test_policy_builder_network_tools_control():
    p = (Policy().memory("256MiB").allow_hosts("pypi.org:443", "*.github.com:443").egress_budget("1GiB")
         .allow_tools("/bin/sh", "/usr/bin/python3*").tool_limits("/usr/bin/python3*", timeout="120s", memory="256MiB")
         .kill_after_violations(20).cpu_budget("60s"))
    assert p.to_dict() == {
        "version": 1, "limits": {"memory": "256MiB"},
        "network": {"allow": ["pypi.org:443", "*.github.com:443"], "egress_bytes": "1GiB"},
        "tools": {"allow": ["/bin/sh", "/usr/bin/python3*"],
                  "limits": {"/usr/bin/python3*": {"timeout": "120s", "memory": "256MiB"}}},
        "control": {"kill_after_violations": 20, "cpu_budget": "60s"},
    }
    assert Policy().network(["*"], egress_bytes=1000).to_dict()["network"] == {"allow": ["*"], "egress_bytes": 1000}
    with pytest.raises(ValueError):
        Policy().tool_limits("/bin/sh")


def test_policy_tools_and_control_enforced(daemon):
    policy = Policy().memory("256MiB").allow_tools("/bin/sh", "/bin/echo").kill_after_violations(1000)
    with Sandbox.create(policy=policy, timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        assert s.commands.run("echo allowed").stdout == "allowed\n"
        r = s.commands.run("/bin/ls /", raise_on_error=False)
        assert r.exit_code == 126 and "Permission denied" in r.stderr
    with pytest.raises(InvalidRequestError) as e:
        Sandbox.create(policy=Policy().kill_after_violations(0))
    assert "kill_after_violations" in str(e.value)
    with pytest.raises(InvalidRequestError) as e:
        Sandbox.create(policy=Policy().allow_tools("/bin/sh").tool_limits("/bin/bash", memory="64MiB"))
    assert "tools.allow" in str(e.value)


def test_cpu_budget_stops_the_sandbox(daemon):
    with Sandbox.create(policy=Policy().cpu_budget("1s"), timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        s.commands.run("while :; do :; done", background=True)
        wait_for(lambda: s.get_info().state == "killed", timeout=20, what="cpu budget kill")
        assert "cpu_budget" in (s.get_info().error or "")


# ---------------------------------------------------------------- large files


def test_files_64mib_streamed_both_ways(sbx, tmp_path):
    src = tmp_path / "up.bin"
    with open(src, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    with open(src, "rb") as f:
        assert sbx.files.write("/workspace/big.bin", f).size == 64 * MiB
    assert sbx.commands.run("sha256sum /workspace/big.bin").stdout.split()[0] == want
    h = hashlib.sha256()
    n = 0
    for chunk in sbx.files.read("/workspace/big.bin", format="stream"):
        assert len(chunk) <= 4 * MiB  # streamed, never the whole file at once
        h.update(chunk)
        n += len(chunk)
    assert (n, h.hexdigest()) == (64 * MiB, want)
    sbx.files.remove("/workspace/big.bin")


def test_event_stream_closed_from_another_thread(sbx):
    stream = sbx.events(timeout=30)
    got, errors = [], []

    def consume():
        try:
            for ev in stream:
                got.append(ev)
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    wait_for(lambda: got, what="the replay")
    t0 = time.monotonic()
    stream.close()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 5 and errors == []
    assert got[0].kind == "sandbox.created"


@pytest.mark.unit
def test_sse_parser():
    from safehouse._sse import iter_sse

    lines = [": keep-alive", "", "id: sb_x:1", "event: fs", "data: {\"a\":", "data: 1}", "",
             "data: plain\r", "", "event: lagged", "data: {\"missed\": 3}", ""]
    assert list(iter_sse(iter(lines))) == [("fs", "{\"a\":\n1}"), ("message", "plain"), ("lagged", "{\"missed\": 3}")]
    from safehouse import SandboxEvent

    ev = SandboxEvent.from_sse("lagged", "{\"missed\": 3}")
    assert ev.kind == "lagged" and ev.data == {"missed": 3} and ev.seq is None


def test_pty_connect_replays_output(sbx):
    term = sbx.pty.create(cmd=["/bin/sh", "-c", "echo early-output; read x; echo got-$x"])
    term.disconnect()
    again = sbx.pty.connect(term.pid)
    sbx.pty.send_stdin(term.pid, b"abc\n")
    r = again.wait(timeout=10)
    assert b"early-output" in r.stdout.encode() and "got-abc" in r.stdout and r.exit_code == 0
    with pytest.raises(NotFoundError):
        sbx.pty.connect(999999)


# ---------------------------------------------------------------- port proxy, health, prometheus


def test_request_port_reaches_a_service_inside(sbx):
    from safehouse import ForbiddenError, PortError

    with pytest.raises(PortError) as e:
        sbx.request_port(8123)
    assert e.value.code == "port_closed" and "nothing listens on port 8123" in str(e.value)
    sbx.files.write("/workspace/site/index.html", "<h1>inside</h1>")
    sbx.commands.run("cd /workspace/site && exec python3 -m http.server 8123 --bind 127.0.0.1", background=True)
    wait_for(lambda: _port_up(sbx, 8123), timeout=15, what="http.server")
    r = sbx.request_port(8123, "GET", "/index.html")
    assert r.status_code == 200 and r.text == "<h1>inside</h1>"
    r = sbx.request_port(8123, "GET", "/missing")  # the service's own 404 is a response, not an error
    assert r.status_code == 404 and "File not found" in r.text
    assert sbx.port_url(8123, "/a?b=1") == f"{os.environ['SAFEHOUSE_URL']}/v1/sandboxes/{sbx.id}/ports/8123/a?b=1"
    with pytest.raises(ForbiddenError) as e:
        sbx.request_port(3128)
    assert "gateway" in str(e.value)
    with pytest.raises(ValueError):
        sbx.port_url(70000)


def _port_up(sbx, port):
    from safehouse import PortError

    try:
        sbx.request_port(port, timeout=5)
        return True
    except PortError:
        return False


def test_admin_health_and_prometheus(sbx):
    with Admin() as admin:
        assert admin.health() is True
        assert "# TYPE safehouse_sandboxes gauge" in admin.prometheus()
        wait_for(lambda: f'id="{sbx.id}"' in admin.prometheus(), what="the sandbox's series (sampled each second)")
    assert Admin(url="http://127.0.0.1:1").health() is False


#: Routes the SDK does not wrap, and why.
NOT_WRAPPED = {
    ("GET", "/v1/openapi.json"): "the API's own description, for tools rather than programs",
    ("GET", "/v1/sandboxes/{id}/execs"): "a placeholder the event stream (proc.exec) replaces",
    ("POST", "/mcp"): "the MCP transport, for MCP clients (the `mcp` package), not the SDK",
    ("DELETE", "/mcp"): "the MCP transport, for MCP clients (the `mcp` package), not the SDK",
    ("POST", "/v1/tickets"): "single-use WebSocket tickets for browsers, which cannot set headers on a WebSocket",
    ("GET", "/v1/metrics"): "the fleet's metric stream for the console's sparklines; programs use get_metrics",
}


@pytest.mark.unit
def test_every_route_has_an_sdk_call():
    """Each path of the daemon's ROUTES table appears in the SDK (its literal after
    /v1/sandboxes/{id}), so a new route without an SDK call fails here; what each call does is
    the business of the other tests."""
    table = (ROOT / "crates" / "api" / "src" / "lib.rs").read_text()
    routes = re.findall(r'\(\s*"([A-Z]+)",\s*"(/[^"]*)"\s*\)', table.split("pub const ROUTES")[1].split("];")[0])
    assert len(routes) > 30
    sdk = "\n".join(p.read_text() for p in (ROOT / "sdk" / "python" / "src" / "safehouse").rglob("*.py"))
    missing = []
    for method, path in routes:
        if (method, path) in NOT_WRAPPED:
            continue
        if path.startswith("/v1/sandboxes/{id}/ports/"):
            literal = "/ports/"
        elif path.startswith("/v1/sandboxes/{id}"):
            literal = path[len("/v1/sandboxes/{id}"):].split("/{")[0]
            literal = literal or "sb_path(self.id)"
        else:
            literal = path.split("/{")[0]
        if literal not in sdk:
            missing.append((method, path))
    assert not missing, f"routes without an SDK call: {missing}"


def test_class_level_calls_by_id_like_e2b(daemon):
    s = Sandbox.create(timeout=60)
    daemon.created.append((daemon.admin_key, s.id))
    info = Sandbox.get_info(s.id)
    assert info.id == s.id and info.state == "running"
    later = Sandbox.set_timeout(s.id, 900)
    assert (later.expires_at - info.expires_at).total_seconds() > 700
    assert Sandbox.kill(s.id) is True
    assert s.get_info().state == "killed"  # the instance forms are unchanged
    assert Sandbox.kill("sb_" + "d" * 26) is False
    with pytest.raises(NotFoundError):
        Sandbox.get_info("sb_" + "d" * 26)
    s.close()


def test_write_files_like_e2b(sbx):
    from safehouse import WriteEntry

    infos = sbx.files.write_files([WriteEntry("/workspace/m/a.txt", "A"), WriteEntry("/workspace/m/b.bin", b"\0B"),
                                   WriteEntry("/workspace/m/c.txt", io.BytesIO(b"CCC"))])
    assert [(i.path, i.size) for i in infos] == [("/workspace/m/a.txt", 1), ("/workspace/m/b.bin", 2),
                                                 ("/workspace/m/c.txt", 3)]
    assert sbx.commands.run("cat /workspace/m/a.txt /workspace/m/c.txt").stdout == "ACCC"


def test_the_key_is_not_in_reprs(daemon, sbx):
    key = os.environ["SAFEHOUSE_API_KEY"]
    with Admin() as admin:
        made = admin.create_key("reprs")
        texts = [repr(sbx), repr(sbx._http.config), repr(made), repr(admin.list_keys()), repr(sbx.get_info())]
        assert not any(key in t or made.key in t for t in texts)
        admin.revoke_key(made.id)


def test_fleet_freeze_thaw_whoami_and_policy_explain(daemon, tag):
    """The console's routes through the SDK, as a tenant of its own so that freezing its fleet
    touches no other test's sandbox."""
    from safehouse import FleetResult, Policy, SandboxFrozenError

    with Admin() as root:
        made = root.create_key(f"fleet-{tag}")
        assert root.whoami()["admin"] is True
        report = root.verify_audit()  # the session daemon keeps an audit log
        assert report["ok"] is True and report["records"] > 0
    try:
        with Admin(api_key=made.key) as admin:
            assert admin.whoami() == {"tenant": f"fleet-{tag}", "key_id": made.id, "admin": False}
            with pytest.raises(ForbiddenError):
                admin.verify_audit()
            s = Sandbox.create(api_key=made.key, timeout=60, policy=Policy().allow_hosts("pypi.org:443"))
            daemon.created.append((made.key, s.id))
            assert s.get_policy()["network"]["allow"] == ["pypi.org:443"]
            allowed = s.explain(net="pypi.org:443")
            denied = s.explain(net="example.com:443")
            assert allowed["allowed"] is True and denied["allowed"] is False and denied["hint"]
            with pytest.raises(ValueError):
                s.explain(net="a:1", exec="/bin/sh")
            frozen = admin.freeze_all()
            assert isinstance(frozen, FleetResult) and (frozen.count, frozen.failed) == (1, [])
            assert s.get_info().state == "frozen"
            with pytest.raises(SandboxFrozenError):
                s.commands.run("true")
            assert admin.thaw_all().count == 1
            assert s.commands.run("echo thawed").stdout == "thawed\n"
            s.kill()
    finally:
        with Admin() as root:
            root.revoke_key(made.id)

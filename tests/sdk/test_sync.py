"""The synchronous SDK against a real daemon: every method of Sandbox, commands and files."""
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time

import pytest

safehouse = pytest.importorskip("safehouse")
from safehouse import (AuthenticationError, CommandExitException, CommandResult, EntryInfo,  # noqa: E402
                       FileType, InvalidRequestError, NotFoundError, Policy, PolicyRefusedError,
                       QuotaExceededError, SafehouseError, SafehouseTimeoutError, Sandbox,
                       SandboxNotRunningError, ServerError, CapacityError)
from safehouse.exceptions import error_from_response  # noqa: E402

from e2e.support import require_root  # noqa: E402

MiB = 1 << 20


# ---------------------------------------------------------------- sandboxes


def test_create_info_list_connect_set_timeout_kill(daemon, tag):
    s = Sandbox.create(timeout=60, env={"GREETING": "hi"}, metadata={"suite": "sdk", "t": tag})
    daemon.created.append((daemon.admin_key, s.id))
    assert s.id.startswith("sb_") and s.sandbox_id == s.id
    info = s.get_info()
    assert info.state == "running" and info.metadata == {"suite": "sdk", "t": tag}
    assert info.expires_at is not None and info.created_at is not None
    assert 50 <= (info.expires_at - info.created_at).total_seconds() <= 70
    assert s.is_running()
    assert s.commands.run("echo $GREETING").stdout == "hi\n"

    listed = Sandbox.list(metadata={"t": tag})
    assert [i.id for i in listed] == [s.id]
    assert [i.id for i in Sandbox.list(metadata={"t": tag}, state="running")] == [s.id]
    assert Sandbox.list(metadata={"t": "no-such-" + tag}) == []

    before = info.expires_at
    after = s.set_timeout(600).expires_at
    assert (after - before).total_seconds() > 400

    other = Sandbox.connect(s.id)
    assert other.id == s.id and other.get_info().metadata["t"] == tag
    assert other.commands.run("echo via-connect").stdout == "via-connect\n"
    other.close()

    assert s.kill() is True
    assert s.kill() is True  # idempotent
    assert not s.is_running()
    assert s.get_info().state == "killed"
    assert [i.id for i in Sandbox.list(metadata={"t": tag}, state="running")] == []
    s.close()


def test_context_manager_kills(daemon):
    with Sandbox.create(timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        assert s.is_running()
    assert not s.is_running()  # the client reopens its connection after close
    with pytest.raises(SandboxNotRunningError) as e:
        s.commands.run("true")
    assert e.value.status == 409 and e.value.code == "not_running" and "killed" in str(e.value)


def test_connect_unknown_is_not_found():
    with pytest.raises(NotFoundError) as e:
        Sandbox.connect("sb_" + "a" * 26)
    assert e.value.status == 404 and e.value.message


def test_explicit_url_and_key_override_env(daemon, monkeypatch):
    monkeypatch.setenv("SAFEHOUSE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SAFEHOUSE_API_KEY", "sh_wrong")
    with Sandbox.create(timeout=30, url=daemon.url, api_key=daemon.admin_key) as s:
        daemon.created.append((daemon.admin_key, s.id))
        assert s.commands.run("true").exit_code == 0


# ---------------------------------------------------------------- policy


@pytest.mark.unit
def test_policy_builder_to_dict():
    p = (Policy().memory("512MiB").pids(128).cpus(1.5).disk("2GiB").inodes(1000).nofile(256)
         .timeout("10m").rootfs("host").read_only("/host/dir", "/data").read_write("/srv/out", "/out")
         .scratch("/cache").hidden("/etc/ssh", "/etc/machine-id").network([]))
    assert p.to_dict() == {
        "version": 1,
        "limits": {"memory": "512MiB", "pids": 128, "cpus": 1.5, "disk": "2GiB", "inodes": 1000,
                   "nofile": 256, "timeout": "10m"},
        "filesystem": {"rootfs": "host", "read_only": [{"host": "/host/dir", "path": "/data"}],
                       "read_write": [{"host": "/srv/out", "path": "/out"}], "scratch": ["/cache"],
                       "hidden": ["/etc/ssh", "/etc/machine-id"]},
        "network": {"allow": []},
    }
    assert Policy.from_dict(p.to_dict()) == p
    assert Policy().to_dict() == {"version": 1}


def test_policy_applies(daemon):
    host = tempfile.mkdtemp(prefix="safehouse-sdk-ro-")
    try:
        os.chmod(host, 0o755)
        with open(os.path.join(host, "in.txt"), "w") as f:
            f.write("from the host\n")
        os.chmod(os.path.join(host, "in.txt"), 0o644)
        policy = Policy().memory("256MiB").pids(64).read_only(host, "/data")
        with Sandbox.create(policy=policy, timeout=60) as s:
            daemon.created.append((daemon.admin_key, s.id))
            assert s.files.read("/data/in.txt") == "from the host\n"
            r = s.commands.run("echo x > /data/new", raise_on_error=False)
            assert r.exit_code != 0 and "Read-only" in r.stderr, r
        # a dict works as well as the builder, and a preset by name
        with Sandbox.create(policy={"version": 1, "limits": {"pids": 32}}, timeout=30) as s:
            daemon.created.append((daemon.admin_key, s.id))
        with Sandbox.create(preset="offline", timeout=30) as s:
            daemon.created.append((daemon.admin_key, s.id))
            assert s.get_info().preset == "offline"
    finally:
        shutil.rmtree(host, ignore_errors=True)


def test_invalid_policy_and_preset_carry_the_message():
    with pytest.raises(InvalidRequestError) as e:
        Sandbox.create(policy={"version": 1, "limits": {"memroy": "1GiB"}})
    assert e.value.status == 400 and e.value.code == "invalid_request" and "memroy" in str(e.value)
    with pytest.raises(InvalidRequestError) as e:
        Sandbox.create(preset="nope")
    assert "unknown preset" in str(e.value) and "offline" in str(e.value)


# ---------------------------------------------------------------- commands


def test_run_result_and_envelope(sbx):
    r = sbx.commands.run("echo out; echo err >&2; pwd")
    assert isinstance(r, CommandResult)
    assert (r.stdout, r.stderr, r.exit_code, r.error) == ("out\n/workspace\n", "err\n", 0, None)
    assert r.signal is None and r.timed_out is False and r.oom_killed is False
    assert isinstance(r.wall_ms, int) and isinstance(r.cpu_ms, int)
    assert r.peak_memory_bytes is None or r.peak_memory_bytes > 0

    r = sbx.commands.run(["sh", "-c", 'echo "$A $B"; pwd; cat'], envs={"A": "1", "B": "two"}, cwd="/tmp",
                         stdin="piped\n")
    assert r.stdout == "1 two\n/tmp\npiped\n"


def test_run_nonzero_raises_like_e2b(sbx):
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo partial; echo bad >&2; exit 3")
    assert e.value.exit_code == 3 and e.value.stdout == "partial\n" and e.value.stderr == "bad\n"
    assert e.value.result.wall_ms is not None and "3" in str(e.value)
    r = sbx.commands.run("exit 4", raise_on_error=False)
    assert r.exit_code == 4 and r.error == "exit status 4" and not r.ok


def test_run_timeout_reports_timed_out(sbx):
    t0 = time.monotonic()
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("sleep 30", timeout=0.5)
    assert time.monotonic() - t0 < 10
    r = e.value.result
    assert r.timed_out is True and r.exit_code is None and r.signal == 9 and "timed out" in r.error


def test_run_memory_limit(sbx):
    if os.geteuid() != 0:
        require_root("per-command memory limits need cgroups")
    code = "b = bytearray(200 * 1024 * 1024); print(len(b))"
    r = sbx.commands.run(["python3", "-c", code], memory="64MiB", raise_on_error=False)
    assert r.oom_killed is True and r.exit_code != 0, r
    assert sbx.commands.run(["python3", "-c", "print(1)"], memory="64MiB").stdout == "1\n"


def test_background_handle_iterate_wait_list(sbx):
    h = sbx.commands.run("echo a; sleep 0.3; echo b >&2; echo c; exit 2", background=True)
    assert isinstance(h.pid, int)
    assert any(p.pid == h.pid for p in sbx.commands.list())
    chunks = list(h)
    assert "".join(c[0] or "" for c in chunks) == "a\nc\n"
    assert "".join(c[1] or "" for c in chunks) == "b\n"
    with pytest.raises(CommandExitException) as e:
        h.wait()
    assert e.value.exit_code == 2 and e.value.stdout == "a\nc\n" and e.value.stderr == "b\n"
    p = next(p for p in sbx.commands.list() if p.pid == h.pid)
    assert (p.running, p.exit_code, p.cmd[-1]) == (False, 2, "echo a; sleep 0.3; echo b >&2; echo c; exit 2")


def test_streaming_callbacks_arrive_before_exit(sbx):
    seen = []  # (monotonic time, text)
    t0 = time.monotonic()
    r = sbx.commands.run("for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.4; done",
                         on_stdout=lambda s: seen.append((time.monotonic(), "o", s)),
                         on_stderr=lambda s: seen.append((time.monotonic(), "e", s)))
    end = time.monotonic()
    assert r.exit_code == 0 and r.stdout == "out1\nout2\nout3\n" and r.stderr == "err1\nerr2\nerr3\n"
    assert "".join(s for _, k, s in seen if k == "o") == r.stdout
    assert "".join(s for _, k, s in seen if k == "e") == r.stderr
    first = min(t for t, _, _ in seen)
    assert first - t0 < (end - t0) - 0.5, "the first chunk arrived only at the end: not streamed"
    # A streamed run keeps the resource envelope: the daemon's spawn-to-reap time (three
    # 0.4 s sleeps) and the process's CPU and peak memory from its reap.
    assert 1200 <= r.wall_ms <= (end - t0) * 1000 + 50, (r.wall_ms, end - t0)
    assert isinstance(r.cpu_ms, int) and r.peak_memory_bytes > 0, r

    # background + callbacks: called while wait() streams
    got = []
    h = sbx.commands.run("echo x; sleep 0.2; echo y", background=True, on_stdout=got.append)
    assert h.wait().stdout == "x\ny\n" and "".join(got) == "x\ny\n"


def test_stdin_signal_kill_connect(sbx):
    h = sbx.commands.run("cat", background=True)
    h.send_stdin("one\n")
    sbx.commands.send_stdin(h.pid, b"two\n")
    h.close_stdin()
    assert h.wait(timeout=10).stdout == "one\ntwo\n"

    h = sbx.commands.run("trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
                         background=True)
    it = iter(h)
    assert next(it)[0] == "ready\n"
    assert h.signal("SIGTERM") is True
    with pytest.raises(CommandExitException) as e:
        h.wait(timeout=10)
    assert e.value.exit_code == 9 and "got-term" in e.value.stdout

    h = sbx.commands.run("sleep 60", background=True)
    again = sbx.commands.connect(h.pid)
    assert sbx.commands.kill(h.pid) is True
    r = again.wait(timeout=10, raise_on_error=False)
    assert r.exit_code is None and r.signal == 9 and "signal 9" in r.error
    assert sbx.commands.kill(999999) is False
    with pytest.raises(NotFoundError):
        sbx.commands.connect(999999)


def test_handle_wait_client_timeout(sbx):
    h = sbx.commands.run("sleep 30", background=True)
    t0 = time.monotonic()
    with pytest.raises(SafehouseTimeoutError):
        h.wait(timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert isinstance(SafehouseTimeoutError("x"), TimeoutError)
    assert h.kill() is True
    # foreground with callbacks: the client-side timeout kills the process
    with pytest.raises(SafehouseTimeoutError):
        sbx.commands.run("sleep 30", timeout=0.5, on_stdout=lambda s: None)


# ---------------------------------------------------------------- files


def test_files_text_bytes_stream_filelike(sbx):
    info = sbx.files.write("/workspace/a/b/hello.txt", "héllo\n")
    assert isinstance(info, EntryInfo) and info.path == "/workspace/a/b/hello.txt" and info.size == 7
    assert sbx.files.read("/workspace/a/b/hello.txt") == "héllo\n"
    blob = bytes(range(256)) * 4
    sbx.files.write("/workspace/blob", blob)
    data = sbx.files.read("/workspace/blob", format="bytes")
    assert isinstance(data, (bytes, bytearray)) and bytes(data) == blob
    assert b"".join(sbx.files.read("/workspace/blob", format="stream")) == blob
    sbx.files.write("/workspace/from-file", io.BytesIO(b"file-like\n"))
    assert sbx.commands.run("cat /workspace/from-file").stdout == "file-like\n"

    class Unsized(io.RawIOBase):  # no length known: sent chunked
        def __init__(self):
            self.parts = [b"no ", b"length\n"]

        def readable(self):
            return True

        def seekable(self):
            return False

        def read(self, n=-1):
            return self.parts.pop(0) if self.parts else b""

    assert sbx.files.write("/workspace/unsized", Unsized()).size == 10
    with pytest.raises(ValueError):
        sbx.files.read("/workspace/blob", format="nope")


def test_files_list_stat_exists_remove_rename_make_dir(sbx):
    assert sbx.files.make_dir("/workspace/d/e") is True
    assert sbx.files.make_dir("/workspace/d/e") is False
    sbx.files.write("/workspace/d/f.txt", "x")
    names = {e.name: e for e in sbx.files.list("/workspace/d")}
    assert set(names) == {"e", "f.txt"}
    assert names["e"].type == FileType.DIR and names["f.txt"].type == "file" and names["f.txt"].size == 1
    deep = {e.path for e in sbx.files.list("/workspace", depth=3)}
    assert {"/workspace/d", "/workspace/d/e", "/workspace/d/f.txt"} <= deep
    st = sbx.files.get_info("/workspace/d/f.txt")
    assert st.type == FileType.FILE and st.modified_time is not None and st.modified_time.tzinfo is not None
    assert st.permissions.startswith("rw")
    assert sbx.files.stat("/workspace/d").type == FileType.DIR
    assert sbx.files.exists("/workspace/d/f.txt") and not sbx.files.exists("/workspace/nope")
    moved = sbx.files.rename("/workspace/d/f.txt", "/workspace/g.txt")
    assert moved.path == "/workspace/g.txt" and sbx.files.read("/workspace/g.txt") == "x"
    assert not sbx.files.exists("/workspace/d/f.txt")
    sbx.files.remove("/workspace/d")
    assert not sbx.files.exists("/workspace/d")
    with pytest.raises(NotFoundError) as e:
        sbx.files.remove("/workspace/d")
    assert e.value.code == "not_found" and "/workspace/d" in str(e.value)


def test_files_50mb_round_trip_streamed(sbx):
    size = 50 * MiB
    path = os.path.join(tempfile.gettempdir(), f"safehouse-sdk-{os.getpid()}.bin")
    try:
        h = hashlib.sha256()
        with open(path, "wb") as f:
            block = os.urandom(MiB)
            for i in range(50):
                chunk = block[i:] + block[:i]
                f.write(chunk)
                h.update(chunk)
        with open(path, "rb") as f:
            info = sbx.files.write("/workspace/big.bin", f)
        assert info.size == size
        got, n = hashlib.sha256(), 0
        for chunk in sbx.files.read("/workspace/big.bin", format="stream"):
            got.update(chunk)
            n += len(chunk)
        assert n == size and got.hexdigest() == h.hexdigest()
        assert hashlib.sha256(sbx.files.read("/workspace/big.bin", format="bytes")).hexdigest() == h.hexdigest()
    finally:
        os.unlink(path)


# ---------------------------------------------------------------- errors


def test_errors_carry_the_servers_message(daemon, sbx):
    with pytest.raises(NotFoundError) as e:
        sbx.files.read("/workspace/missing.txt")
    assert str(e.value) == "/workspace/missing.txt: no such file or directory"
    assert (e.value.status, e.value.code) == (404, "not_found")

    with pytest.raises(AuthenticationError) as e:
        Sandbox.list(api_key="sh_" + "x" * 32)
    assert e.value.status == 401 and "key" in str(e.value)

    with pytest.raises(InvalidRequestError) as e:
        sbx.files.list("/workspace", depth=99)
    assert e.value.status == 400 and str(e.value)

    with pytest.raises(SafehouseError) as e:
        Sandbox.create(url="http://127.0.0.1:1", timeout=30)
    # The message names the URL it tried and the fix.
    assert "cannot reach the safehouse daemon at http://127.0.0.1:1" in str(e.value), e.value
    assert "SAFEHOUSE_URL" in str(e.value) and "safehouse serve" in str(e.value), e.value


def test_quota_exceeded(daemon):
    with Sandbox.create(policy=Policy().disk("8MiB"), timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        with pytest.raises(QuotaExceededError) as e:
            s.files.write("/workspace/too-big", io.BytesIO(b"\0" * (16 * MiB)))
        assert e.value.status == 413 and e.value.code == "quota_exceeded" and str(e.value)


@pytest.mark.unit
def test_error_mapping():
    cases = {400: InvalidRequestError, 401: AuthenticationError, 404: NotFoundError,
             409: SandboxNotRunningError, 413: QuotaExceededError, 422: PolicyRefusedError, 500: ServerError,
             503: CapacityError, 418: SafehouseError}
    for status, cls in cases.items():
        e = error_from_response(status, b'{"error":{"code":"c","message":"do this instead"}}')
        assert type(e) is cls and str(e) == "do this instead" and e.status == status
    e = error_from_response(422, b'{"error":{"code":"policy_refused","message":"cannot enforce"}}')
    assert isinstance(e, PolicyRefusedError) and e.code == "policy_refused"
    assert str(error_from_response(502, b"bad gateway")) == "bad gateway"


def test_concurrent_runs_share_a_sandbox(sbx):
    results = {}

    def one(i):
        results[i] = sbx.commands.run(f"echo {i}").stdout

    ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == {i: f"{i}\n" for i in range(8)}

"""The agent and its channel (SECURITY.md PR-10, AG-01, RES-07): sandboxed code cannot
reach or stop the agent, and the daemon notices when the agent dies anyway."""
import os
import signal
import time

from .support import require_root


def test_agent_death_marks_the_sandbox_failed_and_cleans_up(api):
    """PR-10: the agent killed (here from the host, the only place that can) → failed,
    cgroup and socket gone."""
    require_root("kills a host process and reads host cgroup paths")
    sb = api.create(timeout_s=120)
    sid, pid = sb["id"], sb["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and api.info(sid)["state"] == "running":
        time.sleep(0.05)
    info = api.info(sid)
    assert info["state"] == "failed", info
    assert "agent" in (info.get("error") or ""), info
    assert not any(os.path.exists(f"/sys/fs/cgroup/{c}/safehouse/{sid}") for c in ("memory", "pids", "freezer")), \
        "the cgroup outlived the sandbox"
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]})
    assert r.status == 409, r


# Takes a target pid and a directory to search for sockets, so the same probe runs
# outside (against a process of its own, where every step must succeed) and inside
# (against the agent, PID 1, where every step must fail).
_AGENT_PROBE = r"""
import errno, json, os, signal, stat, sys
pid, top = int(sys.argv[1]), sys.argv[2]
out = {}
for p in ("fd", "mem", "environ", "root/"):
    path = f"/proc/{pid}/{p}"
    try:
        (os.listdir(path) if p in ("fd", "root/") else open(path, "rb").close()); out[p] = "ok"
    except OSError as e:
        out[p] = errno.errorcode[e.errno]
socks = []
for d, _, files in os.walk(top, onerror=lambda e: None):
    if d.startswith(("/proc", "/sys")):
        continue
    for f in files:
        try:
            if stat.S_ISSOCK(os.lstat(os.path.join(d, f)).st_mode):
                socks.append(os.path.join(d, f))
        except OSError:
            pass
out["sockets"] = socks
for sig in (signal.SIGSTOP, signal.SIGKILL):
    try:
        os.kill(pid, sig); out[sig.name] = "ok"
    except OSError as e:
        out[sig.name] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


def test_sandboxed_code_cannot_stop_or_reach_the_agent(api, sandbox, tmp_path):
    """PR-01/PR-10/AG-01: signals to PID 1 are ignored (no handler in a pid namespace's
    init), its /proc entries are closed, and no socket leads to the daemon."""
    import json
    import socket
    import subprocess
    import sys

    # Outside: the probe reaches a process of its own and finds a socket it made.
    victim = subprocess.Popen(["sleep", "60"])
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    try:
        r = subprocess.run([sys.executable, "-c", _AGENT_PROBE, str(victim.pid), str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert all(got[p] == "ok" for p in ("fd", "mem", "environ", "root/")), got
        assert got["sockets"] == [str(tmp_path / "s.sock")], got
        assert got["SIGKILL"] == "ok" and victim.wait(timeout=10) == -9, got
    finally:
        victim.kill()
        sock.close()

    # Inside, against the agent.
    sid = sandbox["id"]
    r = api.exec(sid, ["python3", "-c", _AGENT_PROBE, "1", "/"], timeout_s=60)
    assert r["exit_code"] == 0, r
    got = json.loads(r["stdout"])
    for p in ("fd", "mem", "environ", "root/"):
        assert got[p] == "EACCES", (p, got)
    assert got["sockets"] == [], f"sockets visible inside: {got['sockets']}"
    # The signals are delivered to nobody (no error, no effect): the agent lives on.
    assert got["SIGKILL"] == "ok" and got["SIGSTOP"] == "ok", got
    assert api.exec(sid, ["echo", "still here"])["stdout"] == "still here\n"
    assert api.info(sid)["state"] == "running"


def test_huge_argv_is_a_4xx_and_the_daemon_stays_up(api, sandbox):
    """RES-07: an argv/env larger than the limits is refused with a 4xx."""
    sid = sandbox["id"]
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["echo"] + ["x" * 1000] * 2000})
    assert r.status in (400, 413), r
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["echo", "ok"], "env": {f"V{i}": "y" * 900 for i in range(1200)}})
    assert r.status in (400, 413), r
    assert api.exec(sid, ["echo", "ok"])["stdout"] == "ok\n"

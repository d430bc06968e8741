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


def test_sandboxed_code_cannot_stop_or_reach_the_agent(api, sandbox):
    """PR-01/PR-10/AG-01 from inside: signals to PID 1 are ignored (no handler in a pid
    namespace's init), its /proc entries are closed, and no socket leads to the daemon."""
    sid = sandbox["id"]
    probe = r"""
import errno, os, signal, socket
out = []
for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
    try:
        os.kill(1, sig); out.append(f"kill-{sig.name}:ok")
    except OSError as e:
        out.append(f"kill-{sig.name}:{errno.errorcode[e.errno]}")
for p in ("/proc/1/fd", "/proc/1/mem", "/proc/1/environ", "/proc/1/root/"):
    try:
        (os.listdir(p) if p.endswith(("fd", "/")) else open(p, "rb").read(1)); out.append(f"{p}:ok")
    except OSError as e:
        out.append(f"{p}:{errno.errorcode[e.errno]}")
socks = []
for d, _, files in os.walk("/", onerror=lambda e: None):
    if d.startswith(("/proc", "/sys")):
        continue
    for f in files:
        try:
            if os.path.stat.S_ISSOCK(os.lstat(os.path.join(d, f)).st_mode):
                socks.append(os.path.join(d, f))
        except OSError:
            pass
out.append("sockets:" + ",".join(socks))
print(" ".join(out))
"""
    r = api.exec(sid, ["python3", "-c", probe], timeout_s=60)
    assert r["exit_code"] == 0, r
    got = dict(item.split(":", 1) for item in r["stdout"].split())
    # The signals are delivered to nobody (no error, no effect): the agent lives on.
    assert got["kill-SIGKILL"] == "ok" and got["kill-SIGSTOP"] == "ok", got
    for p in ("/proc/1/fd", "/proc/1/mem", "/proc/1/environ", "/proc/1/root/"):
        assert got[p] == "EACCES", (p, got)
    assert got["sockets"] == "", f"sockets visible inside: {got['sockets']}"
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

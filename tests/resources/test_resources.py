"""Resource exhaustion from inside `safehouse run` (RES-01..06, RES-08, PR-11).

Each test runs the attack inside with an explicit limit and asserts the exact outcome
(EAGAIN at --pids, exit 137 + oom_killed at --memory, ENOSPC at --disk, EMFILE at the
nofile rlimit, throttling at --cpus, 124 at --timeout), that the host stays responsive,
and that nothing survives the run. In rootless mode on cgroup v1 the cgroup limits
cannot be enforced, so an explicitly requested one must be refused with exit 125.
"""
import json
import os
import secrets
import subprocess
import threading
import time

import pytest

from conftest import (PYTHON, assert_refused_unenforceable, leftover_cgroups,
                      limits_unenforceable, mountinfo_lines, procs_with_marker, run_inside,
                      safehouse_cgroup_dirs, wait_gone)

MiB = 1 << 20


def last_json(res):
    for line in reversed(res.stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise AssertionError(f"no JSON line in stdout (rc={res.rc}):\n{res.stdout[-2000:]}\n"
                         f"stderr: {res.stderr[-2000:]}")


class HostLatency:
    """Spawn host `true` in a loop while an attack runs; keeps the worst latency."""

    def __init__(self):
        self.samples, self._stop = [], threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            subprocess.run(["true"], timeout=30)
            self.samples.append(time.monotonic() - t0)
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=35)

    @property
    def worst(self):
        return max(self.samples) if self.samples else float("inf")


FORK_BOMB = r"""
import errno, json, os, time
kids, err = [], None
while len(kids) < 5000:
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
print(json.dumps({"forked": len(kids), "errno": err}), flush=True)
"""


def test_fork_bomb_stops_at_pids(mode):
    """RES-01: fork() fails with EAGAIN at --pids; the host stays responsive."""
    before = safehouse_cgroup_dirs()
    with HostLatency() as lat:
        res = run_inside([PYTHON, "-c", FORK_BOMB], ["--pids", "64"], mode=mode, timeout=60)
    if limits_unenforceable(mode):
        assert_refused_unenforceable(res, "pids")
        return
    out = last_json(res)
    assert out["errno"] == 11, f"fork bomb was not stopped by EAGAIN: {out}"  # EAGAIN
    assert out["forked"] < 64, out
    assert res.rc == 0, res.stderr
    assert lat.worst < 1.0, f"host `true` took {lat.worst:.2f}s during the bomb"
    assert not leftover_cgroups(before)


PERSISTENT_BOMB = r"""
import os, time
while True:                 # every process forks forever, retrying on EAGAIN
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""


def test_persistent_fork_bomb_contained(mode):
    """RES-01: a bomb that never gives up, under --pids and --timeout: killed at the
    timeout (124), host responsive, nothing left."""
    marker = f"bomb-{secrets.token_hex(4)}"
    before = safehouse_cgroup_dirs()
    with HostLatency() as lat:
        res = run_inside([PYTHON, "-c", PERSISTENT_BOMB, marker],
                         ["--pids", "100", "--timeout", "3s"], mode=mode, timeout=40)
    if limits_unenforceable(mode):
        assert_refused_unenforceable(res, "pids")
        return
    assert res.rc == 124, f"rc={res.rc} stderr={res.stderr[-1000:]}"
    assert res.wall < 10, res.wall
    assert lat.worst < 1.0, f"host `true` took {lat.worst:.2f}s during the bomb"
    assert wait_gone(marker) == [], "fork-bomb processes survived the sandbox"
    assert not leftover_cgroups(before)


def test_thread_bomb_stops_at_pids(helper_bin, mode):
    """RES-01: pthread_create fails with EAGAIN at --pids (threads count as tasks)."""
    res = run_inside(["/helpers/helper", "threadbomb", "100000"],
                     ["--pids", "64", "--mount", f"{os.path.dirname(helper_bin)}:/helpers"],
                     mode=mode, timeout=60)
    if limits_unenforceable(mode):
        assert_refused_unenforceable(res, "pids")
        return
    out = last_json(res)
    assert out["errno"] == 11 and out["created"] < 64, out


MEM_BOMB = r"""
import json, sys
chunks = []
for i in range(1024):
    b = bytearray(1 << 20)
    for j in range(0, len(b), 4096):
        b[j] = 1
    chunks.append(b)
    if i % 16 == 0:
        print(json.dumps({"mib": i}), flush=True)
print(json.dumps({"survived_mib": len(chunks)}), flush=True)
"""


def test_memory_bomb_oom_killed(mode):
    """RES-02: anonymous memory past --memory: exit 137 and "oom_killed": true."""
    res = run_inside([PYTHON, "-c", MEM_BOMB], ["--memory", "64MiB"], mode=mode, timeout=60,
                     json_record=True)
    if limits_unenforceable(mode):
        assert_refused_unenforceable(res, "memory")
        return
    assert "survived_mib" not in res.stdout, "allocated 1 GiB under a 64 MiB limit"
    assert res.rc == 137, f"rc={res.rc} stderr={res.stderr[-1000:]}"
    rec = res.record
    assert rec and rec.get("oom_killed") is True, rec
    assert rec.get("exit_code") in (137, None) or rec.get("signal") == 9, rec
    peak = rec.get("peak_memory_bytes") or 0
    assert 0 < peak <= 64 * MiB * 1.05, f"peak_memory_bytes={peak}"


TMPFS_BOMB = r"""
import errno, json, os, sys
path = sys.argv[1]
written = 0
try:
    for i in range(256):
        with open(os.path.join(path, f"fill{i}"), "wb") as f:
            f.write(b"x" * (1 << 20))
        written += 1
except OSError as e:
    print(json.dumps({"errno": e.errno, "written_mib": written}), flush=True)
    sys.exit(3)
print(json.dumps({"errno": None, "written_mib": written}), flush=True)
"""


@pytest.mark.parametrize("where", ["/dev/shm", "/tmp"])
def test_tmpfs_memory_bomb(mode, where):
    """RES-02: memory through tmpfs files (/dev/shm, /tmp) is capped too: OOM kill
    (137, oom_killed) or ENOSPC, never 256 MiB under a 64 MiB memory limit."""
    res = run_inside([PYTHON, "-c", TMPFS_BOMB, where], ["--memory", "64MiB", "--disk", "1GiB"],
                     mode=mode, timeout=60, json_record=True)
    if limits_unenforceable(mode):
        assert_refused_unenforceable(res, "memory")
        return
    if res.rc == 137:
        assert res.record and res.record.get("oom_killed") is True, res.record
        return
    out = last_json(res)
    assert out["errno"] == 28 and out["written_mib"] <= 68, \
        f"{where}: wrote {out} under --memory 64MiB (rc={res.rc})"


DISK_FILL = r"""
import json, os, sys
total, per = 0, {}
for d in sys.argv[1:]:
    n, err = 0, None
    try:
        for i in range(64):  # 4 MiB files: below any per-file size limit
            with open(os.path.join(d, f"fill{i}"), "wb") as f:
                for _ in range(4):
                    f.write(b"x" * (1 << 20))
                    f.flush()
                    n += 1
    except OSError as e:
        err = e.errno
    per[d] = {"mib": n, "errno": err}
    total += n
print(json.dumps({"total_mib": total, "per": per}), flush=True)
"""

WRITABLE = ["/tmp", "/workspace", "/home/user", "/var/tmp", "/dev/shm"]


def test_disk_fill_enospc(mode):
    """RES-03: writing stops with ENOSPC at --disk: per dir, and for the writable layer as
    a whole (/tmp, /workspace, /home/user, /var/tmp together hold at most --disk;
    /dev/shm, like Docker's, is a tmpfs of its own, capped at the same size)."""
    st = os.statvfs("/")
    host_free = st.f_bavail * st.f_frsize
    res = run_inside([PYTHON, "-c", DISK_FILL, *WRITABLE], ["--disk", "16MiB"], mode=mode,
                     timeout=60)
    out = last_json(res)
    for d, r in out["per"].items():
        assert r["errno"] == 28, f"{d}: no ENOSPC at --disk 16MiB: {r}"
    st = os.statvfs("/")
    assert host_free - st.f_bavail * st.f_frsize < 64 * MiB, "the host disk filled up"
    layer = sum(r["mib"] for d, r in out["per"].items() if d != "/dev/shm")
    assert layer <= 17, (f"the writable layer held {layer} MiB under --disk 16MiB: the "
                         f"writable dirs do not share one quota ({out['per']})")
    assert out["per"]["/dev/shm"]["mib"] <= 17, out


INODES = r"""
import json, os, time
n, err, t0 = 0, None, time.monotonic()
os.mkdir("/tmp/i")
try:
    while n < 400000 and time.monotonic() - t0 < 25:
        os.close(os.open(f"/tmp/i/{n}", os.O_CREAT | os.O_WRONLY, 0o600))
        n += 1
except OSError as e:
    err = e.errno
print(json.dumps({"files": n, "errno": err}), flush=True)
"""


def test_inode_exhaustion_enospc(mode):
    """RES-04: creating empty files ends in ENOSPC."""
    res = run_inside([PYTHON, "-c", INODES], ["--disk", "16MiB"], mode=mode, timeout=60)
    out = last_json(res)
    assert out["errno"] == 28, f"no ENOSPC after {out['files']} empty files: {out}"


FDS = r"""
import ctypes, json, os, resource, select
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
out = {"soft": soft, "hard": hard}
def exhaust(name, make):
    fds, err = [], None
    try:
        while len(fds) < 1 << 20:
            fds.append(make())
    except OSError as e:
        err = e.errno
    out[name] = {"count": len(fds), "errno": err}
    if name != "epoll":
        for fd in fds:
            os.close(fd)
exhaust("open", lambda: os.open("/dev/null", os.O_RDONLY))
libc = ctypes.CDLL(None, use_errno=True)
def inotify():
    fd = libc.inotify_init1(0)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd
exhaust("inotify", inotify)
keep = []
def epoll():
    keep.append(select.epoll())
    return keep[-1].fileno()
exhaust("epoll", epoll)
print(json.dumps(out), flush=True)
"""


def test_fd_exhaustion_emfile(mode):
    """RES-05: fds, inotify instances and epoll fds end in EMFILE at the limits."""
    res = run_inside([PYTHON, "-c", FDS], [], mode=mode, timeout=60)
    out = last_json(res)
    soft = out["soft"]
    assert soft <= 1 << 20, out
    assert out["open"]["errno"] == 24 and soft - 8 <= out["open"]["count"] < soft, out
    assert out["epoll"]["errno"] == 24, out
    # inotify instances: EMFILE at max_user_instances (or the fd limit, whichever first)
    assert out["inotify"]["errno"] == 24 and out["inotify"]["count"] < soft, out


def test_cpu_throttled(helper_bin, mode):
    """RES-06: two spinning processes under --cpus 0.5 get about half a core."""
    res = run_inside(["/helpers/helper", "spin", "2", "3"],
                     ["--cpus", "0.5", "--mount", f"{os.path.dirname(helper_bin)}:/helpers"],
                     mode=mode, timeout=60, json_record=True)
    if limits_unenforceable(mode):
        assert_refused_unenforceable(res, "cpu")
        return
    assert res.rc == 0, res.stderr
    rec = res.record
    ratio = rec["cpu_ms"] / rec["wall_ms"]
    assert 0.3 <= ratio <= 0.65, f"cpu_ms/wall_ms = {ratio:.2f} under --cpus 0.5: {rec}"


def test_timeout_124(mode):
    """--timeout 1s on sleep 30: exit 124 within a couple of seconds, timed_out in JSON."""
    res = run_inside(["sleep", "30"], ["--timeout", "1s"], mode=mode, timeout=30,
                     json_record=True)
    assert res.rc == 124, f"rc={res.rc} stderr={res.stderr[-1000:]}"
    assert res.wall < 3.5, f"took {res.wall:.1f}s"
    assert res.record and res.record.get("timed_out") is True, res.record


ZOMBIES = r"""
import os, signal, sys, time
marker = sys.argv[1]
for _ in range(300):          # zombies: never reaped by us
    if os.fork() == 0:
        os._exit(0)
if os.fork() == 0:            # a daemon that ignores SIGTERM forever
    os.setsid()
    os.execv(sys.executable, [sys.executable, "-c",
             "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
             marker])
time.sleep(0.5)
print("parent exits", flush=True)
"""


def test_zombies_and_sigterm_ignorers_reaped(mode):
    """RES-08: a zombie flood and a SIGTERM-ignoring daemon: the run ends, nothing is left."""
    marker = f"res08-{secrets.token_hex(4)}"
    before = safehouse_cgroup_dirs()
    mounts = mountinfo_lines()
    res = run_inside([PYTHON, "-c", ZOMBIES, marker], [], mode=mode, timeout=60)
    assert res.rc == 0, f"rc={res.rc} stderr={res.stderr[-1000:]}"
    assert res.wall < 15, f"run took {res.wall:.1f}s to tear down"
    assert wait_gone(marker, 3) == [], "the SIGTERM-ignoring daemon survived"
    assert not leftover_cgroups(before)
    assert mountinfo_lines() - mounts == set()


def test_double_fork_daemon_gone(mode):
    """PR-11: a double-forked, setsid'ed grandchild dies with the sandbox."""
    tag = f"299.{secrets.randbelow(10**9):09d}"  # unique sleep argument = marker
    before = safehouse_cgroup_dirs()
    mounts = mountinfo_lines()
    res = run_inside(["/bin/sh", "-c", f"setsid sh -c 'sleep {tag} &'; sleep 0.3; exit 0"], [],
                     mode=mode, timeout=30)
    assert res.rc == 0, res.stderr
    assert wait_gone(tag, 3) == [], f"daemonised grandchild survived: {procs_with_marker(tag)}"
    assert not leftover_cgroups(before), "cgroup dirs left behind"
    assert mountinfo_lines() - mounts == set(), "mounts left behind on the host"


def test_json_record_layers(mode):
    """The --json record says which layers hold; rootless on v1 lists the default limits
    it could not enforce instead of pretending."""
    res = run_inside(["true"], [], mode=mode, timeout=30, json_record=True)
    assert res.rc == 0, res.stderr
    rec = res.record
    for k in ["exit_code", "signal", "timed_out", "oom_killed", "wall_ms", "cpu_ms",
              "peak_memory_bytes"]:
        assert k in rec, f"record lacks {k}: {rec}"
    assert rec["exit_code"] == 0 and rec["timed_out"] is False and rec["oom_killed"] is False
    if limits_unenforceable(mode):
        unenforced = {u["limit"] for u in rec.get("unenforced", [])}
        assert {"memory", "pids"} <= unenforced, rec.get("unenforced")
    else:
        assert rec.get("unenforced") == [], rec.get("unenforced")


@pytest.mark.parametrize("flag,value,word", [("--memory", "64MiB", "memory"),
                                             ("--pids", "32", "pids"),
                                             ("--cpus", "0.5", "cpu")])
def test_explicit_limit_never_silently_weakened(mode, flag, value, word):
    """An explicitly requested cgroup limit is enforced, or refused with 125 and a reason."""
    res = run_inside(["true"], [flag, value], mode=mode, timeout=30)
    if limits_unenforceable(mode):
        assert_refused_unenforceable(res, word)
    else:
        assert res.rc == 0, res.stderr

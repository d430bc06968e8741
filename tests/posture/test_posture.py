"""Posture, read from the host while a sandbox runs (shared/SECURITY.md, "Posture").

A sandboxed python spawns threads and exec's a child; from outside we find every
sandboxed process by a unique argv marker and read /proc/<pid>/task/<tid>/status for
every thread: Seccomp 2, NoNewPrivs 1, all capability sets zero, namespaces distinct
from ours, only fds 0-2, the expected read-only mounts, rlimits and cgroup values.
"""
import os
import secrets
import time

import pytest

from conftest import PYTHON, limits_unenforceable, procs_with_marker, require_mode, start_inside, \
    stop, wait_line

NAMESPACES = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"]
CAPS = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
WRITABLE = {"/tmp", "/workspace", "/home/user", "/var/tmp", "/dev/shm", "/dev/pts"}
DEVICES = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
           "/dev/ptmx", "/dev/console"}
MiB = 1 << 20
LIMITS = {"memory": 128 * MiB, "pids": 64, "cpus": 0.5, "disk": 32 * MiB}

WORKLOAD = r"""
import os, subprocess, sys, threading, time
marker = sys.argv[1]
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker + "-exec"])
time.sleep(0.3)
print("READY", flush=True)
time.sleep(60)
"""


def status(pid, tid=None):
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def sandbox_init(host_pid):
    """The sandbox init: the child of `safehouse run` (host_pid) that is PID 1 of a new pid
    namespace. Its command line is erased, so it is found by parentage, not by marker."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = status(int(entry))
        except OSError:
            continue
        if st.get("PPid") == str(host_pid) and st.get("NSpid", "").split()[-1:] == ["1"]:
            return int(entry)
    return None


def sandboxed(marker, host_pid=None):
    """Host pids of processes running inside the sandbox (in a child pid namespace)."""
    out = {}
    pids = list(procs_with_marker(marker))
    init = sandbox_init(host_pid) if host_pid else None
    if init:
        pids.append(init)
    for pid in pids:
        try:
            st = status(pid)
        except OSError:
            continue
        nspid = st.get("NSpid", "").split()
        if len(nspid) >= 2:
            out[pid] = int(nspid[-1])
    return out


@pytest.fixture(params=["root", "rootless"])
def running(request, tmp_path):
    mode = request.param
    require_mode(mode)
    marker = f"posture-{secrets.token_hex(5)}"
    opts = []
    if not limits_unenforceable(mode):
        opts = ["--memory", "128MiB", "--pids", "64", "--cpus", "0.5", "--disk", "32MiB"]
    # a host directory fd leaked by the caller (CVE-2024-21626): must reach nobody inside
    leak = os.open("/root" if os.path.isdir("/root") else "/", os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(leak, True)
    try:
        import subprocess
        from conftest import child_env, safehouse_argv
        p = subprocess.Popen(safehouse_argv(opts, [PYTHON, "-c", WORKLOAD, marker], mode),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=child_env(mode), start_new_session=True,
                             pass_fds=(leak,))
    finally:
        os.close(leak)
    try:
        wait_line(p, "READY", timeout=30)
        procs = sandboxed(marker, sandbox_host_pid(p))
        assert len(procs) >= 3, f"expected init, python and its exec'd child; found {procs}"
        yield {"mode": mode, "procs": procs, "marker": marker, "limited": bool(opts), "proc": p}
    finally:
        stop(p)


def sandbox_host_pid(p):
    """The pid of `safehouse run` itself (p may be a setpriv wrapper that exec'd it)."""
    return p.pid


def workload(procs):
    """The sandboxed code: everything but the sandbox init (PID 1 inside)."""
    return {h: n for h, n in procs.items() if n != 1}


def test_every_thread_filtered_and_capless(running):
    checked = 0
    for pid in running["procs"]:
        for tid in os.listdir(f"/proc/{pid}/task"):
            st = status(pid, tid)
            who = f"pid {pid} tid {tid} ({st.get('Name')})"
            assert st["Seccomp"] == "2", f"{who}: Seccomp {st['Seccomp']}"
            assert st["NoNewPrivs"] == "1", f"{who}: NoNewPrivs {st['NoNewPrivs']}"
            for c in CAPS:
                assert st[c] == "0000000000000000", f"{who}: {c} {st[c]}"
            checked += 1
    assert checked >= 6, f"only {checked} threads checked (threads + exec'd child expected)"


def test_host_uid_is_not_root(running):
    for pid in running["procs"]:
        st = status(pid)
        uids, gids = st["Uid"].split(), st["Gid"].split()
        assert "0" not in uids and "0" not in gids, f"pid {pid} runs as host root: {uids} {gids}"


def test_namespaces_distinct_from_host(running):
    for pid in running["procs"]:
        for ns in NAMESPACES:
            theirs = os.readlink(f"/proc/{pid}/ns/{ns}")
            ours = os.readlink(f"/proc/self/ns/{ns}")
            assert theirs != ours, f"pid {pid} shares the host {ns} namespace ({ours})"


def test_only_std_fds(running):
    for pid, nspid in workload(running["procs"]).items():
        fds = {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
        assert set(fds) <= {0, 1, 2}, f"pid {pid} (ns pid {nspid}) holds extra fds: {fds}"


def test_init_holds_no_host_directory(running):
    """The sandbox init may keep its own pipes, but no fd to a host directory (the fd the
    caller leaked, a cgroup dir, the host root: CVE-2024-21626)."""
    init = [h for h, n in running["procs"].items() if n == 1]
    assert init, running["procs"]
    for n in os.listdir(f"/proc/{init[0]}/fd"):
        target = os.readlink(f"/proc/{init[0]}/fd/{n}")
        if target.startswith("/"):
            assert not os.path.isdir(f"/proc/{init[0]}/fd/{n}"), \
                f"sandbox init holds fd {n} -> host directory {target}"


def mounts(pid):
    out = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            out[parts[4]] = {"opts": parts[5].split(","), "fstype": parts[sep + 1],
                             "source": parts[sep + 2], "root": parts[3]}
    return out


def test_mounts_read_only(running):
    pid = next(iter(workload(running["procs"])))
    m = mounts(pid)
    for must in ["/", "/usr", "/etc", "/proc", "/sys", "/proc/sys", "/tmp", "/workspace",
                 "/home/user", "/var/tmp", "/dev/shm"]:
        assert must in m, f"{must} not mounted: {sorted(m)}"
    for path, info in m.items():
        if path in WRITABLE or path in DEVICES or path == "/proc":
            continue
        if path.startswith("/proc/") and info["fstype"] in ("devtmpfs", "tmpfs") and \
                info["root"] in ("/null", "/"):
            continue  # a mask: /dev/null or an empty tmpfs over a /proc file or dir
        assert "ro" in info["opts"], f"{path} is mounted read-write: {info}"
    for path in WRITABLE - {"/dev/pts"}:
        assert "rw" in m[path]["opts"] and "nosuid" in m[path]["opts"], (path, m[path])
    for host_only in ["/root", "/home/cloudsdk", "/var/lib", "/work", "/run", "/boot"]:
        assert host_only not in m, f"host {host_only} is mounted: {m[host_only]}"
    assert m["/sys"]["fstype"] == "sysfs" and "ro" in m["/sys"]["opts"]
    assert "ro" in m["/proc/sys"]["opts"]


def limits(pid):
    out = {}
    with open(f"/proc/{pid}/limits") as f:
        next(f)
        for line in f:
            name = line[:26].strip()
            soft, hard = line[26:47].strip(), line[47:68].strip()
            out[name] = (soft, hard)
    return out


def test_rlimits(running):
    for pid in workload(running["procs"]):
        lim = limits(pid)
        assert lim["Max core file size"] == ("0", "0"), lim["Max core file size"]
        soft, hard = lim["Max open files"]
        assert soft != "unlimited" and int(soft) <= 1 << 20, lim["Max open files"]
        if running["limited"]:
            fsize = lim["Max file size"]
            assert fsize[0] != "unlimited" and int(fsize[0]) <= LIMITS["disk"], fsize


def read(path):
    with open(path) as f:
        return f.read().strip()


def test_cgroup_membership_and_values(running):
    if not running["limited"]:
        pytest.skip("rootless on cgroup v1: no cgroup limits here (a requested one exits 125)")
    paths = set()
    for pid in running["procs"]:
        cg = {}
        for line in read(f"/proc/{pid}/cgroup").splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(","):
                cg[c] = path
        for ctrl in ["memory", "pids", "cpu"]:
            assert cg.get(ctrl, "").startswith("/safehouse/"), f"pid {pid} {ctrl}: {cg}"
        paths.add((cg["memory"], cg["pids"], cg["cpu"]))
    assert len(paths) == 1, f"sandbox processes in different cgroups: {paths}"
    mem, pids, cpu = paths.pop()
    base = "/sys/fs/cgroup"
    assert int(read(f"{base}/memory{mem}/memory.limit_in_bytes")) == LIMITS["memory"]
    assert read(f"{base}/pids{pids}/pids.max") == str(LIMITS["pids"])
    quota = int(read(f"{base}/cpu{cpu}/cpu.cfs_quota_us"))
    period = int(read(f"{base}/cpu{cpu}/cpu.cfs_period_us"))
    assert abs(quota / period - LIMITS["cpus"]) < 0.01, (quota, period)
    # swap must not extend the memory limit
    sw = f"{base}/memory{mem}/memory.memsw.limit_in_bytes"
    if os.path.exists(sw):
        assert int(read(sw)) == LIMITS["memory"], read(sw)
    else:
        swp = f"{base}/memory{mem}/memory.swappiness"
        assert read(swp) == "0", f"no memsw accounting and swappiness {read(swp)}"


def test_nothing_left_after_stop(running):
    """Killing `safehouse run` itself (SIGTERM to its process group) tears everything down."""
    stop(running["proc"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and procs_with_marker(running["marker"]):
        time.sleep(0.05)
    assert procs_with_marker(running["marker"]) == [], "sandbox processes survived"

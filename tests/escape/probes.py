#!/usr/bin/python3
"""Escape probes for `safehouse run`, one per red-team catalogue ID (shared/SECURITY.md).

Runs with nothing but the Python standard library, both on the host ("outside", the
positive control, as root) and inside a sandbox ("inside"). Every sub-check prints one
JSON line:

    {"id": "FS-03", "check": "mount-tmpfs", "ok": bool, "errno": int|null, "detail": ...}

`ok` means *the attempt succeeded* (the syscall returned >= 0, the secret was read, the
host process was found, ...). `errno` is the exact errno when it did not. The harness
(test_escape.py) holds the expected result of each check, outside and inside.

Calls that would hurt the host when they succeed use harmless arguments outside (a bad
magic, a nonexistent path, a bad fd: the kernel's argument check proves the call is
reachable), or run in a throwaway child that first moved into its own namespaces.
Each probe runs in its own forked child, so a probe that crashes, hangs or chroots only
loses its own results.

Host facts come in through SH_* environment variables set by the harness:
SH_HOST_PIDS, SH_HOST_MARKER, SH_CANARIES (label=path,...), SH_ABSTRACT, SH_HELPER,
SH_SUID_HELPER, SH_HOST_HOSTNAME, SH_HOST_SHA (name=sha256,...), SH_TCP_PORT, SH_LK04.
"""
import ctypes
import errno as E
import hashlib
import json
import os
import stat
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

WHERE = "outside"


def agent():
    """The process standing in for the runtime: PID 1 (the sandbox init) inside; outside a
    host process of another user that the harness started (the host's own init is off
    limits)."""
    return 1 if WHERE == "inside" else int(os.environ.get("SH_AGENT_PID", "1"))
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 syscall numbers
NR = dict(
    read=0, close=3, ioctl=16, getpid=39, clone=56, kill=62, ptrace=101, syslog=103,
    setuid=105, setgroups=116, capget=125, capset=126, uselib=134, personality=135,
    ustat=136, sysfs=139, vhangup=153, pivot_root=155, _sysctl=156, prctl=157,
    adjtimex=159, chroot=161, acct=163, settimeofday=164, mount=165, umount2=166,
    swapon=167, swapoff=168, reboot=169, sethostname=170, setdomainname=171, iopl=172,
    ioperm=173, create_module=174, init_module=175, delete_module=176,
    get_kernel_syms=177, query_module=178, quotactl=179, nfsservctl=180,
    lookup_dcookie=212, clock_settime=227, mbind=237, set_mempolicy=238,
    get_mempolicy=239, kexec_load=246, add_key=248, request_key=249, keyctl=250,
    mknodat=259, unshare=272, move_pages=279, perf_event_open=298,
    name_to_handle_at=303, open_by_handle_at=304, clock_adjtime=305, setns=308,
    process_vm_readv=310, process_vm_writev=311, kcmp=312, finit_module=313,
    kexec_file_load=320, bpf=321, userfaultfd=323, pidfd_send_signal=424,
    io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_tree=428,
    move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, pidfd_open=434,
    clone3=435, pidfd_getfd=438, mount_setattr=442, landlock_create_ruleset=444,
    open_tree_attr=467, mknod=133,
)
AT_FDCWD = -100
CLONE = dict(NEWNS=0x20000, NEWCGROUP=0x02000000, NEWUTS=0x04000000, NEWIPC=0x08000000,
             NEWUSER=0x10000000, NEWPID=0x20000000, NEWNET=0x40000000, NEWTIME=0x80)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
TIOCSTI, TIOCLINUX = 0x5412, 0x541C


def sc(name, *args):
    """Raw syscall; returns (ret, errno) with errno 0 on success."""
    cargs = []
    for a in args:
        if a is None:
            cargs.append(ctypes.c_void_p(0))
        elif isinstance(a, int):
            cargs.append(ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF))
        elif isinstance(a, str):
            cargs.append(ctypes.c_char_p(a.encode()))
        elif isinstance(a, bytes):
            cargs.append(ctypes.c_char_p(a))
        else:
            cargs.append(a)
    nr = NR[name] if isinstance(name, str) else name
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *cargs)
    return (r, 0) if r != -1 else (r, ctypes.get_errno())


def emit(pid, check, ok, err=None, detail=None):
    rec = {"id": pid, "check": check, "ok": bool(ok), "errno": err or None, "detail": detail}
    sys.stdout.write(json.dumps(rec, default=str) + "\n")
    sys.stdout.flush()
    return rec


def emit_sc(pid, check, name, *args, fd=False, detail=None):
    r, e = sc(name, *args)
    if r >= 0 and fd and r > 2:
        os.close(r)
    return emit(pid, check, r >= 0, e, detail if detail is not None else {"ret": r})


def try_op(fn):
    """Run fn(); (True, None, value) or (False, errno, str(exc))."""
    try:
        return True, None, fn()
    except OSError as ex:
        return False, ex.errno, str(ex)


def emit_op(pid, check, fn):
    ok, e, v = try_op(fn)
    return emit(pid, check, ok, e, v)


def unhide(marker):
    """Markers travel reversed ("~" prefix) so that the literal never appears on the command
    line of `safehouse run` itself (which PID 1 inside may expose): a hit is then a real
    host or peer process, not our own arguments."""
    return marker[1:][::-1] if marker.startswith("~") else marker


def env_list(name):
    v = os.environ.get(name, "")
    return [x for x in v.split(",") if x]


def env_map(name):
    out = {}
    for item in env_list(name):
        k, _, v = item.partition("=")
        out[k] = v
    return out


def in_child(fn, timeout=10):
    """Run fn() in a forked child; return what it returned (JSON-able) or an error dict."""
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            out = fn()
        except BaseException as ex:  # noqa: BLE001 - report anything the child hits
            out = {"child_exception": repr(ex)}
        os.write(wfd, json.dumps(out, default=str).encode())
        os._exit(0)
    os.close(wfd)
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([rfd], [], [], max(0.0, deadline - time.time()))
        if not r:
            break
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        data += chunk
    os.close(rfd)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    if not data:
        return {"child_failed": status}
    return json.loads(data)


def run_helper(*args, timeout=10):
    helper = os.environ.get("SH_HELPER")
    if not helper or not os.path.exists(helper):
        return {"no_helper": helper}
    p = subprocess.run([helper, *args], capture_output=True, timeout=timeout)
    out = {"returncode": p.returncode, "signal": -p.returncode if p.returncode < 0 else None}
    try:
        out.update(json.loads(p.stdout.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        out["stdout"] = p.stdout.decode(errors="replace")[-200:]
    return out


PROBES = {}
EXPLICIT_ONLY = set()  # probes that need a special harness (tty stdin, ...)


def probe(pid, explicit=False):
    def deco(fn):
        PROBES[pid] = fn
        if explicit:
            EXPLICIT_ONLY.add(pid)
        return fn
    return deco


def read_bytes(path, n=4096):
    with open(path, "rb") as f:
        return f.read(n)


def open_close(path, flags):
    fd = os.open(path, flags)
    st = os.fstat(fd)
    os.close(fd)
    return {"rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)], "mode": oct(st.st_mode)}


# ---------------------------------------------------------------- filesystem

@probe("FS-01")
def fs01():
    for p in ["/etc/shadow", "/etc/gshadow", "/etc/sudoers"]:
        emit_op("FS-01", "read:" + p, lambda p=p: len(read_bytes(p)))
    # directories: ok means "listed something"; an empty dir or absent dir is a denial
    for p in ["/etc/ssh", "/root", "/home", "/var/lib", "/work"]:
        ok, e, v = try_op(lambda p=p: sorted(os.listdir(p)))
        emit("FS-01", "list:" + p, ok and bool(v), e, v if ok else v)
    for label, path in env_map("SH_CANARIES").items():
        emit_op("FS-01", "canary:" + label, lambda path=path: read_bytes(path).decode())


@probe("FS-02")
def fs02():
    emit_op("FS-02", "readlink:/proc/self/root", lambda: os.readlink("/proc/self/root"))
    canary = env_map("SH_CANARIES").get("root", "/root")
    a = agent()
    emit_op("FS-02", "agent-root-host-file",
            lambda: os.lstat(f"/proc/{a}/root" + canary).st_size)
    emit_op("FS-02", "self-root-host-file", lambda: os.lstat("/proc/self/root" + canary).st_size)
    for i, hp in enumerate(env_list("SH_HOST_PIDS")):
        emit_op("FS-02", f"host-pid-{i}:stat", lambda hp=hp: os.lstat(f"/proc/{hp}").st_ino)
        emit_op("FS-02", f"host-pid-{i}:root",
                lambda hp=hp: len(os.listdir(f"/proc/{hp}/root/")))
    marker = unhide(os.environ.get("SH_HOST_MARKER", "\0none"))
    found, pids = [], []
    for d in os.listdir("/proc"):
        if d.isdigit():
            pids.append(int(d))
            try:
                if marker.encode() in read_bytes(f"/proc/{d}/cmdline", 65536):
                    found.append(int(d))
            except OSError:
                pass
    emit("FS-02", "scan-host-marker", bool(found), None, found)
    emit("FS-02", "visible-pids", len(pids) > 20, None, sorted(pids)[:40])


@probe("FS-03")
def fs03():
    r, e = sc("unshare", CLONE["NEWNS"])
    private = r == 0 and sc("mount", None, "/", None, MS_REC | MS_PRIVATE, None)[0] == 0
    if WHERE == "outside" and not private:
        emit("FS-03", "setup", False, e, "no private mount namespace: refusing to mount on host")
        return
    d = tempfile.mkdtemp(prefix="fs03-")
    emit_sc("FS-03", "mount-tmpfs", "mount", "safehouse-probe", d, "tmpfs", 0, "size=1m")
    emit_sc("FS-03", "remount-root-rw", "mount", None, "/", None, MS_REMOUNT | MS_BIND, None)
    emit_sc("FS-03", "umount2-own", "umount2", d, 0)
    emit_sc("FS-03", "umount2-mask", "umount2", "/proc/kcore", MNT_DETACH)
    emit_sc("FS-03", "pivot_root", "pivot_root", "/nonexistent-safehouse-a",
            "/nonexistent-safehouse-b")
    # the classic chroot escape: chroot into a subdir, walk up, chroot(".")
    inner = os.path.join(d, "jail")
    os.makedirs(inner, exist_ok=True)
    rec = emit_sc("FS-03", "chroot", "chroot", inner)
    if rec["ok"]:
        for _ in range(20):
            os.chdir("..")
        emit_sc("FS-03", "chroot-escape", "chroot", ".")
    else:
        emit("FS-03", "chroot-escape", False, rec["errno"], "first chroot refused")


@probe("FS-04")
def fs04():
    emit_sc("FS-04", "fsopen", "fsopen", "tmpfs", 0, fd=True)
    emit_sc("FS-04", "fsconfig", "fsconfig", -1, 0, "ro", None, 0)
    emit_sc("FS-04", "fsmount", "fsmount", -1, 0, 0)
    emit_sc("FS-04", "fspick", "fspick", AT_FDCWD, "/", 0, fd=True)
    emit_sc("FS-04", "open_tree", "open_tree", AT_FDCWD, "/", 1 | 0o2000000, fd=True)
    emit_sc("FS-04", "open_tree_attr", "open_tree_attr", AT_FDCWD, "/", 1 | 0o2000000, None, 0,
            fd=True)
    emit_sc("FS-04", "move_mount", "move_mount", -1, "", -1, "", 0)
    attr = ctypes.create_string_buffer(32)
    emit_sc("FS-04", "mount_setattr", "mount_setattr", -1, "", 0x1000, attr, 32)


@probe("FS-05")
def fs05():
    buf = ctypes.create_string_buffer(8 + 128)
    struct.pack_into("I", buf, 0, 128)
    mid = ctypes.c_int(0)
    rec = emit_sc("FS-05", "name_to_handle_at", "name_to_handle_at", AT_FDCWD, "/etc", buf,
                  ctypes.byref(mid), 0)
    mfd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    if rec["ok"]:
        emit_sc("FS-05", "open_by_handle_at", "open_by_handle_at", mfd, buf, os.O_RDONLY, fd=True)
    else:
        emit_sc("FS-05", "open_by_handle_at", "open_by_handle_at", mfd, buf, os.O_RDONLY, fd=True)
    # shocker-style brute force: FILEID_INO32_GEN handles for small inode numbers
    errnos, opened = set(), []
    for ino in range(2, 40):
        h = ctypes.create_string_buffer(8 + 8)
        struct.pack_into("IiII", h, 0, 8, 1, ino, 0)
        r, e = sc("open_by_handle_at", mfd, h, os.O_RDONLY)
        if r >= 0:
            opened.append(ino)
            os.close(r)
        else:
            errnos.add(e)
    os.close(mfd)
    only = errnos.pop() if len(errnos) == 1 and not opened else None
    emit("FS-05", "brute-force", bool(opened), only, {"opened": opened, "errnos": sorted(errnos)})


ALLOWED_DEV = {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
               "stdin", "stdout", "stderr"}
ESSENTIAL_DEV = {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"}


def disk_device():
    for b in sorted(os.listdir("/sys/block")):
        if not b.startswith(("loop", "zram", "ram")):
            return "/dev/" + b
    return "/dev/vda"


@probe("FS-06")
def fs06():
    d = tempfile.mkdtemp(prefix="fs06-")
    for check, mode, dev in [("mknod-chr-mem", 0o20600, os.makedev(1, 1)),
                             ("mknod-blk-disk", 0o60600, os.makedev(254, 0)),
                             ("mknod-fifo", 0o10600, 0)]:
        path = os.path.join(d, check)
        rec = emit_sc("FS-06", check, "mknodat", AT_FDCWD, path, mode, dev)
        if rec["ok"]:
            os.unlink(path)
    for p in ["/dev/mem", "/dev/kmsg", "/dev/kvm", "/dev/port", disk_device()]:
        label = "disk" if p == disk_device() else p
        emit_op("FS-06", "open:" + label, lambda p=p: open_close(p, os.O_RDONLY))
    names = set(os.listdir("/dev"))
    emit("FS-06", "dev-extra-entries", bool(names - ALLOWED_DEV), None, sorted(names - ALLOWED_DEV))
    emit("FS-06", "dev-essentials", not (ESSENTIAL_DEV - names), None,
         sorted(ESSENTIAL_DEV - names))


def is_devnull(path):
    st = os.stat(path)
    return (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3) and not os.path.isdir(path)


def write_open(path):
    """ok = opened for writing something that is not a /dev/null mask."""
    fd = os.open(path, os.O_WRONLY)
    st = os.fstat(fd)
    os.close(fd)
    masked = (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    return masked


@probe("FS-07")
def fs07():
    def w(check, path):
        ok, e, masked = try_op(lambda: write_open(path))
        if ok and masked:
            emit("FS-07", check, False, None, "opened, but it is a /dev/null mask")
        else:
            emit("FS-07", check, ok, e, path)
    w("open-w:/proc/sys/kernel/domainname", "/proc/sys/kernel/domainname")
    w("open-w:/proc/sys/vm/drop_caches", "/proc/sys/vm/drop_caches")
    w("open-w:/proc/sysrq-trigger", "/proc/sysrq-trigger")
    w("open-w:/sys/kernel/mm/transparent_hugepage/enabled",
      "/sys/kernel/mm/transparent_hugepage/enabled")
    w("open-w:/sys/power/state", "/sys/power/state")
    for p in ["/proc/sys", "/sys", "/proc/sysrq-trigger"]:
        ok, e, v = try_op(lambda p=p: os.statvfs(p).f_flag & os.ST_RDONLY)
        emit("FS-07", "mount-writable:" + p, ok and not v, e, {"rdonly": v})
    ok, e, v = try_op(lambda: read_bytes("/proc/kcore", 4))
    emit("FS-07", "read:/proc/kcore", ok and v == b"\x7fELF", e, repr(v))


@probe("FS-08")
def fs08():
    cg = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") or [""]:
                cg[c] = path
    emit("FS-08", "self-cgroup", True, None, cg)
    for ctrl in ["pids", "memory"]:
        path = cg.get(ctrl, "/")
        parent = os.path.normpath(f"/sys/fs/cgroup/{ctrl}/{path}" + ("/.." if path != "/" else ""))
        target = os.path.join(parent, "cgroup.procs")
        ok, e, v = try_op(lambda target=target: open_close(target, os.O_WRONLY))
        emit("FS-08", f"open-w-parent-procs:{ctrl}", ok, e, target)
    ok, e, v = try_op(lambda: open_close("/sys/fs/cgroup/pids/release_agent", os.O_WRONLY))
    emit("FS-08", "open-w-release_agent", ok, e, v)
    r, e = sc("unshare", CLONE["NEWNS"])
    private = r == 0 and sc("mount", None, "/", None, MS_REC | MS_PRIVATE, None)[0] == 0
    if WHERE == "outside" and not private:
        emit("FS-08", "mount-cgroup-v1", False, e, "no private mount ns: refusing")
        return
    d = tempfile.mkdtemp(prefix="fs08-")
    rec = emit_sc("FS-08", "mount-cgroup-v1", "mount", "cgroup", d, "cgroup", 0, "pids")
    ra = os.path.join(d, "release_agent")
    emit("FS-08", "release_agent-writable", rec["ok"] and os.access(ra, os.W_OK), None, ra)
    if rec["ok"]:
        sc("umount2", d, MNT_DETACH)


def sha(path):
    return hashlib.sha256(read_bytes(path, 1 << 20)).hexdigest()


@probe("FS-12")
def fs12():
    hashes = {}
    for p in ["/etc/passwd", "/etc/os-release", "/usr/bin/env"]:
        ok, e, v = try_op(lambda p=p: sha(p))
        hashes[p] = v if ok else f"errno {e}"
    emit("FS-12", "hashes-before", True, None, hashes)
    tag = os.environ.get("SH_FS12_TAG", "x")
    for check, path in [("create:/usr/bin", f"/usr/bin/safehouse-fs12-{tag}"),
                        ("create:/etc", f"/etc/safehouse-fs12-{tag}"),
                        ("create:/", f"/safehouse-fs12-{tag}")]:
        def create(path=path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            if WHERE == "outside":
                os.unlink(path)
        emit_op("FS-12", check, create)
    for p in ["/etc/passwd", "/etc/os-release", "/usr/bin/env"]:
        emit_op("FS-12", "open-w:" + p, lambda p=p: open_close(p, os.O_WRONLY))
    if WHERE == "inside":
        with open(f"/tmp/safehouse-fs12-{tag}", "w") as f:
            f.write("first sandbox was here\n")


@probe("FS-15")
def fs15():
    suid = os.environ.get("SH_SUID_HELPER", "")

    def run_as_nobody(path):
        def body():
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            p = subprocess.run([path, "euid"], capture_output=True, timeout=5)
            return {"rc": p.returncode, "out": p.stdout.decode(), "err": p.stderr.decode()[-200:]}
        return in_child(body)

    res = run_as_nobody(suid) if suid else {"err": "no SH_SUID_HELPER"}
    try:
        ids = json.loads(res["out"])
        gained = ids["euid"] != ids["uid"]
        emit("FS-15", "run-setuid-root-binary", gained, None, ids)
    except (KeyError, ValueError):
        emit("FS-15", "run-setuid-root-binary", False, None, res)
    # make our own setuid copy and run it
    d = tempfile.mkdtemp(prefix="fs15-")
    os.chmod(d, 0o755)
    copy = os.path.join(d, "helper")
    helper = os.environ.get("SH_HELPER", "")

    def mk():
        with open(helper, "rb") as src, open(copy, "wb") as dst:
            dst.write(src.read())
        os.chmod(copy, 0o4755)
        return oct(os.stat(copy).st_mode)
    emit_op("FS-15", "create-setuid-file", mk)
    res = run_as_nobody(copy)
    try:
        ids = json.loads(res["out"])
        emit("FS-15", "run-own-setuid-copy", ids["euid"] != ids["uid"] and ids["euid"] in (0,),
             None, ids)
    except (KeyError, ValueError):
        emit("FS-15", "run-own-setuid-copy", False, None, res)
    emit_op("FS-15", "chown-root", lambda: os.chown(copy, 0, 0))
    # Setting setuid/setgid bits by every route: a file in a writable bind lives on the
    # host, where the sandbox's nosuid no longer applies.
    plain = os.path.join(d, "plain")
    with open(plain, "wb") as f:
        f.write(b"#!/bin/sh\n")
    emit_op("FS-15", "chmod-setgid", lambda: os.chmod(plain, 0o2755))
    emit_op("FS-15", "open-creat-setuid", lambda: os.close(os.open(os.path.join(d, "c1"), os.O_CREAT | os.O_WRONLY, 0o4755)))
    emit_op("FS-15", "mknod-reg-setuid", lambda: os.mknod(os.path.join(d, "c2"), stat.S_IFREG | 0o4755))


# ---------------------------------------------------------------- processes

def sleeper_child():
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    return pid


@probe("PR-01")
def pr01():
    child = sleeper_child()
    try:
        rec = emit_sc("PR-01", "ptrace-attach-child", "ptrace", 16, child, 0, 0)  # PTRACE_ATTACH
        if rec["ok"]:
            os.waitpid(child, 0)
            sc("ptrace", 17, child, 0, 0)  # PTRACE_DETACH
        local = ctypes.create_string_buffer(8)
        target = ctypes.create_string_buffer(b"SECRET!")
        liov = struct.pack("QQ", ctypes.addressof(local), 8)
        riov = struct.pack("QQ", ctypes.addressof(target), 8)
        emit_sc("PR-01", "process_vm_readv-child", "process_vm_readv", child, liov, 1, riov, 1, 0)
        emit_sc("PR-01", "process_vm_writev-child", "process_vm_writev", child, liov, 1, riov,
                1, 0)
        emit_sc("PR-01", "kcmp-agent", "kcmp", os.getpid(), agent(), 0, 0, 0)  # KCMP_FILE fd 0
        pfd, e = sc("pidfd_open", child, 0)
        if pfd >= 0:
            emit_sc("PR-01", "pidfd_getfd", "pidfd_getfd", pfd, 0, 0, fd=True)
            os.close(pfd)
        else:
            emit("PR-01", "pidfd_getfd", False, e, "pidfd_open failed")
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    tm = in_child(lambda: sc("ptrace", 0, 0, 0, 0))  # PTRACE_TRACEME
    emit("PR-01", "ptrace-traceme", tm[0] >= 0, tm[1], tm)
    if WHERE == "inside":
        # the agent: the sandbox's init, PID 1
        emit_sc("PR-01", "ptrace-attach-agent", "ptrace", 16, 1, 0, 0)
        emit_sc("PR-01", "process_vm_readv-agent", "process_vm_readv", 1, liov, 1, riov, 1, 0)
    else:
        # never stop the host's init: use a throwaway child as the stand-in for the agent
        c2 = sleeper_child()
        rec = emit_sc("PR-01", "ptrace-attach-agent", "ptrace", 16, c2, 0, 0)
        emit_sc("PR-01", "process_vm_readv-agent", "process_vm_readv", c2, liov, 1, riov, 1, 0)
        os.kill(c2, signal.SIGKILL)
        os.waitpid(c2, 0)
    a = agent()
    emit_op("PR-01", "open-rw:/proc/agent/mem", lambda: open_close(f"/proc/{a}/mem", os.O_RDWR))
    emit_op("PR-01", "read:/proc/agent/environ", lambda: len(read_bytes(f"/proc/{a}/environ")))
    emit_op("PR-01", "readlink:/proc/agent/exe", lambda: os.readlink(f"/proc/{a}/exe"))


@probe("PR-02")
def pr02():
    for i, hp in enumerate(env_list("SH_HOST_PIDS")):
        hp = int(hp)
        emit_sc("PR-02", f"kill0-host-pid-{i}", "kill", hp, 0)
        emit_sc("PR-02", f"pidfd_open-host-pid-{i}", "pidfd_open", hp, 0, fd=True)
        if WHERE == "inside":  # for real: the harness checks the host process survived
            emit_sc("PR-02", f"sigkill-host-pid-{i}", "kill", hp, signal.SIGKILL)
        else:
            emit_sc("PR-02", f"sigkill-host-pid-{i}", "kill", hp, 0)
    # guessed low host pids (systemd, kthreadd, ...): harmless signal 0
    seen = [p for p in range(1, 300) if sc("kill", p, 0)[0] == 0]
    emit("PR-02", "guess-low-pids", len(seen) > 20, None, seen[:40])


def kill_all():
    """kill(-1, SIGKILL). Outside only in a fresh PID namespace (else it kills the host)."""
    if WHERE == "outside":
        def body():
            r, e = sc("unshare", CLONE["NEWPID"])
            if r != 0:
                return {"setup": e}
            pid = os.fork()
            if pid == 0:
                victim = os.fork()
                if victim == 0:
                    time.sleep(30)
                    os._exit(0)
                time.sleep(0.2)
                r, e = sc("kill", -1, signal.SIGKILL)
                _, st = os.waitpid(victim, 0)
                os._exit(100 + (1 if r == 0 and os.WIFSIGNALED(st) else 0))
            _, st = os.waitpid(pid, 0)
            return {"ok": os.WEXITSTATUS(st) == 101}
        res = in_child(body)
        emit("PR-02", "kill-minus-1", res.get("ok", False), None, res)
    else:
        r, e = sc("kill", -1, signal.SIGKILL)
        emit("PR-02", "kill-minus-1", r == 0, e, "inside: must not reach anything outside")


def cap_lines(path="/proc/self/status"):
    caps = {}
    with open(path) as f:
        for line in f:
            if line.startswith("Cap"):
                k, v = line.split(":")
                caps[k] = v.strip()
    return caps


@probe("PR-03")
def pr03():
    caps = cap_lines()
    emit("PR-03", "status-caps-nonzero", any(int(v, 16) for v in caps.values()), None, caps)
    hdr = struct.pack("Ii", 0x20080522, 0)
    data = ctypes.create_string_buffer(24)
    r, e = sc("capget", hdr, data)
    eff = struct.unpack_from("IIIIII", data.raw)
    emit("PR-03", "capget-nonzero", r == 0 and any(eff), e, eff)
    res = in_child(lambda: sc("capset", hdr, data))
    emit("PR-03", "capset", res[0] == 0, res[1], res)
    res = in_child(lambda: sc("setuid", 0))
    emit("PR-03", "setuid0", res[0] == 0, res[1], res)
    res = in_child(lambda: sc("setgroups", 1, struct.pack("I", 0)))
    emit("PR-03", "setgroups0", res[0] == 0, res[1], res)
    # PR_CAP_AMBIENT_RAISE CAP_SYS_ADMIN: needs it in permitted and inheritable, so first
    # try to copy permitted into inheritable (works outside as root, EPERM inside)
    def ambient():
        d = ctypes.create_string_buffer(24)
        sc("capget", hdr, d)
        eff, prm, inh, eff2, prm2, inh2 = struct.unpack_from("IIIIII", d.raw)
        struct.pack_into("IIIIII", d, 0, eff, prm, prm, eff2, prm2, prm2)
        sc("capset", hdr, d)
        return sc("prctl", 47, 2, 21, 0, 0)
    res = in_child(ambient)
    emit("PR-03", "ambient-raise", res[0] == 0, res[1], res)


def thread_status():
    with open("/proc/thread-self/status") as f:
        d = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {k: d.get(k) for k in ("Seccomp", "NoNewPrivs", "CapEff", "CapBnd")}


@probe("PR-04")
def pr04():
    results = []
    lock = threading.Lock()

    def t():
        s = thread_status()
        with lock:
            results.append(s)
    ths = [threading.Thread(target=t) for _ in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    results.append(thread_status())
    weak = [s for s in results if s["Seccomp"] != "2" or s["NoNewPrivs"] != "1"]
    emit("PR-04", "threads-unfiltered", bool(weak), None, results)
    tids = os.listdir("/proc/self/task")
    emit("PR-04", "thread-count", len(tids) >= 1, None, tids)
    code = ("import json;d=dict(l.rstrip('\\n').split(':\\t',1) for l in open('/proc/self/status') "
            "if ':\\t' in l);print(json.dumps([d['Seccomp'],d['NoNewPrivs']]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=10)
    try:
        seccomp, nnp = json.loads(p.stdout)
        emit("PR-04", "exec-unfiltered", seccomp != "2" or nnp != "1", None, [seccomp, nnp])
    except ValueError:
        emit("PR-04", "exec-unfiltered", False, None, p.stderr.decode()[-300:])


@probe("PR-05")
def pr05():
    for name, flag in CLONE.items():
        res = in_child(lambda flag=flag: sc("unshare", flag))
        emit("PR-05", "unshare:" + name, res[0] == 0, res[1], res)

    def userns_mount():
        r, e = sc("unshare", CLONE["NEWUSER"] | CLONE["NEWNS"])
        if r != 0:
            return {"stage": "unshare", "errno": e}
        d = tempfile.mkdtemp()
        r, e = sc("mount", "x", d, "tmpfs", 0, None)
        return {"stage": "mount", "errno": e, "ok": r == 0}
    res = in_child(userns_mount)
    emit("PR-05", "userns-then-mount", res.get("ok", False), res.get("errno"), res)

    def setns(path, nstype):
        def body():
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as ex:
                return [-1, ex.errno, "open"]
            return list(sc("setns", fd, nstype)) + ["setns"]
        return body
    res = in_child(setns("/proc/self/ns/uts", CLONE["NEWUTS"]))
    emit("PR-05", "setns:self-uts", res[0] == 0, res[1], res)
    res = in_child(setns(f"/proc/{agent()}/ns/mnt", CLONE["NEWNS"]))
    emit("PR-05", "setns:agent-mnt", res[0] == 0, res[1], res)
    for name in ["NEWUSER", "NEWNS", "NEWPID"]:
        h = run_helper("clone", hex(CLONE[name]))
        emit("PR-05", "clone:" + name, h.get("ret") == 0, h.get("errno") or None, h)
    emit_sc("PR-05", "clone3", "clone3", None, 0)


@probe("PR-06")
def pr06():
    emit_sc("PR-06", "keyctl", "keyctl", 0, 0xFFFFFFFD, 0)  # GET_KEYRING_ID session
    res = in_child(lambda: sc("add_key", "user", "safehouse-probe", b"x", 1, 0xFFFFFFFF))
    emit("PR-06", "add_key", res[0] >= 0, res[1], res)
    emit_sc("PR-06", "request_key", "request_key", "user", "safehouse-nonexistent-key", None, 0)


@probe("PR-07")
def pr07():
    attr = ctypes.create_string_buffer(72)
    emit_sc("PR-07", "bpf", "bpf", 0, attr, 72, fd=True)
    pattr = ctypes.create_string_buffer(128)
    struct.pack_into("IIQ", pattr, 0, 1, 128, 0)  # PERF_TYPE_SOFTWARE, size, CPU_CLOCK
    emit_sc("PR-07", "perf_event_open", "perf_event_open", pattr, 0, -1, -1, 0, fd=True)
    emit_sc("PR-07", "userfaultfd", "userfaultfd", 0o2000000, fd=True)
    emit_op("PR-07", "open:/dev/userfaultfd", lambda: open_close("/dev/userfaultfd", os.O_RDWR))
    params = ctypes.create_string_buffer(120)
    emit_sc("PR-07", "io_uring_setup", "io_uring_setup", 1, params, fd=True)
    emit_sc("PR-07", "io_uring_enter", "io_uring_enter", -1, 0, 0, 0, None, 0)
    emit_sc("PR-07", "io_uring_register", "io_uring_register", -1, 0, None, 0)


# ---------------------------------------------------------------- kernel surface

def docker_blocked():
    timex = ctypes.create_string_buffer(208)
    ts_bad = struct.pack("qq", 0, -1)
    iov = struct.pack("QQ", 0, 0)
    hdr = struct.pack("Ii", 0x20080522, 0)
    capdata = ctypes.create_string_buffer(24)
    sc("capget", hdr, capdata)
    nobuf = ctypes.create_string_buffer(64)
    return [
        # name, args (harmless: bad magic / nonexistent path / bad fd / no-op)
        ("acct", ("/nonexistent-safehouse/acct",)),
        ("add_key", ("user", "safehouse-probe", b"x", 1, 0xFFFFFFFF)),
        ("bpf", (0, ctypes.create_string_buffer(72), 72)),
        ("clock_adjtime", (0, timex)),
        ("adjtimex", (timex,)),
        ("clock_settime", (0, ts_bad)),
        ("create_module", ("x", 0)),
        ("delete_module", ("safehouse_nonexistent_mod", 0o4000)),
        ("finit_module", (-1, "", 0)),
        ("get_kernel_syms", (None,)),
        ("get_mempolicy", (None, None, 0, None, 0)),
        ("init_module", (None, 0, "")),
        ("ioperm", (0x80, 1, 0)),
        ("iopl", (0,)),
        ("kcmp", (os.getpid(), os.getpid(), 0, 0, 0)),
        ("kexec_file_load", (-1, -1, 0, None, 0xFFFF0000)),
        ("kexec_load", (0, 0, None, 0xFFFF0000)),
        ("keyctl", (0, 0xFFFFFFFD, 0)),
        ("lookup_dcookie", (0, None, 0)),
        ("mbind", (0, 0, 0, None, 0, 0)),
        ("mount", (None, "/nonexistent-safehouse", None, 0, None)),
        ("move_pages", (0, 0, None, None, None, 0)),
        ("name_to_handle_at", (AT_FDCWD, "/nonexistent-safehouse", nobuf, nobuf, 0)),
        ("nfsservctl", (0, None, None)),
        ("open_by_handle_at", (-1, nobuf, 0)),
        ("perf_event_open", (None, 0, -1, -1, 0)),
        ("personality", (0x0400000,)),  # READ_IMPLIES_EXEC: not a usual value
        ("pivot_root", ("/nonexistent-safehouse-a", "/nonexistent-safehouse-b")),
        ("process_vm_readv", (os.getpid(), iov, 0, iov, 0, 0)),
        ("process_vm_writev", (os.getpid(), iov, 0, iov, 0, 0)),
        ("ptrace", (2, os.getpid(), 0, 0)),  # PEEKDATA on an untraced pid
        ("query_module", (None, 0, None, 0, None)),
        ("quotactl", ((0x800005 << 8), "/nonexistent-safehouse", 0, None)),
        ("reboot", (0, 0, 0, None)),  # bad magic
        ("request_key", ("user", "safehouse-nonexistent-key", None, 0)),
        ("set_mempolicy", (0, None, 0)),
        ("setns", (-1, 0)),
        ("settimeofday", (None, None)),  # no-op
        ("swapon", ("/nonexistent-safehouse", 0)),
        ("swapoff", ("/nonexistent-safehouse",)),
        ("sysfs", (3,)),
        ("_sysctl", (None,)),
        ("umount2", ("/nonexistent-safehouse", 0)),
        ("unshare", (0,)),
        ("uselib", ("/nonexistent-safehouse",)),
        ("userfaultfd", (0o2000000,)),
        ("ustat", (0, nobuf)),
        ("vhangup", ()),
        ("capset", (hdr, capdata)),
        ("syslog", (10, None, 0)),
        ("mknodat", (AT_FDCWD, "/nonexistent-safehouse/x", 0o20600, 0x103)),  # chr 1:3
        ("mknod", ("/nonexistent-safehouse/x", 0o20600, 0x103)),
        ("chroot", ("/nonexistent-safehouse",)),
        ("sethostname", (None, 1000)),  # len > 64: EINVAL
        ("setdomainname", (None, 1000)),
        ("io_uring_setup", (0, None)),
        ("pidfd_getfd", (-1, 0, 0)),
    ]


FD_RETURNING = {"bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "pidfd_getfd",
                "open_by_handle_at"}


@probe("KS-01")
def ks01():
    for name, args in docker_blocked():
        def body(name=name, args=args):
            if name == "vhangup":
                os.setsid()  # no controlling tty: nothing to hang up
            r, e = sc(name, *args)
            if name == "personality" and r >= 0:
                sc("personality", r)
            if r > 2 and name in FD_RETURNING:
                os.close(r)
            return [r, e]
        res = in_child(body)
        if isinstance(res, list):
            emit("KS-01", name, res[0] >= 0, res[1], {"ret": res[0]})
        else:
            emit("KS-01", name, False, None, res)
    emit_sc("KS-01", "unknown-syscall-1000", 1000)
    emit_sc("KS-01", "personality-query", "personality", 0xFFFFFFFF)


SOCKETS = [
    # check, family, type, proto
    ("netlink-route", 16, socket.SOCK_RAW, 0),
    ("netlink-netfilter", 16, socket.SOCK_RAW, 12),
    ("netlink-xfrm", 16, socket.SOCK_RAW, 6),
    ("netlink-audit", 16, socket.SOCK_RAW, 9),
    ("packet-raw", 17, socket.SOCK_RAW, 0x0300),
    ("packet-dgram", 17, socket.SOCK_DGRAM, 0x0300),
    ("inet-raw-icmp", 2, socket.SOCK_RAW, 1),
    ("inet-raw-tcp", 2, socket.SOCK_RAW, 6),
    ("inet-packet", 2, 10, 0x0300),  # SOCK_PACKET
    ("inet6-raw", 10, socket.SOCK_RAW, 58),
    ("key", 15, socket.SOCK_RAW, 2),
    ("alg", 38, socket.SOCK_SEQPACKET, 0),
    ("vsock", 40, socket.SOCK_STREAM, 0),
    ("bluetooth", 31, socket.SOCK_RAW, 0),
    ("can", 29, socket.SOCK_RAW, 1),
    ("tipc", 30, socket.SOCK_RDM, 0),
    ("rds", 21, socket.SOCK_SEQPACKET, 0),
    ("xdp", 44, socket.SOCK_RAW, 0),
    ("ppp", 24, socket.SOCK_DGRAM, 0),
    ("unix-stream", 1, socket.SOCK_STREAM, 0),
    ("inet-stream", 2, socket.SOCK_STREAM, 0),
    ("inet6-dgram", 10, socket.SOCK_DGRAM, 0),
    ("inet-tcp", 2, socket.SOCK_STREAM, 6),
    ("inet6-udp", 10, socket.SOCK_DGRAM, 17),
    # protocols beyond TCP and UDP on inet sockets (the threat model allows only those)
    ("inet-mptcp", 2, socket.SOCK_STREAM, 262),
    ("inet6-mptcp", 10, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 262),
    ("inet-udplite", 2, socket.SOCK_DGRAM, 136),
    ("inet6-udplite", 10, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 136),
    ("inet-icmp-ping", 2, socket.SOCK_DGRAM, 1),
    ("inet6-icmp-ping", 10, socket.SOCK_DGRAM, 58),
    ("inet-sctp", 2, socket.SOCK_STREAM, 132),
    ("inet-smc", 2, socket.SOCK_STREAM, 256),
    ("inet-sctp-seqpacket", 2, socket.SOCK_SEQPACKET, 132),
    ("inet-dccp", 2, 6, 33),  # SOCK_DCCP, IPPROTO_DCCP
]


@probe("KS-02")
def ks02():
    for check, fam, typ, proto in SOCKETS:
        r, e = sc(41, fam, typ, proto)  # socket(2)
        if r >= 0:
            os.close(r)
        emit("KS-02", check, r >= 0, e, [fam, typ, proto])
    # socketpair and the type flag bits must not smuggle a raw socket past the filter
    r, e = sc(41, 2, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, 1)
    if r >= 0:
        os.close(r)
    emit("KS-02", "inet-raw-with-flags", r >= 0, e, None)
    sv = ctypes.create_string_buffer(8)
    r, e = sc(53, 16, socket.SOCK_RAW, 0, sv)  # socketpair(AF_NETLINK)
    emit("KS-02", "socketpair-netlink", r >= 0, e, None)
    # the kernel reads protocol as an int: high bits must not smuggle MPTCP past the filter
    r, e = sc(41, 2, socket.SOCK_STREAM, (1 << 32) | 262)
    if r >= 0:
        os.close(r)
    emit("KS-02", "inet-mptcp-high-bits", r >= 0, e, None)


@probe("KS-03")
def ks03():
    emit_sc("KS-03", "syslog-size", "syslog", 10, None, 0)
    buf = ctypes.create_string_buffer(4096)
    emit_sc("KS-03", "syslog-read-all", "syslog", 3, buf, 4096)
    emit_op("KS-03", "open:/dev/kmsg", lambda: open_close("/dev/kmsg", os.O_RDONLY))
    try:
        p = subprocess.run(["dmesg"], capture_output=True, timeout=10)
        emit("KS-03", "dmesg", p.returncode == 0 and bool(p.stdout), None,
             {"rc": p.returncode, "stderr": p.stderr.decode()[-200:]})
    except OSError as ex:
        emit("KS-03", "dmesg", False, ex.errno, str(ex))


@probe("KS-04")
def ks04():
    cur = os.uname().nodename
    emit("KS-04", "nodename", cur == os.environ.get("SH_HOST_HOSTNAME"), None, cur)
    name = cur.encode() if WHERE == "outside" else b"pwned-by-sandbox"
    res = in_child(lambda: sc("sethostname", name, len(name)))
    emit("KS-04", "sethostname", res[0] == 0, res[1], res)
    with open("/proc/sys/kernel/domainname") as f:
        dom = f.read().strip().encode()
    name = dom if WHERE == "outside" else b"pwned"
    res = in_child(lambda: sc("setdomainname", name, len(name)))
    emit("KS-04", "setdomainname", res[0] == 0, res[1], res)
    # outside: a no-op call; inside: set the clock to now (harmless even if it worked)
    tv = struct.pack("qq", int(time.time()), 0)
    res = in_child(lambda: sc("settimeofday", None if WHERE == "outside" else tv, None))
    emit("KS-04", "settimeofday", res[0] == 0, res[1], res)
    ts = struct.pack("qq", int(time.time()), 0 if WHERE == "inside" else -1)
    res = in_child(lambda: sc("clock_settime", 0, ts))
    emit("KS-04", "clock_settime", res[0] == 0, res[1], res)


# ---------------------------------------------------------------- leaks

def nonempty_read(path):
    data = read_bytes(path, 1 << 16)
    return data


@probe("LK-02")
def lk02():
    ok, e, v = try_op(lambda: nonempty_read("/proc/kallsyms"))
    real = ok and any(line[:16].strip(b"0") for line in v.splitlines()[:50])
    emit("LK-02", "kallsyms-addresses", real, e, repr(v[:60]) if ok else v)
    for p in ["/proc/modules", "/proc/timer_list", "/proc/keys"]:
        ok, e, v = try_op(lambda p=p: nonempty_read(p))
        emit("LK-02", "read:" + p, ok and bool(v), e, len(v) if ok else v)
    ok, e, v = try_op(lambda: os.listdir("/boot"))
    emit("LK-02", "exists:/boot", ok, e, v)
    ok, e, v = try_op(lambda: os.listdir("/sys/kernel/debug"))
    emit("LK-02", "list:/sys/kernel/debug", ok and bool(v), e, v)
    ok, e, v = try_op(lambda: os.listdir("/sys/kernel/security"))
    emit("LK-02", "list:/sys/kernel/security", ok and bool(v), e, v)


@probe("LK-03")
def lk03():
    hs = env_map("SH_HOST_SHA")
    emit("LK-03", "hostname-is-host", os.uname().nodename == os.environ.get("SH_HOST_HOSTNAME"),
         None, os.uname().nodename)
    for p in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/passwd", "/etc/group"]:
        ok, e, v = try_op(lambda p=p: sha(p))
        emit("LK-03", "same-as-host:" + p, ok and v == hs.get(p), e, v)
    try:
        import pwd
        pw = pwd.getpwuid(os.getuid())
        emit("LK-03", "whoami", True, None, [pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir])
    except KeyError as ex:
        emit("LK-03", "whoami", False, None, str(ex))
    with open("/etc/passwd") as f:
        users = [line.split(":")[0] for line in f if line.strip()]
    emit("LK-03", "passwd-users", True, None, users)


def sysv_get(kind, key):
    fn = {"shm": libc.shmget, "msg": libc.msgget, "sem": libc.semget}[kind]
    ctypes.set_errno(0)
    if kind == "shm":
        r = fn(ctypes.c_int(key), ctypes.c_size_t(0), ctypes.c_int(0))
    elif kind == "sem":
        r = fn(ctypes.c_int(key), ctypes.c_int(0), ctypes.c_int(0))
    else:
        r = fn(ctypes.c_int(key), ctypes.c_int(0))
    return r, (ctypes.get_errno() if r < 0 else 0)


def sysv_create(kind, key):
    ctypes.set_errno(0)
    if kind == "shm":
        r = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), ctypes.c_int(0o1666))
    elif kind == "sem":
        r = libc.semget(ctypes.c_int(key), ctypes.c_int(1), ctypes.c_int(0o1666))
    else:
        r = libc.msgget(ctypes.c_int(key), ctypes.c_int(0o1666))
    return r, ctypes.get_errno() if r < 0 else 0


def abstract_connect(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect("\0" + name)
        return s.recv(64).decode()
    finally:
        s.close()


@probe("LK-04")
def lk04():
    """SH_LK04 = JSON {label: {tmp, shm, key, abstract, marker}}; label is host or peer."""
    spec = json.loads(os.environ.get("SH_LK04", "{}"))
    for label, s in sorted(spec.items()):
        emit_op("LK-04", f"tmp-file:{label}", lambda s=s: read_bytes(s["tmp"]).decode())
        emit_op("LK-04", f"shm-file:{label}", lambda s=s: read_bytes(s["shm"]).decode())
        for kind in ["shm", "msg", "sem"]:
            r, e = sysv_get(kind, s["key"])
            emit("LK-04", f"sysv-{kind}:{label}", r >= 0, e, r)
        emit_op("LK-04", f"abstract:{label}", lambda s=s: abstract_connect(s["abstract"]))
        found = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if unhide(s["marker"]).encode() in read_bytes(f"/proc/{d}/cmdline", 65536):
                        found.append(int(d))
                except OSError:
                    pass
        emit("LK-04", f"proc-marker:{label}", bool(found), None, found)


# ---------------------------------------------------------------- extras

@probe("EX-TIOCSTI", explicit=True)
def ex_tiocsti():
    """stdin must be a terminal (the harness passes a pty or uses --tty)."""
    fd = 0
    name = None
    if os.isatty(fd):
        try:
            name = os.ttyname(fd)
        except OSError as ex:  # a host pty has no node in the sandbox's /dev/pts
            name = f"errno {ex.errno}"
    emit("EX-TIOCSTI", "stdin-isatty", os.isatty(fd), None, name)
    c = ctypes.c_char(b"#")
    r, e = sc("ioctl", fd, TIOCSTI, ctypes.byref(c))
    emit("EX-TIOCSTI", "tiocsti", r == 0, e, None)
    # upper 32 bits set: the kernel truncates cmd to unsigned int, a sloppy filter does not
    r, e = sc("ioctl", fd, (1 << 32) | TIOCSTI, ctypes.byref(c))
    emit("EX-TIOCSTI", "tiocsti-high-bits", r == 0, e, None)
    arg = ctypes.c_char(b"\x00")
    r, e = sc("ioctl", fd, TIOCLINUX, ctypes.byref(arg))
    emit("EX-TIOCSTI", "tioclinux", r == 0, e, None)
    if WHERE == "outside":
        # drain the injected characters so they never reach anything else
        import termios
        termios.tcflush(fd, termios.TCIFLUSH)


@probe("EX-X86ABI")
def ex_x86abi():
    for mode in ["int80", "x32"]:
        h = run_helper(mode)
        emit("EX-X86ABI", mode, h.get("returncode") == 0 and h.get("ret", -1) >= 0,
             h.get("errno") or None, h)


@probe("EX-EXE")
def ex_exe():
    """CVE-2019-5736: overwrite the runtime's binary through /proc/<pid>/exe."""
    emit_op("EX-EXE", "open-w:/proc/self/exe", lambda: open_close("/proc/self/exe", os.O_WRONLY))
    a = agent()
    emit_op("EX-EXE", "open-r:/proc/agent/exe", lambda: open_close(f"/proc/{a}/exe", os.O_RDONLY))
    emit_op("EX-EXE", "open-path:/proc/agent/exe",
            lambda: open_close(f"/proc/{a}/exe", os.O_PATH))
    emit_op("EX-EXE", "open-w:/proc/agent/exe", lambda: open_close(f"/proc/{a}/exe", os.O_WRONLY))
    emit_op("EX-EXE", "readlink:/proc/agent/exe", lambda: os.readlink(f"/proc/{a}/exe"))


@probe("EX-FD")
def ex_fd():
    """CVE-2024-21626: a leaked fd or cwd that points outside the root."""
    fds = {}
    for n in os.listdir("/proc/self/fd"):
        try:
            fds[int(n)] = os.readlink(f"/proc/self/fd/{n}")
        except OSError as ex:
            fds[int(n)] = f"errno {ex.errno}"
    d = fds.pop(max(fds), None)  # the one listdir had open
    extra = sorted(k for k in fds if k > 2)
    emit("EX-FD", "extra-fds", bool(extra), None, {"fds": fds, "listdir": d})
    esc = []
    for n in range(3, 256):
        try:
            os.stat(f"/proc/self/fd/{n}/..")
            esc.append(n)
        except OSError:
            pass
    emit("EX-FD", "fd-dotdot", bool(esc), None, esc)
    cwd = os.readlink("/proc/self/cwd")
    emit("EX-FD", "cwd", True, None, {"readlink": cwd, "getcwd": os.getcwd()})
    a = agent()
    emit_op("EX-FD", "list:/proc/agent/fd", lambda: {n: os.readlink(f"/proc/{a}/fd/{n}")
                                                     for n in os.listdir(f"/proc/{a}/fd")})
    emit_op("EX-FD", "readlink:/proc/agent/cwd", lambda: os.readlink(f"/proc/{a}/cwd"))
    emit_op("EX-FD", "list:/proc/agent/cwd", lambda: os.listdir(f"/proc/{a}/cwd/"))
    emit_op("EX-FD", "list:/proc/agent/root", lambda: sorted(os.listdir(f"/proc/{a}/root/")))


@probe("EX-ABSTRACT")
def ex_abstract():
    """CVE-2020-15257: a host abstract unix socket reachable from inside."""
    name = os.environ.get("SH_ABSTRACT")
    emit_op("EX-ABSTRACT", "connect-host-abstract", lambda: abstract_connect(name))
    port = int(os.environ.get("SH_TCP_PORT", "1"))

    def tcp():
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        try:
            return s.recv(64).decode()
        finally:
            s.close()
    emit_op("EX-ABSTRACT", "connect-host-tcp-loopback", tcp)
    emit_op("EX-ABSTRACT", "net-interfaces", lambda: sorted(os.listdir("/sys/class/net")))


@probe("EX-ENV")
def ex_env():
    """The starting state the contract promises (informational outside)."""
    emit("EX-ENV", "ids", True, None,
         {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()})
    emit("EX-ENV", "environ", True, None, sorted(os.environ))
    emit("EX-ENV", "cwd", True, None, os.getcwd())
    # probes run in a child of the command (main): the command must lead its own session
    emit("EX-ENV", "command-is-session-leader", os.getsid(0) == os.getppid(), None,
         {"sid": os.getsid(0), "command_pid": os.getppid()})
    with open("/proc/self/status") as f:
        st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    emit("EX-ENV", "seccomp-nnp", st.get("Seccomp") == "2" and st.get("NoNewPrivs") == "1", None,
         [st.get("Seccomp"), st.get("NoNewPrivs")])
    r, e = sc("landlock_create_ruleset", None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    emit("EX-ENV", "landlock-abi", r > 0, e, r)
    with open("/proc/1/cmdline", "rb") as f:
        argv1 = f.read().split(b"\0")
    emit("EX-ENV", "pid1", True, None, argv1[0].decode(errors="replace"))
    # the runtime's own command line is host information (host paths of --mount sources,
    # --json files, --workdir): PID 1 must not show it to the sandbox
    hostish = [a.decode(errors="replace") for a in argv1
               if b"/work/" in a or b"/tmp/safehouse-" in a or b"SH_" in a]
    emit("EX-ENV", "pid1-cmdline-leaks-host-args", bool(hostish), None, hostish[:8])
    import resource
    emit("EX-ENV", "rlimits", True, None,
         {n: resource.getrlimit(getattr(resource, n))
          for n in ["RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NPROC"]})
    for d in ["/tmp", "/home/user", "/workspace", "/var/tmp", "/dev/shm"]:
        def w(d=d):
            fd, p = tempfile.mkstemp(dir=d)
            os.close(fd)
            os.unlink(p)
        emit_op("EX-ENV", "writable:" + d, w)


def main(argv):
    global WHERE
    args = [a for a in argv if not a.startswith("--")]
    if "--where" in argv:
        WHERE = argv[argv.index("--where") + 1]
        args.remove(WHERE)
    if "--list" in argv:
        print("\n".join(PROBES))
        return 0
    if "--kill-all" in argv:
        kill_all()
        return 0
    ids = args or [p for p in PROBES if p not in EXPLICIT_ONLY]
    for pid in ids:
        sys.stdout.flush()
        child = os.fork()
        if child == 0:
            try:
                PROBES[pid]()
            except BaseException as ex:  # noqa: BLE001
                emit(pid, "_exception", False, getattr(ex, "errno", None), repr(ex))
            sys.stdout.flush()
            os._exit(0)
        deadline = time.time() + 30
        while True:
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                break
            if time.time() > deadline:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                emit(pid, "_timeout", False, None, "probe hung for 30s")
                status = 0
                break
            time.sleep(0.01)
        if os.WIFSIGNALED(status):
            emit(pid, "_crashed", False, None, {"signal": os.WTERMSIG(status)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

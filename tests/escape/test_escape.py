"""Red-team catalogue (shared/SECURITY.md) against `safehouse run`.

probes.py runs once outside (as root on the host: the positive control, which must
reach the kernel) and once inside a sandbox per mode (root, rootless); every sub-check
is then asserted against the table below: the exact errno, signal or value, outside
and inside. A probe that fails everywhere proves nothing, so the outside column is
asserted too.
"""
import errno
import hashlib
import json
import os
import pty
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import probes  # noqa: E402
from conftest import (ESCAPE, IMAGE_MODES, IS_ROOT, MODES, PYTHON, ROOTLESS_UID, require_binary,  # noqa: E402
                      require_mode, require_root, run_inside, skip_or_fail, run_outside, start_inside, stop,
                      wait_line, world_tmpdir)


# ---------------------------------------------------------------- matchers

class M:
    def __init__(self, fn, desc):
        self.fn, self.desc = fn, desc

    def __call__(self, rec):
        try:
            return bool(self.fn(rec))
        except (KeyError, TypeError, IndexError, AttributeError):
            return False

    def __or__(self, other):
        return M(lambda r: self(r) or other(r), f"{self.desc} | {other.desc}")


def E(*names):
    codes = {getattr(errno, n) for n in names}
    return M(lambda r: not r["ok"] and r["errno"] in codes, "fails with " + "/".join(names))


def P(fn, desc):
    return M(fn, desc)


OK = M(lambda r: r["ok"], "succeeds")
NOT = M(lambda r: not r["ok"], "fails / not found")
RO = M(lambda r: not r["ok"] and r["errno"] is None, "mount is read-only")
ANY = M(lambda r: True, "informational")
# reached the kernel: success, or any errno but the ones a filter answers with
REACH = M(lambda r: r["ok"] or r["errno"] not in (errno.EPERM,), "reaches the kernel")
ABSENT = M(lambda r: not r["ok"] and r["errno"] in (None, errno.ENOENT, errno.EACCES),
           "absent, empty or EACCES")
SIGSYS = P(lambda r: r["detail"]["signal"] == signal.SIGSYS, "killed by SIGSYS")
UNSUPPORTED_AF = E("EAFNOSUPPORT", "EPROTONOSUPPORT", "ESOCKTNOSUPPORT")


def host_users():
    with open("/etc/passwd") as f:
        return {ln.split(":")[0] for ln in f if ln.strip()}


ALLOWED_ENV = {"PATH", "HOME", "TERM", "LANG"}
EXPECT = {}


def X(pid, check, outside, inside):
    EXPECT[(pid, check)] = (outside, inside)


# FS-01 host secrets
X("FS-01", "read:/etc/shadow", OK, E("EACCES"))
X("FS-01", "read:/etc/gshadow", OK, E("EACCES"))
X("FS-01", "read:/etc/sudoers", OK | E("ENOENT"), E("EACCES", "ENOENT"))
X("FS-01", "list:/etc/ssh", OK, E("EACCES"))
for _d in ["/root", "/var/lib", "/work"]:
    X("FS-01", "list:" + _d, OK, ABSENT)
X("FS-01", "list:/home", OK, NOT | P(lambda r: set(r["detail"]) <= {"user"}, "only /home/user"))
CANARY_DIRS = {"root": "/root", "home": "/home", "varlib": "/var/lib", "work": "/work",
               "run": "/run", "tmp": "/tmp", "vartmp": "/var/tmp", "devshm": "/dev/shm"}
for _l in CANARY_DIRS:
    X("FS-01", "canary:" + _l, OK,
      E("ENOENT") if _l in ("tmp", "vartmp", "devshm") else E("ENOENT", "EACCES"))
# FS-02 /proc roots and host pids
X("FS-02", "readlink:/proc/self/root", P(lambda r: r["detail"] == "/", "/"),
  P(lambda r: r["detail"] == "/", "/"))
X("FS-02", "agent-root-host-file", OK, E("EACCES", "ENOENT"))
X("FS-02", "self-root-host-file", OK, E("ENOENT"))
for _i in range(2):
    X("FS-02", f"host-pid-{_i}:stat", OK, E("ENOENT"))
    X("FS-02", f"host-pid-{_i}:root", OK, E("ENOENT"))
X("FS-02", "scan-host-marker", OK, NOT)
X("FS-02", "visible-pids", OK, NOT)
# FS-03 mount family (outside in a throwaway mount namespace)
for _c in ["mount-tmpfs", "remount-root-rw", "umount2-own", "chroot", "chroot-escape"]:
    X("FS-03", _c, OK, E("EPERM"))
X("FS-03", "umount2-mask", E("EINVAL", "ENOENT"), E("EPERM"))
X("FS-03", "pivot_root", E("ENOENT"), E("EPERM"))
# FS-04 new mount API
X("FS-04", "fsopen", OK, E("EPERM"))
X("FS-04", "fsconfig", E("EINVAL", "EBADF"), E("EPERM"))
X("FS-04", "fsmount", E("EBADF"), E("EPERM"))
X("FS-04", "fspick", OK, E("EPERM"))
X("FS-04", "open_tree", OK, E("EPERM"))
X("FS-04", "open_tree_attr", OK | E("ENOSYS"), E("EPERM", "ENOSYS"))
X("FS-04", "move_mount", E("ENOENT"), E("EPERM"))
X("FS-04", "mount_setattr", REACH, E("EPERM"))
# FS-05 open_by_handle_at
X("FS-05", "name_to_handle_at", OK, E("EPERM"))
X("FS-05", "open_by_handle_at", OK, E("EPERM"))
X("FS-05", "brute-force", OK, E("EPERM"))
# FS-06 devices
X("FS-06", "mknod-chr-mem", OK, E("EPERM"))
X("FS-06", "mknod-blk-disk", OK, E("EPERM"))
# A FIFO is no device: the contract lists mknod(at) as EPERM, but allowing S_IFIFO by
# argument filtering is no escape; either answer passes, a device node never does.
X("FS-06", "mknod-fifo", OK, OK | E("EPERM"))
X("FS-06", "open:/dev/mem", OK | E("ENOENT"), E("ENOENT"))
X("FS-06", "open:/dev/port", OK | E("ENOENT"), E("ENOENT"))
X("FS-06", "open:/dev/kmsg", OK, E("ENOENT"))
X("FS-06", "open:/dev/kvm", OK | E("ENOENT"), E("ENOENT"))
X("FS-06", "open:disk", OK | E("EPERM"), E("ENOENT"))
X("FS-06", "dev-extra-entries", OK, NOT)
X("FS-06", "dev-essentials", OK, OK)
# FS-07 /proc/sys, sysrq, /sys, kcore
X("FS-07", "open-w:/proc/sys/kernel/domainname", OK, E("EROFS", "EACCES"))
X("FS-07", "open-w:/proc/sys/vm/drop_caches", OK, E("EROFS", "EACCES"))
X("FS-07", "open-w:/proc/sysrq-trigger", OK | E("ENOENT"), NOT)
X("FS-07", "open-w:/sys/kernel/mm/transparent_hugepage/enabled", OK | E("ENOENT"),
  E("EROFS", "ENOENT"))
X("FS-07", "open-w:/sys/power/state", OK | E("ENOENT"), E("EROFS", "ENOENT"))
X("FS-07", "mount-writable:/proc/sys", OK, RO)
X("FS-07", "mount-writable:/sys", OK, RO)
X("FS-07", "mount-writable:/proc/sysrq-trigger", ANY, NOT)
X("FS-07", "read:/proc/kcore", OK | E("ENOENT"), NOT)
# FS-08 cgroups
X("FS-08", "self-cgroup", ANY,
  P(lambda r: set(r["detail"].values()) == {"/"}, "cgroup namespace hides host paths"))
X("FS-08", "open-w-parent-procs:pids", OK, E("ENOENT", "EROFS", "EACCES"))
X("FS-08", "open-w-parent-procs:memory", OK, E("ENOENT", "EROFS", "EACCES"))
X("FS-08", "open-w-release_agent", OK, E("ENOENT", "EROFS", "EACCES"))
X("FS-08", "mount-cgroup-v1", OK, E("EPERM"))
X("FS-08", "release_agent-writable", OK, NOT)
# FS-12 read-only base layer (the pristine second sandbox is test_fs12_second_sandbox)
X("FS-12", "hashes-before", ANY, ANY)
for _c in ["create:/usr/bin", "create:/etc", "create:/"]:
    X("FS-12", _c, OK, E("EROFS"))
for _p in ["/etc/passwd", "/etc/os-release", "/usr/bin/env"]:
    X("FS-12", "open-w:" + _p, OK, E("EROFS", "EACCES"))
# FS-15 setuid
X("FS-15", "run-setuid-root-binary", OK, NOT)
X("FS-15", "create-setuid-file", OK, E("EPERM"))
for _c in ["chmod-setgid", "open-creat-setuid", "mknod-reg-setuid"]:
    X("FS-15", _c, OK, E("EPERM"))
X("FS-15", "run-own-setuid-copy", OK, NOT)
X("FS-15", "chown-root", OK, E("EPERM", "EINVAL"))
# PR-01 ptrace & co against a child and against the agent (PID 1 inside)
for _c in ["ptrace-attach-child", "process_vm_readv-child", "process_vm_writev-child",
           "kcmp-agent", "pidfd_getfd", "ptrace-traceme", "ptrace-attach-agent",
           "process_vm_readv-agent"]:
    X("PR-01", _c, OK, E("EPERM"))
for _c in ["open-rw:/proc/agent/mem", "read:/proc/agent/environ", "readlink:/proc/agent/exe"]:
    X("PR-01", _c, OK, E("EACCES"))
# PR-02 signals to host pids
for _i in range(2):
    X("PR-02", f"kill0-host-pid-{_i}", OK, E("ESRCH"))
    X("PR-02", f"pidfd_open-host-pid-{_i}", OK, E("ESRCH"))
    X("PR-02", f"sigkill-host-pid-{_i}", OK, E("ESRCH"))
X("PR-02", "guess-low-pids", OK, NOT)
# PR-03 capabilities
X("PR-03", "status-caps-nonzero", OK, NOT)
X("PR-03", "capget-nonzero", OK, NOT)
X("PR-03", "capset", OK, E("EPERM"))
X("PR-03", "setuid0", OK, E("EPERM", "EINVAL"))
X("PR-03", "setgroups0", OK, E("EPERM"))
X("PR-03", "ambient-raise", OK, E("EPERM"))
# PR-04 every thread and exec'd child filtered
X("PR-04", "threads-unfiltered", OK, NOT)
X("PR-04", "thread-count", ANY, ANY)
X("PR-04", "exec-unfiltered", OK, NOT)
# PR-05 namespaces
for _n in probes.CLONE:
    X("PR-05", "unshare:" + _n, OK, E("EPERM"))
X("PR-05", "userns-then-mount", OK, E("EPERM"))
X("PR-05", "setns:self-uts", OK, E("EPERM"))
X("PR-05", "setns:agent-mnt", OK, E("EACCES", "EPERM"))
for _n in ["NEWUSER", "NEWNS", "NEWPID"]:
    X("PR-05", "clone:" + _n, OK, E("EPERM"))
X("PR-05", "clone3", E("EINVAL"), E("ENOSYS"))
# PR-06 keyrings
X("PR-06", "keyctl", OK, E("EPERM"))
X("PR-06", "add_key", OK, E("EPERM"))
X("PR-06", "request_key", E("ENOKEY"), E("EPERM"))
# PR-07 bpf, perf, userfaultfd, io_uring
X("PR-07", "bpf", E("EINVAL"), E("EPERM"))
X("PR-07", "perf_event_open", OK, E("EPERM"))
X("PR-07", "userfaultfd", OK, E("EPERM"))
X("PR-07", "open:/dev/userfaultfd", OK | E("ENOENT"), E("ENOENT"))
X("PR-07", "io_uring_setup", OK, E("EPERM"))
X("PR-07", "io_uring_enter", E("EBADF"), E("EPERM"))
X("PR-07", "io_uring_register", E("EBADF", "EINVAL"), E("EPERM"))
# KS-01 Docker's default blocked list, one check per syscall. Outside: harmless
# arguments reach the kernel's own checks. Inside: the contract's EPERM list exactly;
# the rest of Docker's list (obsolete or NUMA calls the contract does not name) must
# still be answered by the filter: EPERM or ENOSYS, never the kernel.
CONTRACT_EPERM = {
    "acct", "add_key", "bpf", "clock_adjtime", "adjtimex", "clock_settime", "delete_module",
    "finit_module", "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load",
    "keyctl", "mount", "name_to_handle_at", "open_by_handle_at", "perf_event_open",
    "personality", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "quotactl", "reboot", "request_key", "setns", "settimeofday", "swapon", "umount2",
    "unshare", "userfaultfd", "vhangup", "capset", "syslog", "mknodat", "mknod", "chroot",
    "sethostname", "setdomainname", "io_uring_setup", "pidfd_getfd"}
for _name, _args in probes.docker_blocked():
    X("KS-01", _name, REACH,
      E("EPERM") if _name in CONTRACT_EPERM else E("EPERM", "ENOSYS"))
X("KS-01", "unknown-syscall-1000", E("ENOSYS"), E("ENOSYS"))
X("KS-01", "personality-query", OK, OK)
# KS-02 socket families
# TCP, UDP and unix only. Outside, MPTCP and UDP-Lite exist on this kernel (the positive
# control); ICMP ping sockets answer EACCES there (net.ipv4.ping_group_range) and SCTP, SMC
# and DCCP are not built, so for those the inside result is what the filter answers.
KERNEL_ERRNO_OUTSIDE = E("EACCES", "EPROTONOSUPPORT", "ESOCKTNOSUPPORT")
for _c, _fam, _typ, _proto in probes.SOCKETS:
    if _c in ("unix-stream", "inet-stream", "inet6-dgram", "inet-tcp", "inet6-udp"):
        X("KS-02", _c, OK, OK)
    elif _c in ("inet-mptcp", "inet6-mptcp", "inet-udplite", "inet6-udplite"):
        X("KS-02", _c, OK, E("EPROTONOSUPPORT"))
    elif _c in ("inet-icmp-ping", "inet6-icmp-ping", "inet-sctp", "inet-smc"):
        X("KS-02", _c, OK | KERNEL_ERRNO_OUTSIDE, E("EPROTONOSUPPORT"))
    elif _c in ("inet-sctp-seqpacket", "inet-dccp"):
        X("KS-02", _c, OK | KERNEL_ERRNO_OUTSIDE, E("ESOCKTNOSUPPORT"))
    elif _fam in (2, 10):
        X("KS-02", _c, OK, E("EPERM"))
    else:  # families this kernel lacks cannot have a positive control here
        X("KS-02", _c, OK | UNSUPPORTED_AF, E("EAFNOSUPPORT"))
X("KS-02", "inet-raw-with-flags", OK, E("EPERM"))
X("KS-02", "socketpair-netlink", E("EOPNOTSUPP"), E("EAFNOSUPPORT"))
X("KS-02", "inet-mptcp-high-bits", OK, E("EPROTONOSUPPORT"))
# KS-03 kernel log
X("KS-03", "syslog-size", OK, E("EPERM"))
X("KS-03", "syslog-read-all", OK, E("EPERM"))
X("KS-03", "open:/dev/kmsg", OK, E("ENOENT"))
X("KS-03", "dmesg", OK, NOT)
# KS-04 hostname and clock
X("KS-04", "nodename", OK, P(lambda r: r["detail"] == "safehouse", "'safehouse'"))
for _c in ["sethostname", "setdomainname", "settimeofday"]:
    X("KS-04", _c, OK, E("EPERM"))
X("KS-04", "clock_settime", E("EINVAL"), E("EPERM"))
# LK-02 kernel info leaks
X("LK-02", "kallsyms-addresses", OK, NOT)
X("LK-02", "read:/proc/modules", OK | E("ENOENT"), NOT)
X("LK-02", "read:/proc/timer_list", OK, NOT)
X("LK-02", "read:/proc/keys", ANY, NOT)
X("LK-02", "exists:/boot", OK | E("ENOENT"), E("ENOENT"))
X("LK-02", "list:/sys/kernel/debug", ANY, NOT)
X("LK-02", "list:/sys/kernel/security", ANY, NOT)
# LK-03 identity files are the sandbox's own
X("LK-03", "hostname-is-host", OK, P(lambda r: r["detail"] == "safehouse", "'safehouse'"))
for _p in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/passwd", "/etc/group"]:
    X("LK-03", "same-as-host:" + _p, OK, NOT)
X("LK-03", "whoami", ANY,
  P(lambda r: r["detail"] == ["user", 1000, 1000, "/home/user"], "user 1000:1000 /home/user"))
X("LK-03", "passwd-users", ANY,
  P(lambda r: "user" in r["detail"] and not (set(r["detail"]) & (host_users() - {
      "root", "nobody", "user"})), "no host accounts"))
# LK-04 other sandboxes and the host: /tmp, /dev/shm, SysV IPC, abstract sockets, /proc
for _l in ["host", "peer"]:
    host = _l == "host"
    X("LK-04", f"tmp-file:{_l}", OK if host else E("ENOENT"), E("ENOENT"))
    X("LK-04", f"shm-file:{_l}", OK if host else E("ENOENT"), E("ENOENT"))
    for _k in ["shm", "msg", "sem"]:
        X("LK-04", f"sysv-{_k}:{_l}", OK if host else E("ENOENT"), E("ENOENT"))
    X("LK-04", f"abstract:{_l}", OK if host else E("ECONNREFUSED"), E("ECONNREFUSED", "EPERM"))
    X("LK-04", f"proc-marker:{_l}", OK, NOT)  # the host sees everything
# extras
X("EX-X86ABI", "int80", OK, SIGSYS)
X("EX-X86ABI", "x32", OK | E("ENOSYS"), SIGSYS)
X("EX-EXE", "open-w:/proc/self/exe", E("ETXTBSY"), E("EACCES"))
for _c in ["open-r:/proc/agent/exe", "open-path:/proc/agent/exe", "readlink:/proc/agent/exe"]:
    X("EX-EXE", _c, OK, E("EACCES"))
X("EX-EXE", "open-w:/proc/agent/exe", E("ETXTBSY"), E("EACCES"))
X("EX-FD", "extra-fds", ANY, NOT)
X("EX-FD", "fd-dotdot", ANY, NOT)
X("EX-FD", "cwd", ANY, P(lambda r: r["detail"] == {"readlink": "/workspace",
                                                   "getcwd": "/workspace"}, "/workspace"))
for _c in ["list:/proc/agent/fd", "readlink:/proc/agent/cwd", "list:/proc/agent/cwd",
           "list:/proc/agent/root"]:
    X("EX-FD", _c, OK, E("EACCES"))
X("EX-ABSTRACT", "connect-host-abstract", OK, E("ECONNREFUSED", "EPERM"))
X("EX-ABSTRACT", "connect-host-tcp-loopback", OK, E("ECONNREFUSED", "ENETUNREACH"))
X("EX-ABSTRACT", "net-interfaces", ANY, P(lambda r: set(r["detail"]) <= {"lo"}, "only lo"))
X("EX-ENV", "ids", ANY, P(lambda r: r["detail"] == {"uid": 1000, "euid": 1000, "gid": 1000,
                                                   "groups": r["detail"]["groups"]}
                          and set(r["detail"]["groups"]) <= {1000}, "uid/gid 1000"))
X("EX-ENV", "environ", ANY,
  P(lambda r: {k for k in r["detail"] if not k.startswith("SH_")} <= ALLOWED_ENV,
    "only PATH HOME TERM LANG (+ --env)"))
X("EX-ENV", "cwd", ANY, P(lambda r: r["detail"] == "/workspace", "/workspace"))
X("EX-ENV", "command-is-session-leader", ANY, OK)
X("EX-ENV", "seccomp-nnp", NOT, OK)
X("EX-ENV", "landlock-abi", ANY, ANY)
X("EX-ENV", "pid1", ANY, ANY)
X("EX-ENV", "pid1-cmdline-leaks-host-args", ANY, NOT)
X("EX-ENV", "rlimits", ANY, P(lambda r: r["detail"]["RLIMIT_CORE"] == [0, 0], "core 0"))
for _d in ["/tmp", "/home/user", "/workspace", "/var/tmp", "/dev/shm"]:
    X("EX-ENV", "writable:" + _d, ANY, OK)

# On an image root the sandbox sees the image's files, not the host's: where the host-root
# expectation is "absent or unreadable", the image's own directory or file may be there.
# Each override below still proves the host's content is out of reach (the host's
# canaries are never listed, listings differ from the host's), and says why it differs.
# "image-rootless" maps every file of the image to the sandbox's one user (the caller),
# so the image's own files are its to read and write (in its own layer).


def _listing_not_hosts(path):
    def check(r):
        if not r["ok"]:
            return r["errno"] in (None, errno.ENOENT, errno.EACCES)
        host = sorted(os.listdir(path)) if os.path.isdir(path) else None
        return r["detail"] != host and not any(".safehouse-canary-" in n for n in r["detail"])
    return P(check, f"absent, or the image's own {path} (no host canary, not the host's listing)")


def _both(m):
    return {"image": m, "image-rootless": m}


IMAGE_EXPECT = {
    ("FS-01", "list:/etc/ssh"): _both(_listing_not_hosts("/etc/ssh")),
    ("FS-01", "list:/root"): _both(_listing_not_hosts("/root")),
    ("FS-01", "list:/var/lib"): _both(_listing_not_hosts("/var/lib")),
    # The image's own shadow files: unreadable to user 1000 in root mode (the image's
    # owners kept); the rootless sandbox's only user owns every image file.
    ("FS-01", "read:/etc/shadow"): {"image": E("EACCES"), "image-rootless": OK | E("EACCES")},
    ("FS-01", "read:/etc/gshadow"): {"image": E("EACCES"), "image-rootless": OK | E("EACCES")},
    # The image's /root (mode 0700, the image's root) holds no host canary either way.
    ("FS-02", "self-root-host-file"): _both(E("ENOENT", "EACCES")),
    # The image root is writable in the sandbox's own layer (test_fs12_second_sandbox
    # checks the next sandbox sees the image pristine); nothing is created directly in /.
    ("FS-12", "create:/"): _both(E("EACCES")),
    ("FS-12", "create:/etc"): {"image": E("EACCES"), "image-rootless": OK},
    ("FS-12", "create:/usr/bin"): {"image": E("EACCES"), "image-rootless": OK},
    ("FS-12", "open-w:/etc/passwd"): {"image": E("EACCES"), "image-rootless": OK},
    ("FS-12", "open-w:/etc/os-release"): {"image": E("EACCES"), "image-rootless": OK},
    ("FS-12", "open-w:/usr/bin/env"): {"image": E("EACCES"), "image-rootless": OK},
    # The image's python3 (its own file, busy while it runs), never the runtime's binary.
    ("EX-EXE", "open-w:/proc/self/exe"): {"image": E("EACCES"), "image-rootless": E("ETXTBSY")},
    # Debian images ship an empty /boot: no kernel or config of the host's in it.
    ("LK-02", "exists:/boot"): _both(E("ENOENT") | P(lambda r: r["ok"] and r["detail"] == [], "the image's empty /boot")),
}


def inside_expectation(key, mode):
    return IMAGE_EXPECT.get(key, {}).get(mode) or EXPECT[key][1]


DEFERRED = {
    "FS-10": "symlink download/copy-out via the daemon's file API",
    "FS-11": "RENAME_EXCHANGE races during daemon uploads/downloads",
    "FS-17": "FIFOs/sockets where the daemon reads files",
    "PR-10": "SIGSTOP/kill the agent: needs the daemon to notice",
    "RES-07": "huge argv/env through the exec API",
}


# ---------------------------------------------------------------- host setup

def _listener(sock, reply):
    def loop():
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            try:
                c.sendall(reply)
            finally:
                c.close()
    threading.Thread(target=loop, daemon=True).start()


def _sleeper(marker, uid=None):
    argv = [PYTHON, "-c", "import time; time.sleep(900)", marker]
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _sha(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "absent"


PEER_SCRIPT = r"""
import json, os, socket, sys, threading, time
sys.path.insert(0, "/probes")
import probes
probes.WHERE = "inside"
spec = json.loads(os.environ["SH_PEER"])
for p in (spec["tmp"], spec["shm"]):
    with open(p, "w") as f:
        f.write("peer")
for k in ("shm", "msg", "sem"):
    print(json.dumps({"create": k, "res": probes.sysv_create(k, spec["key"])}), flush=True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0" + spec["abstract"])
s.listen(16)
def serve():
    while True:
        c, _ = s.accept()
        c.sendall(b"PEER")
        c.close()
threading.Thread(target=serve, daemon=True).start()
os.environ["SH_LK04"] = json.dumps({"self": spec})
probes.lk04()
print("READY", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="session")
def host_env(helper_bin):
    """Host-side objects the probes hunt for, and the SH_* variables naming them."""
    require_root("the positive controls run as root on the host")
    tag = secrets.token_hex(6)
    marker = f"safehouse-host-marker-{tag}"
    sleepers = [_sleeper(marker), _sleeper(marker, uid=1000)]
    cleanup = []
    canaries = {}
    for label, d in CANARY_DIRS.items():
        if not os.path.isdir(d):
            continue
        p = os.path.join(d, f".safehouse-canary-{tag}")
        with open(p, "w") as f:
            f.write(f"host secret {label}\n")
        os.chmod(p, 0o644)
        canaries[label] = p
        cleanup.append(p)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = f"safehouse-host-{tag}"
    abstract.bind("\0" + abstract_name)
    abstract.listen(16)
    _listener(abstract, b"HOST-ABSTRACT")
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    _listener(tcp, b"HOST-TCP")
    # setuid-root copy of the helper (FS-15 positive control: run by uid 65534 -> euid 0)
    suid_dir = world_tmpdir("safehouse-suid-")
    os.chmod(suid_dir, 0o755)
    suid = os.path.join(suid_dir, "helper")
    shutil.copy(helper_bin, suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    # LK-04: host objects and the peer sandbox's names
    lk_host = {"tmp": f"/tmp/safehouse-lk04-{tag}", "shm": f"/dev/shm/safehouse-lk04-{tag}",
               "key": int(tag[:6], 16) | 0x10000000, "abstract": f"safehouse-lk04-host-{tag}",
               "marker": marker}
    for p in (lk_host["tmp"], lk_host["shm"]):
        with open(p, "w") as f:
            f.write("host")
        cleanup.append(p)
    ids = {k: probes.sysv_create(k, lk_host["key"])[0] for k in ("shm", "msg", "sem")}
    lk_abs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lk_abs.bind("\0" + lk_host["abstract"])
    lk_abs.listen(16)
    _listener(lk_abs, b"HOST-LK04")
    peer_tag = secrets.token_hex(6)
    lk_peer = {"tmp": f"/tmp/safehouse-lk04-{peer_tag}",
               "shm": f"/dev/shm/safehouse-lk04-{peer_tag}",
               "key": int(peer_tag[:6], 16) | 0x20000000,
               "abstract": f"safehouse-lk04-peer-{peer_tag}",
               "marker": f"safehouse-peer-marker-{peer_tag}"}
    env = {
        "SH_HOST_PIDS": ",".join(str(s.pid) for s in sleepers),
        "SH_AGENT_PID": str(sleepers[1].pid),
        "SH_HOST_MARKER": "~" + marker[::-1],
        "SH_CANARIES": ",".join(f"{k}={v}" for k, v in canaries.items()),
        "SH_ABSTRACT": abstract_name,
        "SH_TCP_PORT": str(tcp.getsockname()[1]),
        "SH_HOST_HOSTNAME": os.uname().nodename,
        "SH_HOST_SHA": ",".join(f"{p}={_sha(p)}" for p in [
            "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/passwd", "/etc/group"]),
        "SH_LK04": json.dumps({"host": dict(lk_host, marker="~" + marker[::-1]),
                               "peer": dict(lk_peer, marker="~" + lk_peer["marker"][::-1])}),
        "SH_FS12_TAG": tag,
    }
    time.sleep(0.3)  # let setpriv exec the uid-1000 sleeper
    yield {"env": env, "sleepers": sleepers, "helper": helper_bin, "suid": suid,
           "peer": lk_peer, "tag": tag, "marker": marker,
           "hostname": os.uname().nodename,
           "domainname": open("/proc/sys/kernel/domainname").read()}
    for s in sleepers:
        s.kill()
        s.wait()
    for sock in (abstract, tcp, lk_abs):
        sock.close()
    for p in cleanup:
        try:
            os.unlink(p)
        except OSError:
            pass
    libc = probes.libc
    libc.shmctl(ids["shm"], 0, None)  # IPC_RMID
    libc.msgctl(ids["msg"], 0, None)
    libc.semctl(ids["sem"], 0, 0)
    shutil.rmtree(suid_dir, ignore_errors=True)


def parse(stdout):
    out = {}
    for line in stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "check" in rec:
            out.setdefault((rec["id"], rec["check"]), rec)
    return out


_PEER_DOWN = []


@pytest.fixture(scope="session")
def outside_results(host_env, peer_sandbox):
    if peer_sandbox is None:
        _PEER_DOWN.append(True)
    env = dict(os.environ)
    env.update(host_env["env"])
    env["SH_HELPER"] = host_env["helper"]
    env["SH_SUID_HELPER"] = host_env["suid"]
    res = run_outside([PYTHON, str(ESCAPE / "probes.py"), "--where", "outside"], env=env,
                      timeout=240)
    assert res.rc == 0, res.stderr[-3000:]
    return parse(res.stdout), res


PROBE_MOUNTS = lambda h: ["--mount", f"{ESCAPE}:/probes",  # noqa: E731
                          "--mount", f"{os.path.dirname(h['helper'])}:/helpers",
                          "--mount", f"{os.path.dirname(h['suid'])}:/suid"]


def inside_env_opts(h):
    env = dict(h["env"])
    env["SH_HELPER"] = "/helpers/helper"
    env["SH_SUID_HELPER"] = "/suid/helper"
    opts = []
    for k, v in env.items():
        opts += ["--env", f"{k}={v}"]
    return opts


@pytest.fixture(scope="session")
def peer_sandbox(host_env):
    """Another sandbox holding /tmp, /dev/shm, SysV and abstract-socket objects (None when
    the binary is not built: the outside halves still run)."""
    from conftest import BIN
    if not (BIN and os.access(BIN, os.X_OK)):
        yield None
        return
    p = start_inside([PYTHON, "-c", PEER_SCRIPT, host_env["peer"]["marker"]],
                     PROBE_MOUNTS(host_env) + ["--env",
                                               "SH_PEER=" + json.dumps(host_env["peer"])])
    try:
        lines = wait_line(p, "READY", timeout=30)
        yield {"proc": p, "self": parse("\n".join(lines))}
    finally:
        stop(p)


_INSIDE = {}

# Every probe also runs on an image root (a Debian image with the sandbox's usual
# identity, tests/images/escape_image.py), as root and rootless.
ESCAPE_MODES = MODES + list(IMAGE_MODES)


@pytest.fixture(params=ESCAPE_MODES)
def mode(request):
    require_mode(request.param)
    return request.param


@pytest.fixture(scope="session")
def inside_results_by_mode(host_env, peer_sandbox):
    def get(mode):
        require_mode(mode)
        if mode not in _INSIDE:
            res = run_inside([PYTHON, "/probes/probes.py", "--where", "inside"],
                             PROBE_MOUNTS(host_env) + inside_env_opts(host_env), mode=mode,
                             timeout=240)
            _INSIDE[mode] = (parse(res.stdout), res)
        return _INSIDE[mode]
    return get


def _ids(keys):
    return [f"{a}:{b}" for a, b in keys]


KEYS = sorted(EXPECT)


def _show(rec):
    if rec is None:
        return "no result (the probe did not report this check)"
    e = rec.get("errno")
    return (f"ok={rec['ok']} errno={e} ({errno.errorcode.get(e, '-') if e else '-'}) "
            f"detail={json.dumps(rec.get('detail'), default=str)[:600]}")


@pytest.mark.parametrize("key", KEYS, ids=_ids(KEYS))
def test_outside(outside_results, key):
    results, _ = outside_results
    rec = results.get(key)
    want = EXPECT[key][0]
    if key == ("LK-04", "proc-marker:peer") and _PEER_DOWN:
        skip_or_fail("no peer sandbox (binary not built)")
    assert rec is not None and want(rec), f"outside (positive control) {key}: want {want.desc}; " \
                                          f"got {_show(rec)}"


@pytest.mark.parametrize("mode", ESCAPE_MODES)
@pytest.mark.parametrize("key", KEYS, ids=_ids(KEYS))
def test_inside(inside_results_by_mode, key, mode):
    results, res = inside_results_by_mode(mode)
    rec = results.get(key)
    want = inside_expectation(key, mode)
    assert rec is not None and want(rec), (
        f"inside ({mode}) {key}: want {want.desc}; got {_show(rec)}\n"
        f"[safehouse rc={res.rc}] stderr: {res.stderr[-1500:]}")


@pytest.mark.parametrize("mode", ["outside"] + ESCAPE_MODES)
def test_every_result_has_an_expectation(outside_results, inside_results_by_mode, mode):
    results, res = outside_results if mode == "outside" else inside_results_by_mode(mode)
    unknown = {k: _show(v) for k, v in results.items() if k not in EXPECT}
    assert not unknown, f"{mode}: probe results without an expectation (or probe crashes): " \
                        f"{json.dumps(unknown, indent=1)}"
    if mode != "outside":
        assert res.rc == 0, f"probe run exited {res.rc}: {res.stderr[-2000:]}"


@pytest.mark.parametrize("pid", sorted(DEFERRED))
def test_deferred_daemon_api(pid):
    pytest.skip(f"{pid} ({DEFERRED[pid]}) concerns the daemon's file/exec API: covered by tests/e2e "
                "(test_files.py, test_more.py, test_agent.py) and crates/hostfs/src/tests")


# ---------------------------------------------------------------- scenario tests

def test_lk04_peer_sees_its_own_objects(peer_sandbox):
    """Positive control for LK-04 'peer': inside the peer itself every object is visible."""
    if peer_sandbox is None:
        require_binary()
    got = {k[1]: v for k, v in peer_sandbox["self"].items() if k[0] == "LK-04"}
    for kind in ["tmp-file", "shm-file", "sysv-shm", "sysv-msg", "sysv-sem", "abstract",
                 "proc-marker"]:
        rec = got.get(f"{kind}:self")
        assert rec and rec["ok"], f"peer cannot see its own {kind}: {_show(rec)}"


@pytest.mark.parametrize("mode", ESCAPE_MODES)
def test_host_untouched_after_probes(host_env, inside_results_by_mode, mode):
    """PR-02/KS-04/FS-07: after the inside run, host processes live, names and clock hold."""
    inside_results_by_mode(mode)
    for s in host_env["sleepers"]:
        assert s.poll() is None, f"host process {s.pid} died during the inside probes"
    assert os.uname().nodename == host_env["hostname"]
    assert open("/proc/sys/kernel/domainname").read() == host_env["domainname"]
    assert time.time() > 1.7e9, "host clock was set back"


def test_kill_minus_one(host_env, mode):
    """PR-02: kill(-1, SIGKILL) inside reaches nothing outside; the sandbox survives it."""
    env = dict(os.environ, **host_env["env"])
    out = run_outside([PYTHON, str(ESCAPE / "probes.py"), "--where", "outside", "--kill-all"],
                      env=env, timeout=30)
    rec = parse(out.stdout).get(("PR-02", "kill-minus-1"))
    assert rec and rec["ok"], f"positive control (fresh pid ns) failed: {_show(rec)} {out.stderr}"
    res = run_inside([PYTHON, "/probes/probes.py", "--where", "inside", "--kill-all"],
                     PROBE_MOUNTS(host_env), mode=mode, timeout=30)
    rec = parse(res.stdout).get(("PR-02", "kill-minus-1"))
    assert res.rc == 0 and rec is not None, f"rc={res.rc} out={res.stdout} err={res.stderr}"
    assert rec["ok"] or rec["errno"] == errno.ESRCH, _show(rec)
    for s in host_env["sleepers"]:
        assert s.poll() is None, "kill(-1) inside killed a host process"


def test_fs12_second_sandbox_pristine(host_env, inside_results_by_mode, mode):
    """FS-12: after the first sandbox tried to modify the base layer, a second sees it intact."""
    first, _ = inside_results_by_mode(mode)
    before = first[("FS-12", "hashes-before")]["detail"]
    tag = host_env["tag"]
    code = ("import hashlib,json,os,sys;"
            "h={p:hashlib.sha256(open(p,'rb').read()).hexdigest() for p in sys.argv[1:4]};"
            "e={p:os.path.exists(p) for p in sys.argv[4:]};print(json.dumps([h,e]))")
    paths = ["/etc/passwd", "/etc/os-release", "/usr/bin/env", f"/usr/bin/safehouse-fs12-{tag}",
             f"/etc/safehouse-fs12-{tag}", f"/safehouse-fs12-{tag}", f"/tmp/safehouse-fs12-{tag}"]
    res = run_inside([PYTHON, "-c", code, *paths], mode=mode, timeout=30)
    assert res.rc == 0, res.stderr
    hashes, exists = json.loads(res.stdout)
    assert hashes == before, f"base layer changed between sandboxes: {before} -> {hashes}"
    assert not any(exists.values()), f"first sandbox's writes leaked: {exists}"
    for p in paths[3:6]:
        assert not os.path.exists(p), f"{p} appeared on the host"


def _pty_run(argv, timeout=30):
    """Run argv with a fresh pty as stdin; returns (rc, stdout)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        os.close(slave)
        slave = None
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)


@pytest.mark.parametrize("tty_flag", [False, True], ids=["pty-stdin", "--tty"])
def test_tiocsti(host_env, mode, tty_flag):
    """TIOCSTI/TIOCLINUX injection (bubblewrap CVE-2017-5226), incl. the high-bits trick."""
    rc, out, err = _pty_run([PYTHON, str(ESCAPE / "probes.py"), "--where", "outside",
                             "EX-TIOCSTI"])
    o = parse(out)
    assert o[("EX-TIOCSTI", "stdin-isatty")]["ok"], out
    assert o[("EX-TIOCSTI", "tiocsti")]["ok"], f"positive control: {_show(o.get(('EX-TIOCSTI', 'tiocsti')))}"
    assert o[("EX-TIOCSTI", "tiocsti-high-bits")]["ok"], out
    assert REACH(o[("EX-TIOCSTI", "tioclinux")]), out
    require_mode(mode)
    from conftest import safehouse_argv
    opts = PROBE_MOUNTS(host_env) + (["--tty"] if tty_flag else [])
    argv = safehouse_argv(opts, [PYTHON, "/probes/probes.py", "--where", "inside", "EX-TIOCSTI"],
                          mode)
    rc, out, err = _pty_run(argv)
    i = parse(out.replace("\r\n", "\n"))
    assert i.get(("EX-TIOCSTI", "stdin-isatty"), {}).get("ok"), \
        f"the probe's stdin is no tty inside (rc={rc}): {out!r} {err!r}"
    for check in ["tiocsti", "tiocsti-high-bits", "tioclinux"]:
        rec = i.get(("EX-TIOCSTI", check))
        assert rec and E("EPERM")(rec), f"{check} inside ({mode}, tty={tty_flag}): {_show(rec)}"


@pytest.mark.parametrize("abi", ["int80", "x32"])
def test_legacy_abi_killed(helper_bin, mode, abi):
    """i386 int 0x80 and x32 entry points: the command itself dies of SIGSYS -> 159."""
    out = run_outside([helper_bin, abi], timeout=10)
    assert out.rc == 0, f"positive control: helper {abi} rc={out.rc} {out.stderr}"
    res = run_inside(["/helpers/helper", abi],
                     ["--mount", f"{os.path.dirname(helper_bin)}:/helpers"], mode=mode,
                     timeout=30, json_record=True)
    assert res.rc == 128 + signal.SIGSYS, f"rc={res.rc} stdout={res.stdout} stderr={res.stderr}"
    if res.record is not None:
        assert res.record.get("signal") == signal.SIGSYS, res.record


def test_proc_self_exe_overwrite_from_command(mode):
    """CVE-2019-5736: the runtime binary must not be reachable through /proc/*/exe."""
    code = ("import os,json\nout={}\nfor p in ['/proc/1/exe','/proc/%d/exe'%os.getppid()]:\n"
            " for fl in [os.O_RDONLY, os.O_WRONLY, os.O_PATH]:\n"
            "  try:\n   os.close(os.open(p, fl)); out[p+str(fl)]=0\n"
            "  except OSError as e:\n   out[p+str(fl)]=e.errno\nprint(json.dumps(out))")
    res = run_inside([PYTHON, "-c", code], mode=mode, timeout=30)
    assert res.rc == 0, res.stderr
    got = json.loads(res.stdout)
    # the command's parent is the sandbox init (PID 1): both must be EACCES
    assert set(got.values()) == {errno.EACCES}, got

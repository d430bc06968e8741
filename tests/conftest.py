"""Shared fixtures for the adversarial suites (tests/escape, tests/resources, tests/posture).

The binary under test is `safehouse run`, found through $SAFEHOUSE_BIN, else
target/release/safehouse, else target/debug/safehouse. Without it the inside halves
skip (and fail under CI=true, where a missing binary is a broken build, not a reason).

Modes: "root" runs the binary as root (cgroup v1 limits enforceable); "rootless" runs
the same binary as uid 65534 through setpriv with no capabilities and HOME=/tmp.
"""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
ESCAPE = TESTS / "escape"
IS_ROOT = os.geteuid() == 0
ROOTLESS_UID = 65534
PYTHON = "/usr/bin/python3"  # the system interpreter: visible inside (host /usr is bound)
MODES = ["root", "rootless"]
# The same sandbox on an image root (tests/images/escape_image.py) instead of the host's:
# each maps to the mode that runs it.
IMAGE_MODES = {"image": "root", "image-rootless": "rootless"}


def find_binary():
    env = os.environ.get("SAFEHOUSE_BIN")
    if env:
        return env
    # target/safehouse: the static build of scripts/build; then plain cargo builds.
    for p in (REPO / "target" / "safehouse", REPO / "target" / "release" / "safehouse",
              REPO / "target" / "debug" / "safehouse"):
        if p.exists():
            return str(p)
    return None


BIN = find_binary()


def skip_or_fail(msg):
    """A missing prerequisite (the binary, root, a tool scripts/test installs) skips
    locally, saying why; under CI=true, which runs as root on a machine scripts/test set
    up, it is a broken build or machine: the test fails with the same reason."""
    if os.environ.get("CI", "") not in ("", "0", "false"):
        pytest.fail(f"under CI a prerequisite may not be missing: {msg}")
    pytest.skip(msg)


def require_binary():
    if BIN and os.access(BIN, os.X_OK):
        return BIN
    skip_or_fail("safehouse binary not built (set SAFEHOUSE_BIN or run cargo build --release)")


def require_root(why="needs root"):
    if not IS_ROOT:
        skip_or_fail(why)


def require_mode(mode):
    """root mode needs us to be root; rootless mode needs root to drop to uid 65534 (or
    we already are unprivileged)."""
    require_binary()
    mode = IMAGE_MODES.get(mode, mode)
    if mode == "root":
        require_root("root mode: the test runner is not root")
    elif mode == "rootless" and IS_ROOT and not shutil.which("setpriv"):
        skip_or_fail("rootless mode: setpriv (util-linux) is missing")


def rootless_prefix():
    if not IS_ROOT:
        return []
    return ["setpriv", f"--reuid={ROOTLESS_UID}", f"--regid={ROOTLESS_UID}", "--clear-groups",
            "--inh-caps=-all", "--"]


@dataclasses.dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    wall: float
    record: dict | None = None

    def lines(self):
        return [ln for ln in self.stdout.splitlines() if ln.strip()]

    def json_lines(self):
        out = []
        for ln in self.lines():
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
        return out


def world_tmpdir(prefix="safehouse-test-"):
    """A temp dir that uid 65534 can use too (for --json files, helpers, probes)."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o1777)
    return d


def image_opts(mode):
    """The `run` options of an image mode: the escape image in its own data dir."""
    if mode not in IMAGE_MODES:
        return []
    from images.escape_image import NAME, data_dir
    prefix = rootless_prefix() if IMAGE_MODES[mode] == "rootless" else None
    return ["--image", NAME, "--data-dir", data_dir(BIN, prefix)]


def safehouse_argv(opts, cmd, mode="root"):
    prefix = rootless_prefix() if IMAGE_MODES.get(mode, mode) == "rootless" else []
    return [*prefix, BIN, "run", *image_opts(mode), *opts, "--", *cmd]


def child_env(mode, extra=None):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb"}
    env["HOME"] = "/tmp" if IMAGE_MODES.get(mode, mode) == "rootless" else os.environ.get("HOME", "/root")
    env.update(extra or {})
    return env


def run_inside(cmd, opts=(), *, mode="root", timeout=60, input=None, stdin=subprocess.DEVNULL,
               json_record=False, check_binary=True, env=None):
    """Run CMD inside `safehouse run OPTS -- CMD`; returns a Result (never hangs). `env`
    adds variables to the environment of `safehouse run` itself (not the sandbox's)."""
    if check_binary:
        require_binary()
    opts = list(opts)
    jdir = jpath = None
    if json_record:
        jdir = world_tmpdir("safehouse-json-")
        jpath = os.path.join(jdir, "record.json")
        opts += ["--json", jpath]
    argv = safehouse_argv(opts, cmd, mode)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else stdin,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(mode, env),
                         start_new_session=True)
    try:
        out, err = p.communicate(input=input.encode() if isinstance(input, str) else input,
                                 timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        err += f"\n[harness] killed after {timeout}s".encode()
    wall = time.monotonic() - t0
    record = None
    if jpath and os.path.exists(jpath):
        try:
            with open(jpath) as f:
                record = json.load(f)
        except ValueError:
            record = {"_unparseable": open(jpath).read()}
    if jdir:
        shutil.rmtree(jdir, ignore_errors=True)
    return Result(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), wall,
                  record)


def run_outside(cmd, *, timeout=60, env=None, input=None, stdin=subprocess.DEVNULL):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, input=input,
                       stdin=None if input is not None else stdin)
    return Result(p.returncode, p.stdout.decode(errors="replace"),
                  p.stderr.decode(errors="replace"), time.monotonic() - t0)


def start_inside(cmd, opts=(), *, mode="root", env=None):
    """Start a sandbox in the background (caller stops it with stop())."""
    require_binary()
    return subprocess.Popen(safehouse_argv(list(opts), cmd, mode), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(mode, env),
                            start_new_session=True)


def stop(p, timeout=10):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=timeout)
    for f in (p.stdout, p.stderr):
        if f:
            f.close()


def wait_line(p, needle, timeout=20):
    """Read p.stdout until a line containing needle; returns all lines read."""
    import select
    lines, buf = [], b""
    deadline = time.monotonic() + timeout
    fd = p.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                ln, buf = buf.split(b"\n", 1)
                lines.append(ln.decode(errors="replace"))
                if needle in lines[-1]:
                    return lines
        elif p.poll() is not None:
            break
    raise AssertionError(f"no line with {needle!r} within {timeout}s; got {lines!r}; "
                         f"rc={p.poll()}; stderr={p.stderr.read1(4096) if p.poll() is not None else b''!r}")


def procs_with_marker(marker):
    """Host pids whose argv contains marker (a unique string)."""
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


def wait_gone(marker, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = procs_with_marker(marker)
        if not left:
            return []
        time.sleep(0.05)
    return procs_with_marker(marker)


def safehouse_cgroup_dirs():
    """Every /sys/fs/cgroup/<controller>/safehouse/<id> dir that exists now."""
    out = set()
    base = Path("/sys/fs/cgroup")
    if not base.exists():
        return out
    for ctrl in base.iterdir():
        sh = ctrl / "safehouse"
        if sh.is_dir():
            for d in sh.iterdir():
                if d.is_dir():
                    out.add(str(d))
    return out


def leftover_cgroups(before, timeout=3.0):
    """New safehouse cgroup dirs that persist (ignoring ones of other, live sandboxes)."""
    deadline = time.monotonic() + timeout
    while True:
        new = safehouse_cgroup_dirs() - before
        stale = set()
        for d in new:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    if not f.read().strip():
                        stale.add(d)
            except OSError:
                pass
        if not stale or time.monotonic() > deadline:
            return stale
        time.sleep(0.1)


def mountinfo_lines():
    with open("/proc/self/mountinfo") as f:
        return set(line.split(" ", 4)[4] for line in f)


@pytest.fixture(scope="session")
def helper_bin():
    """tests/escape/helper.c compiled statically into a world-readable dir."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        skip_or_fail("no C compiler to build the probe helper")
    d = tempfile.mkdtemp(prefix="safehouse-helper-")
    os.chmod(d, 0o755)
    out = os.path.join(d, "helper")
    p = subprocess.run([cc, "-O1", "-static", "-pthread", "-o", out, str(ESCAPE / "helper.c")],
                       capture_output=True, timeout=120)
    if p.returncode != 0:  # no static libc: a dynamic one works with --rootfs host
        p = subprocess.run([cc, "-O1", "-pthread", "-o", out, str(ESCAPE / "helper.c")],
                           capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    os.chmod(out, 0o755)
    yield out
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=MODES)
def mode(request):
    require_mode(request.param)
    return request.param


def limits_unenforceable(mode):
    """True when this mode cannot enforce cgroup limits here (rootless on cgroup v1)."""
    if mode == "root":
        return False
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    return not v2


def assert_refused_unenforceable(res, what):
    """Rootless on v1: an explicitly requested limit must be refused with 125 and a reason."""
    assert res.rc == 125, (f"rootless on cgroup v1 must refuse an unenforceable {what} limit "
                           f"with exit 125, got {res.rc}\nstderr: {res.stderr[-2000:]}")
    assert what in res.stderr.lower() or "cgroup" in res.stderr.lower(), res.stderr[-2000:]

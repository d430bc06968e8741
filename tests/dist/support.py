"""Helpers of the distribution suite: the platform wheel built from the binary under test,
a fresh venv with only that wheel installed, and commands run as root or as an
unprivileged user with an environment that names no daemon (local mode)."""
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e.support import BIN, REPO, skip_or_fail

USER = "nobody"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


def build_wheel(out: Path) -> Path:
    """scripts/wheel.py on the binary under test (what `scripts/wheel --no-build` runs)."""
    if not BIN or not os.access(BIN, os.X_OK):
        skip_or_fail("safehouse binary not built (set SAFEHOUSE_BIN or run scripts/build)")
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "wheel.py"), "--binary", BIN, "--sdk",
                        str(REPO / "sdk" / "python"), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return Path(p.stdout.strip())


def shared_tmpdir(prefix: str) -> Path:
    """A temporary directory an unprivileged user can read (pytest's tmp_path is root's 0700).
    Short: a data dir below it must leave room for the sandboxes' unix socket paths."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


def make_venv(where: Path, wheel: Path) -> Path:
    """A fresh venv (no --system-site-packages) with the wheel and its dependencies only."""
    # The system interpreter: an unprivileged user must be able to run the venv's python.
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(where)], check=True, timeout=120)
    p = subprocess.run([str(where / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        skip_or_fail(f"pip install of the wheel failed (the dependencies come from the package index):\n{p.stderr}")
    return where


def clean_env(**extra) -> dict:
    """An environment naming no daemon: no SAFEHOUSE_URL, SAFEHOUSE_API_KEY or SAFEHOUSE_BIN."""
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def as_user(user: str) -> dict:
    """subprocess keyword arguments that run a command as `user` (root only)."""
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def user_home(base: Path, user: str) -> Path:
    home = base / f"home-{user}"
    home.mkdir()
    pw = pwd.getpwnam(user)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    home.chmod(0o700)
    return home


def run(argv, env, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd="/", **kw)


def local_state(data_dir: Path):
    try:
        return json.loads((data_dir / "local" / "daemon.json").read_text())
    except (OSError, ValueError):
        return None


def stop_local(binary: str, env: dict, data_dir: Path, **kw):
    """Kills the local daemon's sandboxes (they outlive a daemon by design), then the daemon."""
    st = local_state(data_dir)
    if st:
        try:
            key = Path(st["key_file"]).read_text().strip()
            subprocess.run([binary, "kill-all"], env={**env, "SAFEHOUSE_URL": st["url"], "SAFEHOUSE_API_KEY": key},
                           capture_output=True, timeout=60)
        except OSError:
            pass
    subprocess.run([binary, "local", "stop"], env=env, capture_output=True, timeout=60, **kw)
    if st and pid_alive(st["pid"]):  # the stop above failed: do not leak a daemon
        os.kill(st["pid"], signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout=15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def rmtree(d: Path):
    shutil.rmtree(d, ignore_errors=True)

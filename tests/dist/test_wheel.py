"""The platform wheel (scripts/wheel): one `pip install` into a fresh venv gives `import
safehouse` and `safehouse` on PATH, and the SDK quickstart runs with no daemon started by
hand (local mode), as root and as an unprivileged user (rootless)."""
import base64
import hashlib
import os
import shutil
import stat
import subprocess
import zipfile

import pytest

from e2e.support import BIN, IS_ROOT, REPO

from .support import (BASE_PATH, USER, as_user, build_wheel, clean_env, local_state, make_venv, rmtree, run,
                      shared_tmpdir, stop_local, user_home)

QUICKSTART = REPO / "sdk" / "python" / "examples" / "quickstart.py"
QUICKSTART_SAYS = ["hello from python", "45", "read back: written from the SDK", "failed as expected: exit 3",
                   "killed: True"]
STARTED = "safehouse: started a local daemon at http://127.0.0.1:"


@pytest.fixture(scope="module")
def built():
    """(base dir readable by anyone, the wheel, a fresh venv with only the wheel installed)."""
    base = shared_tmpdir("shw-")
    try:
        wheel = build_wheel(base / "wheels")
        venv = make_venv(base / "venv", wheel)
        shutil.copy(QUICKSTART, base / "quickstart.py")
        yield base, wheel, venv
    finally:
        rmtree(base)


def test_the_wheel_carries_the_sdk_and_the_static_binary(built):
    _, wheel, _ = built
    assert wheel.name.startswith("safehouse_runtime-0.1.0-py3-none-manylinux_2_17_"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "safehouse/__init__.py" in names and "safehouse/py.typed" in names, names
        script = "safehouse_runtime-0.1.0.data/scripts/safehouse"
        info = z.getinfo(script)
        assert stat.S_IMODE(info.external_attr >> 16) == 0o755, oct(info.external_attr >> 16)
        with open(BIN, "rb") as f:
            assert z.read(script) == f.read(), "the wheel's binary is the one built"
        meta = z.read("safehouse_runtime-0.1.0.dist-info/METADATA").decode()
        assert "Name: safehouse-runtime\n" in meta and "Requires-Dist: httpx" in meta, meta[:400]
        assert "Root-Is-Purelib: false" in z.read("safehouse_runtime-0.1.0.dist-info/WHEEL").decode()
        record = z.read("safehouse_runtime-0.1.0.dist-info/RECORD").decode().splitlines()
        assert len(record) == len(names), (len(record), len(names))
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            if path.endswith("RECORD"):
                continue
            data = z.read(path)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={want}" and int(size) == len(data), path


def test_a_dynamic_binary_is_refused(tmp_path):
    p = subprocess.run(["python3", str(REPO / "scripts" / "wheel.py"), "--binary", "/bin/true", "--sdk",
                        str(REPO / "sdk" / "python"), "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "dynamically linked" in p.stderr and "scripts/build" in p.stderr, p
    assert not list(tmp_path.glob("*.whl"))


def test_the_installed_wheel_gives_the_import_and_the_command(built):
    _, _, venv = built
    r = run([str(venv / "bin" / "safehouse"), "--help"], clean_env())
    assert r.returncode == 0 and "Usage: safehouse" in r.stdout and "local" in r.stdout, r
    code = ("import importlib.metadata as m, safehouse; "
            "print(m.version('safehouse-runtime'), safehouse.__version__, safehouse.__file__)")
    r = run([str(venv / "bin" / "python"), "-c", code], clean_env())
    assert r.returncode == 0, r
    dist_version, version, path = r.stdout.split()
    assert dist_version == version == "0.1.0" and path.startswith(str(venv)), r.stdout


def _check_quickstart(r, data=None):
    log = ""
    if r.returncode != 0 and data is not None:
        try:
            log = (data / "local" / "daemon.log").read_text()[-3000:]
        except OSError:
            pass
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}\ndaemon log:\n{log}"
    for line in QUICKSTART_SAYS:
        assert line in r.stdout, (line, r.stdout)


def test_quickstart_as_root_starts_one_local_daemon_and_reuses_it(built):
    if not IS_ROOT:
        pytest.skip("the root half needs root")
    base, _, venv = built
    data = shared_tmpdir("shr-")
    # PATH has no safehouse: the SDK finds the binary its wheel installed next to python.
    env = clean_env(SAFEHOUSE_DATA_DIR=str(data))
    assert shutil.which("safehouse", path=BASE_PATH) is None
    try:
        r = run([str(venv / "bin" / "python"), str(base / "quickstart.py")], env)
        _check_quickstart(r)
        assert r.stderr.count(STARTED) == 1, r.stderr
        st = local_state(data)
        assert st and st["key_file"] == str(data / "admin.key"), st
        assert stat.S_IMODE(os.stat(st["key_file"]).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(data / "local").st_mode) == 0o700
        r = run([str(venv / "bin" / "python"), str(base / "quickstart.py")], env)
        _check_quickstart(r)
        assert STARTED not in r.stderr and local_state(data)["pid"] == st["pid"], r.stderr
        # The CLI's client commands use the same daemon.
        r = run([str(venv / "bin" / "safehouse"), "sandbox", "ls", "--json"], env)
        assert r.returncode == 0 and STARTED not in r.stderr, r
    finally:
        stop_local(str(venv / "bin" / "safehouse"), env, data)
        rmtree(data)


def test_quickstart_as_an_unprivileged_user_runs_a_rootless_local_daemon(built):
    if not IS_ROOT:
        pytest.skip("switching to an unprivileged user needs root")
    base, _, venv = built
    home = user_home(base, USER)
    env = clean_env(HOME=str(home))
    data = home / ".local" / "share" / "safehouse"  # the default data dir of a non-root user
    try:
        r = run([str(venv / "bin" / "python"), str(base / "quickstart.py")], env, **as_user(USER))
        _check_quickstart(r, data)
        assert r.stderr.count(STARTED) == 1, r.stderr
        st = local_state(data)
        assert st and st["data_dir"] == str(data), st
        with open(f"/proc/{st['pid']}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:3]
        assert uids == [str(as_user(USER)["user"])] * 2, ("the daemon runs as the user, not root", uids)
        assert stat.S_IMODE(os.stat(st["key_file"]).st_mode) == 0o600
    finally:
        stop_local(str(venv / "bin" / "safehouse"), env, data, **as_user(USER))

"""Fixtures of the image suite: a registry on loopback per module, a fresh data dir per
test, the CLI runner, and a busybox image built here from Debian's busybox-static."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from e2e.support import BIN, IS_ROOT, skip_or_fail

from .oci import Image, busybox_layer
from .registry import Registry


ROOTLESS_UID = 65534


def rootless_prefix():
    """Runs the binary as uid 65534 with no capabilities (tests/conftest.py does the same)."""
    return ["setpriv", f"--reuid={ROOTLESS_UID}", f"--regid={ROOTLESS_UID}", "--clear-groups",
            "--inh-caps=-all", "--"]


def require_bin():
    if not BIN or not os.access(BIN, os.X_OK):
        skip_or_fail("safehouse binary not built (set SAFEHOUSE_BIN or run scripts/build)")
    return BIN


class Cli:
    """Runs `safehouse` with a data dir of its own."""

    def __init__(self, data_dir, prefix=()):
        self.data_dir = Path(data_dir)
        self.prefix = list(prefix)

    def __call__(self, *args, input=None, timeout=180, env=None, check=None):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
             "SAFEHOUSE_DATA_DIR": str(self.data_dir)}
        e.update(env or {})
        p = subprocess.run(self.prefix + [require_bin(), *args], input=input, capture_output=True,
                           timeout=timeout, env=e)
        p.out = p.stdout.decode(errors="replace")
        p.err = p.stderr.decode(errors="replace")
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode}\nstdout: {p.out}\nstderr: {p.err}"
        return p

    def popen(self, *args, env=None):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
             "SAFEHOUSE_DATA_DIR": str(self.data_dir)}
        e.update(env or {})
        return subprocess.Popen(self.prefix + [require_bin(), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=e)

    @property
    def store(self):
        return self.data_dir / "images"

    def layers(self):
        d = self.store / "layers"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def tmp(self):
        d = self.store / "tmp"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []


def rm_rf(p):
    subprocess.run(["rm", "-rf", str(p)], check=False)


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="safehouse-images-"))
    os.chmod(d, 0o755)
    yield d
    subprocess.run(["chmod", "-R", "u+rwx", str(d)], check=False, capture_output=True)
    rm_rf(d)


@pytest.fixture
def cli(workdir):
    require_bin()
    return Cli(workdir / "data")


@pytest.fixture(scope="module")
def registry():
    r = Registry()
    yield r
    r.close()


@pytest.fixture(scope="session")
def busybox_image():
    if not shutil.which("busybox"):
        skip_or_fail("busybox-static is not installed (scripts/test installs it)")
    d = Path(tempfile.mkdtemp(prefix="safehouse-busybox-"))
    try:
        img = Image([busybox_layer(d)], cmd=["/bin/sh"])
    finally:
        rm_rf(d)
    return img


@pytest.fixture(scope="module")
def busybox(registry, busybox_image):
    """The busybox image pushed to the module's registry; its reference."""
    return busybox_image.push(registry.addr, "busybox", "latest")

"""A small Debian root filesystem for the tests that need a real distribution (apt,
python3): built with mmdebstrap from the host's own apt sources (never a hard-coded
mirror), cached in /var/tmp for a week so local reruns skip the download (CI starts
fresh). SAFEHOUSE_TEST_CACHE=0 disables the cache."""
import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

from e2e.support import skip_or_fail

CACHE = Path("/var/tmp/safehouse-test-cache")
WEEK = 7 * 24 * 3600


def host_apt_sources():
    """The host's apt source files (one-line or deb822), as mmdebstrap takes them."""
    files = [f for f in ["/etc/apt/sources.list"] if os.path.getsize(f) > 0] if os.path.exists(
        "/etc/apt/sources.list") else []
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.list") + glob.glob("/etc/apt/sources.list.d/*.sources"))
    files = [f for f in files if any(l.strip() and not l.lstrip().startswith("#") for l in open(f))]
    if not files:
        skip_or_fail("the host has no apt sources to build a Debian image from")
    return files


def suite():
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return "bookworm"


def debian_tar(packages=("python3",)):
    """A tar of a minbase Debian with `packages`; returns its path (cached)."""
    if not shutil.which("mmdebstrap"):
        skip_or_fail("mmdebstrap is not installed (scripts/test installs it)")
    name = f"debian-{suite()}-{'-'.join(sorted(packages)) or 'minbase'}.tar"
    out = CACHE / name
    use_cache = os.environ.get("SAFEHOUSE_TEST_CACHE", "1") != "0"
    if use_cache and out.exists() and time.time() - out.stat().st_mtime < WEEK:
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(CACHE, 0o755)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    argv = ["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--format=tar"]
    if packages:
        argv.append("--include=" + ",".join(packages))
    argv += [suite(), str(tmp), *host_apt_sources()]
    p = subprocess.run(argv, capture_output=True, timeout=900)
    if p.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed: {p.stderr.decode(errors='replace')[-3000:]}")
    os.chmod(tmp, 0o644)
    tmp.rename(out)
    return out

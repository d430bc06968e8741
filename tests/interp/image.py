"""The code-interpreter image for the tests: scripts/interp-image builds its root
filesystem tar with mmdebstrap (cached in /var/tmp/safehouse-test-cache for a week, so a CI
run builds it once and local reruns skip it; SAFEHOUSE_TEST_CACHE=0 rebuilds), then
`safehouse image import` puts it in a daemon's store as code-interpreter-v1."""
import os
import shutil
import subprocess
import time
from pathlib import Path

from e2e.support import BIN, skip_or_fail

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/safehouse-test-cache")
WEEK = 7 * 24 * 3600
TAG = "code-interpreter-v1"


def image_tar():
    if not shutil.which("mmdebstrap"):
        skip_or_fail("mmdebstrap is not installed (scripts/test installs it)")
    packages = (REPO / "templates/code-interpreter/packages.txt").read_bytes()
    import hashlib
    out = CACHE / f"code-interpreter-{hashlib.sha256(packages).hexdigest()[:12]}.tar"
    if os.environ.get("SAFEHOUSE_TEST_CACHE", "1") != "0" and out.exists() and \
            time.time() - out.stat().st_mtime < WEEK:
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(CACHE, 0o755)
    p = subprocess.run([str(REPO / "scripts/interp-image"), "--tar-only", str(out)], capture_output=True,
                       timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"scripts/interp-image failed: {p.stderr.decode(errors='replace')[-3000:]}")
    os.chmod(out, 0o644)
    return out


def import_image(data_dir):
    """The image in DATA_DIR's store as code-interpreter-v1."""
    tar = image_tar()
    env = {**os.environ, "SAFEHOUSE_DATA_DIR": str(data_dir)}
    p = subprocess.run([BIN, "image", "import", str(tar), "--tag", TAG], capture_output=True, env=env,
                       timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"safehouse image import failed: {p.stderr.decode(errors='replace')[-2000:]}")
    return TAG

"""The code-interpreter template for the tests, built the way a user builds it: `safehouse
template build --tag code-interpreter-v1 templates/code-interpreter` (the repo's Dockerfile:
apt-get through the build's gateway to the host's own apt mirror) on a Debian base that
tests/images/debian.py makes with mmdebstrap from the host's apt sources (cached in
/var/tmp for a week), imported as the Dockerfile's `FROM debian:bookworm-slim`."""
import os
import subprocess
from pathlib import Path

from e2e.support import BIN

REPO = Path(__file__).resolve().parents[2]
TAG = "code-interpreter-v1"
BASE = "debian:bookworm-slim"


def import_image(data_dir):
    """The template built into DATA_DIR's store as code-interpreter-v1 (about a minute)."""
    from images.debian import debian_tar

    env = {**os.environ, "SAFEHOUSE_DATA_DIR": str(data_dir)}
    for argv in ([BIN, "image", "import", str(debian_tar(("python3",))), "--tag", BASE, "-q"],
                 [BIN, "template", "build", "--quiet", "--tag", TAG, str(REPO / "templates/code-interpreter")]):
        p = subprocess.run(argv, capture_output=True, env=env, timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:3])} failed: {p.stderr.decode(errors='replace')[-3000:]}")
    return TAG

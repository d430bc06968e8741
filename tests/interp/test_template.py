"""The code-interpreter template: its Dockerfile installs the data stack, and
`safehouse template build` of it (tests/interp/image.py) runs the interpreter's stack."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "templates/code-interpreter"


def test_dockerfile_installs_the_data_stack():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (install,) = re.findall(r"apt-get install -y --no-install-recommends ([^&]+)", text)
    for needed in ("python3-ipykernel", "python3-jupyter-client", "python3-numpy", "python3-pandas",
                   "python3-matplotlib"):
        assert needed in install.split()


def test_image_runs_the_data_stack(tmp_path):
    """The template built from the repo's Dockerfile runs the interpreter's stack with
    `safehouse run --image` (test_e2b_interp.py runs it through the daemon)."""
    import os
    import subprocess

    from e2e.support import BIN

    from .image import TAG, import_image

    import_image(tmp_path)
    env = {**os.environ, "SAFEHOUSE_DATA_DIR": str(tmp_path)}
    code = ("import ipykernel, jupyter_client, numpy, pandas, matplotlib.pyplot as plt\n"
            "plt.plot([1, 2]); plt.savefig('/tmp/f.png')\n"
            "print(open('/tmp/f.png', 'rb').read()[:4] == b'\\x89PNG', pandas.DataFrame({'a': [1]}).shape)")
    p = subprocess.run([BIN, "run", "--quiet", "--image", TAG, "--", "python3", "-c", code],
                       capture_output=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert p.stdout.decode() == "True (1, 1)\n", p

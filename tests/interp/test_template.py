"""The template's Dockerfile and the package list scripts/interp-image builds from agree,
so the image made today is the one `safehouse template build` will make."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "templates/code-interpreter"


def test_dockerfile_installs_the_package_list():
    listed = [ln.strip() for ln in (ROOT / "packages.txt").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (install,) = re.findall(r"apt-get install -y --no-install-recommends ([^&]+)", text)
    assert sorted(install.split()) == sorted(listed)
    for needed in ("python3-ipykernel", "python3-jupyter-client", "python3-numpy", "python3-pandas",
                   "python3-matplotlib"):
        assert needed in listed

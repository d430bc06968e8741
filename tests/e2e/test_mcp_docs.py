"""The Python example of docs/mcp.md runs as written with the `mcp` client of the suite's
venv (1.x, tests/requirements.txt) and with `mcp` 2.x (renamed transport and fields),
installed from the package index into a venv of its own."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .support import REPO, skip_or_fail

DOC = REPO / "docs" / "mcp.md"


def doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if "streamable_http_client" in b]
    assert len(found) == 1, "docs/mcp.md has one Python client example"
    return found[0]


@pytest.fixture(scope="module")
def mcp2_python(tmp_path_factory):
    venv = tmp_path_factory.mktemp("mcp2") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "mcp>=2,<3"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        skip_or_fail(f"pip install mcp 2.x failed:\n{p.stderr[-2000:]}")
    return str(venv / "bin" / "python")


def run_example(python: str, daemon, tmp_path: Path):
    script = tmp_path / "example.py"
    script.write_text(doc_example())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SAFEHOUSE_URL": daemon.url,
           "SAFEHOUSE_API_KEY": daemon.admin_key}
    return subprocess.run([python, str(script)], capture_output=True, text=True, timeout=120, env=env)


def version(python: str) -> str:
    return subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_the_example_runs_with_mcp_1(daemon, tmp_path):
    assert version(sys.executable).startswith("1."), version(sys.executable)
    p = run_example(sys.executable, daemon, tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("42\n "), (p.stdout, p.stderr[-2000:])


def test_the_example_runs_with_mcp_2(daemon, tmp_path, mcp2_python):
    assert version(mcp2_python).startswith("2."), version(mcp2_python)
    p = run_example(mcp2_python, daemon, tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("42\n "), (p.stdout, p.stderr[-2000:])
    # Contrast: the example the docs had before fails with 2.x (the transport was renamed).
    old = tmp_path / "old.py"
    old.write_text("from mcp.client.streamable_http import streamablehttp_client\n")
    p = subprocess.run([mcp2_python, str(old)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "streamablehttp_client" in p.stderr, p

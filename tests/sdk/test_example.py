"""The examples in sdk/python/examples run against the daemon (as CI runs them)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("safehouse")
EXAMPLES = Path(__file__).resolve().parents[2] / "sdk" / "python" / "examples"


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(daemon, script):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "SAFEHOUSE_URL": daemon.url, "SAFEHOUSE_API_KEY": daemon.admin_key}
    p = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=60,
                       env=env, cwd="/")
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    if script == "quickstart.py":
        assert "hello from python" in p.stdout and "45" in p.stdout
        assert "read back: written from the SDK" in p.stdout
        assert "failed as expected: exit 3" in p.stdout and "killed: True" in p.stdout

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
    for line in EXPECTED[script]:
        assert line in p.stdout, f"{script} did not print {line!r}; stdout:\n{p.stdout}"


#: What each example must print: it did what it shows, not just exit 0.
EXPECTED = {
    "quickstart.py": ["hello from python", "45", "read back: written from the SDK",
                      "failed as expected: exit 3", "killed: True"],
    "run_code.py": ["python: 2432902008176640000", "from the previous call: 121645100408832000",
                    "chart: ", "line 'squares' with 4 points", "error result: ZeroDivisionError: division by zero",
                    "shell says 42"],
    "streaming.py": ["stdout> tick 1\nstdout> tick 2\nstdout> tick 3\n", "chunk: 'started\\n'",
                     "background exit: 0", "cat said: fed through stdin", "sleeper: got TERM",
                     "pty saw size: True", "events: sandbox.created ..."],
    "files.py": ["# hello", "file README.md", "dir  src", "renamed: True", "watched: create src/main.py",
                 "uploaded 16777216 bytes; checksum round trip ok: True", "removed: True"],
    "policy_builder.py": ['"kill_after_violations": 50', "allowed", "ls: 126", "Permission denied",
                          "hidden file: PermissionError", "metrics: ", "refused: policy:", '"lots" is not a size'],
    "langchain_tools.py": ["safehouse_shell: ['command', 'timeout']", "wrote 12 bytes to /workspace/data.csv",
                           "stdout:\n6\n", "stdout:\na,b\n1,2\n3,4\n", "exit code: 126\ndenied: the sandbox's policy"],
}


@pytest.mark.unit
def test_every_example_is_checked():
    assert sorted(EXPECTED) == sorted(p.name for p in EXAMPLES.glob("*.py"))

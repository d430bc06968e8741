"""End-to-end suite: a real `safehouse serve` on a loopback port, driven over HTTP, the
attach WebSocket and the CLI.

    SAFEHOUSE_BIN=target/safehouse .venv/bin/pytest -q tests/e2e

The binary is $SAFEHOUSE_BIN, else /work/main/target/safehouse, else target/release/safehouse.
Without a binary that has `serve` the suite skips (and fails under CI=true). Tests that need
root (cgroup limits, host-side cgroup checks) skip with the reason when not root.

A package, so that this suite's conftest.py does not shadow tests/conftest.py (both would
otherwise be imported as the module `conftest`, which the other suites import from).
"""

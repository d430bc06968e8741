"""Python SDK suite (sdk/python): the `safehouse` package, sync and async, against a real
`safehouse serve` started by conftest.py (helpers from tests/e2e/support.py).

    SAFEHOUSE_BIN=target/safehouse .venv/bin/pytest -q tests/sdk

The SDK must be installed in the venv (tests/requirements.txt lists ./sdk/python). Skips
(fails under CI=true) without a binary that has `serve`, or without the SDK installed.
A package, like tests/e2e, so its conftest.py does not shadow tests/conftest.py.
"""

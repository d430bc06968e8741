"""Fixtures of the code-interpreter suite: the e2e suite's daemon and clients. Sandboxes on
the host's root use the host's Python: scripts/test installs python3-ipykernel and the data
stack from Debian packages. Tests that need the template's image build it themselves
(tests/interp/image.py, cached)."""
import subprocess

import pytest

from e2e.conftest import api, daemon, tenant_key  # noqa: F401  (fixtures)
from e2e.support import skip_or_fail


@pytest.fixture(scope="session", autouse=True)
def host_kernel():
    """The host's Python has ipykernel, jupyter_client, matplotlib and pandas."""
    p = subprocess.run(["/usr/bin/python3", "-c", "import ipykernel, jupyter_client, matplotlib, pandas"],
                       capture_output=True)
    if p.returncode != 0:
        skip_or_fail("the host's python3 lacks ipykernel/jupyter_client/matplotlib/pandas "
                     "(scripts/test installs python3-ipykernel python3-matplotlib python3-pandas): "
                     + p.stderr.decode(errors="replace")[-300:])

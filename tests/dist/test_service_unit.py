"""The systemd unit (deploy/safehouse.service) is valid for this systemd (no unknown or
misspelt option, which systemd would silently ignore), and it grants exactly the
capabilities the container image is documented and tested with."""
import re
import shutil
import subprocess

from e2e.support import BIN, REPO, skip_or_fail

from .test_container import RUN_OPTS

UNIT = REPO / "deploy" / "safehouse.service"


def test_the_unit_verifies_without_a_warning(tmp_path):
    if not shutil.which("systemd-analyze"):
        skip_or_fail("systemd-analyze is not installed")
    unit = tmp_path / "safehouse.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/safehouse", BIN))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    # Contrast: a misspelt option is reported (so the check above can fail).
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("ProtectClock=", "ProtectClok="))
    p = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "ProtectClok" in p.stderr, p.stderr


def test_the_unit_and_the_container_grant_the_same_capabilities():
    unit_caps = set(re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M).group(1).split())
    add = next(o for o in RUN_OPTS if o.startswith("--cap-add="))
    container_caps = {f"CAP_{c}" for c in add.removeprefix("--cap-add=").split(",")}
    assert unit_caps == container_caps, (unit_caps ^ container_caps)
    for doc in (REPO / "deploy" / "Dockerfile", REPO / "docs" / "deploy.md"):
        assert add in doc.read_text(), f"{doc} documents other capabilities than the ones tested"

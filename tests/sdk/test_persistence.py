"""The SDK's persistence surface against a real daemon: storage="disk", pause (what it
kept), resume, snapshot, sandboxes from a snapshot, fork, lifecycle."""
import os
import shutil

import pytest

safehouse = pytest.importorskip("safehouse")
from safehouse import Sandbox  # noqa: E402
from safehouse.exceptions import SafehouseError  # noqa: E402


@pytest.fixture(autouse=True)
def _pool():
    if os.geteuid() != 0 or not shutil.which("mkfs.btrfs"):
        if os.environ.get("CI", "") not in ("", "0", "false"):
            pytest.fail("under CI the storage pool must be available (root, btrfs-progs)")
        pytest.skip("disk-backed layers need root and btrfs-progs")


def test_pause_resume_snapshot_fork(daemon, tag):
    sbx = Sandbox.create(timeout=120, storage="disk", env={"WHO": "sdk"}, metadata={"t": tag},
                         lifecycle={"on_timeout": "pause", "auto_resume": False})
    try:
        sbx.files.write("/workspace/note", "kept")
        kept = sbx.pause()
        assert (kept["state"], kept["filesystem"], kept["memory"]) == ("paused", True, False), kept
        assert sbx.get_info().state == "paused"
        with pytest.raises(SafehouseError) as e:
            sbx.commands.run("true")
        assert getattr(e.value, "code", None) == "paused", e.value
        assert sbx.resume().state == "running"
        res = sbx.commands.run("cat /workspace/note; echo $WHO")
        assert res.stdout == "keptsdk\n", res

        snap = sbx.snapshot()
        assert snap["id"].startswith("snap_"), snap
        child = Sandbox.create(timeout=60, snapshot=snap["id"])
        try:
            assert child.files.read("/workspace/note") == "kept"
        finally:
            child.kill()
        forks = sbx.fork(2)
        try:
            assert len(forks) == 2
            for f in forks:
                assert Sandbox.connect(f.id).files.read("/workspace/note") == "kept"
        finally:
            for f in forks:
                Sandbox.kill(f.id)
    finally:
        sbx.kill()


def test_volumes_and_snapshots(daemon, tag):
    from safehouse import Volume
    from safehouse.exceptions import ConflictError, NotFoundError

    name = f"vol-{tag}"
    vol = Volume.create(name, "32MiB")
    try:
        assert (vol.name, vol.info.size) == (name, 32 << 20)
        assert name in [v.name for v in Volume.list()]
        with pytest.raises(ConflictError):
            Volume.create(name, "32MiB")
        # Its files without a sandbox.
        vol.files.write("/in/a.txt", "from the sdk")
        assert vol.files.read("/in/a.txt") == "from the sdk"
        assert [e.path for e in vol.files.list("/in")] == ["/in/a.txt"]
        assert vol.files.exists("/in") and not vol.files.exists("/nope")
        sbx = Sandbox.create(timeout=60, storage="disk", volumes=[{"name": name, "path": "/data"}])
        try:
            assert sbx.commands.run("cat /data/in/a.txt; echo x > /data/b").stdout == "from the sdk"
            assert Volume.connect(name).files.read("/b") == "x\n"
            with pytest.raises(ConflictError):
                Volume.delete(name)
            snap = sbx.snapshot()
            assert snap["id"] in [s["id"] for s in Sandbox.list_snapshots()]
            assert Sandbox.delete_snapshot(snap["id"]) is True
            assert Sandbox.delete_snapshot(snap["id"]) is False
        finally:
            sbx.kill()
        vol.files.remove("/in")
        assert not vol.files.exists("/in/a.txt")
    finally:
        vol.close()
        Volume.delete(name)
    assert Volume.delete(name) is False
    with pytest.raises(NotFoundError):
        Volume.connect(name)

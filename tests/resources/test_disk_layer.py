"""The writable layer on disk (`safehouse run --storage disk`, crates/storage): RES-03 with
the layer in the data dir's storage pool instead of RAM.

A write past --disk stops with EDQUOT inside the sandbox; the same write under a larger
cap (the control) succeeds, so the cap stopped it, not the filesystem; the host's disk
is unharmed; the layer is gone after the run; the btrfs ioctls that would escape the cap
are refused inside (EPERM) and work outside; rootless runs are refused with the reason.
"""
import errno
import json
import os
import shutil
import subprocess

import pytest

from conftest import PYTHON, require_mode, run_inside, run_outside, skip_or_fail

MiB = 1 << 20

FILL = r"""
import json, os, sys
per = {}
for d in sys.argv[2:]:
    n, err = 0, None
    try:
        with open(os.path.join(d, "fill"), "wb") as f:
            while n < int(sys.argv[1]):
                f.write(b"x" * (1 << 20))
                f.flush()
                os.fsync(f.fileno())
                n += 1
    except OSError as e:
        err = e.errno
    per[d] = {"mib": n, "errno": err}
print(json.dumps(per), flush=True)
"""

# BTRFS_IOC_SUBVOL_CREATE on a directory: a nested subvolume gets its own quota group.
SUBVOL = r"""
import fcntl, json, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
args = bytearray(4096)
args[8:14] = b"nested"
try:
    fcntl.ioctl(fd, 0x5000940E, args)
    print(json.dumps({"errno": None}))
except OSError as e:
    print(json.dumps({"errno": e.errno}))
"""


def last_json(res):
    for line in reversed(res.stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise AssertionError(f"no JSON in the output (rc={res.rc}): {res.stdout!r} {res.stderr!r}")


@pytest.fixture
def data_dir(tmp_path):
    require_mode("root")
    if not shutil.which("mkfs.btrfs"):
        skip_or_fail("mkfs.btrfs is missing (scripts/test installs btrfs-progs)")
    d = tmp_path / "data"
    d.mkdir()
    yield str(d)
    pool = d / "storage" / "pool"
    if os.path.ismount(pool):
        subprocess.run(["umount", "-l", str(pool)], check=False)


def layers(data_dir):
    return sorted(os.listdir(os.path.join(data_dir, "storage", "pool", "layers")))


def test_a_write_past_the_disk_cap_stops_with_edquot_inside(data_dir):
    st = os.statvfs("/")
    host_free = st.f_bavail * st.f_frsize
    dirs = ["/tmp", "/workspace", "/home/user"]
    res = run_inside([PYTHON, "-c", FILL, "48", *dirs],
                     ["--storage", "disk", "--disk", "16MiB", "--data-dir", data_dir], timeout=120)
    per = last_json(res)
    for d in dirs:
        assert per[d]["errno"] == errno.EDQUOT, f"{d}: no EDQUOT at --disk 16MiB: {per}"
    total = sum(r["mib"] for r in per.values())
    assert total <= 16, f"the layer held {total} MiB under --disk 16MiB: {per}"
    st = os.statvfs("/")
    assert host_free - st.f_bavail * st.f_frsize < 64 * MiB, "the host disk filled up"
    assert layers(data_dir) == [], "the run's layer outlived it"

    # The control: the same writes under a cap that holds them.
    res = run_inside([PYTHON, "-c", FILL, "16", *dirs],
                     ["--storage", "disk", "--disk", "128MiB", "--data-dir", data_dir], timeout=120)
    per = last_json(res)
    for d in dirs:
        assert per[d] == {"mib": 16, "errno": None}, f"{d} under a 128 MiB cap: {per}"
    assert layers(data_dir) == []


def test_the_btrfs_ioctls_that_escape_the_cap_are_refused_inside(data_dir):
    res = run_inside([PYTHON, "-c", SUBVOL, "/tmp"], ["--storage", "disk", "--data-dir", data_dir])
    assert last_json(res)["errno"] == errno.EPERM, res.stderr
    # Outside, on the same pool: the call works (so the filter is what refused it).
    outside = os.path.join(data_dir, "storage", "pool", "layers")
    res = run_outside([PYTHON, "-c", SUBVOL, outside])
    assert last_json(res)["errno"] is None, res.stderr
    subprocess.run(["btrfs", "subvolume", "delete", os.path.join(outside, "nested")],
                   check=False, capture_output=True)


def test_files_on_a_disk_layer_work_like_on_ram(data_dir):
    script = ("mkdir -p /home/user/a && echo hi > /home/user/a/f && ln -s f /home/user/a/l"
              " && cat /home/user/a/l && stat -c %U /home/user/a/f && ls / | head -3")
    res = run_inside(["/bin/sh", "-c", script], ["--storage", "disk", "--data-dir", data_dir])
    assert res.rc == 0, res.stderr
    assert res.lines()[:2] == ["hi", "user"], res.stdout


def test_rootless_disk_layers_are_refused_with_the_reason(tmp_path):
    require_mode("rootless")
    d = tmp_path / "data"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o777)
    res = run_inside(["/bin/true"], ["--storage", "disk", "--data-dir", str(d)], mode="rootless")
    assert res.rc == 125, (res.rc, res.stderr)
    assert "cannot be enforced" in res.stderr and "needs root" in res.stderr, res.stderr


def test_an_image_root_keeps_its_upper_layer_on_disk_under_the_cap(data_dir, tmp_path):
    busybox = shutil.which("busybox")
    if not busybox:
        skip_or_fail("busybox is missing (scripts/test installs busybox-static)")
    from conftest import BIN
    root = tmp_path / "rootfs" / "bin"
    root.mkdir(parents=True)
    shutil.copy(busybox, root / "busybox")
    res = run_outside([BIN, "image", "import", str(root.parent), "--tag", "bb", "--data-dir", data_dir])
    assert res.rc == 0, res.stderr
    script = ("echo kept > /bin/note && /bin/busybox cat /bin/note && "
              "/bin/busybox dd if=/dev/zero of=/tmp/big bs=1M count=32; echo dd=$?")
    res = run_inside(["/bin/busybox", "sh", "-c", script],
                     ["--image", "bb", "--data-dir", data_dir, "--storage", "disk", "--disk", "8MiB"])
    assert res.lines()[0] == "kept", res.stdout
    assert "Disk quota exceeded" in res.stdout + res.stderr and "dd=1" in res.stdout, (res.stdout, res.stderr)
    assert layers(data_dir) == []

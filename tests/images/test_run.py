"""`safehouse run --image` and `rootfs = "image:REF"`: the image's files are the root
(not the host's), its config is honoured, its layers are shared read-only under the
sandbox's own capped layer, and the policy's zones apply on top."""
import hashlib
import json
import os
import subprocess
import time

import pytest

from e2e.support import IS_ROOT, skip_or_fail

from .conftest import ROOTLESS_UID, Cli, rootless_prefix
from .oci import Image, Layer, busybox_layer


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three images on one busybox base: plain, configured, layered (whiteouts)."""
    d = tmp_path_factory.mktemp("run-images")
    base = busybox_layer(d).bytes()
    plain = Image([base], cmd=["/bin/sh"])
    configured = Image(
        [base, Layer().dir("app/", 0o755, uid=1000, gid=1000).file("app/hello.sh", "echo hello from $GREETING\n", mode=0o755)],
        env=["PATH=/bin:/usr/bin", "GREETING=the image"], workdir="/app", user="user",
        entrypoint=["/bin/sh"], cmd=["/app/hello.sh"])
    layered = Image([
        base,
        Layer().file("etc/motd", "first\n").file("var/cache/a", "1").file("var/cache/b", "2").file("opt/keep", "k"),
        Layer().whiteout("etc/motd").opaque("var/cache").file("var/cache/c", "3"),
        Layer().file("opt/top", "t"),
    ], cmd=["/bin/sh"])
    return {"plain": plain, "configured": configured, "layered": layered, "dir": d}


@pytest.fixture
def store(cli, images):
    if not IS_ROOT:
        skip_or_fail("root mode: the test runner is not root")
    for name in ("plain", "configured", "layered"):
        cli("image", "import", str(images[name].write_layout(images["dir"] / name)), "--tag", name, "-q", check=0)
    return cli


def run(cli, *args, check=None, timeout=60):
    return cli("run", *args, check=check, timeout=timeout)


def test_the_image_is_the_root_not_the_host(store):
    assert os.path.exists("/usr/bin/python3"), "the host has python3 (the contrast)"
    p = run(store, "--image", "plain", "--", "sh", "-c",
            "cat /etc/os-release; test -e /usr/bin/python3 && echo HOST-PYTHON; ls /usr/lib | head -3; id -u", check=0)
    assert "ID=busybox" in p.out and "HOST-PYTHON" not in p.out, p.out
    assert p.out.strip().endswith("0"), "root inside by default (the image's user)"
    # The host's /etc is not there either.
    p = run(store, "--image", "plain", "--", "sh", "-c", "test -e /etc/shadow || echo no-shadow; grep -c cloudsdk /etc/passwd")
    assert "no-shadow" in p.out and p.out.strip().endswith("0"), p.out


def test_the_config_is_honoured(store):
    # No command: the entrypoint and command, as the image's user, in its working dir.
    p = run(store, "--image", "configured", check=0)
    assert p.out == "hello from the image\n", p.out + p.err
    p = run(store, "--image", "configured", "--", "-c", "id -u; id -g; pwd; echo $HOME $PATH", check=0)
    assert p.out.split("\n")[:4] == ["1000", "1000", "/app", "/home/user /bin:/usr/bin"], p.out
    # --env adds to the image's environment; --workdir wins over its WorkingDir.
    p = run(store, "--image", "configured", "--env", "GREETING=you", check=0)
    assert p.out == "hello from you\n"


def test_whiteouts_and_opaque_directories_delete(store):
    p = run(store, "--image", "layered", "--", "sh", "-c",
            "cat /etc/motd 2>&1; ls /var/cache; ls /opt", check=0)
    lines = p.out.split("\n")
    assert "No such file or directory" in lines[0], p.out
    assert lines[1:5] == ["c", "keep", "top", ""], p.out


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_a_sandbox_cannot_write_to_a_shared_layer(store, images):
    layer = store.store / "layers" / images["plain"].diff_ids[0].split(":")[1] / "root"
    before = sha(layer / "etc" / "group")
    motd = layer / "etc" / "os-release"
    p = run(store, "--image", "plain", "--", "sh", "-c",
            "echo pwned > /etc/os-release && cat /etc/os-release; "
            "echo x >> /etc/group && echo appended; "
            "rm /bin/ls && echo removed; "
            "echo y >> /bin/busybox 2>/dev/null || echo busy", check=0)
    # (the running shell's own executable is busy: ETXTBSY, as anywhere)
    assert p.out.split() == ["pwned", "appended", "removed", "busy"], p.out + p.err
    assert sha(layer / "etc" / "group") == before and motd.read_text().startswith("ID=busybox")
    assert (layer / "bin" / "ls").is_symlink()
    # FS-12: the next sandbox sees the pristine layer.
    p = run(store, "--image", "plain", "--", "sh", "-c", "cat /etc/os-release; test -e /bin/ls && echo ls-here", check=0)
    assert p.out.startswith("ID=busybox") and "ls-here" in p.out
    # The layers are not reachable from inside: not mounted anywhere it can see.
    p = run(store, "--image", "plain", "--", "sh", "-c", "cat /proc/self/mountinfo", check=0)
    assert str(store.store) not in p.out and "/images/layers" not in p.out, p.out


def test_the_writable_layer_is_capped(store):
    # (one file past the cap is SIGXFSZ: RLIMIT_FSIZE is the same size)
    p = run(store, "--image", "plain", "--disk", "8MiB", "--", "sh", "-c",
            "for i in 1 2 3; do dd if=/dev/zero of=/usr/big$i bs=1M count=4 2>&1 || echo rc=$?; done")
    assert "No space left on device" in p.out and "rc=1" in p.out, p.out


def test_policy_zones_apply_on_top(store, workdir):
    data = workdir / "data-ro"
    data.mkdir()
    (data / "in.txt").write_text("input")
    wd = workdir / "wd"
    wd.mkdir()
    policy = workdir / "p.toml"
    policy.write_text(f'''version = 1
[filesystem]
rootfs = "image:plain"
read_only = [{{ host = "{data}", path = "/data" }}]
hidden = ["/etc/os-release"]
''')
    p = run(store, "--policy", str(policy), "--workdir", str(wd), "--", "sh", "-c",
            "cat /data/in.txt; echo; (echo x > /data/new) 2>&1; cat /etc/os-release 2>&1; "
            "(echo out > /workspace/result && echo wrote) 2>&1; pwd")
    lines = p.out.split("\n")
    assert lines[0] == "input", p.out + p.err
    assert "Read-only file system" in lines[1], p.out
    assert "Permission denied" in lines[2], p.out
    assert lines[3:5] == ["wrote", "/workspace"], p.out
    assert (wd / "result").read_text() == "out\n"
    assert not (data / "new").exists()


def test_root_inside_is_an_unprivileged_host_range_without_capabilities(store):
    p = store.popen("run", "--image", "plain", "--", "sh", "-c",
                    "cat /proc/self/uid_map; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; exec sleep 4.321")
    time.sleep(1.5)
    # Seen from the host, the sandbox's processes belong to the shifted range.
    owners = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                if cmd == b"sleep\x004.321\x00":
                    owners.add(os.stat(f"/proc/{pid}").st_uid)
            except OSError:
                pass
    out, err = p.communicate(timeout=30)
    out = out.decode()
    assert out.split("\n")[0].split() == ["0", "999999000", "65536"], out
    for line in out.split("\n")[1:4]:
        assert line.split()[1] == "0000000000000000", out
    assert owners == {999_999_000}, owners


def test_a_running_sandbox_keeps_its_layers_through_rm(store, images):
    p = store.popen("run", "--image", "layered", "--", "sh", "-c", "sleep 3; cat /opt/top")
    time.sleep(1.0)
    r = store("image", "rm", "layered", "--json", check=0)
    gc = json.loads(r.out)["gc"]
    # Its three own layers are in use (the busybox base is other images' too).
    assert gc["layers_in_use"] == 3 and gc["layers_removed"] == 0, gc
    out, err = p.communicate(timeout=30)
    assert out == b"t", err
    gc = json.loads(store("image", "gc", "--json", check=0).out)
    assert gc["layers_removed"] == 3, gc  # the busybox base stays: other images use it


def test_unknown_images_and_missing_commands(store, images):
    p = run(store, "--image", "nope", "--", "true")
    assert p.returncode == 125 and "no image named \"nope\"" in p.err, p.err
    bare = Image([Layer().file("x", "y")])
    store("image", "import", str(bare.write_layout(images["dir"] / "bare")), "--tag", "bare", "-q", check=0)
    p = run(store, "--image", "bare")
    assert p.returncode == 125 and "has no entrypoint or command" in p.err, p.err
    p = run(store, "--image", "plain", "--rootfs", "host", "--", "true")
    assert p.returncode == 125 and "cannot be used with" in p.err, p.err


def test_rootless_image_root(images, workdir, busybox_image):
    if not IS_ROOT:
        skip_or_fail("runs the rootless half as uid 65534 from root")
    data = workdir / "rootless"
    data.mkdir()
    os.chown(data, ROOTLESS_UID, ROOTLESS_UID)
    layout = images["layered"].write_layout(workdir / "layout-rl")
    subprocess.run(["chmod", "-R", "a+rX", str(workdir)], check=True)
    cli = Cli(data / "data", prefix=rootless_prefix())
    cli("image", "import", str(layout), "--tag", "layered", "-q", env={"HOME": "/tmp"}, check=0)
    p = cli("run", "--image", "layered", "--", "sh", "-c",
            "id -u; cat /proc/self/uid_map; ls /var/cache; echo w > /etc/new && cat /etc/new",
            env={"HOME": "/tmp"}, check=0)
    lines = p.out.split("\n")
    assert lines[0] == "0", p.out
    assert lines[1].split() == ["0", str(ROOTLESS_UID), "1"], p.out
    assert lines[2:4] == ["c", "w"], p.out

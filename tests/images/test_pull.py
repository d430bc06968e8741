"""`safehouse image pull|ls|inspect|rm|gc` against a real registry on loopback
(Debian's docker-registry), with images built here: digests kept, platforms chosen,
basic and token auth, corrupt blobs refused, downloads resumed, concurrent writers."""
import fcntl
import json
import os
import stat
import threading
import time

import pytest

from e2e.support import skip_or_fail

from .oci import Image, Layer, push_index
from .registry import CuttingProxy, Registry


def test_pull_stores_the_image_under_its_digest_and_lists_it(cli, registry, busybox, busybox_image):
    p = cli("image", "pull", busybox, check=0)
    assert p.out.split() == [busybox, busybox_image.digest]
    assert "1 layers (0 already here)" in p.err and "stored" in p.err, p.err
    layer = cli.store / "layers" / busybox_image.diff_ids[0].split(":")[1] / "root"
    assert (layer / "bin" / "busybox").is_file()
    assert os.readlink(layer / "bin" / "sh") == "busybox"

    ls = json.loads(cli("image", "ls", "--json", check=0).out)
    assert [(r["name"], r["digest"], r["kind"]) for r in ls] == [(busybox, busybox_image.digest, "image")]
    assert ls[0]["size"] > 500_000
    table = cli("image", "ls", check=0).out.splitlines()
    assert table[0].split()[:4] == ["NAME", "KIND", "DIGEST", "SIZE"]
    assert table[1].split()[:3] == [busybox, "image", busybox_image.digest[7:19]]

    info = json.loads(cli("image", "inspect", busybox, check=0).out)
    assert info["run"]["cmd"] == ["/bin/sh"] and info["layers"][0]["diff_id"] == busybox_image.diff_ids[0]
    # Short names resolve: with :latest, and by digest prefix.
    assert json.loads(cli("image", "inspect", busybox.rsplit(":", 1)[0], check=0).out)["name"] == busybox
    assert json.loads(cli("image", "inspect", busybox_image.digest[:20], check=0).out)["name"] == busybox

    # Pulled again: nothing to download.
    p = cli("image", "pull", busybox, check=0)
    assert "1 layers (1 already here), 0 B to download" in p.err, p.err

    p = cli("image", "rm", busybox, "--json", check=0)
    out = json.loads(p.out)
    assert out["removed"] == [busybox] and out["gc"]["layers_removed"] == 1 and out["gc"]["blobs_removed"] == 2
    assert cli.layers() == [] and json.loads(cli("image", "ls", "--json", check=0).out) == []
    p = cli("image", "rm", busybox)
    assert p.returncode == 1 and "no image named" in p.err and "image pull" in p.err, p.err


def test_an_index_is_resolved_to_the_host_platform_or_the_one_asked_for(cli, registry):
    amd = Image([Layer().file("arch", "amd64\n")], arch="amd64")
    arm = Image([Layer().file("arch", "arm64\n")], arch="arm64")
    push_index(registry.addr, "multi", "v1", [(arm, {"os": "linux", "architecture": "arm64"}),
                                              (amd, {"os": "linux", "architecture": "amd64"})])
    ref = f"{registry.addr}/multi:v1"
    p = cli("image", "pull", ref, check=0)
    assert p.out.split() == [ref, amd.digest], "the manifest for this host (amd64)"
    p = cli("image", "pull", ref, "--platform", "linux/arm64", "--name", "multi-arm", check=0)
    assert p.out.split() == ["multi-arm", arm.digest]
    p = cli("image", "pull", ref, "--platform", "linux/s390x")
    assert p.returncode == 1
    assert "no image for linux/s390x" in p.err and "linux/arm64, linux/amd64" in p.err, p.err


def test_a_pinned_digest_is_checked(cli, registry, busybox, busybox_image):
    ref = f"{registry.addr}/busybox@{busybox_image.digest}"
    assert cli("image", "pull", ref, check=0).out.split() == [ref, busybox_image.digest]


def test_basic_auth():
    reg = Registry(auth="basic", users={"alice": "s3cret"})
    try:
        img = Image([Layer().file("hello", "basic\n")])
        ref = img.push(reg.addr, "private/app", "1", auth=reg.basic("alice"))
        from .conftest import Cli
        import tempfile
        d = tempfile.mkdtemp(prefix="safehouse-images-auth-")
        cli = Cli(d + "/data")
        p = cli("image", "pull", ref)
        assert p.returncode == 1 and "credentials" in p.err, p.err
        p = cli("image", "pull", ref, "--username", "alice", "--password-stdin", input=b"wrong\n")
        assert p.returncode == 1 and ("unauthorized" in p.err or "authentication failed" in p.err), p.err
        p = cli("image", "pull", ref, "--username", "alice", "--password-stdin", input=b"s3cret\n", check=0)
        assert p.out.split() == [ref, img.digest]
        # The password can come from the environment too.
        p = cli("image", "pull", ref, "--username", "alice", "--name", "again",
                env={"SAFEHOUSE_REGISTRY_PASSWORD": "s3cret"}, check=0)
        p = cli("image", "pull", ref, "--password-stdin", input=b"x")
        assert p.returncode == 1 and "--password-stdin needs --username" in p.err
        os.system(f"rm -rf {d}")
    finally:
        reg.close()


def test_token_auth():
    reg = Registry(auth="token", users={"bob": "hunter2"})
    try:
        img = Image([Layer().file("hello", "token\n")])
        ref = img.push(reg.addr, "team/app", "2", auth=reg.push_auth("bob", "team/app"))
        from .conftest import Cli
        import tempfile
        d = tempfile.mkdtemp(prefix="safehouse-images-token-")
        cli = Cli(d + "/data")
        p = cli("image", "pull", ref)
        assert p.returncode == 1 and ("authentication failed" in p.err or "unauthorized" in p.err), p.err
        before = len(reg.token_server.requests)
        p = cli("image", "pull", ref, "--username", "bob", "--password-stdin", input=b"hunter2", check=0)
        assert p.out.split() == [ref, img.digest]
        asked = reg.token_server.requests[before:]
        assert asked and all(a.startswith("Basic ") for _, a in asked)
        assert any("scope=repository%3Ateam%2Fapp%3Apull" in path for path, _ in asked), asked
        os.system(f"rm -rf {d}")
    finally:
        reg.close()


def test_a_corrupt_blob_fails_the_digest_check_and_leaves_nothing(cli, registry):
    img = Image([Layer().file("data", os.urandom(4096).hex())])
    ref = img.push(registry.addr, "corrupt", "1")
    blob = img.layer_descs[0]["digest"]
    path = registry.blob_data_path(blob)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    p = cli("image", "pull", ref)
    assert p.returncode == 1
    assert f"digest mismatch for layer blob from {registry.addr}: expected {blob}" in p.err, p.err
    assert cli.layers() == [] and cli.tmp() == []
    assert json.loads(cli("image", "ls", "--json", check=0).out) == []


def big_image():
    """A layer of incompressible data, big enough to cut mid-way."""
    return Image([Layer().file("big.bin", os.urandom(6 << 20)).file("small", "x")])


def test_a_cut_transfer_resumes_with_a_range_request(cli, registry):
    img = big_image()
    img.push(registry.addr, "big", "1")
    blob = img.layer_descs[0]["digest"]
    proxy = CuttingProxy(registry.port, cut=[blob], after=2 << 20)
    try:
        ref = f"{proxy.addr}/big:1"
        p = cli("image", "pull", ref, check=0)
        assert "retry 1" in p.err, p.err
        ranges = [r for m, path, r in proxy.seen if path.endswith(blob) and r]
        assert ranges and ranges[0].startswith("bytes=") and int(ranges[0][6:].rstrip("-")) >= 1 << 20, proxy.seen
        layer = cli.store / "layers" / img.diff_ids[0].split(":")[1] / "root"
        assert (layer / "big.bin").stat().st_size == 6 << 20
    finally:
        proxy.close()


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def partial_size(cli):
    d = cli.store / "tmp"
    sizes = [p.stat().st_size for p in d.glob("*.partial")] if d.exists() else []
    return max(sizes, default=0)


def test_a_killed_pull_is_resumed_by_the_next(cli, registry):
    img = big_image()
    img.push(registry.addr, "big2", "1")
    blob = img.layer_descs[0]["digest"]
    stalling = CuttingProxy(registry.port, cut=[blob], after=3 << 20, stall=True)
    try:
        proc = cli.popen("image", "pull", f"{stalling.addr}/big2:1")
        wait_for(lambda: partial_size(cli) >= 3 << 20, what="a partial download")
        proc.kill()
        proc.wait()
    finally:
        stalling.close()
    proxy = CuttingProxy(registry.port)
    try:
        p = cli("image", "pull", f"{proxy.addr}/big2:1", check=0)
        assert "resuming at 3.0 MiB" in p.err, p.err
        ranges = [r for m, path, r in proxy.seen if path.endswith(blob)]
        assert ranges == [f"bytes={3 << 20}-"], proxy.seen
        assert cli.tmp() == []
    finally:
        proxy.close()


def test_two_pulls_of_one_image_at_once(cli, registry):
    img = Image([Layer().file("a", os.urandom(1 << 20)), Layer().file("b", os.urandom(1 << 20))])
    ref = img.push(registry.addr, "twice", "1")
    procs = [cli.popen("image", "pull", ref) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        assert out.decode().split() == [ref, img.digest]
    assert cli.layers() == sorted(d.split(":")[1] for d in img.diff_ids)
    assert cli.tmp() == []


def test_gc_waits_for_a_running_pull_and_keeps_what_it_stored(cli, registry):
    img = big_image()
    ref = img.push(registry.addr, "during-gc", "1")
    blob = img.layer_descs[0]["digest"]
    proxy = CuttingProxy(registry.port, cut=[blob], after=1 << 20, stall=True)
    try:
        pull = cli.popen("image", "pull", f"{proxy.addr}/during-gc:1")
        wait_for(lambda: partial_size(cli) >= 1 << 20, what="a partial download")
        gc = cli.popen("image", "gc", "--json")
        time.sleep(1.0)
        assert gc.poll() is None, "gc must wait while a pull writes to the store"
        proxy.stop.set()  # the stalled transfer ends; the pull resumes and finishes
        out, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err.decode()
        gout, gerr = gc.communicate(timeout=60)
        assert gc.returncode == 0, gerr.decode()
        assert json.loads(gout)["layers_removed"] == 0
    finally:
        proxy.close()
    assert cli.layers() == [img.diff_ids[0].split(":")[1]]
    assert [r["name"] for r in json.loads(cli("image", "ls", "--json", check=0).out)] == [f"{proxy.addr}/during-gc:1"]

    # And the other way round: a pull waits while gc holds the store.
    lock = open(cli.store / "lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    p = cli.popen("image", "pull", ref)
    time.sleep(1.0)
    assert p.poll() is None, "a pull must wait for a running gc"
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()


def test_unknown_images_and_registries_are_clear_errors(cli, registry):
    p = cli("image", "pull", f"{registry.addr}/nope:1")
    assert p.returncode == 1 and ("no such image or tag" in p.err or "manifest unknown" in p.err.lower()), p.err
    p = cli("image", "pull", "Not A Ref!")
    assert p.returncode == 1 and "invalid image reference" in p.err, p.err
    p = cli("image", "pull", "127.0.0.1:1/x:1")
    assert p.returncode == 1 and "registry 127.0.0.1:1" in p.err, p.err


def test_rootless_pull_keeps_the_users_own_files(registry, busybox, busybox_image, workdir):
    from .conftest import rootless_prefix, ROOTLESS_UID, IS_ROOT
    if not IS_ROOT:
        skip_or_fail("runs the rootless half as uid 65534 from root")
    from .conftest import Cli
    data = workdir / "rootless"
    data.mkdir()
    os.chown(data, ROOTLESS_UID, ROOTLESS_UID)
    cli = Cli(data / "data", prefix=rootless_prefix())
    p = cli("image", "pull", busybox, env={"HOME": "/tmp"}, check=0)
    assert p.out.split() == [busybox, busybox_image.digest]
    layer = cli.store / "layers" / busybox_image.diff_ids[0].split(":")[1] / "root"
    st = os.lstat(layer / "bin" / "busybox")
    assert (st.st_uid, stat.S_IMODE(st.st_mode) & 0o7000) == (ROOTLESS_UID, 0)
    # A store written without privileges is not used by root (owners differ).
    root_cli = Cli(data / "data")
    p = root_cli("image", "ls")
    assert p.returncode == 1 and "written without privileges and cannot be used as root" in p.err, p.err

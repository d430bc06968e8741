"""`safehouse image import`: OCI layouts (directory, archive, one written by skopeo),
`docker save` archives, root filesystems (directory, tar.gz)."""
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from e2e.support import skip_or_fail

from .oci import Image, Layer, busybox_rootfs, sha


def record(cli, name):
    return json.loads(cli("image", "inspect", name, check=0).out)


def test_oci_layout_directory_and_archive(cli, workdir):
    img = Image([Layer().file("etc/os-release", "ID=layout\n"), Layer().file("app/run", "#!/bin/sh\n", mode=0o755)],
                cmd=["/app/run"], env=["PATH=/bin", "MODE=layout"], workdir="/app", user="1000")
    layout = img.write_layout(workdir / "layout")
    p = cli("image", "import", str(layout), "--tag", "from-layout", check=0)
    assert p.out.split() == ["from-layout", img.digest], "the layout's manifest digest is kept"
    assert f"importing {layout} as an OCI layout" in p.err, p.err
    r = record(cli, "from-layout")
    assert r["run"] == {"env": ["PATH=/bin", "MODE=layout"], "working_dir": "/app", "user": "1000",
                        "entrypoint": [], "cmd": ["/app/run"]}
    assert r["source"] == f"import {layout}"

    archive = workdir / "layout.tar"
    with tarfile.open(archive, "w") as t:
        for p in sorted(layout.rglob("*")):
            t.add(str(p), arcname=str(p.relative_to(layout)), recursive=False)
    p = cli("image", "import", str(archive), "--tag", "from-archive", check=0)
    assert p.out.split() == ["from-archive", img.digest]
    assert cli.tmp() == []


def test_a_layout_with_a_corrupt_blob_is_refused(cli, workdir):
    img = Image([Layer().file("f", "content")])
    layout = img.write_layout(workdir / "layout")
    cfg = layout / "blobs" / "sha256" / sha(img.config).split(":")[1]
    cfg.write_bytes(img.config.replace(b"amd64", b"AMD64"))
    p = cli("image", "import", str(layout), "--tag", "bad")
    assert p.returncode == 1 and "digest mismatch for config" in p.err, p.err
    assert cli.layers() == [] and cli.tmp() == []


def test_a_layout_blob_symlinked_out_is_not_followed(cli, workdir):
    img = Image([Layer().file("f", "content")])
    layout = img.write_layout(workdir / "layout")
    cfg = layout / "blobs" / "sha256" / sha(img.config).split(":")[1]
    (workdir / "elsewhere").write_bytes(img.config)
    cfg.unlink()
    os.symlink(workdir / "elsewhere", cfg)
    p = cli("image", "import", str(layout), "--tag", "bad")
    assert p.returncode == 1 and "Too many levels of symbolic links" in p.err, p.err


def docker_save(path, images):
    """A `docker save` archive (the classic format: <id>/layer.tar, <config>.json,
    manifest.json, repositories)."""
    with tarfile.open(path, "w") as t:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        manifest = []
        for tag, layers, config in images:
            names = []
            for raw in layers:
                lid = sha(raw + tag.encode()).split(":")[1]
                add(f"{lid}/layer.tar", raw)
                add(f"{lid}/VERSION", b"1.0")
                names.append(f"{lid}/layer.tar")
            cfg_name = sha(config).split(":")[1] + ".json"
            add(cfg_name, config)
            manifest.append({"Config": cfg_name, "RepoTags": [tag], "Layers": names})
        add("manifest.json", json.dumps(manifest).encode())


def save_entry(tag, files, cmd):
    raws = [Layer().file(n, c).bytes() for n, c in files]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": cmd},
                         "rootfs": {"type": "layers", "diff_ids": [sha(r) for r in raws]}}).encode()
    return tag, raws, config


def test_docker_save_archives(cli, workdir):
    one = workdir / "one.tar"
    docker_save(one, [save_entry("app:1", [("usr/bin/app", "a"), ("etc/app.conf", "x=1")], ["app"])])
    cli("image", "import", str(one), "--tag", "saved", check=0)
    r = record(cli, "saved")
    assert r["run"]["cmd"] == ["app"] and len(r["layers"]) == 2
    top = cli.store / "layers" / r["layers"][1]["diff_id"].split(":")[1] / "root"
    assert (top / "etc" / "app.conf").read_text() == "x=1"

    two = workdir / "two.tar"
    docker_save(two, [save_entry("a:1", [("a", "a")], ["a"]), save_entry("b:1", [("b", "b")], ["b"])])
    p = cli("image", "import", str(two), "--tag", "which")
    assert p.returncode == 1 and "holds 2 images (a:1, b:1); choose one with --select TAG" in p.err, p.err
    cli("image", "import", str(two), "--tag", "b", "--select", "b:1", check=0)
    assert record(cli, "b")["run"]["cmd"] == ["b"]

    # A layer that does not match its diff_id is refused.
    bad = workdir / "bad.tar"
    tag, raws, config = save_entry("c:1", [("c", "c")], ["c"])
    config = config.replace(sha(raws[0]).encode(), sha(b"other").encode())
    docker_save(bad, [(tag, raws, config)])
    p = cli("image", "import", str(bad), "--tag", "c")
    assert p.returncode == 1 and "digest mismatch for uncompressed layer (diff_id)" in p.err, p.err


def test_root_filesystems(cli, workdir):
    if not shutil.which("busybox"):
        skip_or_fail("busybox-static is not installed")
    root = busybox_rootfs(workdir / "rootfs")
    p = cli("image", "import", str(root), "--tag", "bb-dir", check=0)
    assert "root filesystem directory" in p.err, p.err
    r = record(cli, "bb-dir")
    assert r["run"]["cmd"] == ["/bin/sh"] and len(r["layers"]) == 1
    layer = cli.store / "layers" / r["layers"][0]["diff_id"].split(":")[1] / "root"
    assert os.readlink(layer / "bin" / "sh") == "busybox"
    assert (layer / "etc" / "os-release").read_text().startswith("ID=busybox")

    tgz = workdir / "rootfs.tar.gz"
    subprocess.run(["tar", "-C", str(root), "-czf", str(tgz), "."], check=True)
    p = cli("image", "import", str(tgz), "--tag", "bb-tar", check=0)
    assert "root filesystem archive" in p.err, p.err
    r = record(cli, "bb-tar")
    layer = cli.store / "layers" / r["layers"][0]["diff_id"].split(":")[1] / "root"
    assert (layer / "bin" / "busybox").stat().st_size == os.stat(shutil.which("busybox")).st_size

    p = cli("image", "import", str(workdir / "missing"), "--tag", "x")
    assert p.returncode == 1 and "No such file" in p.err, p.err


def test_a_layout_written_by_skopeo(cli, registry, busybox, busybox_image, workdir):
    if not shutil.which("skopeo"):
        skip_or_fail("skopeo is not installed (scripts/test installs it)")
    dest = workdir / "skopeo-layout"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{busybox}",
                    f"oci:{dest}:bb"], check=True, capture_output=True, timeout=120)
    p = cli("image", "import", str(dest), "--tag", "from-skopeo", "--select", "bb", check=0)
    r = record(cli, "from-skopeo")
    assert r["layers"][0]["diff_id"] == busybox_image.diff_ids[0]

"""Hostile layers pulled from a registry: each is refused with a clear error or
neutralised and reported, and nothing is ever written outside the store."""
import gzip
import io
import json
import os
import stat
import tarfile

import pytest

from .oci import Image, Layer, MTIME


def snapshot(d):
    """Every path under d (recursively), to compare before and after."""
    return sorted(str(p) for p in d.rglob("*"))


@pytest.fixture
def outside(workdir):
    """A sentinel directory next to the data dir, and what else is next to it."""
    d = workdir / "outside"
    d.mkdir()
    (d / "keep").write_text("host")
    return d


def pulled(cli, registry, name, layers, **kw):
    img = Image(layers, **kw)
    return img, img.push(registry.addr, name, "1")


def assert_nothing_outside(cli, outside):
    assert snapshot(outside) == [str(outside / "keep")]
    assert sorted(p.name for p in cli.data_dir.parent.iterdir()) == ["data", "outside"]


def test_dotdot_paths_refuse_the_layer(cli, registry, outside):
    _, ref = pulled(cli, registry, "dotdot", [Layer().file("../../outside/pwned", "x")])
    p = cli("image", "pull", ref)
    assert p.returncode == 1
    assert "refused: entry \"../../outside/pwned\" climbs out of the layer with '..'" in p.err, p.err
    assert cli.layers() == [] and cli.tmp() == []
    assert_nothing_outside(cli, outside)


def test_absolute_paths_and_symlinks_out_stay_in_the_layer(cli, registry, outside):
    target = str(outside)
    img, ref = pulled(cli, registry, "symlinks", [
        Layer().dir(target.lstrip("/") + "/")
        .symlink("escape", target)
        .file("escape/pwned", "via symlink")
        .symlink("up", "../../../../../../../..")
        .file("up/tmp/pwned2", "via dotdot symlink")
        .file(str(outside / "abs"), "absolute name")])
    p = cli("image", "pull", ref, check=0)
    assert "neutralised: 1 absolute paths taken relative to the layer" in p.err, p.err
    root = cli.store / "layers" / img.diff_ids[0].split(":")[1] / "root"
    inside = root / target.lstrip("/")
    assert (inside / "pwned").read_text() == "via symlink"
    assert (inside / "abs").read_text() == "absolute name"
    assert (root / "tmp" / "pwned2").read_text() == "via dotdot symlink"
    assert os.readlink(root / "escape") == target, "the symlink itself is kept (it resolves in the sandbox)"
    assert_nothing_outside(cli, outside)


def test_hard_links_out_are_refused(cli, registry, outside):
    for name, layer in [
        ("hl-abs", Layer().hardlink("h", str(outside / "keep"))),
        ("hl-etc", Layer().hardlink("passwd", "/etc/passwd")),
        ("hl-via-symlink", Layer().symlink("s", str(outside)).hardlink("h", "s/keep")),
    ]:
        _, ref = pulled(cli, registry, name, [layer])
        p = cli("image", "pull", ref)
        assert p.returncode == 1 and "which is not in this layer" in p.err, (name, p.err)
        assert cli.layers() == [] and cli.tmp() == []
    assert os.stat(outside / "keep").st_nlink == 1
    assert_nothing_outside(cli, outside)


def test_devices_and_setuid_bits_are_neutralised(cli, registry, outside):
    img, ref = pulled(cli, registry, "devices", [
        Layer().device("dev/mem", 1, 1).device("dev/sda", 8, 0, block=True)
        .file("usr/bin/su", "elf", mode=0o4755).file("usr/bin/wall", "elf", mode=0o2755)
        .file("bin/ping", "elf", mode=0o755, pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"})])
    p = cli("image", "pull", ref, check=0)
    assert ("neutralised: 2 device nodes skipped, 2 setuid/setgid bits cleared, 1 xattrs dropped "
            "(file capabilities, trusted.*, user.overlay.*)") in p.err, p.err
    root = cli.store / "layers" / img.diff_ids[0].split(":")[1] / "root"
    assert not (root / "dev" / "mem").exists() and not (root / "dev" / "sda").exists()
    for f in ("usr/bin/su", "usr/bin/wall"):
        assert stat.S_IMODE(os.lstat(root / f).st_mode) == 0o755
    with pytest.raises(OSError):
        os.getxattr(root / "bin" / "ping", "security.capability")
    # Nothing in any layer of the store is a device or carries setuid/setgid.
    for p in (cli.store / "layers").rglob("*"):
        st = os.lstat(p)
        assert not stat.S_ISBLK(st.st_mode)
        assert not (stat.S_ISCHR(st.st_mode) and st.st_rdev != 0), p
        assert not (stat.S_ISREG(st.st_mode) and st.st_mode & 0o6000), p
    assert_nothing_outside(cli, outside)


def zeros_layer(size):
    """A tar holding `size` zero bytes, streamed through gzip (a few hundred KiB)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        ti = tarfile.TarInfo("zeros")
        ti.size = size
        ti.mtime = MTIME
        gz.write(ti.tobuf(format=tarfile.PAX_FORMAT))
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            gz.write(chunk)
        gz.write(bytes(1024))
    return raw.getvalue()


def test_a_tar_bomb_is_capped(cli, registry, outside):
    """A 256 MiB layer that compresses to a few hundred KiB, refused past --max-layer-size
    before it fills anything; with room for it, it unpacks."""
    from .oci import push_blobs, put_manifest, sha, MEDIA_LAYER_GZ, MEDIA_CONFIG, MEDIA_MANIFEST
    blob = zeros_layer(256 << 20)
    assert len(blob) < 1 << 20
    import hashlib
    import zlib
    tar = zlib.decompress(blob, 16 + zlib.MAX_WBITS)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha(tar)]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                           "config": {"mediaType": MEDIA_CONFIG, "digest": sha(config), "size": len(config)},
                           "layers": [{"mediaType": MEDIA_LAYER_GZ, "digest": sha(blob), "size": len(blob)}]}).encode()
    push_blobs(registry.addr, "bomb", {sha(blob): blob, sha(config): config})
    put_manifest(registry.addr, "bomb", "1", manifest, MEDIA_MANIFEST)
    ref = f"{registry.addr}/bomb:1"
    p = cli("image", "pull", ref, "--max-layer-size", "64MiB")
    assert p.returncode == 1
    assert "unpacks to more than 67108864 bytes (an archive bomb?)" in p.err, p.err
    assert cli.layers() == [] and cli.tmp() == []
    assert_nothing_outside(cli, outside)
    cli("image", "pull", ref, "--max-layer-size", "300MiB", check=0)


def test_whiteouts_and_opaque_directories_become_overlay_markers(cli, registry):
    img, ref = pulled(cli, registry, "whiteouts", [
        Layer().file("etc/motd", "hello").file("var/cache/a", "1").file("var/cache/b", "2"),
        Layer().whiteout("etc/motd").opaque("var/cache").file("var/cache/c", "3"),
    ])
    cli("image", "pull", ref, check=0)
    top = cli.store / "layers" / img.diff_ids[1].split(":")[1] / "root"
    st = os.lstat(top / "etc" / "motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, "an overlayfs whiteout"
    assert os.getxattr(top / "var" / "cache", "user.overlay.opaque") == b"y"
    assert sorted(os.listdir(top / "var" / "cache")) == ["c"]

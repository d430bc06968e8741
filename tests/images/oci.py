"""Builds OCI images for the tests, byte by byte: layers (tar, optionally hostile: raw
names, devices, setuid bits, bombs), gzip blobs, configs, manifests, OCI layouts on disk,
and pushes to a registry over the distribution API (no third-party packages)."""
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MTIME = 1_700_000_000


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Layer:
    """A tar layer built entry by entry. Names are written as given (tarfile does not
    sanitise on write), so hostile names are possible."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode=0o644, uid=0, gid=0, size=0, link="", pax=None):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.size = size
        ti.mtime = MTIME
        ti.linkname = link
        if pax:
            ti.pax_headers = pax
        return ti

    def file(self, name, data=b"", mode=0o644, uid=0, gid=0, pax=None):
        if isinstance(data, str):
            data = data.encode()
        self.tar.addfile(self._info(name, tarfile.REGTYPE, mode, uid, gid, len(data), pax=pax), io.BytesIO(data))
        return self

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))
        return self

    def symlink(self, name, target):
        self.tar.addfile(self._info(name, tarfile.SYMTYPE, 0o777, link=target))
        return self

    def hardlink(self, name, target):
        self.tar.addfile(self._info(name, tarfile.LNKTYPE, 0o644, link=target))
        return self

    def device(self, name, major=1, minor=1, block=False):
        ti = self._info(name, tarfile.BLKTYPE if block else tarfile.CHRTYPE, 0o666)
        ti.devmajor, ti.devminor = major, minor
        self.tar.addfile(ti)
        return self

    def whiteout(self, path):
        d, _, base = path.rpartition("/")
        return self.file(f"{d}/.wh.{base}" if d else f".wh.{base}")

    def opaque(self, dirpath):
        return self.file(f"{dirpath.rstrip('/')}/.wh..wh..opq")

    def tree(self, root, prefix=""):
        """Adds a directory tree from disk (symlinks kept as symlinks, owners as on disk)."""
        root = Path(root)
        for p in sorted(root.rglob("*")):
            rel = prefix + str(p.relative_to(root))
            self.tar.add(str(p), arcname=rel, recursive=False)
        return self

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def gz(data):
    return gzip.compress(data, compresslevel=1, mtime=0)


class Image:
    """Layers + config → blobs, manifest; written as an OCI layout or pushed."""

    def __init__(self, layers, env=None, cmd=None, entrypoint=None, workdir=None, user=None,
                 compress=True, arch="amd64"):
        self.blobs = {}
        self.layer_descs = []
        diff_ids = []
        for raw in layers:
            data = raw.bytes() if isinstance(raw, Layer) else raw
            diff_ids.append(sha(data))
            blob = gz(data) if compress else data
            self.blobs[sha(blob)] = blob
            self.layer_descs.append({"mediaType": MEDIA_LAYER_GZ if compress else MEDIA_LAYER,
                                     "digest": sha(blob), "size": len(blob)})
        cfg = {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
        if cmd is not None:
            cfg["Cmd"] = cmd
        if entrypoint is not None:
            cfg["Entrypoint"] = entrypoint
        if workdir:
            cfg["WorkingDir"] = workdir
        if user:
            cfg["User"] = user
        self.config = json.dumps({"architecture": arch, "os": "linux", "config": cfg,
                                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        self.blobs[sha(self.config)] = self.config
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": sha(self.config), "size": len(self.config)},
            "layers": self.layer_descs}).encode()
        self.digest = sha(self.manifest)
        self.diff_ids = diff_ids

    def write_layout(self, path, ref="latest"):
        path = Path(path)
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        for d, b in list(self.blobs.items()) + [(self.digest, self.manifest)]:
            (path / "blobs" / "sha256" / d.split(":")[1]).write_bytes(b)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": MEDIA_MANIFEST, "digest": self.digest, "size": len(self.manifest),
            "annotations": {"org.opencontainers.image.ref.name": ref}}]}))
        return path

    def push(self, registry, repo, tag, auth=None):
        push_blobs(registry, repo, self.blobs, auth)
        put_manifest(registry, repo, tag, self.manifest, MEDIA_MANIFEST, auth)
        return f"{registry}/{repo}:{tag}"


def _req(method, url, data=None, headers=None, auth=None):
    headers = dict(headers or {})
    if auth:
        headers["Authorization"] = auth
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, dict(r.headers), r.read()


def push_blobs(registry, repo, blobs, auth=None):
    for digest, data in blobs.items():
        _, h, _ = _req("POST", f"http://{registry}/v2/{repo}/blobs/uploads/", b"", auth=auth)
        loc = h["Location"]
        if loc.startswith("/"):
            loc = f"http://{registry}{loc}"
        sep = "&" if "?" in loc else "?"
        _req("PUT", f"{loc}{sep}digest={digest}", data,
             {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}, auth=auth)


def put_manifest(registry, repo, tag, body, media, auth=None):
    _req("PUT", f"http://{registry}/v2/{repo}/manifests/{tag}", body, {"Content-Type": media}, auth=auth)


def push_index(registry, repo, tag, entries, auth=None):
    """An image index over already pushed manifests: entries = [(image, platform dict)]."""
    for img, _ in entries:
        push_blobs(registry, repo, img.blobs, auth)
        put_manifest(registry, repo, img.digest, img.manifest, MEDIA_MANIFEST, auth)
    body = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [
        {"mediaType": MEDIA_MANIFEST, "digest": img.digest, "size": len(img.manifest), "platform": plat}
        for img, plat in entries]}).encode()
    put_manifest(registry, repo, tag, body, MEDIA_INDEX, auth)
    return sha(body)


# ---------------------------------------------------------------- base images


def busybox_rootfs(dest):
    """A tiny root filesystem: the static busybox of Debian's busybox-static, its applets
    as symlinks, and the identity files an image has."""
    dest = Path(dest)
    bb = shutil.which("busybox")
    if not bb:
        raise RuntimeError("busybox-static is not installed (scripts/test installs it)")
    for d in ("bin", "etc", "tmp", "root", "home/user", "var/tmp", "usr/bin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(bb, dest / "bin" / "busybox")
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox" and not (dest / "bin" / a).exists():
            os.symlink("busybox", dest / "bin" / a)
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")
    (dest / "etc" / "os-release").write_text("ID=busybox\nNAME=busybox-test\n")
    os.chmod(dest / "tmp", 0o1777)
    os.chown(dest / "home" / "user", 1000, 1000) if os.geteuid() == 0 else None
    return dest


def busybox_layer(tmpdir):
    root = busybox_rootfs(Path(tmpdir) / "busybox-root")
    layer = Layer().tree(root)
    return layer

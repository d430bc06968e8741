"""The image the escape suite runs its probes on (an image root instead of the host's):
a Debian with python3 from the host's apt sources, plus a layer that gives it the
sandbox's usual identity (user 1000 at /home/user, cwd /workspace, only root, user and
nobody as accounts), so the catalogue's expectations hold unchanged. Built once per
session per mode, into a data dir of its own."""
import atexit
import os
import subprocess
import tempfile
from pathlib import Path

from .debian import debian_tar
from .oci import Image, Layer

NAME = "escape-debian"
_BUILT = {}


def _layer():
    return (Layer()
            .file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
            .file("etc/group", "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")
            .dir("home/user/", 0o755, uid=1000, gid=1000)
            .dir("workspace/", 0o755, uid=1000, gid=1000)
            .dir("tmp/", 0o1777)
            .dir("var/tmp/", 0o1777))


def data_dir(bin_path, rootless_prefix=None):
    """A data dir holding the escape image (imported as root, or as the rootless user
    when `rootless_prefix` is given); built once per session."""
    key = "rootless" if rootless_prefix else "root"
    if key in _BUILT:
        return _BUILT[key]
    work = Path(tempfile.mkdtemp(prefix=f"safehouse-escape-image-{key}-"))
    os.chmod(work, 0o755)
    # ~220 MB per session: gone when the session ends (--one-file-system: never into a mount).
    atexit.register(subprocess.run, ["rm", "-rf", "--one-file-system", str(work)], check=False)
    tar = debian_tar(("python3",))
    img = Image([Path(tar).read_bytes(), _layer()], compress=False,
                env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                user="1000:1000", workdir="/workspace", cmd=["/bin/sh"])
    layout = img.write_layout(work / "layout")
    data = work / "data"
    data.mkdir()
    prefix = list(rootless_prefix or [])
    if prefix:
        subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
        os.chown(data, 65534, 65534)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp" if prefix else "/root"}
    p = subprocess.run(prefix + [bin_path, "image", "import", str(layout), "--tag", NAME, "--data-dir", str(data), "-q"],
                       capture_output=True, env=env, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"importing the escape image failed: {p.stderr.decode(errors='replace')}")
    subprocess.run(["rm", "-rf", str(layout)], check=False)
    _BUILT[key] = str(data)
    return str(data)

"""The daemon's container image (deploy/Dockerfile, built by deploy/build-image with
podman from a Debian base made by mmdebstrap) runs with the capabilities the Dockerfile
spells out and serves a sandbox. Nothing is pulled from a container registry: the base is
built from Debian's packages and imported locally."""
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest

from e2e.support import BIN, IS_ROOT, REPO, free_port, new_admin_key, skip_or_fail

BASE = "localhost/safehouse-test-base:bookworm-python3"
# The run options documented in deploy/Dockerfile and docs/deploy.md.
RUN_OPTS = [
    "--cap-drop=all",
    "--cap-add=SYS_ADMIN,SETUID,SETGID,SYS_PTRACE,SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "label=disable", "--security-opt", "unmask=/proc/*",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
]


#: This machine's cgroups are hybrid (v1 controllers, a v2 mount), which crun refuses, and its
#: hard RLIMIT_NOFILE is below podman's default: runc, and the host's limits (docs/deploy.md).
CONTAINERS_CONF = '[engine]\nruntime = "runc"\n[containers]\ndefault_ulimits = []\n'
ENV = dict(os.environ)


def sh(*argv, timeout=600, check=True):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check:
        assert p.returncode == 0, f"{argv}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    if not IS_ROOT:
        pytest.skip("rootful podman needs root")
    for tool in ("podman", "runc", "mmdebstrap"):
        if not shutil.which(tool):
            skip_or_fail(f"{tool} is not installed (scripts/test installs it)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    ENV["CONTAINERS_CONF"] = str(conf)
    if sh("podman", "image", "exists", BASE, check=False).returncode != 0:
        tar = tmp_path_factory.mktemp("base") / "base.tar"
        sh("mmdebstrap", "--variant=minbase", "--include=python3,ca-certificates", "bookworm", str(tar),
           timeout=1200)
        sh("podman", "import", str(tar), BASE)
    tag = f"localhost/safehouse:test-{uuid.uuid4().hex[:8]}"
    p = subprocess.run([str(REPO / "deploy" / "build-image"), tag, "--pull=never", "--build-arg", f"BASE={BASE}"],
                       env={**ENV, "SAFEHOUSE_BIN": BIN}, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, f"build-image failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    yield tag
    sh("podman", "rmi", "-f", tag, check=False)


def request(url, key, method="GET", body=None, timeout=60):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read() or b"null")


def test_the_image_serves_a_sandbox(image):
    port = free_port()
    key = new_admin_key()
    name = f"safehouse-test-{uuid.uuid4().hex[:8]}"
    sh("podman", "run", "-d", "--name", name, "--network", "host", "-e", f"SAFEHOUSE_ADMIN_KEY={key}", *RUN_OPTS,
       image, "--listen", f"127.0.0.1:{port}", "--data-dir", "/var/lib/safehouse")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, sh("podman", "logs", name, check=False).stderr[-3000:]
            time.sleep(0.2)
        status, sb = request(f"{url}/v1/sandboxes", key, "POST", {"timeout_s": 60, "policy": {"limits": {
            "memory": "128MiB"}}})
        assert status == 201, sb
        status, r = request(f"{url}/v1/sandboxes/{sb['id']}/exec", key, "POST", {
            "cmd": ["python3", "-c", "import os, socket; print(socket.gethostname(), os.getuid())"]})
        assert status == 200 and r["exit_code"] == 0 and r["stdout"] == "safehouse 1000\n", r
        assert r["peak_memory_bytes"], r
        # The sandbox's agent runs as an unprivileged uid, not as the container's root (its
        # pid is in the container's PID namespace).
        status, info = request(f"{url}/v1/sandboxes/{sb['id']}", key)
        st = sh("podman", "exec", name, "cat", f"/proc/{info['pid']}/status").stdout
        uid = next(line for line in st.splitlines() if line.startswith("Uid:")).split()[1]
        assert uid != "0", st
        request(f"{url}/v1/sandboxes/{sb['id']}", key, "DELETE")
    finally:
        sh("podman", "rm", "-f", "-t", "5", name, check=False)

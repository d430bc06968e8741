"""Files in and out: upload, download, list, stat, mkdir, move, remove; a 200 MB round trip;
and symlinks planted inside that must never hand out or overwrite host files (FS-10)."""
import hashlib
import os
import secrets
import shutil
import tempfile

import pytest

from .support import RFC3339_RE

MiB = 1 << 20


def test_round_trip_and_fs_ops(api, sandbox):
    sid = sandbox["id"]
    data = os.urandom(100_000) + b"\x00end"
    r = api.put_file(sid, "/workspace/dir/sub/a.bin", data)
    assert r.status == 201, r
    info = r.json()
    assert info["path"] == "/workspace/dir/sub/a.bin" and info["name"] == "a.bin", info
    assert info["type"] == "file" and info["size"] == len(data), info
    assert isinstance(info["mode"], int) and RFC3339_RE.match(info["mtime"]), info
    r = api.get_file(sid, "/workspace/dir/sub/a.bin")
    assert r.status == 200 and r.body == data, (r.status, len(r.body))
    assert r.headers.get("content-type", "").startswith("application/octet-stream"), r.headers
    # The command inside sees the same bytes.
    res = api.exec(sid, ["sha256sum", "/workspace/dir/sub/a.bin"])
    assert res["stdout"].split()[0] == hashlib.sha256(data).hexdigest(), res
    # A file written inside comes out.
    api.exec(sid, ["sh", "-c", "printf inside > /tmp/in.txt"])
    assert api.get_file(sid, "/tmp/in.txt").body == b"inside"

    r = api.stat(sid, "/workspace/dir")
    assert r.status == 200 and r.json()["type"] == "dir", r
    r = api.get(f"/v1/sandboxes/{sid}/fs/list", query={"path": "/workspace/dir"})
    assert r.status == 200, r
    assert [e["path"] for e in r.json()["entries"]] == ["/workspace/dir/sub"], r
    r = api.get(f"/v1/sandboxes/{sid}/fs/list", query={"path": "/workspace/dir", "depth": 2})
    assert sorted(e["path"] for e in r.json()["entries"]) == ["/workspace/dir/sub", "/workspace/dir/sub/a.bin"], r
    r = api.get(f"/v1/sandboxes/{sid}/fs/list", query={"path": "/workspace/dir", "depth": 17})
    assert r.status == 400, r

    r = api.post(f"/v1/sandboxes/{sid}/fs/mkdir", {"path": "/workspace/new/deeper", "parents": True})
    assert r.status == 201 and r.json()["type"] == "dir", r
    r = api.post(f"/v1/sandboxes/{sid}/fs/mkdir", {"path": "/workspace/x/y"})
    assert 400 <= r.status < 500, f"mkdir without parents of a missing parent: {r}"
    r = api.post(f"/v1/sandboxes/{sid}/fs/move", {"from": "/workspace/dir/sub/a.bin", "to": "/workspace/new/b.bin"})
    assert r.status == 200 and r.json()["path"] == "/workspace/new/b.bin" and r.json()["size"] == len(data), r
    assert api.stat(sid, "/workspace/dir/sub/a.bin").status == 404
    assert api.get_file(sid, "/workspace/new/b.bin").body == data

    r = api.delete(f"/v1/sandboxes/{sid}/fs", query={"path": "/workspace/new"})
    assert 400 <= r.status < 500, f"non-recursive remove of a non-empty dir: {r}"
    r = api.delete(f"/v1/sandboxes/{sid}/fs", query={"path": "/workspace/new", "recursive": "1"})
    assert r.status == 204, r
    assert api.stat(sid, "/workspace/new").status == 404
    assert api.get_file(sid, "/workspace/nope").status == 404
    r = api.delete(f"/v1/sandboxes/{sid}/fs", query={"path": "/workspace/dir/sub"})
    assert r.status == 204, r


def test_empty_file_and_overwrite(api, sandbox):
    sid = sandbox["id"]
    assert api.put_file(sid, "/workspace/e", b"").status == 201
    assert api.get_file(sid, "/workspace/e").body == b""
    assert api.put_file(sid, "/workspace/e", b"longer content").status == 201
    assert api.put_file(sid, "/workspace/e", b"short").status == 201
    assert api.get_file(sid, "/workspace/e").body == b"short"


def test_200mb_round_trip(api, sandbox):
    sid = sandbox["id"]
    size = 200 * MiB
    block = os.urandom(MiB)
    h = hashlib.sha256()

    def chunks():
        for i in range(size // MiB):
            c = i.to_bytes(8, "little") + block[8:]
            h.update(c)
            yield c

    r = api.put_stream(sid, "/workspace/big.bin", chunks(), size)
    assert r.status == 201 and r.json()["size"] == size, r
    status, n, digest, err = api.get_stream_sha256(sid, "/workspace/big.bin")
    assert (status, n) == (200, size), (status, n, err)
    assert digest == h.hexdigest()
    api.delete(f"/v1/sandboxes/{sid}/fs", query={"path": "/workspace/big.bin"})


def test_upload_over_quota_is_413(api):
    sb = api.create(policy={"version": 1, "limits": {"disk": "8MiB"}}, timeout_s=60)
    try:
        r = api.put_file(sb["id"], "/workspace/too-big", os.urandom(12 * MiB))
        assert r.status == 413 and r.error_code == "quota_exceeded", r
        # The failed upload leaves no partial file, and its space is free again.
        r = api.get(f"/v1/sandboxes/{sb['id']}/fs/stat", query={"path": "/workspace/too-big"})
        assert r.status == 404, r
        r = api.put_file(sb["id"], "/workspace/fits", os.urandom(6 * MiB))
        assert r.status == 201, r
    finally:
        api.kill(sb["id"])


@pytest.fixture
def host_secret():
    """A host file the sandbox must never be able to read or write through the file API."""
    d = tempfile.mkdtemp(prefix="safehouse-e2e-host-")
    path = os.path.join(d, "secret.txt")
    content = b"HOST-SECRET-" + secrets.token_hex(16).encode()
    with open(path, "wb") as f:
        f.write(content)
    yield d, path, content
    shutil.rmtree(d, ignore_errors=True)


def test_symlink_to_etc_shadow_is_not_host_content(api, sandbox):
    """FS-10: a link planted inside to /etc/shadow yields a refusal or the sandbox's own view."""
    sid = sandbox["id"]
    res = api.exec(sid, ["ln", "-s", "/etc/shadow", "/workspace/shadow-link"])
    assert res["exit_code"] == 0, res
    r = api.get_file(sid, "/workspace/shadow-link")
    try:
        with open("/etc/shadow", "rb") as f:
            host = f.read()
    except OSError:
        host = None
    inside = api.exec(sid, ["cat", "/etc/shadow"])
    if r.status == 200:
        assert inside["exit_code"] == 0 and r.body == inside["stdout"].encode(), \
            "download through a link returned bytes the sandbox itself cannot read"
        if host:
            assert r.body != host, "host /etc/shadow handed out through a symlink"
    else:
        assert r.status in (400, 403, 404), r
    # Directly, too.
    r = api.get_file(sid, "/etc/shadow")
    if r.status == 200 and host:
        assert r.body != host and r.body == inside["stdout"].encode(), "host /etc/shadow handed out"


def test_symlinks_never_reach_host_files(api, sandbox, host_secret):
    sid = sandbox["id"]
    d, path, content = host_secret
    # Outside, the file is plainly readable: the probe is real.
    with open(path, "rb") as f:
        assert f.read() == content
    for cmd in (["ln", "-s", path, "/workspace/file-link"], ["ln", "-s", d, "/workspace/dir-link"],
                ["ln", "-s", "/", "/workspace/root-link"]):
        assert api.exec(sid, cmd)["exit_code"] == 0
    for p in ("/workspace/file-link", "/workspace/dir-link/secret.txt", f"/workspace/root-link{path}", path,
              f"/workspace/../..{path}"):
        r = api.get_file(sid, p)
        assert content not in r.body, f"host file read through {p}: {r}"
    # Inside the sandbox these paths lead nowhere (the host's temp dir is not there).
    for p in ("/workspace/dir-link/secret.txt", f"/workspace/root-link{path}", path, f"/workspace/../..{path}"):
        r = api.stat(sid, p)
        assert r.status in (400, 403, 404), f"stat {p} found something: {r}"
    # Writes through links must land inside (or be refused), never on the host.
    for p in ("/workspace/dir-link/planted", "/workspace/file-link", f"/workspace/root-link{d}/planted2"):
        r = api.put_file(sid, p, b"PWNED")
        assert r.status in (201, 400, 403, 404, 409), (p, r)
    assert sorted(os.listdir(d)) == ["secret.txt"], os.listdir(d)
    with open(path, "rb") as f:
        assert f.read() == content, "host file overwritten through a symlink"
    r = api.post(f"/v1/sandboxes/{sid}/fs/move", {"from": "/workspace/file-link", "to": "/workspace/moved"})
    assert r.status in (200, 400, 403, 404), r
    r = api.delete(f"/v1/sandboxes/{sid}/fs", query={"path": "/workspace/dir-link/secret.txt"})
    assert os.path.exists(path), "host file removed through a symlink"

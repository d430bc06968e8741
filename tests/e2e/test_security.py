"""The API's own defences: authentication on every route (API-04), tenant isolation (API-05),
request validation (API-03) and the Host check against DNS rebinding (API-07)."""
import json
import secrets
import string
import subprocess
import sys
import uuid

import pytest

from .support import WsRejected


def routes(sid, pid):
    s = f"/v1/sandboxes/{sid}"
    return [
        ("GET", "/v1/sandboxes", None), ("POST", "/v1/sandboxes", {}),
        ("GET", s, None), ("DELETE", s, None),
        ("POST", f"{s}/timeout", {"timeout_s": 10}),
        ("POST", f"{s}/exec", {"cmd": ["true"]}),
        ("POST", f"{s}/processes", {"cmd": ["true"]}), ("GET", f"{s}/processes", None),
        ("POST", f"{s}/processes/{pid}/signal", {"signal": 9}),
        ("POST", f"{s}/processes/{pid}/stdin", b"x"),
        ("GET", f"{s}/processes/{pid}/attach", None),
        ("GET", f"{s}/files?path=/workspace/f", None), ("PUT", f"{s}/files?path=/workspace/f", b"x"),
        ("GET", f"{s}/fs/list?path=/workspace", None), ("GET", f"{s}/fs/stat?path=/workspace", None),
        ("POST", f"{s}/fs/mkdir", {"path": "/workspace/d"}),
        ("POST", f"{s}/fs/move", {"from": "/workspace/f", "to": "/workspace/g"}),
        ("DELETE", f"{s}/fs?path=/workspace/f", None),
        ("GET", f"{s}/fs/watch?path=/workspace", None),
        ("POST", "/v1/keys", {"tenant": "x"}), ("GET", "/v1/keys", None),
        ("DELETE", "/v1/keys/key_doesnotexist", None),
    ]


def random_key():
    return "sh_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def test_every_route_needs_a_valid_key(api, sandbox):
    """API-04: no key, a wrong key, a malformed header, a revoked key → 401 everywhere."""
    sid = sandbox["id"]
    pid = api.start(sid, ["sleep", "20"])
    r = api.post("/v1/keys", {"tenant": "revoked-tenant"})
    assert r.status == 201, r
    revoked = r.json()
    assert api.delete(f"/v1/keys/{revoked['id']}").status == 204
    bad_auth = [None, random_key(), "", api.key + "x", revoked["key"]]
    for method, path, body in routes(sid, pid):
        for key in bad_auth:
            r = api.request(method, path, body, key=key, timeout=10)
            assert r.status == 401, f"{method} {path} with key {key!r}: {r}"
            assert r.error_code, r
        for header in (f"Basic {api.key}", f"Token {api.key}", api.key, "Bearer"):
            r = api.request(method, path, body, key=None, headers={"Authorization": header}, timeout=10)
            assert r.status == 401, f"{method} {path} with Authorization {header!r}: {r}"
    # Nothing happened: the sandbox and the process live on.
    assert api.info(sid)["state"] == "running"
    assert any(p["pid"] == pid and p["running"] for p in api.processes(sid))
    api.post(f"/v1/sandboxes/{sid}/processes/{pid}/signal", {"signal": 9})


def test_tenant_isolation(api, sandbox, tenant_key):
    """API-05: another tenant's sandbox is 404, exactly like one that never existed."""
    sid = sandbox["id"]
    pid = api.start(sid, ["sleep", "20"])
    put = api.put_file(sid, "/workspace/mine.txt", b"admin's")
    other = api.with_key(tenant_key)
    unknown = "sb_" + "a" * 26
    for method, path, body in routes(sid, pid):
        if "/v1/keys" in path or path == "/v1/sandboxes":
            continue
        r = other.request(method, path, body, timeout=10)
        r2 = other.request(method, path.replace(sid, unknown), body, timeout=10)
        # No existence oracle: the answer is the one for an ID that never existed.
        assert (r.status, r.body.replace(sid.encode(), unknown.encode())) == (r2.status, r2.body), (r, r2)
        if path.endswith("/attach"):
            continue  # not a WebSocket request: refused as such, for both alike (the upgrade is below)
        assert r.status == 404 and r.error_code == "not_found", f"{method} {path} as another tenant: {r}"
    with pytest.raises(WsRejected) as e:
        other.attach(sid, pid)
    assert e.value.status == 404
    assert sid not in [s["id"] for s in other.get("/v1/sandboxes").json()["sandboxes"]]
    # The other tenant's requests changed nothing.
    assert api.info(sid)["state"] == "running"
    # ... and its own sandboxes are its own.
    mine = other.create(timeout_s=30, metadata={"who": "other"})
    assert other.info(mine["id"])["id"] == mine["id"]
    # The admin key sees every tenant's sandboxes (docs/api.md): it could mint their keys anyway.
    seen = api.get(f"/v1/sandboxes/{mine['id']}")
    assert seen.status == 200 and seen.json()["tenant"] == other.get(f"/v1/sandboxes/{mine['id']}").json()["tenant"]
    assert mine["id"] in [s["id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]]
    assert other.kill(mine["id"]).status == 204
    # Only the admin manages keys.
    assert other.get("/v1/keys").status == 403
    assert other.post("/v1/keys", {"tenant": "mine"}).status == 403
    api.post(f"/v1/sandboxes/{sid}/processes/{pid}/signal", {"signal": 9})
    assert put.status == 201, put
    assert api.get_file(sid, "/workspace/mine.txt").body == b"admin's"


def nested(depth):
    v = "x"
    for _ in range(depth):
        v = [v]
    return v


def test_bad_requests_are_400(api, sandbox):
    """API-03: malformed JSON, unknown fields, wrong types, deep nesting, oversized bodies."""
    sid = sandbox["id"]
    raw_bad = [b"{", b"[]", b'"str"', b"null", b'{"timeout_s": 10,}', b'{"timeout_s": 1e999}',
               b"\xff\xfe", b'{"timeout_s": 10} trailing', b"{]"]
    for body in raw_bad:
        r = api.request("POST", "/v1/sandboxes", body, headers={"Content-Type": "application/json"})
        assert r.status == 400, (body, r)
        assert r.json()["error"]["code"] and r.json()["error"]["message"], r
    json_bad = [{"bogus": 1}, {"timeout_s": "60"}, {"timeout_s": 1.5e3, "extra": True}, {"env": ["A=1"]},
                {"metadata": nested(40)}, {"policy": nested(100)}, {"metadata": {"k": nested(33)}}]
    for body in json_bad:
        r = api.post("/v1/sandboxes", body)
        if r.status == 201:
            api.kill(r.json()["id"])
        assert r.status == 400, (body if len(json.dumps(body)) < 200 else "(deep)", r)
        assert r.error_code == "invalid_request", r
    deep = "[" * 100_000 + "]" * 100_000
    r = api.request("POST", f"/v1/sandboxes/{sid}/exec", deep.encode(), headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    big = {"cmd": ["true"], "env": {"BIG": "x" * (1 << 20)}}
    r = api.post(f"/v1/sandboxes/{sid}/exec", big)
    assert r.status in (400, 413), r
    # Unknown fields are refused everywhere, not only on create.
    for path, body in ((f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"], "shell": True}),
                       (f"/v1/sandboxes/{sid}/timeout", {"timeout_s": 5, "x": 1}),
                       (f"/v1/sandboxes/{sid}/fs/mkdir", {"path": "/workspace/a", "mode": 511}),
                       ("/v1/keys", {"tenant": "t", "admin": True})):
        r = api.post(path, body)
        assert r.status == 400 and r.error_code == "invalid_request", (path, r)
    # The sandbox is unharmed.
    assert api.exec(sid, ["true"])["exit_code"] == 0


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example",
                                  "127.0.0.1.nip.io:{port}", "127.0.0.2:{port}"])
def test_foreign_host_header_is_403(api, host):
    """API-07: DNS rebinding: a page on evil.example that resolves to 127.0.0.1 gets nothing."""
    h = host.format(port=api.port)
    for path in ("/v1/sandboxes", "/v1/keys"):
        r = api.get(path, headers={"Host": h})
        assert r.status == 403 and r.error_code == "forbidden_host", (h, path, r)
    r = api.post("/v1/sandboxes", {"timeout_s": 10}, headers={"Host": h})
    if r.status == 201:
        api.kill(r.json()["id"])
    assert r.status == 403, (h, r)


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "localhost", "127.0.0.1",
                                  "[::1]:{port}"])
def test_local_host_headers_are_fine(api, host):
    r = api.get("/v1/sandboxes", headers={"Host": host.format(port=api.port)})
    assert r.status == 200, (host, r)


def test_oversized_headers_refused(api):
    try:
        r = api.get("/v1/sandboxes", headers={"X-Pad": "a" * (20 * 1024)}, timeout=10)
    except ConnectionError:
        return  # dropped without an answer: refused all the same
    assert r.status in (400, 431), r


def test_key_lifecycle(api):
    tenant = f"life-{uuid.uuid4().hex[:6]}"
    r = api.post("/v1/keys", {"tenant": tenant, "name": "ci"})
    assert r.status == 201, r
    k = r.json()
    assert k["tenant"] == tenant and k["key"].startswith("sh_") and len(k["key"]) == 35, k
    listed = api.get("/v1/keys").json()["keys"]
    entry = next(e for e in listed if e["id"] == k["id"])
    assert entry["tenant"] == tenant and entry.get("name") == "ci", entry
    assert k["key"] not in json.dumps(listed), "GET /v1/keys must not show secrets"
    user = api.with_key(k["key"])
    assert user.get("/v1/sandboxes").status == 200
    assert api.delete(f"/v1/keys/{k['id']}").status == 204
    assert user.get("/v1/sandboxes").status == 401
    assert api.delete(f"/v1/keys/{k['id']}").status in (204, 404)
    assert api.delete("/v1/keys/nonexistent").status == 404


def test_only_the_admin_tenant_names_host_paths(api, tenant_key):
    """A policy's binds and rootfs directory reach the host with the daemon's privileges:
    another tenant's key must not be able to name them (it would read /root, the daemon's
    data dir, ...)."""
    user = api.with_key(tenant_key)
    for fs in ({"read_only": [{"host": "/root", "path": "/data"}]},
               {"read_write": [{"host": "/tmp", "path": "/out"}]},
               {"rootfs": "/"}, {"rootfs": "/usr"}):
        r = user.post("/v1/sandboxes", {"policy": {"version": 1, "filesystem": fs}, "timeout_s": 30})
        assert r.status in (400, 422), (fs, r)
        assert r.status != 201
    # The same tenant may still use every policy field that stays inside the sandbox.
    sb = user.create(policy={"version": 1, "limits": {"memory": "256MiB"}, "filesystem": {"hidden": ["/etc/ssh"]}})
    assert sb["state"] == "running"
    user.kill(sb["id"])


def test_proc_links_are_not_read_from_the_host_side(api, sandbox):
    """Magic links in the sandbox's /proc, read by the daemon, would name host paths."""
    sid = sandbox["id"]
    r = api.get(f"/v1/sandboxes/{sid}/fs/stat", query={"path": "/proc/1/exe"})
    if r.status == 200:
        assert "symlink_target" not in r.json(), r.json()
    entries = api.get(f"/v1/sandboxes/{sid}/fs/list", query={"path": "/proc/self"})
    if entries.status == 200:
        for e in entries.json()["entries"]:
            assert "safehouse" not in e.get("symlink_target", "") and "/work" not in e.get("symlink_target", ""), e


SOCKET_PROBE = r"""
import errno, json, socket, sys
out = {}
for name, fam, typ, proto in json.loads(sys.argv[1]):
    try:
        socket.socket(fam, typ, proto).close()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode[e.errno]
print(json.dumps(out))
"""
# TCP and UDP only (KS-02, the threat model's list); MPTCP and UDP-Lite exist on this kernel.
SOCKETS = [("tcp", 2, 1, 6), ("udp6", 10, 2, 17), ("mptcp", 2, 1, 262), ("mptcp6", 10, 1, 262),
           ("udplite", 2, 2, 136), ("udplite6", 10, 2, 136)]


def test_daemon_sandboxes_get_tcp_and_udp_sockets_only(api, sandbox):
    """KS-02 in a daemon sandbox: the same filter as `safehouse run`. Outside first: each
    socket can be made on this host (the positive control)."""
    arg = json.dumps(SOCKETS)
    outside = json.loads(subprocess.run([sys.executable, "-c", SOCKET_PROBE, arg], check=True,
                                        capture_output=True, text=True).stdout)
    assert outside == {name: "ok" for name, *_ in SOCKETS}, outside
    r = api.exec(sandbox["id"], ["python3", "-c", SOCKET_PROBE, arg])
    assert r["exit_code"] == 0, r
    inside = json.loads(r["stdout"])
    assert inside == {"tcp": "ok", "udp6": "ok", "mptcp": "EPROTONOSUPPORT", "mptcp6": "EPROTONOSUPPORT",
                      "udplite": "EPROTONOSUPPORT", "udplite6": "EPROTONOSUPPORT"}, inside

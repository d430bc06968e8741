"""More of the daemon's promises: file watch events, FIFOs never block the daemon (FS-17),
concurrent create/exec/kill/upload on one sandbox (API-09), and a sandbox whose agent died
while the daemon was down is cleaned up on restart."""
import http.client
import json
import os
import signal
import threading
import time

from .support import pid_alive, require_root, wait_for


def test_watch_reports_create_modify_delete_rename(daemon, api, sandbox):
    sid = sandbox["id"]
    assert api.post(f"/v1/sandboxes/{sid}/fs/mkdir", {"path": "/workspace/w"}).status == 201
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=20)
    conn.request("GET", f"/v1/sandboxes/{sid}/fs/watch?path=/workspace/w&recursive=1",
                 headers={"Authorization": f"Bearer {api.key}", "Host": f"127.0.0.1:{daemon.port}"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    time.sleep(0.3)
    api.exec(sid, ["sh", "-c", "cd /workspace/w && echo a > f && echo b >> f && mv f g && rm g"])
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not {"create", "modify", "rename", "delete"} <= {e["type"] for e in seen}:
        line = resp.fp.readline().decode()
        if line.startswith("data:"):
            seen.append(json.loads(line[5:]))
    conn.close()
    kinds = {e["type"] for e in seen}
    assert {"create", "modify", "rename", "delete"} <= kinds, seen
    assert all(e["path"].startswith("/workspace/w/") for e in seen), seen


def test_fifo_and_socket_never_block_downloads(api, sandbox):
    """FS-17: sandboxed code leaves a FIFO and a socket where the daemon reads."""
    sid = sandbox["id"]
    r = api.exec(sid, ["python3", "-c", "import os, socket; os.mkfifo('/workspace/fifo'); "
                                        "s = socket.socket(socket.AF_UNIX); s.bind('/workspace/sock')"])
    assert r["exit_code"] == 0, r
    for name in ("fifo", "sock"):
        t0 = time.monotonic()
        got = api.get(f"/v1/sandboxes/{sid}/files", query={"path": f"/workspace/{name}"}, timeout=10)
        assert got.status == 400, got
        assert time.monotonic() - t0 < 2
        up = api.request("PUT", f"/v1/sandboxes/{sid}/files", body=b"x", query={"path": f"/workspace/{name}"}, timeout=10)
        assert up.status in (400, 409), up
    assert api.exec(sid, ["echo", "fine"])["stdout"] == "fine\n"


def test_concurrent_operations_on_one_sandbox(api):
    """API-09: exec, upload, list and kill racing on one sandbox: no error other than the
    expected 404/409 after the kill, nothing left behind, the daemon keeps serving."""
    sb = api.create(timeout_s=60)
    sid = sb["id"]
    errors = []
    stop = threading.Event()

    def hammer(kind):
        c = api.with_key(api.key)
        while not stop.is_set():
            if kind == "exec":
                r = c.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["sh", "-c", "echo x"]})
            elif kind == "put":
                r = c.request("PUT", f"/v1/sandboxes/{sid}/files", body=os.urandom(256 << 10),
                              query={"path": f"/workspace/f{threading.get_ident()}"})
            else:
                r = c.get(f"/v1/sandboxes/{sid}/fs/list", query={"path": "/workspace"})
            if r.status >= 500 or r.status not in (200, 201, 404, 409):
                errors.append((kind, r.status, r.body[:200]))

    threads = [threading.Thread(target=hammer, args=(k,)) for k in ("exec", "exec", "put", "list")]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert api.kill(sid).status == 204
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert api.info(sid)["state"] == "killed"
    if os.geteuid() == 0:
        assert not any(os.path.exists(f"/sys/fs/cgroup/{c}/safehouse/{sid}") for c in ("memory", "pids", "freezer"))
    assert api.create(timeout_s=30)["state"] == "running"


def test_agent_dead_while_daemon_down_is_cleaned_up(own_daemon):
    require_root("kills a sandbox's agent from the host")
    d = own_daemon
    d.start()
    api = d.admin()
    sb = api.create(timeout_s=120)
    sid, agent = sb["id"], sb["pid"]
    d.crash()
    os.kill(agent, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(agent), 5)
    d.start()
    info = api.info(sid)
    assert info["state"] == "failed", info
    assert "daemon was down" in (info.get("error") or ""), info
    assert not any(os.path.exists(f"/sys/fs/cgroup/{c}/safehouse/{sid}") for c in ("memory", "pids", "freezer"))

"""The port proxy, `/v1/sandboxes/{id}/ports/{port}/...`: real services started inside a
sandbox (python3's http.server and tests/e2e/port_services.py) reached through the daemon,
over HTTP and WebSocket; the refusals (no key, another tenant, a closed, reserved or bad
port, a dead sandbox); and the service unreachable from the host directly."""
import hashlib
import http.client
import json
import os
import socket
import time
from pathlib import Path

import pytest

from .support import MiB, WebSocket, free_port, require_root, wait_for

SERVICES = (Path(__file__).parent / "port_services.py").read_bytes()

@pytest.fixture(autouse=True)
def _needs_root():
    require_root("the port proxy needs a root daemon (setns)")


def ports(sid, port, rest=""):
    return f"/v1/sandboxes/{sid}/ports/{port}{rest}"


def start_service(api, sid, argv, port):
    """Starts `argv` in the sandbox and waits until something answers on `port`."""
    pid = api.start(sid, argv)

    def up():
        r = api.get(ports(sid, port, "/"))
        return r if r.error_code != "port_closed" else None

    assert wait_for(up, 15), f"{argv} did not start listening on {port}: {api.processes(sid)}"
    return pid


def start_echo(api, sid, kind="http", addr="127.0.0.1"):
    assert api.put_file(sid, "/workspace/port_services.py", SERVICES).status == 201
    port = free_port()
    start_service(api, sid, ["python3", "/workspace/port_services.py", kind, str(port), addr], port)
    return port


def host_connect(port):
    """Connects from the host (outside every sandbox) to 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return True


def test_static_file_through_the_proxy_and_not_from_the_host(api, sandbox):
    sid = sandbox["id"]
    data = os.urandom(300_000)
    assert api.put_file(sid, "/workspace/site/hello.bin", data).status == 201
    assert api.put_file(sid, "/workspace/site/index.html", b"<h1>hi</h1>").status == 201
    port = free_port()  # nothing listens on it on the host
    start_service(api, sid, ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", "/workspace/site"], port)
    r = api.get(ports(sid, port, "/hello.bin"))
    assert r.status == 200, r
    assert r.body == data
    assert r.headers.get("content-length") == str(len(data)), r.headers
    for rest in ("", "/", "/index.html"):
        r = api.get(ports(sid, port, rest))
        assert (r.status, r.body) == (200, b"<h1>hi</h1>"), (rest, r)
    r = api.get(ports(sid, port, "/missing"))
    assert r.status == 404 and r.error_code is None, r  # the service's own 404, passed through
    # The same port, straight from the host: nothing there. The proxy above is the control.
    with pytest.raises(ConnectionRefusedError):
        host_connect(port)


def test_bodies_queries_and_headers(api, sandbox):
    sid = sandbox["id"]
    port = start_echo(api, sid)
    body = os.urandom(5 * MiB)
    r = api.post(ports(sid, port, "/echo?x=1"), body, timeout=120)
    assert r.status == 200, r
    assert len(r.body) == len(body) and r.body == body

    r = api.request("PUT", ports(sid, port, "/info/a%2Fb/?q=a+b&r=%2F&s"), b"xyz",
                    headers={"X-Custom": "yes", "Connection": "keep-alive, X-Hop", "X-Hop": "secret",
                             "X-Forwarded-For": "6.6.6.6", "Cookie": "c=1"})
    assert r.status == 200, r
    info = r.json()
    assert info["method"] == "PUT"
    assert info["path"] == "/info/a%2Fb/?q=a+b&r=%2F&s", info
    assert (info["body_len"], info["body_sha256"]) == (3, hashlib.sha256(b"xyz").hexdigest())
    headers = {}
    for k, v in info["headers"]:
        headers.setdefault(k, []).append(v)
    assert "authorization" not in headers, headers  # the daemon's key never reaches the service
    assert "x-hop" not in headers, headers
    assert headers["host"] == [f"127.0.0.1:{port}"], headers
    assert headers["x-forwarded-prefix"] == [f"/v1/sandboxes/{sid}/ports/{port}"], headers
    assert headers["x-forwarded-for"] == ["127.0.0.1"], headers
    assert headers["x-custom"] == ["yes"] and headers["cookie"] == ["c=1"], headers

    for method in ("GET", "DELETE", "PATCH", "OPTIONS"):
        r = api.request(method, ports(sid, port, "/m"), b"" if method == "PATCH" else None)
        assert r.status == 200 and r.json()["method"] == method, (method, r)
    r = api.request("HEAD", ports(sid, port, "/small"))
    assert r.status in (200, 501) and r.body == b"", r  # http.server has no HEAD handler here


def test_large_download_streams(api, sandbox):
    sid = sandbox["id"]
    port = start_echo(api, sid)
    n = 64 * MiB
    conn = http.client.HTTPConnection(api.host, api.port, timeout=60)
    try:
        conn.request("GET", ports(sid, port, f"/bytes/{n}"), headers={"Authorization": f"Bearer {api.key}"})
        r = conn.getresponse()
        assert r.status == 200
        got = 0
        while chunk := r.read(MiB):
            got += len(chunk)
        assert got == n
    finally:
        conn.close()


def test_keys_and_tenants(api, sandbox, tenant_key):
    sid = sandbox["id"]
    port = start_echo(api, sid)
    r = api.get(ports(sid, port, "/x"), key=None)
    assert (r.status, r.error_code) == (401, "unauthorized"), r
    r = api.get(ports(sid, port, "/x"), key="sh_" + "A" * 32)
    assert (r.status, r.error_code) == (401, "unauthorized"), r
    other = api.with_key(tenant_key).get(ports(sid, port, "/x"))
    unknown = api.get(ports("sb_" + "a" * 26, port, "/x"))
    assert (other.status, other.error_code) == (404, "not_found"), other
    assert other.body == unknown.body, (other, unknown)  # no existence oracle
    # A key in the query string or a cookie is not a key.
    r = api.get(ports(sid, port, f"/x?key={api.key}"), key=None, headers={"Cookie": f"key={api.key}"})
    assert r.status == 401, r


def test_refusals(api, sandbox):
    sid = sandbox["id"]
    closed = free_port()
    r = api.get(ports(sid, closed, "/"))
    assert (r.status, r.error_code) == (502, "port_closed"), r
    msg = r.json()["error"]["message"]
    assert f"nothing listens on port {closed} inside sandbox {sid}" in msg and "0.0.0.0" in msg, msg
    r = api.get(ports(sid, 3128, "/"))
    assert (r.status, r.error_code) == (403, "forbidden"), r
    assert "3128" in r.json()["error"]["message"]
    for bad in ("70000", "0", "65536", "abc", "-1", "080"):
        r = api.get(ports(sid, bad, "/"))
        assert (r.status, r.error_code) == (400, "invalid_request"), (bad, r)


def test_dead_sandbox_is_409(api):
    sb = api.create(timeout_s=60)
    port = start_echo(api, sb["id"])
    assert api.kill(sb["id"]).status in (200, 204)
    r = api.get(ports(sb["id"], port, "/"))
    assert (r.status, r.error_code) == (409, "not_running"), r


def test_service_on_all_addresses_and_ipv6_loopback(api, sandbox):
    sid = sandbox["id"]
    for addr in ("0.0.0.0", "::1"):
        port = start_echo(api, sid, addr=addr)
        r = api.get(ports(sid, port, "/who"))
        assert r.status == 200 and r.json()["path"] == "/who", (addr, r)


def test_websocket_echo(api, sandbox):
    sid = sandbox["id"]
    port = start_echo(api, sid, kind="ws")
    with WebSocket(api.host, api.port, ports(sid, port, "/ws?room=1"), {"Authorization": f"Bearer {api.key}"}) as ws:
        ws._send_frame(0x1, "héllo".encode())
        assert ws.recv() == ("text", "héllo")
        blob = bytes(range(256)) * 300  # > 64 KiB: an extended-length frame
        ws._send_frame(0x2, blob)
        assert ws.recv() == ("binary", blob)
        ws._send_frame(0x2, b"\x00\xff")
        assert ws.recv() == ("binary", b"\x00\xff")
    # No key: refused before anything reaches the service.
    with pytest.raises(Exception) as e:
        WebSocket(api.host, api.port, ports(sid, port, "/ws"), {})
    assert getattr(e.value, "status", None) == 401, e.value


def test_many_requests_on_one_keepalive_connection(api, sandbox):
    sid = sandbox["id"]
    port = start_echo(api, sid)
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    try:
        t0 = time.monotonic()
        for i in range(50):
            conn.request("GET", ports(sid, port, f"/small?i={i}"), headers={"Authorization": f"Bearer {api.key}"})
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"ok")
        assert time.monotonic() - t0 < 20
    finally:
        conn.close()
    # Every upstream connection was released: the per-sandbox cap is not leaking.
    r = api.get(ports(sid, port, "/small"))
    assert r.status == 200, r


def test_openapi_documents_the_proxy(api):
    doc = api.get("/v1/openapi.json", key=None).json()
    assert "/v1/sandboxes/{id}/ports/{port}/{rest}" in doc["paths"]
    assert json.dumps(doc["paths"]["/v1/sandboxes/{id}/ports/{port}"]).count("port_closed") == 0


# A listener that never accepts: the kernel completes connections up to the backlog, so a
# proxied request holds its slot while it waits for an answer that never comes.
HOLD = "import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(sys.argv[1])))\n" \
       "s.listen(int(sys.argv[2]))\nprint('ready', flush=True)\ntime.sleep(600)\n"


def send_get(api, path, key=True):
    """Sends a GET on a fresh connection without waiting for the answer."""
    s = socket.create_connection((api.host, api.port), timeout=10)
    auth = f"Authorization: Bearer {api.key}\r\n" if key else ""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {api.host}:{api.port}\r\n{auth}\r\n".encode())
    return s


def answer_within(s, seconds):
    """The first bytes of the answer on `s`, or None when none comes within `seconds`."""
    s.settimeout(seconds)
    try:
        return s.recv(4096)
    except socket.timeout:
        return None


def status_within(s, seconds):
    head = answer_within(s, seconds)
    return None if head is None else int(head.split()[1]) if head else 0


def start_hold(api, sid, backlog):
    port = free_port()
    pid = api.start(sid, ["python3", "-c", HOLD, str(port), str(backlog)])
    with api.attach(sid, pid) as ws:
        ws.read_until(b"ready\n")
    return port


def test_per_sandbox_cap_and_release(api, sandbox):
    sid = sandbox["id"]
    port = start_hold(api, sid, 1024)
    held = [send_get(api, ports(sid, port, f"/{i}")) for i in range(256)]
    try:
        over = None
        for _ in range(20):  # the 256 are in flight in any order; a probe may take a slot too
            s = send_get(api, ports(sid, port, "/over"))
            over = answer_within(s, 2)
            if over is None:
                held.append(s)
                continue
            s.close()
            break
        assert over and over.startswith(b"HTTP/1.1 503") and b'"capacity"' in over, over
    finally:
        for s in held:
            s.close()
    # Clients gone: their slots come back.
    def free_again():
        s = send_get(api, ports(sid, port, "/again"))
        try:
            return status_within(s, 1) is None
        finally:
            s.close()
    assert wait_for(free_again, 15)


def test_connect_timeout_is_504(api, sandbox):
    sid = sandbox["id"]
    port = start_hold(api, sid, 0)
    held = []
    try:
        got = None
        for i in range(6):  # the first one or two fill the accept queue; later SYNs are dropped
            s = send_get(api, ports(sid, port, f"/{i}"))
            held.append(s)
            got = status_within(s, 8)
            if got is not None:
                break
        assert got == 504, got
    finally:
        for s in held:
            s.close()


def test_abandoned_downloads_close_their_upstream_connections(daemon, api, sandbox):
    sid = sandbox["id"]
    port = start_echo(api, sid)
    fds = lambda: len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))  # noqa: E731
    assert api.get(ports(sid, port, "/small")).status == 200
    before = fds()
    for _ in range(20):
        s = send_get(api, ports(sid, port, f"/bytes/{1 << 30}"))
        assert answer_within(s, 10).startswith(b"HTTP/1.1 200")
        s.close()
    # Each abandoned response drops its upstream connection (no descriptor stays behind).
    assert wait_for(lambda: fds() <= before + 2, 15), (before, fds())


def test_chunked_upload_streams_through(api, sandbox):
    sid = sandbox["id"]
    port = start_echo(api, sid)
    parts = [os.urandom(64 * 1024) for _ in range(32)]
    conn = http.client.HTTPConnection(api.host, api.port, timeout=60)
    try:
        conn.request("POST", ports(sid, port, "/echo"), body=iter(parts), encode_chunked=True,
                     headers={"Authorization": f"Bearer {api.key}", "Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"".join(parts))
    finally:
        conn.close()

"""Credentials that outlive their key (issue 22, item 2): everything opened with an API key
ends when that key is revoked, and nothing opened with another key of the same tenant does.

Each test opens the same credential twice, with key A and key B of one tenant, and checks
both work (the control); then revokes A and checks that A's credential fails with the
exact status (401) or closes with its stated reason within a few seconds (the design ends
them within milliseconds: a revocation wakes every handler that holds the key), while B's
goes on working and the sandbox A created keeps running.

Covered: requests still running, event streams (`/v1/events`, a sandbox's events),
file watches, downloads, attach WebSockets, port-proxy WebSockets and streamed responses,
MCP sessions, and the E2B front's access tokens and streams through the real `e2b` SDK."""
import base64
import http.client
import json
import os
import struct
import threading
import time
import urllib.parse
import uuid

import pytest

from .support import IS_ROOT, MiB, WebSocket, free_port, wait_for

# How long a revoked credential may take to end. The design ends them within
# milliseconds; the margin is for a loaded CI machine, and is far below anything else
# that would end them (the 15 s SSE keep-alive, the 60 s write-stall timeout).
LIMIT = 5.0
REVOKED = "has been revoked"


@pytest.fixture
def keys(api):
    """Two keys of one fresh tenant: (a, b), each a dict with id and key."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    out = []
    for name in ("a", "b"):
        r = api.post("/v1/keys", {"tenant": tenant, "name": name})
        assert r.status == 201, r
        out.append(r.json())
    return out


def revoke(api, key):
    """Revokes `key`; returns when the revocation was asked for."""
    asked = time.monotonic()
    r = api.delete(f"/v1/keys/{key['id']}")
    assert r.status == 204, r
    return asked


class Sse(threading.Thread):
    """Reads one SSE response in the background: its events and how it ended."""

    def __init__(self, api, path, key):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(api.host, api.port, timeout=60)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, (path, self.resp.status, self.resp.read())
        self.events, self.ended_at, self.error = [], None, None
        self.start()

    def run(self):
        block = []
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode()
                if line.strip():
                    block.append(line)
                    continue
                ev = {}
                for b in block:
                    k, _, v = b.rstrip("\n").partition(":")
                    if k:
                        ev[k] = v.strip()
                if "event" in ev:
                    self.events.append(ev)
                block = []
        except Exception as e:  # noqa: BLE001 - the way it ended is what the test looks at
            self.error = e
        self.ended_at = time.monotonic()

    def kinds(self):
        return [e["event"] for e in self.events]

    def wait_for_kind(self, kind, timeout=15):
        assert wait_for(lambda: kind in self.kinds(), timeout), (kind, self.kinds(), self.error)

    def close(self):
        self.conn.close()


def read_rest(resp):
    """Reads what is left of a response: (bytes read, whether it ended without its end
    marker — a chunked body cut off raises IncompleteRead; a body with Content-Length
    cut off just ends short, which the caller checks by size)."""
    got = 0
    try:
        while True:
            chunk = resp.read(MiB)
            if not chunk:
                return got, False
            got += len(chunk)
    except http.client.IncompleteRead as e:
        return got + len(e.partial), True


def ended_within(thing, since, what):
    assert wait_for(lambda: thing.ended_at is not None, LIMIT + 2), f"{what} still open after revocation"
    took = thing.ended_at - since
    print(f"{what}: ended {took * 1000:.0f} ms after the revocation was asked for")
    assert took <= LIMIT, f"{what} took {took:.2f}s to end"


def test_sandbox_records_its_key_and_outlives_it(api, keys):
    a, b = keys
    mine = api.with_key(a["key"])
    sb = mine.create()
    assert sb["created_by"] == a["id"], sb
    # The bootstrap admin key has no id to record.
    admin_sb = api.create()
    assert "created_by" not in admin_sb, admin_sb
    api.kill(admin_sb["id"])
    revoke(api, a)
    # The key is refused; its sandbox runs on, and the tenant's other key reaches it.
    assert mine.get(f"/v1/sandboxes/{sb['id']}").status == 401
    other = api.with_key(b["key"])
    info = other.info(sb["id"])
    assert (info["state"], info["created_by"]) == ("running", a["id"]), info
    assert other.exec(sb["id"], ["echo", "still"])["stdout"] == "still\n"
    other.kill(sb["id"])


def test_revocation_ends_streams_requests_and_websockets(api, keys):
    a, b = keys
    mine, other = api.with_key(a["key"]), api.with_key(b["key"])
    sid = mine.create()["id"]
    try:
        assert mine.exec(sid, ["sh", "-c", "mkdir -p /workspace/w && head -c 67108864 /dev/zero > /workspace/big"])[
            "exit_code"] == 0
        pid = mine.start(sid, ["cat"])
        q = urllib.parse.urlencode({"path": "/workspace/w"})
        streams = {}
        for who, key in (("a", a["key"]), ("b", b["key"])):
            streams[who] = {
                "sandbox events": Sse(api, f"/v1/sandboxes/{sid}/events", key),
                "all events": Sse(api, "/v1/events?replay=false", key),
                "file watch": Sse(api, f"/v1/sandboxes/{sid}/fs/watch?{q}", key),
            }
        ws = {who: api.attach(sid, pid, key=key) for who, key in (("a", a["key"]), ("b", b["key"]))}
        # Controls: every stream of both keys works before the revocation.
        for who in ("a", "b"):
            ws[who].send_stdin(f"hello {who}\n".encode())
            ws[who].read_until(f"hello {who}".encode())
        assert mine.exec(sid, ["touch", "/workspace/w/one"])["exit_code"] == 0
        for who in ("a", "b"):
            streams[who]["sandbox events"].wait_for_kind("exec.exited")
            streams[who]["all events"].wait_for_kind("exec.exited")
            streams[who]["file watch"].wait_for_kind("fs")
        # A download in progress, read slowly, and a request still running.
        dl = http.client.HTTPConnection(api.host, api.port, timeout=30)
        dl.request("GET", f"/v1/sandboxes/{sid}/files?path=/workspace/big",
                   headers={"Authorization": f"Bearer {a['key']}"})
        dl_resp = dl.getresponse()
        assert dl_resp.status == 200 and len(dl_resp.read(MiB)) == MiB
        slow = {}

        def slow_exec():
            r = mine.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["sleep", "60"]}, timeout=90)
            slow["resp"], slow["at"] = r, time.monotonic()

        started = streams["b"]["sandbox events"].kinds().count("exec.started")
        t = threading.Thread(target=slow_exec, daemon=True)
        t.start()
        assert wait_for(lambda: streams["b"]["sandbox events"].kinds().count("exec.started") > started, 15)
        time.sleep(0.5)
        assert t.is_alive(), slow

        at = revoke(api, a)

        # The request still running: dropped and answered 401.
        t.join(LIMIT + 2)
        assert not t.is_alive(), "the running request was not ended"
        r = slow["resp"]
        assert (r.status, r.error_code) == (401, "unauthorized") and REVOKED in r.json()["error"]["message"], r
        assert slow["at"] - at <= LIMIT, slow["at"] - at
        # Event streams and the file watch end with a last `revoked` event.
        for what, s in streams["a"].items():
            ended_within(s, at, what)
            assert s.kinds()[-1] == "revoked", (what, s.kinds())
            assert REVOKED in json.loads(s.events[-1]["data"])["message"], s.events[-1]
        # The attach WebSocket closes with 1008 and the reason.
        # (Output frames sent before it may come first: both keys attached to one `cat`.)
        deadline = at + LIMIT
        while True:
            kind, payload = ws["a"].recv(timeout=max(0.1, deadline - time.monotonic()))
            if kind == "close":
                break
            assert json.loads(payload)["type"] == "stdout", payload
        code, reason = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
        assert (code, REVOKED in reason) == (1008, True), (code, reason)
        # The download is cut off: fewer bytes than the file, and no end-of-body marker.
        got, incomplete = read_rest(dl_resp)
        assert got + MiB < 64 * MiB and incomplete, (got, incomplete)
        dl.close()
        # New requests with the key: 401 on every kind of route.
        for path in (f"/v1/sandboxes/{sid}", f"/v1/sandboxes/{sid}/events", "/v1/events",
                     f"/v1/sandboxes/{sid}/files?path=/workspace/big"):
            r = mine.get(path, timeout=10)
            assert r.status == 401, (path, r)
        with pytest.raises(Exception) as e:
            api.attach(sid, pid, key=a["key"])
        assert getattr(e.value, "status", None) == 401, e.value

        # Key B's streams are untouched: live events, the watch, the WebSocket.
        assert other.exec(sid, ["touch", "/workspace/w/two"])["exit_code"] == 0
        wait_for(lambda: streams["b"]["file watch"].kinds().count("fs") >= 2, 10)
        for what, s in streams["b"].items():
            assert s.ended_at is None and "revoked" not in s.kinds(), (what, s.kinds(), s.error)
        assert streams["b"]["sandbox events"].kinds().count("exec.exited") >= 2
        ws["b"].send_stdin(b"after\n")
        ws["b"].read_until(b"after")
        assert other.info(sid)["state"] == "running"
        for s in [*streams["a"].values(), *streams["b"].values()]:
            s.close()
        ws["b"].close()
    finally:
        other.kill(sid)


def test_the_python_sdk_reports_a_revoked_key(api, daemon, keys):
    """The SDK's event stream, directory watch and attached process end with
    AuthenticationError (not a quiet end, which would look like the sandbox ended)."""
    from safehouse import Sandbox
    from safehouse.exceptions import AuthenticationError

    a, b = keys
    sid = api.with_key(b["key"]).create()["id"]
    try:
        sbx = Sandbox.connect(sid, api_key=a["key"], url=daemon.url)
        sbx.files.make_dir("/workspace/sdkw")
        exits, seen = [], []
        handle = sbx.files.watch_dir("/workspace/sdkw", on_event=seen.append, on_exit=exits.append)
        stream = sbx.events(follow=True)
        assert next(stream).kind == "sandbox.created"  # control: the replay
        sbx.files.write("/workspace/sdkw/x", "x")
        assert wait_for(lambda: seen, 10), "the watch saw nothing"  # control
        proc = sbx.commands.run("echo ready; sleep 60", background=True)
        assert next(iter(proc))[0] == "ready\n"  # control: attached, output flows
        waited = {}

        def wait_proc():
            try:
                proc.wait()
            except Exception as e:  # noqa: BLE001
                waited["error"] = e

        t = threading.Thread(target=wait_proc, daemon=True)
        t.start()
        revoke(api, a)
        t.join(LIMIT)
        assert isinstance(waited.get("error"), AuthenticationError) and REVOKED in str(waited["error"]), waited
        assert wait_for(lambda: exits, LIMIT), "the watch did not end"
        assert isinstance(exits[0], AuthenticationError) and exits[0].status == 401, exits
        with pytest.raises(AuthenticationError) as e:
            for _ in stream:
                pass
        assert REVOKED in str(e.value), e.value
        handle.stop()
    finally:
        api.with_key(b["key"]).kill(sid)


# ---------------------------------------------------------------- port proxy


@pytest.mark.skipif(not IS_ROOT, reason="the port proxy needs a root daemon (setns)")
def test_revocation_closes_proxied_connections(api, keys):
    from .test_ports import ports, start_echo

    a, b = keys
    mine, other = api.with_key(a["key"]), api.with_key(b["key"])
    sid = mine.create()["id"]
    try:
        ws_port = start_echo(mine, sid, "ws")
        http_port = start_echo(mine, sid, "http")
        path = ports(sid, ws_port, "/")
        ws = {who: WebSocket(api.host, api.port, path, {"Authorization": f"Bearer {k}"})
              for who, k in (("a", a["key"]), ("b", b["key"]))}
        for who, w in ws.items():  # control
            w.send_json({"hi": who})
            assert w.recv() == ("text", json.dumps({"hi": who})), who
        # A big response read slowly.
        big = 512 * MiB
        conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
        conn.request("GET", ports(sid, http_port, f"/bytes/{big}"), headers={"Authorization": f"Bearer {a['key']}"})
        resp = conn.getresponse()
        assert resp.status == 200 and len(resp.read(MiB)) == MiB

        at = revoke(api, a)

        # A's WebSocket: the connection closes (no frame can be added mid-stream).
        closed = {}

        def read_a():
            try:
                while True:
                    if ws["a"].recv(timeout=LIMIT + 5)[0] == "close":
                        break
            except (ConnectionError, OSError) as e:
                closed["error"] = e
            closed["at"] = time.monotonic()

        reader = threading.Thread(target=read_a, daemon=True)
        reader.start()
        reader.join(LIMIT + 6)
        assert "at" in closed and closed["at"] - at <= LIMIT, closed
        assert not isinstance(closed.get("error"), TimeoutError), closed
        # The streamed response: cut off well before its Content-Length.
        got, _ = read_rest(resp)
        assert got + MiB < big, got
        conn.close()
        # New proxied requests with A: 401. With B: the service answers, B's socket echoes.
        assert mine.get(ports(sid, http_port, "/small")).status == 401
        assert other.get(ports(sid, http_port, "/small")).body == b"ok"
        ws["b"].send_json({"still": "b"})
        assert ws["b"].recv() == ("text", json.dumps({"still": "b"}))
        ws["b"].close()
    finally:
        other.kill(sid)


# ---------------------------------------------------------------- MCP


def mcp_post(api, key, body, session=None, timeout=60):
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if session:
        h["Mcp-Session-Id"] = session
    return api.request("POST", "/mcp", json.dumps(body).encode(), headers=h, key=key, timeout=timeout)


def mcp_open(api, key):
    r = mcp_post(api, key, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "revocation", "version": "0"}}})
    assert r.status == 200, r
    session = r.headers["mcp-session-id"]
    assert mcp_post(api, key, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session).status == 202
    return session


def ping(api, key, session):
    return mcp_post(api, key, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session)


def test_revocation_ends_mcp_sessions(api, keys):
    a, b = keys
    sa, sb = mcp_open(api, a["key"]), mcp_open(api, b["key"])
    # Controls: each session answers its own key, and only its own key (even within the tenant).
    assert ping(api, a["key"], sa).json()["result"] == {}
    assert ping(api, b["key"], sb).json()["result"] == {}
    assert ping(api, b["key"], sa).status == 404
    created = mcp_post(api, a["key"], {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                       "params": {"name": "sandbox_create", "arguments": {"timeout_s": 120}}},
                       sa).json()
    sid = created["result"]["structuredContent"]["id"]
    slow = {}

    def long_call():
        slow["resp"] = mcp_post(api, a["key"], {
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "run_command", "arguments": {"sandbox_id": sid, "command": "sleep 60"}}}, sa, 90)
        slow["at"] = time.monotonic()

    t = threading.Thread(target=long_call, daemon=True)
    t.start()
    time.sleep(1.0)
    assert t.is_alive(), slow

    at = revoke(api, a)

    t.join(LIMIT + 2)
    assert not t.is_alive() and slow["at"] - at <= LIMIT, slow
    assert slow["resp"].status == 401 and REVOKED in slow["resp"].json()["error"]["message"], slow["resp"]
    assert ping(api, a["key"], sa).status == 401
    # B's session lives on and reaches the sandbox A's session created (not killed).
    assert ping(api, b["key"], sb).json()["result"] == {}
    other = api.with_key(b["key"])
    assert other.info(sid)["state"] == "running"
    other.kill(sid)


# ---------------------------------------------------------------- the E2B front


def envd(api, sid, token, path, body=b"{}", port=49983, ctype="application/json", method="POST"):
    h = {"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": str(port), "Content-Type": ctype,
         "Connect-Protocol-Version": "1"}
    if token is not None:
        h["X-Access-Token"] = token
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    try:
        conn.request(method, path, body=body if method != "GET" else None, headers=h)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.fixture
def e2b_sdk():
    try:
        import e2b
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the e2b SDK is not installed: pip install -r tests/requirements.txt")
    return e2b


def test_e2b_tokens_die_with_their_key(api, daemon, keys, e2b_sdk, monkeypatch):
    from e2b import Sandbox
    from e2b.exceptions import AuthenticationException

    a, b = keys
    monkeypatch.setenv("E2B_API_URL", daemon.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", daemon.url)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    sbx = Sandbox.create(api_key=a["key"], timeout=120)
    sid = sbx.sandbox_id
    try:
        # The same sandbox connected with the tenant's other key: its own token.
        other = Sandbox.connect(sid, api_key=b["key"])
        token_a, token_b = sbx._envd_access_token, other._envd_access_token
        assert token_a.startswith(f"sht_{a['id']}.") and token_b.startswith(f"sht_{b['id']}."), (token_a, token_b)
        # Controls: upload, download, process start with each token.
        for s, who in ((sbx, "a"), (other, "b")):
            s.files.write(f"/tmp/{who}.txt", who)
            assert s.files.read(f"/tmp/{who}.txt") == who
            assert s.commands.run(f"echo {who}").stdout == f"{who}\n"
        assert envd(api, sid, token_a, "/process.Process/List")[0] == 200
        # A's command streaming while the key is revoked.
        handle = sbx.commands.run("sleep 60", background=True)
        ended = {}

        def wait_a():
            try:
                handle.wait()
            except Exception as e:  # noqa: BLE001
                ended["error"] = e
            ended["at"] = time.monotonic()

        t = threading.Thread(target=wait_a, daemon=True)
        t.start()
        time.sleep(0.5)
        assert t.is_alive()

        at = revoke(api, a)

        t.join(LIMIT + 2)
        assert "at" in ended and ended["at"] - at <= LIMIT, ended
        assert isinstance(ended["error"], AuthenticationException) and REVOKED in str(ended["error"]), ended
        # Every use of A's token: the SDK's AuthenticationException, on the wire 401 unauthenticated.
        with pytest.raises(AuthenticationException):
            sbx.files.write("/tmp/a.txt", "again")
        with pytest.raises(AuthenticationException):
            sbx.files.read("/tmp/b.txt")
        with pytest.raises(AuthenticationException) as e:
            sbx.commands.run("echo no")
        assert REVOKED in str(e.value), e.value
        status, body = envd(api, sid, token_a, "/process.Process/List")
        assert (status, json.loads(body)["code"]) == (401, "unauthenticated"), body
        status, _ = envd(api, sid, token_a, "/files?path=/tmp/b.txt", method="GET")
        assert status == 401
        # Nor can A's key get a new token.
        with pytest.raises(AuthenticationException):
            Sandbox.connect(sid, api_key=a["key"])
        # B's token goes on working, on the same running sandbox.
        assert other.files.read("/tmp/a.txt") == "a"
        assert other.commands.run("echo b again").stdout == "b again\n"
        assert other.is_running()
    finally:
        Sandbox.kill(sid, api_key=b["key"])


def test_e2b_old_and_forged_tokens(api, daemon, keys, e2b_sdk):
    from e2b import Sandbox

    a, _ = keys
    sbx = Sandbox.create(api_key=a["key"], timeout=60, api_url=daemon.url, sandbox_url=daemon.url)
    sid, token = sbx.sandbox_id, sbx._envd_access_token
    try:
        assert envd(api, sid, token, "/process.Process/List")[0] == 200  # control
        # A token of the previous release (an HMAC of the sandbox id alone): refused, saying how to get a new one.
        legacy = "sha_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        status, body = envd(api, sid, legacy, "/process.Process/List")
        assert status == 401 and "Sandbox.connect" in json.loads(body)["message"], body
        # The MAC moved to another key id, or to the admin: refused.
        for holder in ("key_" + "a" * 16, "admin"):
            forged = f"sht_{holder}." + token.split(".", 1)[1]
            status, body = envd(api, sid, forged, "/process.Process/List")
            assert status == 401, (holder, body)
        # envd's /health is public; a user port's /health is the user's service and needs the token.
        assert envd(api, sid, None, "/health", method="GET")[0] == 204
        port = free_port()
        status, body = envd(api, sid, None, "/health", port=port, method="GET")
        assert status == 401, (status, body)
        status, _ = envd(api, sid, token, "/health", port=port, method="GET")
        assert status != 401  # with the token: the proxy answers (nothing listens: 502; rootless: 501)
    finally:
        sbx.kill()

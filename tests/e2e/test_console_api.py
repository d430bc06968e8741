"""The API routes the web console stands on (docs/console.md): whoami, WebSocket tickets,
the fleet stream, freeze-all / thaw-all, a sandbox's policy with explain, and audit verify.
The console itself is driven in a real browser by console/tests/."""
import json
import time

import pytest

from .support import IS_ROOT, WebSocket, WsRejected
from .test_events import read_sse

SPIN = ["/bin/sh", "-c", "while :; do :; done"]


def test_whoami(api, tenant_key):
    assert api.get("/v1/whoami").json() == {"tenant": "admin", "key_id": None, "admin": True}
    me = api.with_key(tenant_key).get("/v1/whoami").json()
    assert me["tenant"].startswith("t-") and me["key_id"].startswith("key_") and me["admin"] is False
    assert api.get("/v1/whoami", key=None).status == 401


def ticket(api, path):
    r = api.post("/v1/tickets", {"path": path})
    assert r.status == 201, r
    body = r.json()
    assert body["path"] == path and body["expires_in_s"] == 30
    return body["ticket"]


def test_a_ticket_attaches_a_websocket_without_the_key(api, sandbox, tenant_key):
    sid = sandbox["id"]
    pid = api.start(sid, ["/bin/sh", "-c", "read line; echo got:$line"])
    path = f"/v1/sandboxes/{sid}/processes/{pid}/attach"
    t = ticket(api, path)
    with WebSocket(api.host, api.port, f"{path}?ticket={t}", {}) as ws:
        ws.send_stdin(b"hello\n")
        assert b"got:hello" in ws.read_until(b"got:hello").stdout
    # Once only.
    with pytest.raises(WsRejected) as e:
        WebSocket(api.host, api.port, f"{path}?ticket={t}", {})
    assert e.value.status == 401
    # Another tenant's ticket is that tenant: the sandbox does not exist for it.
    other = api.with_key(tenant_key)
    pid2 = api.start(sid, ["sleep", "30"])
    path2 = f"/v1/sandboxes/{sid}/processes/{pid2}/attach"
    with pytest.raises(WsRejected) as e:
        WebSocket(api.host, api.port, f"{path2}?ticket={ticket(other, path2)}", {})
    assert e.value.status == 404
    # Tickets are for attach routes only; a key in the query is never taken.
    assert api.post("/v1/tickets", {"path": f"/v1/sandboxes/{sid}/events"}).status == 400
    with pytest.raises(WsRejected) as e:
        WebSocket(api.host, api.port, f"{path2}?ticket={api.key}", {})
    assert e.value.status == 401


def test_a_revoked_keys_ticket_is_refused(api, sandbox):
    r = api.post("/v1/keys", {"tenant": "admin", "name": "console ticket"})
    assert r.status == 201, r
    key = r.json()
    mine = api.with_key(key["key"])
    sid = sandbox["id"]
    pid = api.start(sid, ["sleep", "30"])
    path = f"/v1/sandboxes/{sid}/processes/{pid}/attach"
    t = ticket(mine, path)
    assert api.delete(f"/v1/keys/{key['id']}").status == 204
    with pytest.raises(WsRejected) as e:
        WebSocket(api.host, api.port, f"{path}?ticket={t}", {})
    assert e.value.status == 401


def fleet_frames(api, n, history=5):
    frames = []
    status, events = read_sse(api, "/v1/metrics", {"history": history},
                              on_event=lambda ev: frames.append(ev) or len(frames) >= n, timeout=20)
    assert status == 200, events
    return [f["data"] for f in frames]


def test_fleet_stream_is_tenant_scoped_and_names_each_sandbox_once(api, tenant_key):
    other = api.with_key(tenant_key)
    mine = api.create(metadata={"fleet": "admin"})
    theirs = other.create(metadata={"fleet": "tenant"})
    try:
        time.sleep(1.2)  # a sampler round with both
        # The tenant sees its own sandbox only.
        status, events = read_sse(other, "/v1/metrics", {"follow": "false"}, timeout=10)
        assert status == 200 and len(events) == 1, events
        frame = events[0]["data"]
        assert events[0]["event"] == "fleet" and frame["full"] is True
        assert [e["id"] for e in frame["sandboxes"]] == [theirs["id"]], frame
        # The admin sees every tenant's: details and history the first time, then numbers.
        first, second = fleet_frames(api, 2)
        ids = {e["id"]: e for e in first["sandboxes"]}
        assert mine["id"] in ids and theirs["id"] in ids, first
        e = ids[theirs["id"]]
        assert e["info"]["tenant"] == other.get("/v1/whoami").json()["tenant"], e
        assert e["info"]["metadata"] == {"fleet": "tenant"} and e["state"] == "running"
        assert 1 <= len(e["history"]["cpu_pct"]) <= 5 and len(e["history"]["memory_bytes"]) == len(e["history"]["cpu_pct"])
        assert e["memory_bytes"] > 0 and e["pids"] >= 1
        assert second["full"] is False and all("info" not in x for x in second["sandboxes"]), second
        assert second["t"] >= first["t"]
        # A sandbox that ends is listed in `gone` of the next frame.
        seen = []

        def on(ev):
            seen.append(ev["data"])
            if len(seen) == 1:
                other.kill(theirs["id"])
            return theirs["id"] in ev["data"]["gone"] or len(seen) > 5

        read_sse(api, "/v1/metrics", on_event=on, timeout=20)
        assert theirs["id"] in seen[-1]["gone"], seen
        assert api.get("/v1/metrics", query={"history": "301"}).status == 400
        assert api.get("/v1/metrics", query={"bogus": "1"}).status == 400
    finally:
        api.kill(mine["id"])
        other.kill(theirs["id"])


@pytest.mark.skipif(not IS_ROOT, reason="freezing needs the daemon's cgroups (root)")
def test_freeze_all_and_thaw_all_of_a_tenant(api, tenant_key):
    other = api.with_key(tenant_key)
    keep = api.create()
    sbs = [other.create() for _ in range(3)]
    for sb in sbs:
        other.start(sb["id"], SPIN)
    try:
        r = other.post("/v1/freeze-all")
        assert r.status == 200, r
        body = r.json()
        assert body["frozen"] == 3 and body["failed"] == [] and isinstance(body["ms"], int), body
        assert all(other.info(sb["id"])["state"] == "frozen" for sb in sbs)
        assert api.info(keep["id"])["state"] == "running", "another tenant's freeze-all touched the admin's"
        r = other.post(f"/v1/sandboxes/{sbs[0]['id']}/exec", {"cmd": ["true"]})
        assert r.status == 409 and r.error_code == "frozen", r
        a = other.get(f"/v1/sandboxes/{sbs[0]['id']}/metrics").json()["current"]["cpu_usage_ns"]
        time.sleep(0.5)
        b = other.get(f"/v1/sandboxes/{sbs[0]['id']}/metrics").json()["current"]["cpu_usage_ns"]
        assert b - a < 20_000_000, (a, b)
        # Again: nothing left to freeze.
        assert other.post("/v1/freeze-all").json()["frozen"] == 0
        r = other.post("/v1/thaw-all")
        assert r.status == 200 and r.json()["thawed"] == 3, r
        assert all(other.info(sb["id"])["state"] == "running" for sb in sbs)
        assert other.exec(sbs[0]["id"], ["true"])["exit_code"] == 0
    finally:
        for sb in sbs:
            other.kill(sb["id"])
        api.kill(keep["id"])


def test_policy_and_explain(api, tenant_key):
    sb = api.create(policy={"version": 1, "network": {"allow": ["web.test:80"]}})
    sid = sb["id"]
    try:
        policy = api.get(f"/v1/sandboxes/{sid}/policy").json()["policy"]
        assert policy["network"]["allow"] == ["web.test:80"], policy
        ask = lambda **q: api.get(f"/v1/sandboxes/{sid}/policy/explain", query=q)
        yes = ask(net="web.test:80").json()
        assert yes["allowed"] is True and "web.test:80" in yes["rule"], yes
        no = ask(net="evil.example:443").json()
        assert no["allowed"] is False and "evil.example:443" in no["hint"], no
        w = ask(write="/workspace/out.txt").json()
        assert w["allowed"] is True, w
        assert ask(read="/etc/shadow").json()["allowed"] is False
        for bad in [{}, {"net": "host:notaport"}, {"net": "a:1", "read": "/x"}, {"read": "relative"}, {"nope": "x"}]:
            r = api.get(f"/v1/sandboxes/{sid}/policy/explain", query=bad)
            assert r.status == 400 and r.error_code == "invalid_request", (bad, r)
        assert "--" not in ask(net="host:notaport").json()["error"]["message"]
        other = api.with_key(tenant_key)
        assert other.get(f"/v1/sandboxes/{sid}/policy").status == 404
        assert other.get(f"/v1/sandboxes/{sid}/policy/explain", query={"net": "web.test:80"}).status == 404
    finally:
        api.kill(sid)


def test_audit_verify(api, tenant_key):
    r = api.get("/v1/audit/verify")
    assert r.status == 200, r
    v = r.json()
    assert v["ok"] is True and v["problem"] is None and v["records"] > 0, v
    assert v["last_seq"] >= v["records"] - 1 and len(v["last_hash"]) == 64, v
    assert api.with_key(tenant_key).get("/v1/audit/verify").status == 403
    json.dumps(v)

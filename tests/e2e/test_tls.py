"""TLS on the daemon (docs/tls.md): `serve --tls-cert/--tls-key` and `--tls-self-signed`.

The certificates under test are made by the `openssl` command (an implementation
independent of the daemon's), and every refusal has its outside control: the same client
with the right CA or fingerprint succeeds against the same daemon.
"""
import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import uuid

import pytest

from .support import BIN, Daemon, binary_serves, cli, free_port, skip_or_fail


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "30", "-subj", f"/CN=test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d)


def make_leaf(d, name, ca, sans="IP:127.0.0.1,DNS:localhost"):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
                "authorityKeyIdentifier=keyid\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "30", "-extfile", f"{name}.ext", cwd=d)


def openssl_fingerprint(path):
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a leaf for 127.0.0.1 it signed, an unrelated CA, and a second leaf's key."""
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "server", "ca")
    make_leaf(d, "second", "ca")
    with open(os.path.join(d, "garbage.pem"), "w") as f:
        f.write("this is not PEM\n")
    return d


def p(pki, name):
    return os.path.join(pki, name)


def tls_daemon(args, ca=None, data_dir=None):
    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    d = Daemon(args=args, data_dir=data_dir)
    d.ssl_context = ssl.create_default_context(cafile=ca) if ca else None
    return d


@pytest.fixture(scope="module")
def tlsd(pki):
    d = tls_daemon(["--tls-cert", p(pki, "server.crt"), "--tls-key", p(pki, "server.key")], ca=p(pki, "ca.crt"))
    d.start()
    yield d
    d.cleanup()


def https_get(d, path, context, key=None):
    conn = http.client.HTTPSConnection(d.host, d.port, timeout=10, context=context)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def serve_fails(*args):
    """`serve` with bad TLS files: exits 1 at once, naming the problem; never a panic."""
    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    data = f"/tmp/safehouse-tls-bad-{uuid.uuid4().hex[:8]}"
    r = subprocess.run([BIN, "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", data, *args],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", data])
    assert "panicked" not in r.stderr, r.stderr
    assert r.returncode == 1, (r.returncode, r.stderr)
    return r.stderr.strip()


def test_bad_certificate_and_key_files_are_named(pki):
    missing = p(pki, "missing.crt")
    err = serve_fails("--tls-cert", missing, "--tls-key", p(pki, "server.key"))
    assert err == f"safehouse: cannot read the TLS certificate {missing}: No such file or directory (os error 2)"
    err = serve_fails("--tls-cert", p(pki, "server.crt"), "--tls-key", missing)
    assert err == f"safehouse: cannot read the TLS key {missing}: No such file or directory (os error 2)"
    err = serve_fails("--tls-cert", p(pki, "garbage.pem"), "--tls-key", p(pki, "server.key"))
    assert err.startswith(f"safehouse: the TLS certificate file {p(pki, 'garbage.pem')} holds no PEM certificate"), err
    err = serve_fails("--tls-cert", p(pki, "server.crt"), "--tls-key", p(pki, "server.crt"))
    assert err.startswith(f"safehouse: the TLS key file {p(pki, 'server.crt')} holds no PEM private key"), err
    err = serve_fails("--tls-cert", p(pki, "server.crt"), "--tls-key", p(pki, "second.key"))
    assert err == (f"safehouse: the TLS key {p(pki, 'second.key')} does not belong to the certificate "
                   f"{p(pki, 'server.crt')} (their public keys differ): pass the key the certificate was issued for")
    # Unreadable (a directory where the file should be).
    err = serve_fails("--tls-cert", pki, "--tls-key", p(pki, "server.key"))
    assert err.startswith(f"safehouse: cannot read the TLS certificate {pki}: "), err
    # The outside control: the matching pair starts (the tlsd fixture) — and a flag alone is refused by clap.
    r = subprocess.run([BIN, "serve", "--tls-cert", p(pki, "server.crt")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--tls-key" in r.stderr, r.stderr


def test_trusted_client_is_served_and_untrusted_refused(tlsd, pki):
    # Outside control first: trusting the CA, the API answers (and the key check still holds).
    good = ssl.create_default_context(cafile=p(pki, "ca.crt"))
    assert https_get(tlsd, "/healthz", good)[0] == 200
    status, body = https_get(tlsd, "/v1/sandboxes", good, key=tlsd.admin_key)
    assert status == 200, body
    assert https_get(tlsd, "/v1/sandboxes", good, key="sh_wrong")[0] == 401
    # The system store alone does not know the test CA; another CA does not vouch for it.
    for ctx in (ssl.create_default_context(), ssl.create_default_context(cafile=p(pki, "other-ca.crt"))):
        with pytest.raises(ssl.SSLCertVerificationError) as e:
            https_get(tlsd, "/healthz", ctx)
        assert e.value.verify_message == "unable to get local issuer certificate", e.value
    # The certificate is the one from the files (openssl computes the fingerprint).
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((tlsd.host, tlsd.port)))
    want = openssl_fingerprint(p(pki, "server.crt"))
    assert ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()) == want
    assert f"TLS certificate SHA-256 fingerprint {want}" in tlsd.log_tail()


def test_plain_http_to_the_tls_port_is_refused(tlsd):
    # Outside control: the same request over TLS answers 200 (previous test); plain, a 400 naming https.
    conn = http.client.HTTPConnection(tlsd.host, tlsd.port, timeout=10)
    conn.request("GET", "/v1/sandboxes", headers={"Authorization": f"Bearer {tlsd.admin_key}"})
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 400
    assert body == {"error": {"code": "tls_required",
                              "message": "this address serves HTTPS only: use https:// in the URL (docs/tls.md)"}}
    # A client that sends nothing is closed at the handshake deadline, not kept forever.
    s = socket.create_connection((tlsd.host, tlsd.port), timeout=30)
    s.settimeout(30)
    assert s.recv(1) == b""
    s.close()


def test_cli_verifies_the_daemon(tlsd, pki):
    ca = {"SAFEHOUSE_CA_CERT": p(pki, "ca.crt")}
    r = cli(tlsd, "sandbox", "ls", env_extra=ca)
    assert r.rc == 0, r
    # Untrusted: the exact refusal, with the fix named.
    r = cli(tlsd, "sandbox", "ls")
    assert r.rc == 1
    assert r.stderr.strip() == (
        f"safehouse: cannot talk to the daemon at {tlsd.url}: the daemon's TLS certificate is not trusted: "
        "invalid peer certificate: UnknownIssuer; set SAFEHOUSE_CA_CERT to the CA certificate that issued the "
        "daemon's certificate (DATA_DIR/tls/ca.crt for `serve --tls-self-signed`) or SAFEHOUSE_TLS_FINGERPRINT "
        "to the SHA-256 fingerprint `safehouse serve` printed"), r.stderr
    r = cli(tlsd, "sandbox", "ls", env_extra={"SAFEHOUSE_CA_CERT": p(pki, "other-ca.crt")})
    assert r.rc == 1 and "invalid peer certificate: UnknownIssuer" in r.stderr, r
    # A pin: the right one works without any CA, a wrong one is refused naming both.
    fp = openssl_fingerprint(p(pki, "server.crt"))
    r = cli(tlsd, "sandbox", "ls", env_extra={"SAFEHOUSE_TLS_FINGERPRINT": fp})
    assert r.rc == 0, r
    wrong = openssl_fingerprint(p(pki, "second.crt"))
    r = cli(tlsd, "sandbox", "ls", env_extra={"SAFEHOUSE_TLS_FINGERPRINT": wrong})
    assert r.rc == 1
    assert f"the daemon's certificate fingerprint is {fp}, not the pinned SAFEHOUSE_TLS_FINGERPRINT {wrong}" in r.stderr
    # Pin and CA together: both must hold.
    r = cli(tlsd, "sandbox", "ls", env_extra={**ca, "SAFEHOUSE_TLS_FINGERPRINT": wrong})
    assert r.rc == 1 and "not the pinned" in r.stderr, r
    r = cli(tlsd, "sandbox", "ls", env_extra={"SAFEHOUSE_CA_CERT": p(pki, "garbage.pem")})
    assert r.rc == 1
    assert r.stderr.strip() == f"safehouse: SAFEHOUSE_CA_CERT={p(pki, 'garbage.pem')}: holds no PEM certificate " \
                            "(-----BEGIN CERTIFICATE-----)", r.stderr
    # http:// to the TLS port: the daemon's answer says what to change.
    r = cli(tlsd, "sandbox", "ls", env_extra=ca, url=f"http://{tlsd.host}:{tlsd.port}")
    assert r.rc == 1 and "this address serves HTTPS only: use https://" in r.stderr, r


def test_cli_https_to_a_plain_daemon(daemon):
    r = cli(daemon, "sandbox", "ls", url=f"https://{daemon.host}:{daemon.port}",
            env_extra={"SAFEHOUSE_TLS_FINGERPRINT": "00" * 32})
    assert r.rc == 1
    assert "the daemon did not answer in TLS" in r.stderr and "use http:// in SAFEHOUSE_URL" in r.stderr, r.stderr


def test_exec_attaches_over_tls(tlsd, pki):
    api = tlsd.admin()
    sb = api.create(timeout_s=120)
    ca = {"SAFEHOUSE_CA_CERT": p(pki, "ca.crt")}
    # exec: start + the attach WebSocket (wss://), stdin through, the exit status back.
    r = cli(tlsd, "exec", sb["id"], "--", "sh", "-c", "read x; echo got-$x; exit 3", input=b"tls\n", env_extra=ca)
    assert (r.rc, r.stdout) == (3, "got-tls\n"), r
    r = cli(tlsd, "exec", sb["id"], "--", "true")
    assert r.rc == 125 and "not trusted" in r.stderr, r
    api.kill(sb["id"])


# streamablehttp_client is deprecated in the newest `mcp` releases, kept by the tested range (test_mcp.py).
@pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning")
def test_mcp_over_tls(tlsd, pki, monkeypatch):
    """The official `mcp` client over HTTPS (its httpx trusts SSL_CERT_FILE) and through the
    `safehouse mcp` stdio bridge (SAFEHOUSE_CA_CERT); the bridge without the CA is refused."""
    import asyncio

    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamablehttp_client

    async def tools_over_http():
        headers = {"Authorization": f"Bearer {tlsd.admin_key}"}
        async with streamablehttp_client(tlsd.url + "/mcp", headers=headers, timeout=30) as (r, w, _):
            async with ClientSession(r, w) as s:
                await s.initialize()
                return {t.name for t in (await s.list_tools()).tools}

    async def list_over_stdio(extra):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SAFEHOUSE_URL": tlsd.url,
               "SAFEHOUSE_API_KEY": tlsd.admin_key, **extra}
        async with stdio_client(StdioServerParameters(command=BIN, args=["mcp"], env=env)) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                return await s.call_tool("sandbox_list", {})

    monkeypatch.setenv("SSL_CERT_FILE", p(pki, "ca.crt"))
    assert "sandbox_create" in asyncio.run(asyncio.wait_for(tools_over_http(), 60))
    res = asyncio.run(asyncio.wait_for(list_over_stdio({"SAFEHOUSE_CA_CERT": p(pki, "ca.crt")}), 60))
    assert not res.isError, res.content[0].text
    with pytest.raises(BaseException) as e:
        asyncio.run(asyncio.wait_for(list_over_stdio({}), 60))
    assert f"cannot talk to the safehouse daemon at {tlsd.url}: the daemon's TLS certificate is not trusted: " \
        "invalid peer certificate: UnknownIssuer; set SAFEHOUSE_CA_CERT" in repr(e.value), repr(e.value)


def test_self_signed_pair_is_kept_and_its_fingerprint_printed():
    d = tls_daemon(["--tls-self-signed"])
    data = d.data_dir
    try:
        # The CA file exists only once the daemon made it: the first health check trusts anything.
        d.ssl_context = ssl.create_default_context()
        d.ssl_context.check_hostname = False
        d.ssl_context.verify_mode = ssl.CERT_NONE
        d.start()
        ca = os.path.join(data, "tls", "ca.crt")
        assert oct(os.stat(os.path.join(data, "tls", "server.key")).st_mode & 0o777) == "0o600"
        fp = openssl_fingerprint(os.path.join(data, "tls", "server.crt"))
        assert f"TLS certificate SHA-256 fingerprint {fp}" in d.log_tail()
        assert f"SAFEHOUSE_CA_CERT={ca} or SAFEHOUSE_TLS_FINGERPRINT={fp}" in d.log_tail()
        # The CA file is a trust anchor Python's strict default context accepts, for 127.0.0.1 and localhost.
        trusting = ssl.create_default_context(cafile=ca)
        assert https_get(d, "/healthz", trusting)[0] == 200
        conn = http.client.HTTPSConnection("localhost", d.port, timeout=10, context=trusting)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        # openssl's own verifier agrees (an implementation other than Python's and rustls').
        v = subprocess.run(["openssl", "verify", "-CAfile", ca, "-purpose", "sslserver",
                            os.path.join(data, "tls", "server.crt")], capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(d, "/healthz", ssl.create_default_context())
        assert cli(d, "sandbox", "ls", env_extra={"SAFEHOUSE_CA_CERT": ca}).rc == 0
        assert cli(d, "sandbox", "ls", env_extra={"SAFEHOUSE_TLS_FINGERPRINT": fp.replace(":", "").lower()}).rc == 0
        # No CA key is kept: the CA file cannot vouch for anything else.
        assert sorted(os.listdir(os.path.join(data, "tls"))) == ["ca.crt", "server.crt", "server.key"]
        # A restart keeps the pair: same fingerprint, same CA.
        d.stop()
        d.ssl_context = trusting
        d.start()
        der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((d.host, d.port)))
        assert ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()) == fp
        assert https_get(d, "/healthz", trusting)[0] == 200
    finally:
        d.cleanup()


E2B_SCRIPT = """
from e2b import Sandbox
s = Sandbox.create(timeout=120, request_timeout=60)
try:
    out = s.commands.run("echo over-tls; echo $((6*7))")
    assert (out.exit_code, out.stdout) == (0, "over-tls\\n42\\n"), out
    s.files.write("/tmp/t.txt", "secret-ish")
    assert s.files.read("/tmp/t.txt") == "secret-ish"
finally:
    s.kill()
print("e2b-ok")
"""


def test_e2b_sdk_over_tls(tlsd, pki):
    """The real `e2b` SDK against the E2B front over HTTPS, trusting the CA through
    SSL_CERT_FILE (httpx and the Rust transport of newer releases both honour it). Each run is
    a fresh process: the SDK caches its connection pool, and the trust store with it."""
    import sys
    r = tlsd.admin().post("/v1/keys", {"tenant": f"t-{uuid.uuid4().hex[:8]}", "name": "e2b-tls"})
    assert r.status == 201, r
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "E2B_API_URL": tlsd.url, "E2B_SANDBOX_URL": tlsd.url,
           "E2B_API_KEY": r.json()["e2b_key"]}

    def run(**extra):
        return subprocess.run([sys.executable, "-c", E2B_SCRIPT], env={**env, **extra}, capture_output=True,
                              text=True, timeout=180)

    # Without the CA: refused by the SDK's own TLS check (httpx's OpenSSL words it one way,
    # the Rust transport of newer SDK releases another).
    no = run()
    assert no.returncode != 0 and "e2b-ok" not in no.stdout
    assert any(w in no.stderr for w in ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed",
                                        "invalid peer certificate: UnknownIssuer")), no.stderr[-2000:]
    # Another CA: refused too. The outside control: the right CA, and everything works.
    other = run(SSL_CERT_FILE=p(pki, "other-ca.crt"))
    assert other.returncode != 0 and "e2b-ok" not in other.stdout
    ok = run(SSL_CERT_FILE=p(pki, "ca.crt"))
    assert ok.returncode == 0 and ok.stdout.strip() == "e2b-ok", ok.stderr[-3000:]


def sdk_env(monkeypatch, d, **tls):
    monkeypatch.setenv("SAFEHOUSE_URL", d.url)
    monkeypatch.setenv("SAFEHOUSE_API_KEY", d.admin_key)
    for name in ("SAFEHOUSE_CA_CERT", "SAFEHOUSE_TLS_FINGERPRINT", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in tls.items():
        monkeypatch.setenv(name, value)


def test_python_sdk_sync_verifies(tlsd, pki, monkeypatch):
    from safehouse import Sandbox, SafehouseError
    fix = "set SAFEHOUSE_CA_CERT to the CA certificate that issued the daemon's certificate"
    # Untrusted (default trust store): refused before any request, the fix named.
    sdk_env(monkeypatch, tlsd)
    with pytest.raises(SafehouseError) as e:
        Sandbox.list()
    assert f"cannot talk to the safehouse daemon at {tlsd.url}: the daemon's TLS certificate is not trusted: " \
           "unable to get local issuer certificate; " + fix in str(e.value), str(e.value)
    wrong = openssl_fingerprint(p(pki, "second.crt"))
    sdk_env(monkeypatch, tlsd, SAFEHOUSE_TLS_FINGERPRINT=wrong)
    with pytest.raises(SafehouseError) as e:
        Sandbox.list()
    right = openssl_fingerprint(p(pki, "server.crt"))
    assert f"the daemon's certificate fingerprint is {right}, not the pinned SAFEHOUSE_TLS_FINGERPRINT {wrong}" \
        in str(e.value), str(e.value)
    # The outside controls: the CA, or the right pin, and everything works — HTTP and the attach WebSocket.
    for trust in ({"SAFEHOUSE_CA_CERT": p(pki, "ca.crt")}, {"SAFEHOUSE_TLS_FINGERPRINT": right}):
        sdk_env(monkeypatch, tlsd, **trust)
        s = Sandbox.create(timeout=120)
        try:
            assert s.commands.run("echo hi").stdout == "hi\n"
            h = s.commands.run("echo one; echo two >&2", background=True)
            assert h.wait().stdout == "one\n"
            s.files.write("/tmp/x", b"data")
            assert s.files.read("/tmp/x") == "data"
        finally:
            s.kill()


def test_python_sdk_async_verifies(tlsd, pki, monkeypatch):
    import asyncio

    from safehouse import AsyncSandbox, SafehouseError
    right = openssl_fingerprint(p(pki, "server.crt"))

    async def refused():
        with pytest.raises(SafehouseError) as e:
            await AsyncSandbox.list()
        return str(e.value)

    sdk_env(monkeypatch, tlsd, SAFEHOUSE_CA_CERT=p(pki, "other-ca.crt"))
    assert "the daemon's TLS certificate is not trusted: unable to get local issuer certificate" in asyncio.run(refused())
    sdk_env(monkeypatch, tlsd, SAFEHOUSE_TLS_FINGERPRINT="AB" * 32)
    assert f"the daemon's certificate fingerprint is {right}, not the pinned" in asyncio.run(refused())

    async def works():
        s = await AsyncSandbox.create(timeout=120)
        try:
            assert (await s.commands.run("echo hi")).stdout == "hi\n"
            h = await s.commands.run("echo one", background=True)
            assert (await h.wait()).stdout == "one\n"
        finally:
            await s.kill()

    for trust in ({"SAFEHOUSE_CA_CERT": p(pki, "ca.crt")}, {"SAFEHOUSE_TLS_FINGERPRINT": right}):
        sdk_env(monkeypatch, tlsd, **trust)
        asyncio.run(works())

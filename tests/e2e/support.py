"""Helpers for the end-to-end suite: a real `safehouse serve` daemon, an HTTP client on
http.client, a minimal WebSocket client on a raw socket (no third-party packages), and the
CLI runner. Every network call and subprocess has a timeout.
"""
import base64
import dataclasses
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import struct
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
ID_RE = re.compile(r"^sb_[a-z2-7]{26}$")
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]00:00)$")
MiB = 1 << 20


def find_binary():
    env = os.environ.get("SAFEHOUSE_BIN")
    if env:
        return env
    for p in (Path("/work/main/target/safehouse"), REPO / "target" / "safehouse",
              REPO / "target" / "release" / "safehouse"):
        if p.exists():
            return str(p)
    return None


BIN = find_binary()


def skip_or_fail(msg):
    """A missing prerequisite (the binary, root, a package) skips locally, saying why;
    under CI=true, which runs as root on a machine scripts/test set up, it is a broken
    build or machine: the test fails with the same reason."""
    if os.environ.get("CI", "") not in ("", "0", "false"):
        pytest.fail(f"under CI a prerequisite may not be missing: {msg}")
    pytest.skip(msg)


def require_root(why):
    if not IS_ROOT:
        skip_or_fail(f"needs root: {why}")


def binary_serves():
    """The binary exists and has the `serve` subcommand (the daemon)."""
    if not BIN or not os.access(BIN, os.X_OK):
        return False, "safehouse binary not built (set SAFEHOUSE_BIN or run scripts/build)"
    try:
        p = subprocess.run([BIN, "serve", "--help"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{BIN} serve --help failed: {e}"
    if p.returncode != 0:
        return False, f"{BIN} has no working `serve` subcommand: {p.stderr.decode(errors='replace')[:300]}"
    return True, ""


def new_admin_key():
    alphabet = string.ascii_letters + string.digits
    return "sh_" + "".join(secrets.choice(alphabet) for _ in range(32))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_time(s):
    """RFC 3339 UTC → epoch seconds."""
    from datetime import datetime
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- HTTP


@dataclasses.dataclass
class Resp:
    status: int
    headers: dict
    body: bytes

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"HTTP {self.status}: body is not JSON: {self.body[:500]!r}")

    @property
    def error_code(self):
        try:
            return json.loads(self.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:300]!r}>"


_DEFAULT = object()


class Api:
    """One daemon, one key. Paths are relative to the daemon root (/v1/...)."""

    def __init__(self, daemon, key):
        self.daemon = daemon
        self.host, self.port = daemon.host, daemon.port
        self.key = key

    def with_key(self, key):
        return Api(self.daemon, key)

    def request(self, method, path, body=None, *, key=_DEFAULT, headers=None, query=None, timeout=60,
                raw=False):
        key = self.key if key is _DEFAULT else key
        h = {}
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        data = None
        if body is not None:
            if raw or isinstance(body, (bytes, bytearray)):
                data = bytes(body) if not isinstance(body, str) else body.encode()
                h.setdefault("Content-Type", "application/octet-stream")
            else:
                data = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
        h.update(headers or {})
        if query:
            path += "?" + urllib.parse.urlencode(query)
        conn = self.daemon.connection(timeout)
        try:
            skip_host = "Host" in h
            conn.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=True)
            for k, v in h.items():
                conn.putheader(k, v)
            if data is not None:
                conn.putheader("Content-Length", str(len(data)))
            elif method in ("POST", "PUT"):
                conn.putheader("Content-Length", "0")
            try:
                conn.endheaders(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon answered (and closed) before reading the whole body
            r = conn.getresponse()
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- sandboxes

    def create(self, expect=201, **body):
        body.setdefault("timeout_s", 120)
        r = self.post("/v1/sandboxes", body)
        if r.status == 201:
            self.daemon.created.append((self.key, r.json()["id"]))
        assert r.status == expect, f"create {body}: {r}"
        return r.json()

    def info(self, sid):
        r = self.get(f"/v1/sandboxes/{sid}")
        assert r.status == 200, r
        return r.json()

    def kill(self, sid):
        return self.delete(f"/v1/sandboxes/{sid}")

    def exec(self, sid, cmd, expect=200, http_timeout=90, **kw):
        r = self.post(f"/v1/sandboxes/{sid}/exec", {"cmd": cmd, **kw}, timeout=http_timeout)
        assert r.status == expect, f"exec {cmd!r}: {r}"
        return r.json()

    def start(self, sid, cmd, **kw):
        r = self.post(f"/v1/sandboxes/{sid}/processes", {"cmd": cmd, **kw})
        assert r.status == 201, f"start {cmd!r}: {r}"
        pid = r.json()["pid"]
        assert isinstance(pid, int)
        return pid

    def processes(self, sid):
        r = self.get(f"/v1/sandboxes/{sid}/processes")
        assert r.status == 200, r
        return r.json()["processes"]

    def attach(self, sid, pid, query="", key=_DEFAULT):
        key = self.key if key is _DEFAULT else key
        path = f"/v1/sandboxes/{sid}/processes/{pid}/attach" + (f"?{query}" if query else "")
        return WebSocket(self.host, self.port, path, {"Authorization": f"Bearer {key}"})

    def put_file(self, sid, path, data):
        return self.request("PUT", f"/v1/sandboxes/{sid}/files", data, raw=True, query={"path": path})

    def get_file(self, sid, path):
        return self.get(f"/v1/sandboxes/{sid}/files", query={"path": path})

    def stat(self, sid, path):
        return self.get(f"/v1/sandboxes/{sid}/fs/stat", query={"path": path})

    def put_stream(self, sid, path, chunks, length, timeout=120):
        """Streams an iterable of byte chunks with a known length; returns Resp."""
        conn = self.daemon.connection(timeout)
        try:
            q = urllib.parse.urlencode({"path": path})
            conn.putrequest("PUT", f"/v1/sandboxes/{sid}/files?{q}")
            conn.putheader("Authorization", f"Bearer {self.key}")
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            for c in chunks:
                conn.send(c)
            r = conn.getresponse()
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def get_stream_sha256(self, sid, path, timeout=120):
        """Downloads a file without holding it; returns (status, size, sha256 hex, error body)."""
        conn = self.daemon.connection(timeout)
        try:
            q = urllib.parse.urlencode({"path": path})
            conn.request("GET", f"/v1/sandboxes/{sid}/files?{q}",
                         headers={"Authorization": f"Bearer {self.key}"})
            r = conn.getresponse()
            if r.status != 200:
                return r.status, 0, None, r.read()
            h, n = hashlib.sha256(), 0
            while True:
                chunk = r.read(MiB)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
            return r.status, n, h.hexdigest(), b""
        finally:
            conn.close()


# ---------------------------------------------------------------- WebSocket


class WsRejected(Exception):
    def __init__(self, status, body):
        super().__init__(f"WebSocket upgrade refused: HTTP {status}: {body[:300]!r}")
        self.status, self.body = status, body


class WebSocket:
    """RFC 6455 client, just enough for attach: text/binary/close/ping, client masking."""

    def __init__(self, host, port, path, headers, timeout=15):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
        if status != 101:
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            want = int(m.group(1)) if m else 0
            while len(rest) < want:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                rest += chunk
            self.sock.close()
            raise WsRejected(status, rest)
        expect = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                  .digest()).decode()
        assert expect.encode() in head, f"bad Sec-WebSocket-Accept in {head!r}"
        self.buf = rest
        self.closed = False

    def close(self):
        if not self.closed:
            try:
                self._send_frame(0x8, struct.pack("!H", 1000))
            except OSError:
                pass
            self.closed = True
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_json(self, obj):
        self._send_frame(0x1, json.dumps(obj).encode())

    def send_stdin(self, data):
        self.send_json({"type": "stdin", "data": base64.b64encode(data).decode()})

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("WebSocket read timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("WebSocket connection closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout=15):
        """One message: ("text", str) | ("binary", bytes) | ("close", bytes)."""
        deadline = time.monotonic() + timeout
        parts, first_op = [], None
        while True:
            b0, b1 = self._read_exact(2, deadline)
            fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2, deadline))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8, deadline))[0]
            mask = self._read_exact(4, deadline) if b1 & 0x80 else None
            payload = self._read_exact(n, deadline)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if op == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                return "close", payload
            if op != 0:
                first_op = op
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return ("text", data.decode()) if first_op == 1 else ("binary", data)

    def collect(self, timeout=20, until_exit=True):
        """Reads frames until the exit frame (or close); returns a Collected."""
        out = Collected()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no exit frame within {timeout}s; got so far: {out}")
            kind, data = self.recv(left)
            if kind == "close":
                out.closed = True
                return out
            if kind == "binary":
                out.stdout += data
                continue
            frame = json.loads(data)
            out.frames.append(frame)
            t = frame.get("type")
            if t == "stdout":
                out.stdout += base64.b64decode(frame["data"])
            elif t == "stderr":
                out.stderr += base64.b64decode(frame["data"])
            elif t == "exit":
                out.exit = frame
                if until_exit:
                    return out

    def read_until(self, needle, timeout=15):
        """Reads output frames until stdout contains needle; returns the Collected so far."""
        out = Collected()
        deadline = time.monotonic() + timeout
        while needle not in out.stdout:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{needle!r} not seen within {timeout}s; got {out}")
            kind, data = self.recv(left)
            if kind == "close":
                raise AssertionError(f"closed before {needle!r}; got {out}")
            if kind == "binary":
                out.stdout += data
                continue
            frame = json.loads(data)
            out.frames.append(frame)
            if frame.get("type") == "stdout":
                out.stdout += base64.b64decode(frame["data"])
            elif frame.get("type") == "stderr":
                out.stderr += base64.b64decode(frame["data"])
            elif frame.get("type") == "exit":
                out.exit = frame
                raise AssertionError(f"process exited before {needle!r}; got {out}")
        return out


@dataclasses.dataclass
class Collected:
    stdout: bytes = b""
    stderr: bytes = b""
    exit: dict | None = None
    closed: bool = False
    frames: list = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------- the daemon


class Daemon:
    """`safehouse serve` on a free loopback port with its own data dir."""

    # The gateway's resolver overrides: test names stand for the public internet and lead
    # to servers the tests start on 127.0.0.1 (tests/network/internet.py).
    GATEWAY_RESOLVE = "web.test=127.0.0.1;other.test=127.0.0.1"

    def __init__(self, data_dir=None, admin_key=None, port=None, run_as=None, listen_host=None, env=None,
                 nofile=None, args=()):
        self.nofile = nofile  # an RLIMIT_NOFILE (soft and hard) to start the daemon with
        self.args = list(args)  # more `serve` flags (--quota ...)
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="safehouse-e2e-data-")
        self.extra_env = dict(env or {})  # more of the daemon's environment (SAFEHOUSE_CODE_POOL)
        # run_as: a user name; the daemon then runs unprivileged (rootless mode) and owns
        # its data dir.
        self.run_as = run_as
        if run_as:
            import pwd
            pw = pwd.getpwnam(run_as)
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self.admin_key = admin_key or new_admin_key()
        self.host = "127.0.0.1"
        # Where it listens (clients still use `host`): "0.0.0.0" is every interface.
        self.listen_host = listen_host or self.host
        self.port = port or free_port()
        self.proc = None
        self.log_path = os.path.join(tempfile.gettempdir(), f"safehouse-e2e-{self.port}-{os.getpid()}.log")
        self.created = []  # (key, sandbox id), killed at teardown
        # An ssl.SSLContext that trusts the daemon when it serves HTTPS (--tls-*: test_tls.py).
        self.ssl_context = None

    @property
    def url(self):
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    def connection(self, timeout):
        """An http.client connection to the daemon (HTTPS with `ssl_context` when set)."""
        if self.ssl_context:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def admin(self):
        return Api(self, self.admin_key)

    def start(self, timeout=30):
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root"),
               "SAFEHOUSE_ADMIN_KEY": self.admin_key,
               "SAFEHOUSE_GATEWAY_RESOLVE": self.GATEWAY_RESOLVE}
        # The storage pool (disk-backed layers, crates/storage): small in tests.
        env["SAFEHOUSE_STORAGE_SIZE"] = os.environ.get("SAFEHOUSE_STORAGE_SIZE", "2GiB")
        if "SAFEHOUSE_EXECWATCH" in os.environ:  # exec observation off, to measure its cost
            env["SAFEHOUSE_EXECWATCH"] = os.environ["SAFEHOUSE_EXECWATCH"]
        if "SAFEHOUSE_INTERP_DRIVER" in os.environ:  # a driver under development (crates/interp)
            env["SAFEHOUSE_INTERP_DRIVER"] = os.environ["SAFEHOUSE_INTERP_DRIVER"]
        env.update(self.extra_env)
        drop = {}
        if self.run_as:
            env["HOME"] = self.data_dir
            drop = {"user": self.run_as, "group": self.run_as if self.run_as != "nobody" else "nogroup",
                    "extra_groups": []}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", f"{self.listen_host}:{self.port}",
                                      "--data-dir", self.data_dir, *self.args],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                     start_new_session=True, preexec_fn=self._limits if self.nofile else None,
                                     **drop)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                conn = self.connection(2)
                conn.request("GET", "/healthz")
                r = conn.getresponse()
                r.read()
                conn.close()
                if r.status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daemon not healthy within {timeout}s:\n{self.log_tail()}")

    def _limits(self):
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def crash(self):
        """kill -9: the daemon gets no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def kill_sandboxes(self):
        """Sandboxes outlive their daemon by design: kill every one the tests made."""
        keys = {self.admin_key} | {k for k, _ in self.created}
        ids = {(k, sid) for k, sid in self.created}
        for key in keys:
            try:
                r = Api(self, key).get("/v1/sandboxes", query={"state": "running"}, timeout=10)
                if r.status == 200:
                    ids |= {(key, sb["id"]) for sb in r.json().get("sandboxes", [])}
            except (OSError, ValueError):
                pass
        for key, sid in sorted(ids):
            try:
                Api(self, key).kill(sid)
            except OSError:
                pass

    def stop(self, timeout=10):
        p = self.proc
        if not p or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.kill_sandboxes()
        self.stop()
        # The storage pool stays mounted after its daemon (sandboxes use it): unmount it.
        pool = os.path.join(self.data_dir, "storage", "pool")
        if os.path.ismount(pool):
            subprocess.run(["umount", "-l", pool], check=False)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if not os.environ.get("SAFEHOUSE_E2E_KEEP_LOGS"):
            try:
                os.unlink(self.log_path)
            except OSError:
                pass


# ---------------------------------------------------------------- CLI


@dataclasses.dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    def json(self):
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"not JSON (rc={self.rc}): {self.stdout[:500]!r}\nstderr: {self.stderr[-1000:]}")


def cli(daemon, *args, key=_DEFAULT, input=None, timeout=60, env_extra=None, url=None):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "SAFEHOUSE_URL": url or daemon.url}
    key = daemon.admin_key if key is _DEFAULT else key
    if key is not None:
        env["SAFEHOUSE_API_KEY"] = key
    env.update(env_extra or {})
    p = subprocess.run([BIN, *args], input=input if isinstance(input, (bytes, type(None))) else input.encode(),
                       stdin=None if input is not None else subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, env=env)
    return CliResult(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


def cgroup_dirs_named(*names):
    """Existing /sys/fs/cgroup/<controller>/safehouse/<name> (and v2 /sys/fs/cgroup/safehouse/<name>)."""
    found = []
    base = Path("/sys/fs/cgroup")
    roots = [base / "safehouse"] + [c / "safehouse" for c in base.iterdir() if c.is_dir()] if base.exists() else []
    for root in roots:
        for n in names:
            if n and (root / n).exists():
                found.append(str(root / n))
    return found


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def wait_for(pred, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def running_daemon(**daemon_args):
    """A started daemon for a test session (skips, or fails under CI, when the binary
    cannot serve); the caller cleans it up. `daemon_args` go to `Daemon`."""
    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    d = Daemon(**daemon_args)
    try:
        d.start()
    except RuntimeError as e:
        d.cleanup()
        pytest.fail(str(e))
    return d


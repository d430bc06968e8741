#!/usr/bin/env python3
"""MCP benchmark, against a real `safehouse serve` (root, like the daemon): the latency of
MCP calls next to the native API calls they wrap, median and min of N each, over one
keep-alive connection (streamable HTTP) and through `safehouse mcp` (stdio):

- `ping` and `tools/list` (the JSON-RPC layer alone);
- `run_command ["true"]` in a running sandbox against `POST /v1/sandboxes/{id}/exec`;
- one-shot `run_code print(1)` (create, run python3, kill) against the same three API calls;
- `safehouse mcp` start to answered `initialize`.

Usage: scripts/bench_mcp.py BIN [--runs N]
"""
import http.client
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 50


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(key, port, data):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SAFEHOUSE_ADMIN_KEY": key}
    p = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    sys.exit("the daemon did not start")


def timed(f):
    f()  # warm-up
    ts = []
    for _ in range(RUNS):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), min(ts)


def main():
    key = "sh_" + secrets.token_hex(16)
    port, data = free_port(), tempfile.mkdtemp(prefix="safehouse-bench-mcp-")
    daemon = start_daemon(key, port, data)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def post(path, body, headers=None):
            h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
            c.request("POST", path, json.dumps(body), h)
            r = c.getresponse()
            return r, r.read()

        r, _ = post("/mcp", {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                             "params": {"protocolVersion": "2025-06-18"}})
        session = {"Mcp-Session-Id": r.getheader("mcp-session-id")}

        def mcp(method, params=None):
            r, body = post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}, session)
            assert r.status == 200, body
            return json.loads(body)

        def tool(name, args):
            return mcp("tools/call", {"name": name, "arguments": args})

        sid = tool("sandbox_create", {})["result"]["structuredContent"]["id"]

        def native_one_shot():
            _, body = post("/v1/sandboxes", {})
            s = json.loads(body)["id"]
            post(f"/v1/sandboxes/{s}/exec", {"cmd": ["python3", "-"], "stdin": "print(1)"})
            c.request("DELETE", f"/v1/sandboxes/{s}", headers={"Authorization": f"Bearer {key}"})
            c.getresponse().read()

        rows = [
            ("http ping", timed(lambda: mcp("ping"))),
            ("http tools/list", timed(lambda: mcp("tools/list"))),
            ("http run_command true", timed(lambda: tool("run_command", {"sandbox_id": sid, "command": ["true"]}))),
            ("native exec true", timed(lambda: post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]}))),
            ("http run_code print(1), one-shot", timed(lambda: tool("run_code", {"code": "print(1)"}))),
            ("native create + exec python3 + kill", timed(native_one_shot)),
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SAFEHOUSE_URL": f"http://127.0.0.1:{port}",
               "SAFEHOUSE_API_KEY": key}
        init = b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}\n'

        def stdio_start():
            p = subprocess.Popen([BIN, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, env=env)
            p.stdin.write(init)
            p.stdin.flush()
            p.stdout.readline()
            p.stdin.close()
            p.wait(10)
            p.stdout.close()

        p = subprocess.Popen([BIN, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env)

        def line(msg):
            p.stdin.write((json.dumps(msg) + "\n").encode())
            p.stdin.flush()
            return p.stdout.readline()
        line(json.loads(init))
        rows += [
            ("stdio ping", timed(lambda: line({"jsonrpc": "2.0", "id": 1, "method": "ping"}))),
            ("stdio run_command true", timed(lambda: line({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "run_command", "arguments": {"sandbox_id": sid, "command": ["true"]}}}))),
            ("stdio start + initialize + exit", timed(stdio_start)),
        ]
        p.stdin.close()
        p.wait(10)
        # Sandboxes outlive their daemon: kill ours before stopping it.
        assert tool("sandbox_kill", {"sandbox_id": sid})["result"]["isError"] is False
        print(f"{RUNS} runs each; milliseconds")
        for name, (med, lo) in rows:
            print(f"{name:38s} median {med:8.2f}   min {lo:8.2f}")
    finally:
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

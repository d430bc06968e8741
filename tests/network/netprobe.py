#!/usr/bin/python3
"""Network client for the gateway tests; runs inside a sandbox (and outside, for the
positive controls). Standard library only. Prints one JSON line per command:

    get URL [--direct] [--cafile F]   HTTP(S) through the gateway (or direct)
    connect HOST PORT                 a raw TCP connect, no proxy
    udp HOST PORT                     a UDP datagram (sendto), no proxy
    ping                              an ICMP echo socket
    tunnel HOST PORT                  a CONNECT request by hand; the status line
    socks HOST PORT [--atyp name|ip4|ip6]  SOCKS5 CONNECT by hand, then GET /hello
    flood N                           N concurrent connections to the gateway
    download URL                      bytes received through the gateway, and the error
    resolve NAME                      the sandbox's own resolver
"""
import json
import os
import socket
import ssl
import struct
import sys
import urllib.error
import urllib.request

GATEWAY = ("127.0.0.1", 3128)


def out(**kw):
    print(json.dumps(kw), flush=True)


def oserr(e):
    return {"ok": False, "errno": getattr(e, "errno", None), "error": str(e)}


def opener(direct, cafile):
    handlers = []
    if direct:
        handlers.append(urllib.request.ProxyHandler({}))
    else:
        # Through the gateway even for NO_PROXY hosts (127.0.0.1...): the tests ask the
        # gateway about addresses a well-behaved client would not send it.
        for var in ("NO_PROXY", "no_proxy"):
            os.environ.pop(var, None)
        proxy = os.environ.get("HTTP_PROXY", "http://127.0.0.1:3128")
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    if cafile:
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
    return urllib.request.build_opener(*handlers)


def get(url, direct=False, cafile=None):
    try:
        with opener(direct, cafile).open(url, timeout=20) as r:
            body = r.read()
            out(ok=True, status=r.status, body=body[:2000].decode(errors="replace"), length=len(body))
    except urllib.error.HTTPError as e:
        body = e.read()
        out(ok=False, status=e.code, body=body[:4000].decode(errors="replace"),
            denied=e.headers.get("X-Safehouse-Denied"))
    except urllib.error.URLError as e:
        reason = e.reason
        out(ok=False, status=None, errno=getattr(reason, "errno", None), error=str(reason))
    except OSError as e:
        out(status=None, **oserr(e))


def connect(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, int(port)))
        out(ok=True, errno=None)
    except OSError as e:
        out(**oserr(e))
    finally:
        s.close()


def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (host, int(port)))
        out(ok=True, errno=None)
    except OSError as e:
        out(**oserr(e))


def ping():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        s.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01", ("8.8.8.8", 0))
        out(ok=True, errno=None)
    except OSError as e:
        out(**oserr(e))


def read_head(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def hello_through(s, host):
    """GET /hello over an open tunnel `s`; the response as text (capped)."""
    s.sendall(f"GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    body = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return body[:2000].decode(errors="replace")


def tunnel(host, port):
    s = socket.create_connection(GATEWAY, timeout=10)
    target = f"{host}:{port}"
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = read_head(s)
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
    result = {"status": status, "head": head[:2000].decode(errors="replace")}
    if status == 200:
        result["response"] = hello_through(s, host)
    out(**result)


def socks(host, port, atyp="name"):
    s = socket.create_connection(GATEWAY, timeout=10)
    s.sendall(b"\x05\x01\x00")
    method = s.recv(2)
    if atyp == "ip4":
        addr = b"\x01" + socket.inet_aton(host)
    elif atyp == "ip6":
        addr = b"\x04" + socket.inet_pton(socket.AF_INET6, host)
    else:
        addr = b"\x03" + bytes([len(host)]) + host.encode()
    s.sendall(b"\x05\x01\x00" + addr + struct.pack(">H", int(port)))
    reply = s.recv(4)
    result = {"method": method.hex(), "reply": reply[1] if len(reply) > 1 else None}
    if len(reply) >= 4 and reply[1] == 0:
        # Skip the bound address, then speak HTTP through the tunnel.
        skip = {1: 6, 4: 18}.get(reply[3])
        if skip is None:
            skip = s.recv(1)[0] + 2
        s.recv(skip)
        result["response"] = hello_through(s, host)
    out(**result)


def flood(n):
    socks_, refused, closed, busy = [], 0, 0, 0
    for _ in range(int(n)):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(GATEWAY)
            socks_.append(s)
        except OSError:
            refused += 1
            s.close()
    # A connection over the cap is answered 503 (or closed) at once; the others stay open.
    import select
    import time
    time.sleep(0.5)
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks_}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    for fd, _ in poller.poll(1000):
        s = by_fd[fd]
        s.setblocking(False)
        try:
            data = s.recv(64)
            if data.startswith(b"HTTP/1.1 503"):
                busy += 1
            elif not data:
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    open_ = len(socks_) - busy - closed
    for s in socks_:
        s.close()
    out(opened=len(socks_), refused=refused, busy=busy, closed=closed, still_open=open_)


def download(url):
    proxy = os.environ.get("HTTP_PROXY", "http://127.0.0.1:3128")
    op = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    got, status, err = 0, None, None
    try:
        with op.open(url, timeout=30) as r:
            status = r.status
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
    except urllib.error.HTTPError as e:
        status = e.code
        err = e.read().decode(errors="replace")
    except Exception as e:  # noqa: BLE001 -- report whatever cut the transfer
        err = f"{type(e).__name__}: {e}"
    out(status=status, received=got, error=err)


def resolve(name):
    try:
        out(ok=True, addrs=sorted({a[4][0] for a in socket.getaddrinfo(name, 80)}))
    except OSError as e:
        out(**oserr(e))


def main(argv):
    cmd, args = argv[0], argv[1:]
    if cmd == "get":
        url = args[0]
        cafile = args[args.index("--cafile") + 1] if "--cafile" in args else None
        get(url, direct="--direct" in args, cafile=cafile)
    elif cmd == "socks":
        atyp = args[args.index("--atyp") + 1] if "--atyp" in args else "name"
        socks(args[0], args[1], atyp)
    else:
        {"connect": connect, "udp": udp, "ping": ping, "tunnel": tunnel, "flood": flood,
         "download": download, "resolve": resolve}[cmd](*args)


if __name__ == "__main__":
    # Several commands may be chained, separated by "::".
    cmds, cur = [], []
    for a in sys.argv[1:]:
        if a == "::":
            cmds.append(cur)
            cur = []
        else:
            cur.append(a)
    if cur:
        cmds.append(cur)
    for c in cmds:
        main(c)

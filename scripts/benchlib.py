"""Helpers shared by the scripts/bench_*.py benchmarks (imported from the scripts' own
directory, which Python puts first on sys.path)."""
import socket


def free_port():
    """A TCP port on 127.0.0.1 free at the time of asking."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

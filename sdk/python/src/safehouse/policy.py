"""A policy builder: write a safehouse policy (docs/POLICY.md) in Python.

    Policy().memory("512MiB").pids(128).timeout("10m").read_only("/srv/data", "/data").hidden("/etc/ssh")
    Policy().allow_hosts("pypi.org:443").egress_budget("1GiB").allow_tools("/bin/sh", "/usr/bin/python3*")
    Policy().kill_after_violations(20).cpu_budget("60s")

Every method returns the builder; `to_dict()` gives the JSON the API accepts as `policy`.
Validation is the daemon's: an invalid policy is refused on create with an
InvalidRequestError whose message names the field.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Union

Size = Union[str, int]
Duration = Union[str, int, float]


class Policy:
    def __init__(self, version: int = 1) -> None:
        self._doc: Dict[str, Any] = {"version": version}

    # -- limits
    def _limit(self, key: str, value: Any) -> "Policy":
        self._doc.setdefault("limits", {})[key] = value
        return self

    def memory(self, size: Size) -> "Policy":
        """Memory cap of the sandbox (RAM and tmpfs, no swap), e.g. "512MiB"."""
        return self._limit("memory", size)

    def pids(self, n: int) -> "Policy":
        """Processes and threads together."""
        return self._limit("pids", int(n))

    def cpus(self, cores: float) -> "Policy":
        return self._limit("cpus", cores)

    def disk(self, size: Size) -> "Policy":
        """Writable layer, /dev/shm, and the largest single file."""
        return self._limit("disk", size)

    def inodes(self, n: int) -> "Policy":
        return self._limit("inodes", int(n))

    def timeout(self, duration: Duration) -> "Policy":
        """Wall-clock limit of a run, e.g. "10m" (the sandbox's lifetime is `Sandbox.create(timeout=)`)."""
        return self._limit("timeout", duration)

    def nofile(self, n: int) -> "Policy":
        return self._limit("nofile", int(n))

    # -- filesystem
    def _fs(self) -> Dict[str, Any]:
        fs: Dict[str, Any] = self._doc.setdefault("filesystem", {})
        return fs

    def rootfs(self, rootfs: str) -> "Policy":
        """"host" (default) or an absolute directory used as the read-only lower layer."""
        self._fs()["rootfs"] = rootfs
        return self

    def read_only(self, host: str, path: Optional[str] = None) -> "Policy":
        """Bind the host path HOST read-only at PATH in the sandbox (default: the same path)."""
        self._fs().setdefault("read_only", []).append({"host": host, "path": path or host})
        return self

    def read_write(self, host: str, path: Optional[str] = None) -> "Policy":
        self._fs().setdefault("read_write", []).append({"host": host, "path": path or host})
        return self

    def scratch(self, *paths: str) -> "Policy":
        self._fs().setdefault("scratch", []).extend(paths)
        return self

    def hidden(self, *paths: str) -> "Policy":
        """Host files/dirs made unreadable inside."""
        self._fs().setdefault("hidden", []).extend(paths)
        return self

    # -- network
    def network(self, allow: Optional[List[str]] = None, egress_bytes: Optional[Size] = None) -> "Policy":
        """`[network]`: ALLOW lists `host:port` patterns reached through the gateway
        ("pypi.org:443", "*.github.com:443", "*"); [] (the default) is loopback only.
        EGRESS_BYTES caps the bytes in and out through the gateway."""
        net: Dict[str, Any] = {"allow": list(allow or [])}
        if egress_bytes is not None:
            net["egress_bytes"] = egress_bytes
        self._doc["network"] = net
        return self

    def allow_hosts(self, *targets: str) -> "Policy":
        """Adds `host:port` patterns to `network.allow`."""
        self._doc.setdefault("network", {}).setdefault("allow", []).extend(targets)
        return self

    def egress_budget(self, size: Size) -> "Policy":
        """`network.egress_bytes`: the gateway closes every connection once this is spent."""
        self._doc.setdefault("network", {}).setdefault("allow", [])
        self._doc["network"]["egress_bytes"] = size
        return self

    # -- tools
    def allow_tools(self, *patterns: str) -> "Policy":
        """Adds executable patterns to `tools.allow` (absolute paths; `*`/`?` in the last
        component). Once non-empty, only these may be executed; a shell string needs "/bin/sh"."""
        self._doc.setdefault("tools", {}).setdefault("allow", []).extend(patterns)
        return self

    def tool_limits(self, pattern: str, timeout: Optional[Duration] = None,
                    memory: Optional[Size] = None) -> "Policy":
        """`[tools.limits."PATTERN"]`: PATTERN must be one of the allow patterns exactly."""
        if timeout is None and memory is None:
            raise ValueError("tool_limits needs timeout=, memory= or both")
        lim: Dict[str, Any] = {}
        if timeout is not None:
            lim["timeout"] = timeout
        if memory is not None:
            lim["memory"] = memory
        self._doc.setdefault("tools", {}).setdefault("limits", {})[pattern] = lim
        return self

    # -- control (stop rules enforced by the daemon)
    def kill_after_violations(self, n: int) -> "Policy":
        """`control.kill_after_violations`: kill the sandbox at its Nth policy violation."""
        self._doc.setdefault("control", {})["kill_after_violations"] = int(n)
        return self

    def cpu_budget(self, duration: Duration) -> "Policy":
        """`control.cpu_budget`: kill the sandbox once it used this much CPU time in total."""
        self._doc.setdefault("control", {})["cpu_budget"] = duration
        return self

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self._doc)

    @classmethod
    def from_dict(cls, doc: Dict[str, Any]) -> "Policy":
        p = cls()
        p._doc = copy.deepcopy(doc)
        return p

    @classmethod
    def from_toml(cls, text: str) -> "Policy":
        """A policy from its TOML text (docs/POLICY.md), as `safehouse policy check` reads
        files. Needs Python 3.11+ (tomllib) or the `tomli` package."""
        try:
            import tomllib as toml  # type: ignore[import-not-found]
        except ImportError:
            try:
                import tomli as toml  # type: ignore[import-not-found,no-redef]
            except ImportError:
                raise ValueError("reading TOML needs Python 3.11+ or `pip install tomli`; or pass the policy as "
                                 "a dict or a Policy") from None
        try:
            return cls.from_dict(toml.loads(text))
        except toml.TOMLDecodeError as e:
            raise ValueError(f"the policy is not valid TOML: {e}") from None

    def __repr__(self) -> str:
        return f"Policy({self._doc!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and other._doc == self._doc

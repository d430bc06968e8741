"""Data returned by the SDK: plain dataclasses parsed from the daemon's JSON."""
from __future__ import annotations

import dataclasses
import enum
import json
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional


def _time(s: Optional[str]) -> Optional[datetime]:
    if not s:
        return None
    s = s.replace("Z", "+00:00")
    # Python < 3.11 cannot parse nanoseconds: cut the fraction to microseconds.
    if "." in s:
        head, rest = s.split(".", 1)
        n = 0
        while n < len(rest) and rest[n].isdigit():
            n += 1
        frac, tz = rest[:n], rest[n:]
        s = f"{head}.{frac[:6]}{tz}"
    return datetime.fromisoformat(s)


@dataclasses.dataclass
class SandboxInfo:
    id: str
    state: str
    created_at: Optional[datetime]
    expires_at: Optional[datetime]
    metadata: Dict[str, str]
    preset: Optional[str] = None
    pid: Optional[int] = None
    error: Optional[str] = None
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def sandbox_id(self) -> str:  # E2B's name
        return self.id

    @property
    def started_at(self) -> Optional[datetime]:  # E2B's name
        return self.created_at

    @property
    def end_at(self) -> Optional[datetime]:  # E2B's name
        return self.expires_at

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "SandboxInfo":
        return cls(id=d["id"], state=d["state"], created_at=_time(d.get("created_at")),
                   expires_at=_time(d.get("expires_at")), metadata=dict(d.get("metadata") or {}),
                   preset=d.get("preset"), pid=d.get("pid"), error=d.get("error"), raw=d)


class FileType(str, enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"


@dataclasses.dataclass
class EntryInfo:
    """A file or directory in a sandbox (E2B's EntryInfo; the daemon's FileInfo)."""

    name: str
    path: str
    type: FileType
    size: int
    mode: int
    modified_time: Optional[datetime]
    symlink_target: Optional[str] = None

    @property
    def permissions(self) -> str:
        import stat

        return stat.filemode(self.mode)[1:]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "EntryInfo":
        try:
            t = FileType(d.get("type", "other"))
        except ValueError:
            t = FileType.OTHER
        return cls(name=d["name"], path=d["path"], type=t, size=int(d.get("size", 0)),
                   mode=int(d.get("mode", 0)), modified_time=_time(d.get("mtime")),
                   symlink_target=d.get("symlink_target"))


FileInfo = EntryInfo


@dataclasses.dataclass
class ProcessInfo:
    pid: int
    cmd: List[str]
    pty: bool
    running: bool
    exit_code: Optional[int] = None
    signal: Optional[int] = None

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ProcessInfo":
        return cls(pid=d["pid"], cmd=list(d.get("cmd") or []), pty=bool(d.get("pty")),
                   running=bool(d.get("running")), exit_code=d.get("exit_code"), signal=d.get("signal"))


@dataclasses.dataclass
class CommandResult:
    """What a command produced. `.stdout`, `.stderr`, `.exit_code`, `.error` as in E2B, plus
    safehouse's resource envelope (None for background processes, which have none)."""

    stdout: str
    stderr: str
    exit_code: Optional[int]
    error: Optional[str] = None
    signal: Optional[int] = None
    timed_out: bool = False
    oom_killed: bool = False
    wall_ms: Optional[int] = None
    cpu_ms: Optional[int] = None
    peak_memory_bytes: Optional[int] = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "CommandResult":
        r = cls(stdout=d.get("stdout", ""), stderr=d.get("stderr", ""), exit_code=d.get("exit_code"),
                signal=d.get("signal"), timed_out=bool(d.get("timed_out")),
                oom_killed=bool(d.get("oom_killed")), wall_ms=d.get("wall_ms"), cpu_ms=d.get("cpu_ms"),
                peak_memory_bytes=d.get("peak_memory_bytes"),
                stdout_truncated=bool(d.get("stdout_truncated")),
                stderr_truncated=bool(d.get("stderr_truncated")))
        r.error = describe_failure(r)
        return r


def describe_failure(r: CommandResult) -> Optional[str]:
    """None on success, else a one-line reason (E2B's `.error`)."""
    if r.exit_code == 0 and not r.timed_out:
        return None
    if r.timed_out:
        return "command timed out" + (f" after {r.wall_ms} ms" if r.wall_ms is not None else "")
    if r.oom_killed:
        return "command killed: out of memory"
    if r.signal is not None:
        return f"command killed by signal {r.signal}"
    if r.exit_code is None:
        return "command ended without an exit code"
    return f"exit status {r.exit_code}"


@dataclasses.dataclass
class MetricsSample:
    """One second of a sandbox's history (`GET .../metrics` `history`)."""

    t: int
    cpu_pct: float
    memory_bytes: int
    pids: int
    disk_bytes: int
    net_in: int
    net_out: int

    @property
    def timestamp(self) -> datetime:  # E2B's name
        return datetime.fromtimestamp(self.t, tz=timezone.utc)

    @property
    def cpu_used_pct(self) -> float:  # E2B's name
        return self.cpu_pct

    @property
    def mem_used(self) -> int:  # E2B's name
        return self.memory_bytes

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "MetricsSample":
        return cls(t=int(d.get("t", 0)), cpu_pct=float(d.get("cpu_pct") or 0.0),
                   memory_bytes=int(d.get("memory_bytes") or 0), pids=int(d.get("pids") or 0),
                   disk_bytes=int(d.get("disk_bytes") or 0), net_in=int(d.get("net_in") or 0),
                   net_out=int(d.get("net_out") or 0))


@dataclasses.dataclass
class Metrics:
    """A sandbox's resource use now (`current`) and over the last five minutes (`history`,
    one sample a second, oldest first)."""

    t: int
    state: str
    cpu_usage_ns: int
    cpu_pct: float
    memory_bytes: int
    memory_peak_bytes: Optional[int]
    pids: int
    disk_bytes: int
    net_in: int
    net_out: int
    violations: int
    history: List[MetricsSample]
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Metrics":
        c = d.get("current") or {}
        return cls(t=int(c.get("t", 0)), state=str(c.get("state", "")), cpu_usage_ns=int(c.get("cpu_usage_ns") or 0),
                   cpu_pct=float(c.get("cpu_pct") or 0.0), memory_bytes=int(c.get("memory_bytes") or 0),
                   memory_peak_bytes=c.get("memory_peak_bytes"), pids=int(c.get("pids") or 0),
                   disk_bytes=int(c.get("disk_bytes") or 0), net_in=int(c.get("net_in") or 0),
                   net_out=int(c.get("net_out") or 0), violations=int(c.get("violations") or 0),
                   history=[MetricsSample.from_json(s) for s in d.get("history") or []], raw=d)


@dataclasses.dataclass
class SandboxEvent:
    """One event of the daemon's event stream (docs/api.md "Events"): `kind` such as
    `exec.started`, `proc.exec`, `net.denied`, `sandbox.killed`, and its `data`.
    `kind == "lagged"` (with `data["missed"]`) says this reader fell behind."""

    sandbox: Optional[str]
    seq: Optional[int]
    time: Optional[datetime]
    kind: str
    data: Dict[str, Any]
    dropped: int = 0

    @classmethod
    def from_sse(cls, event: str, data: str) -> "SandboxEvent":
        d = json.loads(data) if data else {}
        if event == "lagged" or "kind" not in d:
            return cls(sandbox=None, seq=None, time=None, kind=event or "message", data=d)
        return cls(sandbox=d.get("sandbox"), seq=d.get("seq"), time=_time(d.get("time")), kind=d["kind"],
                   data=dict(d.get("data") or {}), dropped=int(d.get("dropped") or 0))


class FilesystemEventType(str, enum.Enum):
    """What happened to a watched path (E2B's names are the upper-case ones)."""

    CREATE = "create"
    WRITE = "modify"
    REMOVE = "delete"
    RENAME = "rename"
    OTHER = "other"


@dataclasses.dataclass
class FilesystemEvent:
    """A change under a watched directory: `name` is the path relative to it (E2B), `path`
    the absolute path inside the sandbox."""

    name: str
    path: str
    type: FilesystemEventType
    ts_ms: int

    @classmethod
    def from_sse(cls, data: str, watched: str) -> "FilesystemEvent":
        d = json.loads(data)
        path = str(d.get("path", ""))
        try:
            t = FilesystemEventType(d.get("type", "other"))
        except ValueError:
            t = FilesystemEventType.OTHER
        base = watched.rstrip("/") + "/"
        name = path[len(base):] if path.startswith(base) else path
        return cls(name=name, path=path, type=t, ts_ms=int(d.get("ts") or 0))


@dataclasses.dataclass
class ApiKey:
    """An API key as the admin routes show it; `key` (the secret) only right after create."""

    id: str
    tenant: str
    name: Optional[str]
    created_at: Optional[datetime]
    revoked_at: Optional[datetime] = None
    key: Optional[str] = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ApiKey":
        return cls(id=d["id"], tenant=d["tenant"], name=d.get("name"), created_at=_time(d.get("created_at")),
                   revoked_at=_time(d.get("revoked_at")), key=d.get("key"))


@dataclasses.dataclass(frozen=True)
class PtySize:
    """Terminal size of a PTY (E2B's PtySize)."""

    rows: int = 24
    cols: int = 80


@dataclasses.dataclass
class WriteEntry:
    """One file of `files.write_files` (E2B's WriteEntry): PATH and its DATA (str, bytes, or a
    file object, streamed)."""

    path: str
    data: Any

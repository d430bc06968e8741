"""Data returned by the SDK: plain dataclasses parsed from the daemon's JSON."""
from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
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

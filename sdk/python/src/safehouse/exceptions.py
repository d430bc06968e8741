"""Typed exceptions. Every error the daemon answers carries its `code` and `message`
(`{"error": {"code": ..., "message": ...}}`); `str(exc)` is the server's message."""
from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, Dict, Optional, Type

if TYPE_CHECKING:
    from .models import CommandResult


class SafehouseError(Exception):
    """Base of every error raised by the SDK."""

    def __init__(self, message: str, *, status: Optional[int] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class InvalidRequestError(SafehouseError):
    """400: the request (or the policy in it) is invalid; the message says what to change."""


class AuthenticationError(SafehouseError):
    """401: missing, invalid or revoked API key."""


class ForbiddenError(SafehouseError):
    """403: the key may not do this (e.g. an admin route), or a forbidden Host/Origin."""


class NotFoundError(SafehouseError):
    """404: no such sandbox (or another tenant's), process, file or directory."""


class SandboxNotRunningError(SafehouseError):
    """409: the sandbox is killed, expired or failed."""


class QuotaExceededError(SafehouseError):
    """413: the sandbox's disk quota (or a body size limit) was exceeded."""


class PolicyRefusedError(SafehouseError):
    """422: the policy is valid but cannot be enforced on this host."""


class SandboxFrozenError(SandboxNotRunningError):
    """409 `frozen`: the sandbox is frozen; thaw it (`sbx.thaw()`) first."""


class SandboxPausedError(SandboxNotRunningError):
    """409 `paused`: the sandbox is paused; resume it (`sbx.resume()`) first, or create it
    with `lifecycle={"auto_resume": True}`."""


class ConflictError(SafehouseError):
    """409 `conflict`: a name is taken, or a volume is still mounted; `running` (the E2B front's
    resume of a sandbox that already runs)."""


class PathConflictError(SafehouseError):
    """409 `already_exists` / `directory_not_empty`: the path is in the way."""


class MethodNotAllowedError(SafehouseError):
    """405: the route does not take that method (an SDK/daemon version mismatch)."""


class CapacityError(SafehouseError):
    """503 `capacity`: the daemon is full (sandboxes, file watches, proxied connections)."""


class AuditOffError(SafehouseError):
    """503 `audit_off`: the daemon runs without an audit log."""


class NoPolicyError(SafehouseError):
    """409 `no_policy`: the sandbox was recorded without a policy, so there is nothing to explain."""


class RateLimitError(SafehouseError):
    """429: too many requests of one kind (`too_many_tickets`: attach tickets outstanding for this
    key); wait for some to be used or expire, then retry."""


class TenantQuotaError(RateLimitError):
    """429 `tenant_quota`: the key's tenant is over one of its quotas (running sandboxes, their
    memory or disk, the rate of creates or commands); the message names the quota and its value.
    Kill or pause sandboxes, slow down, or have the operator raise it (`safehouse serve
    --tenant-quota`)."""


class ServerError(SafehouseError):
    """500 `internal`: the daemon failed; its log has the detail."""


class PortError(SafehouseError):
    """502/504/501 from the port proxy: `port_closed`, `port_unreachable`, `port_timeout`,
    `bad_gateway`, `unsupported`."""


class SafehouseTimeoutError(SafehouseError, builtins.TimeoutError):
    """The client gave up waiting (HTTP timeout, or a command handle's wait timeout)."""


class CommandExitException(SafehouseError):
    """A command exited non-zero (or was killed / timed out). Carries the result, like E2B."""

    def __init__(self, result: "CommandResult") -> None:
        why = result.error or f"command failed (exit code {result.exit_code})"
        # The end of stderr, so that a logged exception says why the command failed.
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])[-1000:]
        super().__init__(f"{why}; stderr: {tail}" if tail else why)
        self.result = result

    @property
    def stdout(self) -> str:
        return self.result.stdout

    @property
    def stderr(self) -> str:
        return self.result.stderr

    @property
    def exit_code(self) -> Optional[int]:
        return self.result.exit_code

    @property
    def error(self) -> Optional[str]:
        return self.result.error


# E2B-compatible names, so porting code keeps its `except` clauses.
SandboxException = SafehouseError
AuthenticationException = AuthenticationError
NotFoundException = NotFoundError
InvalidArgumentException = InvalidRequestError
TimeoutException = SafehouseTimeoutError
NotEnoughSpaceException = QuotaExceededError

_BY_STATUS: Dict[int, Type[SafehouseError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    408: SafehouseTimeoutError,
    409: SandboxNotRunningError,
    413: QuotaExceededError,
    422: PolicyRefusedError,
    429: RateLimitError,
    500: ServerError,
    501: PortError,
    502: PortError,
    503: CapacityError,
    504: PortError,
}
#: Every `error.code` the daemon emits (crates/http/src/errors.rs, ports.rs, hosts.rs,
#: json.rs; crates/hostfs/src/error.rs; crates/api/src/audit.rs, processes.rs) and its
#: class; tests check the list.
ERROR_CODES: Dict[str, Type[SafehouseError]] = {
    "invalid_request": InvalidRequestError,
    "websocket_required": InvalidRequestError,
    "invalid_path": InvalidRequestError,
    "not_a_directory": InvalidRequestError,
    "is_a_directory": InvalidRequestError,
    "not_a_regular_file": InvalidRequestError,
    "too_many_entries": InvalidRequestError,
    "unauthorized": AuthenticationError,
    "forbidden": ForbiddenError,
    "forbidden_host": ForbiddenError,
    "forbidden_origin": ForbiddenError,
    "permission_denied": ForbiddenError,
    "not_found": NotFoundError,
    "method_not_allowed": MethodNotAllowedError,
    "request_timeout": SafehouseTimeoutError,
    "not_running": SandboxNotRunningError,
    "frozen": SandboxFrozenError,
    "paused": SandboxPausedError,
    "conflict": ConflictError,
    "running": ConflictError,
    "already_exists": PathConflictError,
    "directory_not_empty": PathConflictError,
    "body_too_large": QuotaExceededError,
    "quota_exceeded": QuotaExceededError,
    "policy_refused": PolicyRefusedError,
    "no_policy": NoPolicyError,
    "too_many_tickets": RateLimitError,
    "tenant_quota": TenantQuotaError,
    "internal": ServerError,
    "unsupported": PortError,
    "port_closed": PortError,
    "port_unreachable": PortError,
    "bad_gateway": PortError,
    "port_timeout": PortError,
    "capacity": CapacityError,
    "agent_timeout": SafehouseTimeoutError,
    "audit_off": AuditOffError,
}
_BY_CODE = ERROR_CODES

#: The daemon's hints name its HTTP routes; an SDK user gets the SDK's call instead.
_HINTS = (
    ("check the id with GET /v1/sandboxes", "check the id with Sandbox.list()"),
    ("see GET /v1/keys", "see Admin.list_keys()"),
)


def error_from_response(status: int, body: bytes) -> SafehouseError:
    """The typed exception for an error response (the body is the daemon's JSON error)."""
    import json

    code: Optional[str] = None
    message = ""
    try:
        data: Any = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            code = err.get("code")
            message = str(err.get("message", ""))
    except ValueError:
        pass
    if not message:
        message = body.decode(errors="replace")[:500] or f"HTTP {status}"
    for route, call in _HINTS:
        message = message.replace(route, call)
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status, SafehouseError)
    return cls(message, status=status, code=code)

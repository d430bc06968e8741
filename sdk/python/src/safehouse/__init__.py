"""Python SDK of safehouse, an isolation runtime for AI agents.

    from safehouse import Sandbox

    with Sandbox.create() as sbx:
        print(sbx.commands.run("echo hello").stdout)

The daemon is found through SAFEHOUSE_URL (default http://127.0.0.1:8700) and the key
through SAFEHOUSE_API_KEY; both can be passed to create/connect/list as url= and api_key=.
"""
from ._streams import AsyncEventStream, AsyncWatchHandle, EventStream, WatchHandle
from .admin import Admin, AsyncAdmin, FleetResult, KillAllResult
from .async_sandbox import AsyncCommandHandle, AsyncCommands, AsyncFilesystem, AsyncPty, AsyncSandbox
from .exceptions import (ERROR_CODES, AuditOffError, AuthenticationError, AuthenticationException, CapacityError,
                         CommandExitException, ForbiddenError, InvalidArgumentException, InvalidRequestError,
                         MethodNotAllowedError, NoPolicyError, NotEnoughSpaceException, NotFoundError, NotFoundException,
                         PathConflictError, PolicyRefusedError, PortError, QuotaExceededError, RateLimitError, SafehouseError,
                         SafehouseTimeoutError, SandboxException, SandboxFrozenError, SandboxNotRunningError,
                         SandboxPausedError, ConflictError, ServerError, TenantQuotaError, TimeoutException)
from .models import (ApiKey, CommandResult, EntryInfo, FileInfo, FilesystemEvent, FilesystemEventType, FileType,
                     Metrics, MetricsSample, ProcessInfo, PtySize, SandboxEvent, SandboxInfo, WriteEntry)
from .policy import Policy
from .sandbox import CommandHandle, Commands, Filesystem, Pty, Sandbox
from .volumes import AsyncVolume, AsyncVolumeFilesystem, Volume, VolumeFilesystem, VolumeInfo

__version__ = "0.1.0"

from .code import Context, Execution, ExecutionError, Logs, OutputMessage, Result

__all__ = [
    "Sandbox", "AsyncSandbox", "Commands", "AsyncCommands", "Filesystem", "AsyncFilesystem",
    "CommandHandle", "AsyncCommandHandle", "Pty", "AsyncPty", "WatchHandle", "AsyncWatchHandle",
    "EventStream", "AsyncEventStream", "Admin", "AsyncAdmin", "KillAllResult", "FleetResult",
    "CommandResult", "EntryInfo", "FileInfo", "FileType", "FilesystemEvent", "FilesystemEventType",
    "Metrics", "MetricsSample", "ProcessInfo", "PtySize", "WriteEntry", "SandboxEvent", "SandboxInfo", "ApiKey",
    "Policy",
    "Execution", "ExecutionError", "Result", "Logs", "Context", "OutputMessage",
    "Policy", "Volume", "AsyncVolume", "VolumeInfo", "VolumeFilesystem", "AsyncVolumeFilesystem",
    "SafehouseError", "InvalidRequestError", "AuthenticationError", "ForbiddenError", "NotFoundError",
    "MethodNotAllowedError", "SandboxNotRunningError", "SandboxFrozenError", "SandboxPausedError", "ConflictError", "PathConflictError",
    "QuotaExceededError", "PolicyRefusedError", "SafehouseTimeoutError", "CapacityError", "AuditOffError",
    "NoPolicyError", "RateLimitError", "TenantQuotaError", "ServerError", "PortError", "CommandExitException", "ERROR_CODES",
    "SandboxException", "AuthenticationException", "NotFoundException", "InvalidArgumentException",
    "TimeoutException", "NotEnoughSpaceException",
]

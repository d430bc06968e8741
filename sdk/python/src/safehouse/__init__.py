"""Python SDK of safehouse, an isolation runtime for AI agents.

    from safehouse import Sandbox

    with Sandbox.create() as sbx:
        print(sbx.commands.run("echo hello").stdout)

The daemon is found through SAFEHOUSE_URL (default http://127.0.0.1:8700) and the key
through SAFEHOUSE_API_KEY; both can be passed to create/connect/list as url= and api_key=.
"""
from .async_sandbox import AsyncCommandHandle, AsyncCommands, AsyncFilesystem, AsyncSandbox
from .exceptions import (AuthenticationError, AuthenticationException, CommandExitException, ForbiddenError,
                         InvalidArgumentException, InvalidRequestError, NotEnoughSpaceException, NotFoundError,
                         NotFoundException, PolicyRefusedError, QuotaExceededError, SafehouseError,
                         SafehouseTimeoutError, SandboxException, SandboxNotRunningError, TimeoutException)
from .models import CommandResult, EntryInfo, FileInfo, FileType, ProcessInfo, SandboxInfo
from .policy import Policy
from .sandbox import CommandHandle, Commands, Filesystem, Sandbox

__version__ = "0.1.0"

__all__ = [
    "Sandbox", "AsyncSandbox", "Commands", "AsyncCommands", "Filesystem", "AsyncFilesystem",
    "CommandHandle", "AsyncCommandHandle", "CommandResult", "EntryInfo", "FileInfo", "FileType",
    "ProcessInfo", "SandboxInfo", "Policy",
    "SafehouseError", "InvalidRequestError", "AuthenticationError", "ForbiddenError", "NotFoundError",
    "SandboxNotRunningError", "QuotaExceededError", "PolicyRefusedError", "SafehouseTimeoutError",
    "CommandExitException",
    "SandboxException", "AuthenticationException", "NotFoundException", "InvalidArgumentException",
    "TimeoutException", "NotEnoughSpaceException",
]

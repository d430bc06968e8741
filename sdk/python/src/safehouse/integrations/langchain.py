"""LangChain tools that run in a safehouse sandbox (`pip install "safehouse[langchain]"`).

    from safehouse import Sandbox
    from safehouse.integrations.langchain import SafehouseToolkit

    with Sandbox.create() as sbx:
        tools = SafehouseToolkit(sandbox=sbx).get_tools()   # shell, python, read_file, write_file
        print(tools[0].invoke({"command": "echo hi"}))

Every tool answers with text a model can act on: the exit code, stdout and stderr of a
command, and for anything the sandbox refused, what refused it and why (the daemon's message)
instead of an exception.
"""
from __future__ import annotations

import asyncio
import functools
from typing import Any, Iterable, List, Optional, Sequence, Type, Union

try:
    from langchain_core.tools import BaseTool, BaseToolkit
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("safehouse.integrations.langchain needs langchain-core: "
                      "pip install 'safehouse[langchain]' (or pip install langchain-core)") from e

from ..exceptions import (ForbiddenError, PolicyRefusedError, SafehouseError, SafehouseTimeoutError,
                          SandboxNotRunningError)
from ..code import Execution
from ..models import CommandResult, SandboxEvent
from ..async_sandbox import AsyncSandbox
from ..sandbox import Sandbox

#: Longest stdout or stderr a tool hands back to the model (the rest is cut, and said so).
MAX_OUTPUT_CHARS = 20_000

__all__ = ["SafehouseToolkit", "SafehouseShellTool", "SafehousePythonTool", "SafehouseCodeInterpreterTool",
           "SafehouseReadFileTool", "SafehouseWriteFileTool", "MAX_OUTPUT_CHARS", "format_execution"]


def _clip(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f"\n...[truncated: {len(text) - MAX_OUTPUT_CHARS} more characters]"


def _denial_hint(r: CommandResult) -> Optional[str]:
    """Why a command most likely failed, when the sandbox's policy (not the code) stopped it."""
    if r.oom_killed:
        return "the command was killed for using more memory than the sandbox allows"
    if r.timed_out:
        return "the command was killed when its time limit ran out"
    if r.exit_code == 126 and "Permission denied" in r.stderr:
        return ("the sandbox's policy does not allow running this program (tools.allow); "
                "use an allowed tool instead")
    out = r.stdout + r.stderr
    if "safehouse gateway denied" in out or "tunnel failed, response 403" in out:
        return "the sandbox's network policy refused the connection (the host:port is not in network.allow)"
    if "Could not resolve host" in out or "Temporary failure in name resolution" in out:
        return "the sandbox may have no network access (an empty network.allow means loopback only)"
    return None


#: At most this many network denials are named in one tool answer.
_MAX_NET_DENIALS = 3


def net_denials(events: Iterable[SandboxEvent], last_arg: str) -> List[str]:
    """The gateway's refusals (`net.denied` events) during the last API exec whose last
    argument is LAST_ARG (between its `exec.started` and `exec.exited`), one line each."""
    evs = list(events)
    key = last_arg[:256]
    start = None
    for i, ev in enumerate(evs):
        argv = ev.data.get("argv") if ev.kind == "exec.started" else None
        if isinstance(argv, list) and argv and str(argv[-1]).startswith(key):
            start = i
    if start is None:
        return []
    pid = evs[start].data.get("pid")
    out: List[str] = []
    for ev in evs[start + 1:]:
        if ev.kind == "exec.exited" and ev.data.get("pid") == pid:
            break
        if ev.kind != "net.denied":
            continue
        d = ev.data
        line = f"the network policy refused {d.get('target', '?')} (rule: {d.get('rule', '?')}; {d.get('reason', '')})"
        if line not in out:
            out.append(line)
    return out[:_MAX_NET_DENIALS]


def format_result(r: CommandResult, denials: Sequence[str] = ()) -> str:
    """The text a tool returns for a command: exit code, stdout, stderr, and what the sandbox
    refused (DENIALS: the gateway's refusals during the run)."""
    lines = [f"exit code: {r.exit_code if r.exit_code is not None else 'none'}"]
    if r.signal is not None:
        lines.append(f"killed by signal {r.signal}")
    lines.extend(f"denied: {d}" for d in denials)
    hint = None if denials else _denial_hint(r)
    if hint:
        lines.append(f"denied: {hint}")
    lines.append("stdout:\n" + (_clip(r.stdout) if r.stdout else "(empty)"))
    lines.append("stderr:\n" + (_clip(r.stderr) if r.stderr else "(empty)"))
    return "\n".join(lines)


def format_error(action: str, e: SafehouseError) -> str:
    """The text a tool returns when the daemon refused the request."""
    if isinstance(e, (ForbiddenError, PolicyRefusedError)):
        return f"denied: {action} was refused by the sandbox's policy: {e.message}"
    if isinstance(e, SandboxNotRunningError):
        return f"error: {action} failed, the sandbox is not running: {e.message}"
    if isinstance(e, SafehouseTimeoutError):
        return f"error: {action} timed out: {e.message}"
    code = f" ({e.code})" if e.code else ""
    return f"error{code}: {action} failed: {e.message}"


class _SandboxTool(BaseTool):
    """A tool bound to one sandbox: a `Sandbox` (invoke or ainvoke; ainvoke runs the call in
    a worker thread) or an `AsyncSandbox` (ainvoke only)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    sandbox: Any = Field(exclude=True)
    timeout: float = 60.0

    def _run(self, *args: Any, **kw: Any) -> str:
        kw.pop("run_manager", None)
        if isinstance(self.sandbox, AsyncSandbox):
            raise TypeError(f"{self.name} is bound to an AsyncSandbox: call it with `await tool.ainvoke(...)`")
        return self._call(self.sandbox, **kw)

    async def _arun(self, *args: Any, **kw: Any) -> str:
        kw.pop("run_manager", None)
        if isinstance(self.sandbox, AsyncSandbox):
            return await self._acall(self.sandbox, **kw)
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._call, self.sandbox, **kw))

    def _call(self, sbx: Sandbox, **kw: Any) -> str:
        raise NotImplementedError

    async def _acall(self, sbx: AsyncSandbox, **kw: Any) -> str:
        raise NotImplementedError

    @staticmethod
    def _answer(sbx: Sandbox, r: CommandResult, last_arg: str) -> str:
        """format_result, naming the network refusals of a failed run (read from the sandbox's
        events: one more request, on failure only)."""
        denials: List[str] = []
        if r.exit_code != 0:
            try:
                with sbx.events(follow=False, timeout=10) as events:
                    denials = net_denials(events, last_arg)
            except SafehouseError:
                pass
        return format_result(r, denials)

    @staticmethod
    async def _aanswer(sbx: AsyncSandbox, r: CommandResult, last_arg: str) -> str:
        denials: List[str] = []
        if r.exit_code != 0:
            try:
                async with sbx.events(follow=False, timeout=10) as events:
                    denials = net_denials([ev async for ev in events], last_arg)
            except SafehouseError:
                pass
        return format_result(r, denials)


class ShellInput(BaseModel):
    command: str = Field(description="A shell command line, run by /bin/sh -c in /workspace.")
    timeout: Optional[float] = Field(default=None, description="Seconds before the command is killed.")


class SafehouseShellTool(_SandboxTool):
    name: str = "safehouse_shell"
    description: str = ("Run a shell command in an isolated Linux sandbox. Returns the exit code, stdout and "
                        "stderr. Files persist in the sandbox between calls; the working directory is /workspace.")
    args_schema: Type[BaseModel] = ShellInput

    def _call(self, sbx: Sandbox, command: str = "", timeout: Optional[float] = None, **_: Any) -> str:
        try:
            r = sbx.commands.run(command, timeout=timeout or self.timeout, raise_on_error=False)
        except SafehouseError as e:
            return format_error(f"running `{command}`", e)
        return self._answer(sbx, r, command)

    async def _acall(self, sbx: AsyncSandbox, command: str = "", timeout: Optional[float] = None, **_: Any) -> str:
        try:
            r = await sbx.commands.run(command, timeout=timeout or self.timeout, raise_on_error=False)
        except SafehouseError as e:
            return format_error(f"running `{command}`", e)
        return await self._aanswer(sbx, r, command)


class PythonInput(BaseModel):
    code: str = Field(description="Python 3 source to run; print what you want to see.")
    timeout: Optional[float] = Field(default=None, description="Seconds before the run is killed.")


class SafehousePythonTool(_SandboxTool):
    name: str = "safehouse_python"
    description: str = ("Run Python 3 code in an isolated Linux sandbox (python3 -c). Returns the exit code, "
                        "stdout and stderr (a traceback on error). Print results to see them.")
    args_schema: Type[BaseModel] = PythonInput

    def _call(self, sbx: Sandbox, code: str = "", timeout: Optional[float] = None, **_: Any) -> str:
        try:
            r = sbx.commands.run(["python3", "-c", code], timeout=timeout or self.timeout, raise_on_error=False)
        except SafehouseError as e:
            return format_error("running the Python code", e)
        return self._answer(sbx, r, code)

    async def _acall(self, sbx: AsyncSandbox, code: str = "", timeout: Optional[float] = None, **_: Any) -> str:
        try:
            r = await sbx.commands.run(["python3", "-c", code], timeout=timeout or self.timeout,
                                       raise_on_error=False)
        except SafehouseError as e:
            return format_error("running the Python code", e)
        return await self._aanswer(sbx, r, code)


class CodeInput(BaseModel):
    code: str = Field(description="Python source for a notebook cell; the value of its last line is shown.")
    timeout: Optional[float] = Field(default=None, description="Seconds before the kernel is interrupted.")


def format_execution(ex: Execution) -> str:
    """The text a code-interpreter answer gives the model: output, the cell's value, the
    error with its traceback, and how many images (charts) came with it."""
    lines = []
    if ex.stdout:
        lines.append("stdout:\n" + _clip(ex.stdout))
    if ex.stderr:
        lines.append("stderr:\n" + _clip(ex.stderr))
    if ex.text is not None:
        lines.append("result:\n" + _clip(ex.text))
    images = sum(1 for r in ex.results if r.png or r.jpeg or r.svg)
    if images:
        lines.append(f"{images} image(s) displayed (charts); their data is in the Execution's results")
    if ex.error is not None:
        lines.append(f"error: {ex.error.name}: {ex.error.value}\n" + _clip(ex.error.traceback))
    return "\n".join(lines) or "ok (no output)"


class SafehouseCodeInterpreterTool(_SandboxTool):
    """A stateful notebook: each call runs in the sandbox's code interpreter (a Jupyter
    kernel), so variables, imports and DataFrames persist between calls."""
    name: str = "safehouse_code_interpreter"
    description: str = ("Run Python in a stateful Jupyter kernel inside an isolated sandbox, like a notebook "
                        "cell: variables and imports persist between calls, the last expression's value is "
                        "returned, matplotlib charts are captured, errors come with their traceback.")
    args_schema: Type[BaseModel] = CodeInput

    def _call(self, sbx: Sandbox, code: str = "", timeout: Optional[float] = None, **_: Any) -> str:
        try:
            return format_execution(sbx.run_code(code, timeout=timeout or self.timeout))
        except SafehouseError as e:
            return format_error("running the code", e)

    async def _acall(self, sbx: AsyncSandbox, code: str = "", timeout: Optional[float] = None, **_: Any) -> str:
        try:
            return format_execution(await sbx.run_code(code, timeout=timeout or self.timeout))
        except SafehouseError as e:
            return format_error("running the code", e)



class ReadFileInput(BaseModel):
    path: str = Field(description="Absolute path in the sandbox, e.g. /workspace/notes.txt.")


class SafehouseReadFileTool(_SandboxTool):
    name: str = "safehouse_read_file"
    description: str = "Read a text file from the sandbox. Returns its content."
    args_schema: Type[BaseModel] = ReadFileInput

    def _call(self, sbx: Sandbox, path: str = "", **_: Any) -> str:
        try:
            return _clip(sbx.files.read(path))
        except SafehouseError as e:
            return format_error(f"reading {path}", e)

    async def _acall(self, sbx: AsyncSandbox, path: str = "", **_: Any) -> str:
        try:
            return _clip(await sbx.files.read(path))
        except SafehouseError as e:
            return format_error(f"reading {path}", e)


class WriteFileInput(BaseModel):
    path: str = Field(description="Absolute path in the sandbox; parent directories are created.")
    content: str = Field(description="The whole new content of the file.")


class SafehouseWriteFileTool(_SandboxTool):
    name: str = "safehouse_write_file"
    description: str = "Write a text file in the sandbox (replacing it). Returns the path and size written."
    args_schema: Type[BaseModel] = WriteFileInput

    def _call(self, sbx: Sandbox, path: str = "", content: str = "", **_: Any) -> str:
        try:
            info = sbx.files.write(path, content)
        except SafehouseError as e:
            return format_error(f"writing {path}", e)
        return f"wrote {info.size} bytes to {info.path}"

    async def _acall(self, sbx: AsyncSandbox, path: str = "", content: str = "", **_: Any) -> str:
        try:
            info = await sbx.files.write(path, content)
        except SafehouseError as e:
            return format_error(f"writing {path}", e)
        return f"wrote {info.size} bytes to {info.path}"


class SafehouseToolkit(BaseToolkit):
    """The four tools over one sandbox: `SafehouseToolkit(sandbox=sbx).get_tools()`
    (`SafehouseToolkit(sbx)` works too). SANDBOX is a Sandbox (tools work with invoke and
    ainvoke) or an AsyncSandbox (ainvoke). TIMEOUT is the default seconds per command."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    sandbox: Any = Field(exclude=True)
    timeout: float = 60.0

    def __init__(self, sandbox: Optional[Union[Sandbox, AsyncSandbox]] = None, **kw: Any) -> None:
        if sandbox is not None:
            kw["sandbox"] = sandbox
        super().__init__(**kw)

    def get_tools(self) -> List[BaseTool]:
        kw = {"sandbox": self.sandbox, "timeout": self.timeout}
        return [SafehouseShellTool(**kw), SafehousePythonTool(**kw), SafehouseReadFileTool(**kw),
                SafehouseWriteFileTool(**kw)]

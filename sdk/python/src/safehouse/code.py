"""The code interpreter's results, in E2B's shape (`e2b_code_interpreter.Execution`):
`run_code` returns an Execution with `.results` (the last expression's value and every
display: text, html, png, svg, json, chart, ...), `.logs` (stdout and stderr) and `.error`
(`name`, `value`, `traceback`). The daemon streams one JSON object per line; `parse_line`
folds each into the Execution and calls the matching callback."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

RESULT_FORMATS = ("text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript",
                  "chart")


@dataclass
class ExecutionError:
    """An exception raised by the code: its class name, its message, the traceback."""
    name: str
    value: str
    traceback: str

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


@dataclass
class OutputMessage:
    """A piece of stdout or stderr as it came (`timestamp`: Unix nanoseconds)."""
    line: str
    timestamp: int
    error: bool = False

    def __str__(self) -> str:
        return self.line


class Result:
    """One display or the cell's value: every format it has (`.text`, `.html`, `.png`
    (base64), `.svg`, `.json`, `.chart` (a dict a client can redraw), ...); `.is_main_result`
    for the last expression's value."""

    def __init__(self, is_main_result: bool = False, extra: Optional[Dict[str, Any]] = None,
                 **formats: Any) -> None:
        self.is_main_result = is_main_result
        self.extra = extra
        for f in RESULT_FORMATS:
            setattr(self, f, formats.get(f))

    def formats(self) -> List[str]:
        out = [f for f in RESULT_FORMATS if getattr(self, f) is not None]
        return out + list(self.extra or {})

    def __getitem__(self, item: str) -> Any:
        return getattr(self, item)

    def __repr__(self) -> str:
        text = getattr(self, "text")
        return f"Result({text})" if text else f"Result(Formats: {', '.join(self.formats())})"

    def _repr_html_(self) -> Optional[str]:
        return getattr(self, "html")

    def _repr_png_(self) -> Optional[str]:
        return getattr(self, "png")


@dataclass
class Logs:
    stdout: List[str] = field(default_factory=list)
    stderr: List[str] = field(default_factory=list)


@dataclass
class Execution:
    """What one `run_code` produced."""
    results: List[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: Optional[ExecutionError] = None
    execution_count: Optional[int] = None

    @property
    def text(self) -> Optional[str]:
        """The text of the last expression's value, if the code ended with one."""
        for r in self.results:
            if r.is_main_result:
                return getattr(r, "text")
        return None

    @property
    def stdout(self) -> str:
        return "".join(self.logs.stdout)

    @property
    def stderr(self) -> str:
        return "".join(self.logs.stderr)

    def to_json(self) -> str:
        return json.dumps({
            "results": [{f: r[f] for f in r.formats() if f in RESULT_FORMATS} for r in self.results],
            "logs": {"stdout": self.logs.stdout, "stderr": self.logs.stderr},
            "error": None if self.error is None else vars(self.error),
        })


@dataclass
class Context:
    """A context: its own kernel with its own state, language, working directory."""
    id: str
    language: str
    cwd: str
    state: str = "running"
    default: bool = False

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Context":
        return cls(id=d["id"], language=d["language"], cwd=d["cwd"], state=d.get("state", "running"),
                   default=bool(d.get("default")))


Callback = Optional[Callable[[Any], Any]]


def parse_line(execution: Execution, line: str) -> Optional[tuple]:
    """Folds one line of the stream into EXECUTION; returns (callback name, argument) for
    the caller to call, or None."""
    if not line.strip():
        return None
    d = json.loads(line)
    kind = d.pop("type", None)
    if kind == "stdout":
        execution.logs.stdout.append(d["text"])
        return "on_stdout", OutputMessage(d["text"], d.get("timestamp", 0), False)
    if kind == "stderr":
        execution.logs.stderr.append(d["text"])
        return "on_stderr", OutputMessage(d["text"], d.get("timestamp", 0), True)
    if kind == "result":
        r = Result(**{k: v for k, v in d.items() if k in RESULT_FORMATS or k in ("is_main_result", "extra")})
        execution.results.append(r)
        return "on_result", r
    if kind == "error":
        execution.error = ExecutionError(d.get("name", ""), d.get("value", ""), d.get("traceback", ""))
        return "on_error", execution.error
    if kind == "number_of_executions":
        execution.execution_count = d.get("execution_count")
    return None


def code_body(code: str, language: Optional[str], context: Optional[Any], envs: Optional[Dict[str, str]],
              timeout: Optional[float]) -> Dict[str, Any]:
    if language and context:
        raise ValueError("run_code: give a language or a context, not both (a context has its language)")
    body: Dict[str, Any] = {"code": code}
    if language:
        body["language"] = language
    if context is not None:
        body["context"] = context.id if isinstance(context, Context) else str(context)
    if envs:
        body["env"] = dict(envs)
    if timeout:
        body["timeout_s"] = timeout
    return body


def contexts_of(items: Iterable[Dict[str, Any]]) -> List[Context]:
    return [Context.from_json(c) for c in items]


# Languages the interpreter has no kernel for: each call is a fresh process.
ONE_SHOT_LANGUAGES = ("javascript", "js", "node")


def execution_of_command(r: Any) -> Execution:
    """A one-shot command's result (CommandResult) as an Execution."""
    ex = Execution(logs=Logs(stdout=[r.stdout] if r.stdout else [], stderr=[r.stderr] if r.stderr else []))
    if r.exit_code != 0:
        ex.error = ExecutionError("ExitStatus", r.error or f"exit status {r.exit_code}", r.stderr)
    return ex

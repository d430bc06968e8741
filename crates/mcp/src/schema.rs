//! What `tools/list` says about each tool: a description for the model, a JSON Schema of
//! its arguments and one of its structured result.

use safehouse_manager::limits::MAX_TIMEOUT_S;
use serde_json::{json, Value};

const SANDBOX_ID: &str = "The sandbox's id (sb_...), from sandbox_create or sandbox_list";

fn sandbox_id() -> Value {
    json!({"type": "string", "description": SANDBOX_ID})
}

fn string_map(description: &str) -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}, "description": description})
}

fn timeout() -> Value {
    json!({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S,
           "description": "Seconds before the command is killed (it then reports timed_out)"})
}

/// The result of a command: what run_command and run_code return.
fn exec_output() -> Value {
    json!({
        "type": "object",
        "properties": {
            "sandbox_id": {"type": "string"},
            "one_shot": {"type": "boolean", "description": "the sandbox was made for this call and is gone"},
            "exit_code": {"type": ["integer", "null"], "description": "null when killed by a signal"},
            "signal": {"type": ["integer", "null"]},
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "stdout_truncated": {"type": "boolean"},
            "stderr_truncated": {"type": "boolean"},
            "timed_out": {"type": "boolean"},
            "oom_killed": {"type": "boolean"},
            "wall_ms": {"type": "integer"},
            "cpu_ms": {"type": "integer"},
            "peak_memory_bytes": {"type": ["integer", "null"]},
            "network_denials": {
                "type": "array",
                "description": "requests the sandbox's network policy refused while the command ran",
                "items": {"type": "object", "properties": {
                    "target": {"type": "string"}, "rule": {"type": ["string", "null"]}, "reason": {"type": "string"}
                }}
            }
        },
        "required": ["sandbox_id", "exit_code", "stdout", "stderr", "timed_out", "oom_killed", "wall_ms", "cpu_ms",
                     "network_denials"]
    })
}

/// run_code's result: a one-shot run's is exec_output's; an interpreter run's has results,
/// error and execution_count instead of the exit status and resource use.
fn code_output() -> Value {
    let mut v = exec_output();
    let props = v["properties"].as_object_mut().expect("an object");
    props.insert("results".into(), json!({
        "type": "array",
        "description": "the last expression's value (is_main_result) and every display, with its formats (text, html, png, chart, ...); images come as image content",
        "items": {"type": "object"}
    }));
    props.insert(
        "error".into(),
        json!({
            "type": ["object", "null"],
            "description": "the exception the code raised: {name, value, traceback}",
        }),
    );
    props.insert("execution_count".into(), json!({"type": ["integer", "null"]}));
    v["required"] = json!(["sandbox_id", "stdout", "stderr", "network_denials"]);
    v
}
/// A sandbox's states, as the API names them.
const STATES: [&str; 6] = ["running", "frozen", "paused", "killed", "expired", "failed"];

fn sandbox_info() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": STATES},
            "created_at": {"type": "string"},
            "expires_at": {"type": "string"},
            "preset": {"type": "string"},
            "storage": {"type": "string", "enum": ["memory", "disk"]},
            "created_by": {"type": "string", "description": "the id of the API key that created it"},
            "metadata": {"type": "object"}
        },
        "required": ["id", "state", "expires_at"]
    })
}

fn file_info() -> Value {
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "name": {"type": "string"},
            "type": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
            "size": {"type": "integer"},
            "mode": {"type": "integer"},
            "mtime": {"type": "string"},
            "symlink_target": {"type": "string"}
        },
        "required": ["path", "type", "size"]
    })
}

/// The `tools/list` entry of tool `name`.
pub fn describe(name: &str) -> Value {
    let (title, description, input, output) = match name {
        "sandbox_create" => (
            "Create a sandbox",
            "Create an isolated Linux sandbox and return its id. Give a preset (default, offline, workspace, pypi, \
             github, web-research) or a policy (a TOML document as a string, or its JSON form); without either the \
             `default` preset applies: host system read-only, writable /workspace and /tmp, no network. The \
             sandbox lives until timeout_s (default 300) or sandbox_kill, and is killed when this MCP session \
             ends unless keep is true.",
            json!({
                "type": "object",
                "properties": {
                    "preset": {"type": "string", "description": "A built-in policy by name",
                               "enum": ["default", "offline", "workspace", "pypi", "github", "web-research"]},
                    "policy": {"type": ["string", "object"],
                               "description": "A policy: TOML text (docs/POLICY.md) or its JSON form"},
                    "template": {"type": "string",
                                 "description": "A template or image of the daemon's image store as the \
                                                 sandbox's root filesystem (its own tools and packages instead \
                                                 of the host's); the operator builds them with `safehouse \
                                                 template build`"},
                    "timeout_s": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_S,
                                  "description": "Lifetime in seconds"},
                    "env": string_map("Environment of every command run in the sandbox"),
                    "metadata": string_map("Labels, listed by sandbox_list"),
                    "keep": {"type": "boolean", "default": false,
                             "description": "Keep the sandbox when this MCP session ends"},
                    "storage": {"type": "string", "enum": ["memory", "disk"],
                                "description": "Where its files live: memory (the default) or disk (needed to \
                                                sandbox_pause it; capped at the policy's limits.disk)"},
                    "lifecycle": {
                        "type": "object",
                        "description": "What happens at the deadline and when idle (implies storage disk)",
                        "properties": {
                            "on_timeout": {"type": "string", "enum": ["kill", "pause"], "default": "kill"},
                            "auto_resume": {"type": "boolean", "default": false,
                                            "description": "Any call to the paused sandbox resumes it"},
                            "idle_timeout_s": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_S,
                                               "description": "Pause (or kill) after this long without a call"}
                        },
                        "additionalProperties": false
                    }
                },
                "additionalProperties": false
            }),
            sandbox_info(),
        ),
        "sandbox_list" => (
            "List sandboxes",
            "List this API key's sandboxes with their state and expiry.",
            json!({
                "type": "object",
                "properties": {
                    "state": {"type": "string", "enum": STATES}
                },
                "additionalProperties": false
            }),
            json!({"type": "object", "properties": {"sandboxes": {"type": "array", "items": sandbox_info()}},
                   "required": ["sandboxes"]}),
        ),
        "sandbox_kill" => (
            "Kill a sandbox",
            "Kill a sandbox: every process in it ends and its files are gone.",
            json!({"type": "object", "properties": {"sandbox_id": sandbox_id()}, "required": ["sandbox_id"],
                   "additionalProperties": false}),
            json!({"type": "object", "properties": {"sandbox_id": {"type": "string"}, "state": {"type": "string"}},
                   "required": ["sandbox_id", "state"]}),
        ),
        "sandbox_pause" => (
            "Pause a sandbox",
            "Pause a sandbox made with storage disk: every process stops and its memory is freed; its files \
             stay on disk (and survive a daemon restart) until sandbox_resume or sandbox_kill. On this tier \
             the processes' memory is not kept (memory: false): a resumed sandbox has its files, not its \
             running processes.",
            json!({"type": "object", "properties": {"sandbox_id": sandbox_id()}, "required": ["sandbox_id"],
                   "additionalProperties": false}),
            json!({"type": "object", "properties": {
                       "sandbox_id": {"type": "string"}, "state": {"type": "string"},
                       "filesystem": {"type": "boolean", "description": "the files were kept"},
                       "memory": {"type": "boolean", "description": "the processes' memory was kept"},
                       "note": {"type": "string"}},
                   "required": ["sandbox_id", "state", "filesystem", "memory", "note"]}),
        ),
        "sandbox_resume" => (
            "Resume a paused sandbox",
            "Resume a paused sandbox: it runs again with the same id, files, environment and policy, and a \
             fresh deadline. Resuming a running sandbox answers it as it is.",
            json!({"type": "object", "properties": {"sandbox_id": sandbox_id()}, "required": ["sandbox_id"],
                   "additionalProperties": false}),
            sandbox_info(),
        ),
        "run_command" => (
            "Run a command in a sandbox",
            "Run a command to completion in a sandbox and return its exit code, stdout, stderr (each cut at \
             64 KiB), wall and CPU time, peak memory, and any network requests the sandbox's policy denied. \
             command is a shell string (run by /bin/sh -c) or an argv array. A non-zero exit is a result, not \
             an error.",
            json!({
                "type": "object",
                "properties": {
                    "sandbox_id": sandbox_id(),
                    "command": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                               "minItems": 1}],
                                "description": "A shell string or an argv array"},
                    "cwd": {"type": "string", "description": "Working directory inside the sandbox"},
                    "env": string_map("Extra environment variables"),
                    "stdin": {"type": "string", "description": "Text fed to the command's stdin"},
                    "timeout_s": timeout()
                },
                "required": ["sandbox_id", "command"],
                "additionalProperties": false
            }),
            exec_output(),
        ),
        "run_code" => (
            "Run code in a sandbox",
            "Run code (Python by default; bash or sh). With sandbox_id the code runs in that sandbox's code \
             interpreter: a Jupyter kernel that keeps its state (variables, imports) between calls, returns the \
             last expression's value, charts (matplotlib figures) as images and an exception as error {name, \
             value, traceback}. Without sandbox_id a fresh sandbox (preset `default` unless preset says \
             otherwise) runs the code as one process and is killed afterwards, with its exit code and resource \
             use like run_command.",
            json!({
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "The program's source"},
                    "language": {"type": "string", "enum": ["python", "bash", "sh"], "default": "python"},
                    "sandbox_id": sandbox_id(),
                    "preset": {"type": "string", "description": "The preset of a one-shot sandbox (no sandbox_id)",
                               "enum": ["default", "offline", "workspace", "pypi", "github", "web-research"]},
                    "timeout_s": timeout()
                },
                "required": ["code"],
                "additionalProperties": false
            }),
            code_output(),
        ),
        "read_file" => (
            "Read a file from a sandbox",
            "Read a file inside a sandbox: text as UTF-8, anything else base64. At most max_bytes (default \
             262144, at most 1048576) are returned; truncated says the file is longer.",
            json!({
                "type": "object",
                "properties": {
                    "sandbox_id": sandbox_id(),
                    "path": {"type": "string", "description": "Absolute path inside the sandbox"},
                    "max_bytes": {"type": "integer", "minimum": 1, "maximum": 1048576}
                },
                "required": ["sandbox_id", "path"],
                "additionalProperties": false
            }),
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"}, "size": {"type": "integer"},
                    "encoding": {"type": "string", "enum": ["utf-8", "base64"]},
                    "content": {"type": "string"}, "truncated": {"type": "boolean"}
                },
                "required": ["path", "size", "encoding", "content", "truncated"]
            }),
        ),
        "write_file" => (
            "Write a file in a sandbox",
            "Create or replace a file inside a sandbox (missing parent directories are made). Only paths the \
             sandbox's policy makes writable work, such as /workspace and /tmp; elsewhere the answer says why.",
            json!({
                "type": "object",
                "properties": {
                    "sandbox_id": sandbox_id(),
                    "path": {"type": "string", "description": "Absolute path inside the sandbox"},
                    "content": {"type": "string"},
                    "encoding": {"type": "string", "enum": ["utf-8", "base64"], "default": "utf-8"}
                },
                "required": ["sandbox_id", "path", "content"],
                "additionalProperties": false
            }),
            file_info(),
        ),
        "list_files" => (
            "List files in a sandbox",
            "List a directory inside a sandbox (default /workspace), depth levels deep (default 1, at most 16); \
             at most 1000 entries.",
            json!({
                "type": "object",
                "properties": {
                    "sandbox_id": sandbox_id(),
                    "path": {"type": "string", "default": "/workspace"},
                    "depth": {"type": "integer", "minimum": 1, "maximum": 16}
                },
                "required": ["sandbox_id"],
                "additionalProperties": false
            }),
            json!({
                "type": "object",
                "properties": {"path": {"type": "string"}, "entries": {"type": "array", "items": file_info()},
                               "truncated": {"type": "boolean"}},
                "required": ["path", "entries", "truncated"]
            }),
        ),
        _ => return Value::Null,
    };
    json!({"name": name, "title": title, "description": description, "inputSchema": input, "outputSchema": output})
}

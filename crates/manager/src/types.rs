//! Types shared by the manager and the HTTP layer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub policy: Option<serde_json::Value>,
    pub preset: Option<String>,
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The id of the API key asking (set by the front, never read from a body); recorded
    /// with the sandbox as `created_by`.
    #[serde(skip)]
    pub created_by: Option<String>,
    /// Where the writable layer lives: `memory` (a tmpfs, the default) or `disk` (a layer
    /// of the storage pool, capped at `limits.disk`; needed to pause).
    #[serde(default)]
    pub storage: Option<Storage>,
    /// What happens at the deadline and when idle (docs/persistence.md).
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    /// Start from this snapshot's files (and, unless given here, its policy and env).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Volumes of the tenant to mount.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// A template (or image) of the daemon's image store as the root filesystem: the
    /// policy's `filesystem.rootfs = "image:NAME"` (docs/images.md).
    #[serde(default)]
    pub template: Option<String>,
}

/// A volume in a create request: `{name, path, read_only?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub name: String,
    /// Where it appears in the sandbox (absolute).
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Where a sandbox's writable layer lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    #[default]
    Memory,
    Disk,
}

/// What happens to a sandbox at its deadline and when idle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// `kill` (the default) or `pause` at the deadline.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Any call that needs the sandbox's processes (exec, processes, files, ports)
    /// resumes a paused sandbox first.
    #[serde(default)]
    pub auto_resume: bool,
    /// Pause (or kill, per `on_timeout`) after this many seconds without an API call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    #[default]
    Kill,
    Pause,
}

/// What `pause` kept: on this tier the filesystem, never the processes' memory.
#[derive(Debug, Clone, Serialize)]
pub struct PauseResult {
    pub id: String,
    pub state: SandboxState,
    /// The writable layer, on disk.
    pub filesystem: bool,
    /// The processes' memory: not on the namespaces tier.
    pub memory: bool,
    /// Why, in words.
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    /// Every process stopped by the cgroup freezer; the writable layer kept for inspection.
    Frozen,
    Killed,
    Expired,
    Failed,
    /// Every process stopped and gone, the memory freed, the filesystem kept on disk;
    /// `resume` starts it again with the same id, files, policy and environment.
    Paused,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    pub id: String,
    /// The tenant whose key created it (the admin key sees every tenant's sandboxes).
    pub tenant: String,
    pub state: SandboxState,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: String,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Host pid of the sandbox's agent (PID 1 inside).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The id of the API key that created it; absent for the bootstrap admin key (and for
    /// sandboxes older than the record). Revoking that key leaves the sandbox running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// A running sandbox with egress: its gateway's counters (requests, denials, bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<safehouse_gateway::Stats>,
    /// Where its writable layer lives (sandboxes created before it was recorded: absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub metadata: BTreeMap<String, String>,
    pub state: Option<SandboxState>,
}

/// `cmd` as an argv array, or a shell string run with `/bin/sh -c`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Argv(Vec<String>),
    Shell(String),
}

impl Command {
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Argv(v) => v.clone(),
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecLimits {
    /// "64MiB" or a number of bytes.
    pub memory: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub cmd: Command,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub stdin: Option<String>,
    pub timeout_s: Option<f64>,
    #[serde(default)]
    pub limits: ExecLimits,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: Option<u64>,
    /// Runs of limited tools (`tools.limits`) this command started that a limit killed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_limits: Vec<ToolLimitHit>,
}

/// A limited tool run that its `tools.limits` killed, in an [`ExecResult`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToolLimitHit {
    /// The `tools.allow` pattern.
    pub tool: String,
    /// The tool's process on the host.
    pub host_pid: i32,
    pub timed_out: bool,
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartProcess {
    pub cmd: Command,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub pty: Option<PtySize>,
    /// The process's own memory cap, as for a run-to-completion command.
    #[serde(default)]
    pub limits: ExecLimits,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub cmd: Vec<String>,
    pub pty: bool,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Debug, Clone)]
pub enum AttachEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Output dropped from the bounded buffer before this attach.
    Truncated {
        dropped_bytes: u64,
    },
    Exit {
        exit_code: Option<i32>,
        signal: Option<i32>,
        /// From the agent's spawn to its reap of the process.
        wall_ms: u64,
        /// CPU of the process and its reaped descendants.
        cpu_ms: u64,
        /// Its largest resident set (wait4's maxrss).
        peak_memory_bytes: u64,
    },
}

pub use safehouse_hostfs::SandboxRoot;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("no such sandbox")]
    NotFound,
    #[error("no such process in this sandbox")]
    NoProcess,
    /// A code-interpreter context that does not exist (the message names it).
    #[error("{0}")]
    NoContext(String),
    /// Something else the request names does not exist (a template; the message names it).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
    /// A layer the policy requires cannot be enforced here.
    #[error("cannot enforce {layer} here: {reason}")]
    Refused { layer: String, reason: String },
    /// The sandbox is no longer running.
    #[error("the sandbox is {0}")]
    NotRunning(String),
    /// The sandbox is frozen: nothing in it can run until it is thawed.
    #[error("the sandbox is frozen; thaw it first (POST /v1/sandboxes/{0}/thaw or `safehouse sandbox thaw {0}`)")]
    Frozen(String),
    /// The sandbox is paused: its processes are gone until it is resumed.
    #[error("the sandbox is paused; resume it first (POST /v1/sandboxes/{0}/resume or `safehouse sandbox resume {0}`), or create it with lifecycle.auto_resume")]
    Paused(String),
    /// The request conflicts with what exists (a name taken, a volume in use).
    #[error("{0}")]
    Conflict(String),
    #[error("too many sandboxes: {0}")]
    Capacity(String),
    /// Over one of the tenant's quotas (quota.rs); the message names it and its value.
    #[error("{0}")]
    Quota(String),
    #[error("{0}")]
    AgentStalled(String),
    #[error("internal error: {0}")]
    Internal(String),
}

//! Commands in a running sandbox: run-to-completion with a resource envelope, and
//! background processes with stdin, signals, a pty and attach.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use safehouse_jail::cgroup::{self, Cgroup, CgroupVersion};
use safehouse_protocol::{SpawnRequest, StdinMode, WinSize};

use super::agent_link::LinkError;
use super::{
    internal, AttachEvent, ExecRequest, ExecResult, Live, Manager, ManagerError, ProcessInfo, StartProcess,
    ToolLimitHit,
};
use crate::limits;

fn link_error(e: LinkError) -> ManagerError {
    match e {
        LinkError::SpawnFailed { errno, message } => ManagerError::Invalid(format!(
            "cannot start the command: {message} ({})",
            std::io::Error::from_raw_os_error(errno)
        )),
        LinkError::Closed => ManagerError::NotRunning("unreachable (its agent connection closed)".into()),
        LinkError::Backlog => {
            ManagerError::Capacity("too much stdin is queued for this sandbox; the process is not reading it".into())
        }
        LinkError::Stalled => ManagerError::AgentStalled(format!(
            "{}; the sandbox may be overloaded or its agent wedged: retry, or kill the sandbox (that still works)",
            LinkError::Stalled
        )),
        other => ManagerError::Internal(other.to_string()),
    }
}

/// The files a command's process writes "0" to, to move itself into `cg`.
fn join_fds(cg: &dyn Cgroup) -> Result<Vec<OwnedFd>, ManagerError> {
    let file = if cg.version() == CgroupVersion::V2 { "cgroup.procs" } else { "tasks" };
    cg.dirs()
        .iter()
        .map(|d| std::fs::OpenOptions::new().write(true).open(d.join(file)).map(OwnedFd::from).map_err(internal))
        .collect()
}

/// A command's own cgroup, nested in the sandbox's: its memory cap and its accounting.
/// Refused when the cap cannot be enforced (a sandbox without cgroups).
async fn command_cgroup(
    live: &Arc<Live>,
    n: u64,
    memory: Option<u64>,
) -> Result<Option<Box<dyn Cgroup>>, ManagerError> {
    let live = live.clone();
    tokio::task::spawn_blocking(move || {
        let parent = live.cgroup.lock().unwrap_or_else(|e| e.into_inner());
        match parent.as_ref() {
            Some(p) => {
                let limits = cgroup::Limits { memory_bytes: memory, pids: None, cpus: None, only_limited: false };
                Ok(Some(p.child(&format!("cmd-{n}"), &limits).map_err(internal)?))
            }
            None if memory.is_some() => Err(ManagerError::Refused {
                layer: "limits.memory".into(),
                reason: "this sandbox has no cgroup (rootless on cgroup v1)".into(),
            }),
            None => Ok(None),
        }
    })
    .await
    .map_err(internal)?
}

impl Manager {
    /// Runs to completion (and cleans up its cgroup) even if the caller goes away.
    pub async fn exec(&self, tenant: &str, id: &str, req: ExecRequest) -> Result<ExecResult, ManagerError> {
        let (mgr, tenant, id) = (self.clone(), tenant.to_string(), id.to_string());
        tokio::spawn(async move { mgr.exec_inner(&tenant, &id, req).await }).await.map_err(internal)?
    }

    async fn exec_inner(&self, tenant: &str, id: &str, req: ExecRequest) -> Result<ExecResult, ManagerError> {
        limits::check_exec(&req)?;
        let timeout_s = limits::exec_timeout(&req)?;
        let memory = limits::command_memory(&req.limits)?;
        self.take_exec(tenant)?;
        let live = self.running_or_resume(tenant, id).await?;
        let argv = req.cmd.argv();
        let n = live.next_cmd.fetch_add(1, Ordering::Relaxed);
        let cmd_cg = command_cgroup(&live, n, memory).await?;
        let fds = match &cmd_cg {
            Some(cg) => join_fds(cg.as_ref())?,
            None => Vec::new(),
        };
        let started_data = serde_json::json!({ "argv": argv, "cwd": req.cwd, "timeout_s": timeout_s, "api": true });
        let spawn = SpawnRequest {
            id: 0,
            argv,
            env: req.env.into_iter().collect(),
            cwd: req.cwd,
            pty: None,
            stdin: match req.stdin {
                Some(s) => StdinMode::Bytes(s.into_bytes()),
                None => StdinMode::Null,
            },
            capture: true,
            cgroup_fds: 0,
        };
        let started = Instant::now();
        let result = async {
            let pid = match live.link.spawn(spawn, fds).await {
                Ok(pid) => pid,
                Err(e) => {
                    let e = link_error(e);
                    self.note(id, "exec.failed", with(started_data, "error", e.to_string().into()));
                    return Err(e);
                }
            };
            self.note(id, "exec.started", with(started_data, "pid", pid.into()));
            let waited = tokio::time::timeout(Duration::from_secs_f64(timeout_s), live.link.wait_exit(pid)).await;
            let (exited, timed_out) = match waited {
                Ok(r) => (r.map_err(link_error)?, false),
                Err(_) => {
                    // Time is up: kill the command's whole tree (its cgroup), or its group.
                    match &cmd_cg {
                        Some(cg) => {
                            let _ = cg.kill_all();
                            if live.execs.limited {
                                // A limited tool left the command's cgroup for its own.
                                let _ = live.link.signal(pid, libc::SIGKILL);
                            }
                        }
                        None => {
                            let _ = live.link.signal(pid, libc::SIGKILL);
                        }
                    }
                    let e = tokio::time::timeout(Duration::from_secs(5), live.link.wait_exit(pid))
                        .await
                        .map_err(|_| ManagerError::Internal("the command did not end after SIGKILL".into()))?
                        .map_err(link_error)?;
                    (e, true)
                }
            };
            live.link.forget(pid);
            Ok::<_, ManagerError>((exited, timed_out))
        }
        .await;
        let wall_ms = started.elapsed().as_millis() as u64;
        let stats = cmd_cg.as_ref().map(|cg| {
            let stats = (cg.oom_kills().unwrap_or(0), cg.peak_memory().ok().flatten(), cg.cpu_usage_ns().ok());
            (stats, cg.pids_limit_hits().unwrap_or(0))
        });
        if let Some(cg) = cmd_cg {
            // Processes the command left behind go with it.
            let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
        }
        let (exited, timed_out) = result?;
        let ((oom_kills, peak, cpu_ns), refused_forks) = stats.unwrap_or(((0, None, None), 0));
        let signal = exited.signal();
        let tool_limits: Vec<ToolLimitHit> = live
            .execs
            .take_tool_hits(&format!("cmd-{n}"))
            .await
            .into_iter()
            .map(|r| ToolLimitHit { tool: r.tool, host_pid: r.pid, timed_out: r.timed_out, oom_killed: r.oom_killed })
            .collect();
        let lossy = |b: &Option<Vec<u8>>| String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned();
        let result = ExecResult {
            exit_code: exited.exit_code(),
            signal,
            stdout: lossy(&exited.stdout),
            stderr: lossy(&exited.stderr),
            stdout_truncated: exited.stdout_truncated,
            stderr_truncated: exited.stderr_truncated,
            timed_out,
            oom_killed: oom_kills > 0 || tool_limits.iter().any(|t| t.oom_killed),
            wall_ms,
            cpu_ms: cpu_ns.map(|n| n / 1_000_000).unwrap_or((exited.user_us + exited.sys_us) / 1000),
            peak_memory_bytes: peak.or(Some(exited.maxrss_kib * 1024)),
            tool_limits,
        };
        self.note(
            id,
            "exec.exited",
            serde_json::json!({
                "pid": exited.pid, "exit_code": result.exit_code, "signal": result.signal,
                "timed_out": result.timed_out, "oom_killed": result.oom_killed, "wall_ms": result.wall_ms,
                "cpu_ms": result.cpu_ms, "peak_memory_bytes": result.peak_memory_bytes,
            }),
        );
        self.note_command_limits(id, exited.pid, oom_kills, refused_forks);
        Ok(result)
    }

    /// Limit hits counted in a command's own cgroup. On v2 the sandbox's `memory.events`
    /// and `pids.events` count its commands' too (the sampler reports them); on v1 each
    /// cgroup counts its own, and the command's is gone after it: said here.
    fn note_command_limits(&self, id: &str, pid: u32, oom_kills: u64, refused_forks: u64) {
        if self.inner.cgroups.version != Some(safehouse_jail::cgroup::CgroupVersion::V1) {
            return;
        }
        if oom_kills > 0 {
            let message = "a command reached its memory limit; the kernel killed a process";
            let data = serde_json::json!({ "oom_kills": oom_kills, "pid": pid, "exec": true, "message": message });
            self.note(id, "limit.memory", data);
        }
        if refused_forks > 0 {
            let message = "a command reached the sandbox's process limit; forks failed";
            let data = serde_json::json!({ "refused_forks": refused_forks, "total": refused_forks, "pid": pid,
                "exec": true, "message": message });
            self.note(id, "limit.pids", data);
        }
    }

    pub async fn start_process(&self, tenant: &str, id: &str, req: StartProcess) -> Result<u32, ManagerError> {
        limits::check_start(&req)?;
        let memory = limits::command_memory(&req.limits)?;
        self.take_exec(tenant)?;
        let live = self.running_or_resume(tenant, id).await?;
        let argv = req.cmd.argv();
        // A cgroup of its own only when it has a cap: the common case costs nothing.
        let cmd_cg = match memory {
            Some(_) => command_cgroup(&live, live.next_cmd.fetch_add(1, Ordering::Relaxed), memory).await?,
            None => None,
        };
        let fds = match &cmd_cg {
            Some(cg) => join_fds(cg.as_ref())?,
            None => Vec::new(),
        };
        let data = serde_json::json!({ "argv": argv, "cwd": req.cwd, "pty": req.pty.is_some(), "memory": memory });
        let spawn = SpawnRequest {
            id: 0,
            argv,
            env: req.env.into_iter().collect(),
            cwd: req.cwd,
            pty: req.pty.map(|p| WinSize { rows: p.rows.max(1), cols: p.cols.max(1) }),
            stdin: StdinMode::Pipe,
            capture: false,
            cgroup_fds: 0,
        };
        let pid = match live.link.spawn(spawn, fds).await {
            Ok(pid) => pid,
            Err(e) => {
                if let Some(cg) = cmd_cg {
                    let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
                }
                let e = link_error(e);
                self.note(id, "process.failed", with(data, "error", e.to_string().into()));
                return Err(e);
            }
        };
        self.note(id, "process.started", with(data, "pid", pid.into()));
        // Its exit, whenever it comes (the wait ends with the agent connection too); its
        // cgroup, if it has one, goes with it, taking what it left behind.
        let (mgr, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let exited = live.link.wait_exit(pid).await;
            let oom_kills = cmd_cg.as_ref().map(|cg| cg.oom_kills().unwrap_or(0)).unwrap_or(0);
            let peak = cmd_cg.as_ref().and_then(|cg| cg.peak_memory().ok().flatten());
            if let Some(cg) = cmd_cg {
                let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
            }
            if let Ok(e) = exited {
                let data = serde_json::json!({
                    "pid": pid, "exit_code": e.exit_code(), "signal": e.signal(),
                    "cpu_ms": (e.user_us + e.sys_us) / 1000,
                    "peak_memory_bytes": peak.unwrap_or(e.maxrss_kib * 1024), "oom_killed": oom_kills > 0,
                });
                mgr.note(&id, "process.exited", data);
                mgr.note_command_limits(&id, pid, oom_kills, 0);
            }
        });
        Ok(pid)
    }

    pub async fn processes(&self, tenant: &str, id: &str) -> Result<Vec<ProcessInfo>, ManagerError> {
        let live = self.running_or_resume(tenant, id).await?;
        // The agent lists what still runs; the daemon remembers what ended since.
        let running = live.link.list().await.map_err(link_error)?;
        let mut out: Vec<ProcessInfo> = running
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                cmd: p.argv,
                pty: p.pty,
                running: p.running,
                exit_code: None,
                signal: None,
            })
            .collect();
        for (pid, argv, pty, exit) in live.link.processes() {
            match out.iter_mut().find(|p| p.pid == pid) {
                Some(p) => {
                    if let Some(e) = &exit {
                        p.running = false;
                        p.exit_code = e.exit_code();
                        p.signal = e.signal();
                    }
                }
                None => out.push(ProcessInfo {
                    pid,
                    cmd: argv,
                    pty,
                    running: exit.is_none(),
                    exit_code: exit.as_ref().and_then(|e| e.exit_code()),
                    signal: exit.as_ref().and_then(|e| e.signal()),
                }),
            }
        }
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }

    fn process_of(&self, tenant: &str, id: &str, pid: u32) -> Result<std::sync::Arc<super::Live>, ManagerError> {
        // A process of a paused sandbox is gone: no resume for it.
        let live = self.running(tenant, id)?;
        if !live.link.known(pid) {
            return Err(ManagerError::NoProcess);
        }
        Ok(live)
    }

    pub async fn signal(&self, tenant: &str, id: &str, pid: u32, signal: i32) -> Result<(), ManagerError> {
        if !(1..=64).contains(&signal) {
            return Err(ManagerError::Invalid(format!("signal {signal} is not a signal number (1-64)")));
        }
        self.process_of(tenant, id, pid)?.link.signal(pid, signal).map_err(link_error)
    }

    pub async fn stdin(&self, tenant: &str, id: &str, pid: u32, data: Vec<u8>, eof: bool) -> Result<(), ManagerError> {
        let live = self.process_of(tenant, id, pid)?;
        for chunk in data.chunks(1 << 20) {
            live.link.stdin(pid, chunk.to_vec()).map_err(link_error)?;
        }
        if eof {
            live.link.close_stdin(pid).map_err(link_error)?;
        }
        Ok(())
    }

    pub async fn resize(&self, tenant: &str, id: &str, pid: u32, rows: u16, cols: u16) -> Result<(), ManagerError> {
        let live = self.process_of(tenant, id, pid)?;
        if !live.link.has_pty(pid) {
            return Err(ManagerError::Invalid(format!(
                "process {pid} has no terminal to resize: start it with \"pty\" to get one"
            )));
        }
        live.link.resize(pid, rows.max(1), cols.max(1)).map_err(link_error)
    }

    pub async fn attach(
        &self,
        tenant: &str,
        id: &str,
        pid: u32,
    ) -> Result<tokio::sync::mpsc::Receiver<AttachEvent>, ManagerError> {
        self.process_of(tenant, id, pid)?.link.subscribe(pid).ok_or(ManagerError::NoProcess)
    }
}

/// `v` (a JSON object) with `key` set to `value`.
fn with(mut v: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), value);
    }
    v
}

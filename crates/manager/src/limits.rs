//! What a request may ask for: the one definition of the limits on creating sandboxes and
//! running commands, and the checks every front (the native API, MCP, the E2B front) and
//! the manager itself apply. The manager checks each request first thing, so a front that
//! forwards a request unchecked still gets these answers; a front checks earlier only when
//! it must refuse before doing something else (MCP's `run` checks its command before it
//! creates the sandbox to run it in).

use std::collections::BTreeMap;

use safehouse_policy::units::parse_size;

use crate::types::{Command, CreateRequest, ExecLimits, ExecRequest, ManagerError, StartProcess};

/// Longest sandbox lifetime a request may ask for, and longest run-to-completion command.
pub const MAX_TIMEOUT_S: u64 = 86_400;
/// A sandbox's lifetime when neither the request nor its policy gives one.
pub const DEFAULT_TIMEOUT_S: u64 = 300;
/// A run-to-completion command's time limit when the request gives none.
pub const DEFAULT_EXEC_TIMEOUT_S: f64 = 60.0;
/// Most metadata pairs on one sandbox.
pub const MAX_METADATA_KEYS: usize = 64;
/// Longest metadata key and value, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 256;
pub const MAX_METADATA_VALUE_BYTES: usize = 4096;
/// Largest argv + env accepted (bytes), like the kernel's own ARG_MAX order (RES-07).
pub const MAX_ARGS_BYTES: usize = 1 << 20;
/// The code of one `run_code` call.
pub const MAX_CODE: usize = 4 << 20;
/// Smallest memory cap of one command (`limits.memory`).
pub const MIN_EXEC_MEMORY: u64 = 1 << 20;

fn invalid(message: impl Into<String>) -> ManagerError {
    ManagerError::Invalid(message.into())
}

/// The hard "Max open files" of a `/proc/PID/limits` text (None: unlimited or unreadable).
fn hard_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().nth(1)?.parse().ok()
}

/// The highest `limits.nofile` a sandbox can set: the lowest hard RLIMIT_NOFILE of the
/// spawners (`pids`; this process's when there are none). A sandbox cannot raise its hard
/// limit above what it inherits (that takes CAP_SYS_RESOURCE in the host's user namespace).
pub fn spawner_nofile_max(pids: impl Iterator<Item = i32>) -> Option<u64> {
    let read = |who: String| std::fs::read_to_string(format!("/proc/{who}/limits")).ok().and_then(|t| hard_nofile(&t));
    let spawners: Vec<Option<u64>> = pids.filter(|p| *p > 0).map(|p| read(p.to_string())).collect();
    if spawners.is_empty() {
        return read("self".into());
    }
    spawners.into_iter().flatten().min()
}

/// `limits.nofile` within what the sandbox can set (`max`, [`spawner_nofile_max`]); past it
/// the sandbox's setup would fail on `setrlimit`, so the create is refused (422, this host
/// cannot enforce it) before any work.
pub fn check_nofile(policy: &safehouse_policy::Policy, max: Option<u64>) -> Result<(), ManagerError> {
    let (Some(asked), Some(max)) = (policy.limits.nofile, max) else { return Ok(()) };
    if asked > max {
        return Err(ManagerError::Refused {
            layer: "limits.nofile".into(),
            reason: format!(
                "{asked} is more than this daemon's own hard open-file limit ({max}), which a sandbox cannot raise: ask for at most {max}, or raise the daemon's hard limit (LimitNOFILE= in its unit, ulimit -Hn) and restart it"
            ),
        });
    }
    Ok(())
}

/// A sandbox lifetime in seconds.
pub fn check_timeout(t: u64) -> Result<(), ManagerError> {
    if t == 0 || t > MAX_TIMEOUT_S {
        return Err(invalid(format!("timeout_s must be between 1 and {MAX_TIMEOUT_S}")));
    }
    Ok(())
}

/// A create request: its lifetime, environment and metadata.
pub fn check_create(req: &CreateRequest) -> Result<(), ManagerError> {
    if let Some(t) = req.timeout_s {
        check_timeout(t)?;
    }
    check_env(&req.env)?;
    check_metadata(&req.metadata)
}

pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ManagerError> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(invalid(format!("metadata has more than {MAX_METADATA_KEYS} keys")));
    }
    if metadata.iter().any(|(k, v)| k.len() > MAX_METADATA_KEY_BYTES || v.len() > MAX_METADATA_VALUE_BYTES) {
        return Err(invalid(format!(
            "metadata: at most {MAX_METADATA_KEYS} keys, keys ≤ {MAX_METADATA_KEY_BYTES} bytes, values ≤ {MAX_METADATA_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A run-to-completion request: its command, environment and time limit.
pub fn check_exec(req: &ExecRequest) -> Result<(), ManagerError> {
    check_command(&req.cmd)?;
    check_env(&req.env)?;
    check_args_size(&req.cmd.argv(), &req.env)?;
    exec_timeout(req).map(|_| ())
}

/// A background process request: its command and environment.
pub fn check_start(req: &StartProcess) -> Result<(), ManagerError> {
    check_command(&req.cmd)?;
    check_env(&req.env)?;
    check_args_size(&req.cmd.argv(), &req.env)
}

/// The time limit of a run-to-completion command, in seconds.
pub fn exec_timeout(req: &ExecRequest) -> Result<f64, ManagerError> {
    let t = req.timeout_s.unwrap_or(DEFAULT_EXEC_TIMEOUT_S);
    if !t.is_finite() || t <= 0.0 || t > MAX_TIMEOUT_S as f64 {
        return Err(invalid(format!("timeout_s must be a positive number of seconds, at most {MAX_TIMEOUT_S}")));
    }
    Ok(t)
}

/// A command's own memory cap (`limits.memory`: "64MiB" or a number of bytes), if any; the
/// same rule for run-to-completion commands and background processes.
pub fn command_memory(limits: &ExecLimits) -> Result<Option<u64>, ManagerError> {
    let memory = match &limits.memory {
        None => return Ok(None),
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().ok_or_else(|| invalid("limits.memory: a whole number of bytes"))?
        }
        Some(serde_json::Value::String(s)) => parse_size(s).map_err(|e| invalid(format!("limits.memory: {e}")))?,
        Some(_) => return Err(invalid("limits.memory: a size like \"64MiB\" or a number of bytes")),
    };
    if memory < MIN_EXEC_MEMORY {
        return Err(invalid("limits.memory: at least 1MiB"));
    }
    Ok(Some(memory))
}

/// An argv must name a program; its strings go to the sandbox verbatim (no shell, no
/// option parsing), but NUL cannot cross `execve`.
pub fn check_command(cmd: &Command) -> Result<(), ManagerError> {
    let argv = match cmd {
        Command::Argv(v) => v.as_slice(),
        Command::Shell(s) => std::slice::from_ref(s),
    };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(invalid("cmd must name a program: a non-empty argv array or a shell string"));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid("cmd must not contain NUL characters"));
    }
    Ok(())
}

/// Environment names must be non-empty and free of `=` and NUL; values free of NUL.
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), ManagerError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(invalid(format!("environment name {k:?} must be non-empty without `=` or NUL")));
        }
        if v.contains('\0') {
            return Err(invalid(format!("environment value of {k} must not contain NUL")));
        }
    }
    Ok(())
}

/// The argv and environment together fit in [`MAX_ARGS_BYTES`].
pub fn check_args_size(argv: &[String], env: &BTreeMap<String, String>) -> Result<(), ManagerError> {
    let size: usize =
        argv.iter().map(|a| a.len() + 1).sum::<usize>() + env.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
    if size > MAX_ARGS_BYTES {
        return Err(invalid(format!("cmd and env total {size} bytes; the limit is {MAX_ARGS_BYTES}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(cmd: Command, timeout_s: Option<f64>) -> ExecRequest {
        ExecRequest { cmd, env: BTreeMap::new(), cwd: None, stdin: None, timeout_s, limits: Default::default() }
    }

    fn message(r: Result<(), ManagerError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn commands() {
        assert!(check_exec(&exec(Command::Argv(vec!["true".into()]), None)).is_ok());
        assert!(check_exec(&exec(Command::Shell("echo hi".into()), Some(MAX_TIMEOUT_S as f64))).is_ok());
        for bad in [Command::Argv(vec![]), Command::Argv(vec!["".into()]), Command::Shell("".into())] {
            assert_eq!(
                message(check_exec(&exec(bad, None))),
                "cmd must name a program: a non-empty argv array or a shell string"
            );
        }
        let nul = exec(Command::Argv(vec!["a".into(), "b\0".into()]), None);
        assert_eq!(message(check_exec(&nul)), "cmd must not contain NUL characters");
        let huge = exec(Command::Argv(vec!["x".repeat(MAX_ARGS_BYTES)]), None);
        assert!(message(check_exec(&huge)).contains("the limit is 1048576"));
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_TIMEOUT_S as f64 + 0.5] {
            assert_eq!(
                message(check_exec(&exec(Command::Argv(vec!["a".into()]), Some(t)))),
                "timeout_s must be a positive number of seconds, at most 86400"
            );
        }
    }

    #[test]
    fn environments() {
        for k in ["", "A=B", "A\0"] {
            let env = BTreeMap::from([(k.to_string(), "v".to_string())]);
            assert!(message(check_env(&env)).starts_with("environment name"), "{k:?}");
        }
        let env = BTreeMap::from([("A".to_string(), "v\0".to_string())]);
        assert_eq!(message(check_env(&env)), "environment value of A must not contain NUL");
    }

    #[test]
    fn creates() {
        assert!(check_create(&CreateRequest::default()).is_ok());
        for t in [0, MAX_TIMEOUT_S + 1] {
            let req = CreateRequest { timeout_s: Some(t), ..Default::default() };
            assert_eq!(message(check_create(&req)), "timeout_s must be between 1 and 86400");
        }
        let many = (0..=MAX_METADATA_KEYS).map(|i| (i.to_string(), String::new())).collect();
        let req = CreateRequest { metadata: many, ..Default::default() };
        assert_eq!(message(check_create(&req)), "metadata has more than 64 keys");
        let long = BTreeMap::from([("k".to_string(), "v".repeat(MAX_METADATA_VALUE_BYTES + 1))]);
        let req = CreateRequest { metadata: long, ..Default::default() };
        assert!(message(check_create(&req)).starts_with("metadata: at most 64 keys"));
    }

    #[test]
    fn nofile_within_the_daemons_hard_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 4096                 files     \n";
        assert_eq!(hard_nofile(text), Some(4096));
        assert_eq!(hard_nofile("Max open files            unlimited            unlimited            files"), None);
        let with = |n: Option<u64>| {
            let mut p = safehouse_policy::Policy::default();
            p.limits.nofile = n;
            p
        };
        assert!(check_nofile(&with(Some(4096)), Some(4096)).is_ok());
        assert!(check_nofile(&with(None), Some(16)).is_ok());
        assert!(check_nofile(&with(Some(1 << 20)), None).is_ok());
        let m = message(check_nofile(&with(Some(4097)), Some(4096)));
        assert!(
            m.starts_with(
                "cannot enforce limits.nofile here: 4097 is more than this daemon's own hard open-file limit (4096)"
            ),
            "{m}"
        );
        // This process's own limit is what a daemon without spawners reports.
        let own = hard_nofile(&std::fs::read_to_string("/proc/self/limits").unwrap());
        assert_eq!(spawner_nofile_max(std::iter::empty()), own);
        assert_eq!(spawner_nofile_max([std::process::id() as i32].into_iter()), own);
    }

    #[test]
    fn memory_caps() {
        let with = |m: serde_json::Value| ExecRequest {
            limits: crate::types::ExecLimits { memory: Some(m) },
            ..exec(Command::Argv(vec!["a".into()]), None)
        };
        assert_eq!(command_memory(&with(serde_json::json!("64MiB")).limits).unwrap(), Some(64 << 20));
        assert_eq!(command_memory(&with(serde_json::json!(2 << 20)).limits).unwrap(), Some(2 << 20));
        assert!(command_memory(&with(serde_json::json!(1000)).limits).is_err());
        assert!(command_memory(&with(serde_json::json!(true)).limits).is_err());
        assert_eq!(command_memory(&ExecLimits::default()).unwrap(), None);
    }
}

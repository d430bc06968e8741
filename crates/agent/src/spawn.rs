//! Starting one command: the request becomes a `safehouse_jail::command::Command` here,
//! in the agent (environment merged, stdio made), and the one spawn sequence of the
//! sandboxes (`crates/jail/src/command.rs`, shared with `safehouse run`'s init) starts it:
//! session, stdio, cgroup, close descriptors, signals, cwd, exec.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use safehouse_jail::command::{Command, Reset};
use safehouse_protocol::{SpawnRequest, StdinMode};
use safehouse_sys::{agent_support as sup, fs, process};

/// PATH used when the environment has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The agent's ends of a started child's stdio (all non-blocking, close-on-exec).
pub struct Child {
    pub pid: i32,
    /// Where stdin bytes go: a pipe, or a second descriptor of the pty master.
    pub stdin: Option<File>,
    /// Output: the stdout pipe or the pty master, then the stderr pipe (none with a pty).
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

/// Why a spawn failed: the errno for the daemon and a message naming the step.
#[derive(Debug)]
pub struct SpawnError {
    pub errno: i32,
    pub message: String,
}

impl SpawnError {
    fn new(errno: i32, message: impl Into<String>) -> Self {
        SpawnError { errno, message: message.into() }
    }

    fn io(what: &str, e: io::Error) -> Self {
        SpawnError { errno: e.raw_os_error().unwrap_or(libc::EIO), message: format!("{what}: {e}") }
    }
}

impl From<safehouse_jail::command::CommandError> for SpawnError {
    fn from(e: safehouse_jail::command::CommandError) -> Self {
        SpawnError { errno: e.errno, message: e.to_string() }
    }
}

/// The request as a command: the base environment overridden by the request's.
fn prepare(req: &SpawnRequest, base_env: &[(String, String)], default_cwd: &str) -> Result<Command, SpawnError> {
    let mut env: Vec<(&str, &str)> = base_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') {
            return Err(SpawnError::new(libc::EINVAL, format!("invalid environment variable name {k:?}")));
        }
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    let cwd = req.cwd.as_deref().unwrap_or(default_cwd);
    // The request named the directory: failing to enter it fails the spawn (only the
    // default falls back to `/`).
    Ok(Command::new(&req.argv, &env, cwd, req.cwd.is_some(), DEFAULT_PATH)?)
}

/// The ends of the child's stdio: what the child gets as 0, 1, 2 and what the agent keeps.
struct Stdio {
    child: [OwnedFd; 3],
    tty: bool,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    /// The write end of a Null stdin, closed once the child holds the read end.
    _null_writer: Option<OwnedFd>,
}

fn nonblocking(fd: OwnedFd) -> io::Result<File> {
    sup::set_nonblocking(&fd)?;
    Ok(File::from(fd))
}

fn stdio(req: &SpawnRequest) -> io::Result<Stdio> {
    if let Some(size) = req.pty {
        let (master, slave) = process::openpty()?;
        sup::set_winsize(&master, size.rows, size.cols)?;
        let writer = match req.stdin {
            StdinMode::Null => None,
            _ => Some(master.try_clone()?),
        };
        let stdout = nonblocking(master)?;
        return Ok(Stdio {
            child: [slave.try_clone()?, slave.try_clone()?, slave],
            tty: true,
            stdin: writer.map(File::from),
            stdout: Some(stdout),
            stderr: None,
            _null_writer: None,
        });
    }
    let (in_r, in_w) = fs::pipe()?;
    let (out_r, out_w) = fs::pipe()?;
    let (err_r, err_w) = fs::pipe()?;
    let (stdin, null_writer) = match req.stdin {
        StdinMode::Null => (None, Some(in_w)),
        _ => (Some(nonblocking(in_w)?), None),
    };
    Ok(Stdio {
        child: [in_r, out_w, err_w],
        tty: false,
        stdin,
        stdout: Some(nonblocking(out_r)?),
        stderr: Some(nonblocking(err_r)?),
        _null_writer: null_writer,
    })
}

/// Starts `req`. `cgroup_fds` are written "0" by the child (moving it into its cgroup)
/// before anything of the command runs.
pub fn spawn(
    req: &SpawnRequest,
    base_env: &[(String, String)],
    default_cwd: &str,
    cgroup_fds: Vec<OwnedFd>,
) -> Result<Child, SpawnError> {
    let cmd = prepare(req, base_env, default_cwd)?;
    let stdio = stdio(req).map_err(|e| SpawnError::io("creating stdio", e))?;
    let child_stdio: [RawFd; 3] = [0, 1, 2].map(|i| stdio.child[i].as_raw_fd());
    let cgroups: Vec<RawFd> = cgroup_fds.iter().map(|f| f.as_raw_fd()).collect();
    let pid = cmd.start(Some(child_stdio), stdio.tty, &cgroups, Reset::All)?;
    // The child's ends and the cgroup files close here; the child has its own copies.
    let Stdio { stdin, stdout, stderr, .. } = stdio;
    Ok(Child { pid, stdin, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str], env: &[(&str, &str)]) -> SpawnRequest {
        SpawnRequest {
            id: 1,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cwd: None,
            pty: None,
            stdin: StdinMode::Null,
            capture: true,
            cgroup_fds: 0,
        }
    }

    #[test]
    fn environment_overrides_the_base_and_sets_path() {
        let base = vec![("PATH".to_string(), "/a:/b".to_string()), ("HOME".to_string(), "/h".to_string())];
        let p = prepare(&req(&["ls"], &[("HOME", "/x"), ("NEW", "1")]), &base, "/w").unwrap();
        let env: Vec<_> = p.envp().map(|c| c.to_str().unwrap().to_string()).collect();
        assert_eq!(env, ["PATH=/a:/b", "HOME=/x", "NEW=1"]);
        // Neither /a/ls nor /b/ls exists: nothing to try (the spawn fails with ENOENT).
        assert_eq!(p.candidates().count(), 0);
        assert_eq!(p.cwd().to_str().unwrap(), "/w");
    }

    #[test]
    fn invalid_requests_are_einval() {
        for r in [
            req(&[], &[]),
            req(&[""], &[]),
            req(&["a\0b"], &[]),
            req(&["a"], &[("A=B", "1")]),
            req(&["a"], &[("", "1")]),
        ] {
            assert_eq!(prepare(&r, &[], "/").unwrap_err().errno, libc::EINVAL);
        }
    }
}

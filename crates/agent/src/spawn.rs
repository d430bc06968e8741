//! Starting one command: everything that allocates is prepared here, in the agent; the
//! child (which shares the agent's memory until it execs, see `spawn_shared`) then only
//! makes system calls: session, stdio, cgroup, close descriptors, signals, cwd, exec.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

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

/// The step of the child that failed, written by the child into shared memory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    None,
    Session,
    Stdio,
    Terminal,
    Cgroup,
    CloseFds,
    Cwd,
    Exec,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::None => "starting",
            Step::Session => "creating a session",
            Step::Cwd => "entering the working directory",
            Step::Stdio => "setting up stdin, stdout and stderr",
            Step::Terminal => "taking the terminal as controlling tty",
            Step::Cgroup => "joining the command's cgroup",
            Step::CloseFds => "closing inherited descriptors",
            Step::Exec => "exec",
        }
    }
}

/// Argument vector, environment and working directory as C strings, with the paths to
/// try for `argv[0]`.
#[derive(Debug)]
struct Prepared {
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    /// The request named the directory: failing to enter it fails the spawn (only the
    /// default falls back to `/`).
    cwd_explicit: bool,
    candidates: Vec<CString>,
}

fn nul_error(what: &str) -> SpawnError {
    SpawnError::new(libc::EINVAL, format!("{what} contains a NUL byte"))
}

fn prepare(req: &SpawnRequest, base_env: &[(String, String)], default_cwd: &str) -> Result<Prepared, SpawnError> {
    let Some(program) = req.argv.first().filter(|a| !a.is_empty()) else {
        return Err(SpawnError::new(libc::EINVAL, "empty command"));
    };
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
    let argv = req.argv.iter().map(|a| CString::new(a.as_str())).collect::<Result<Vec<_>, _>>();
    let argv = argv.map_err(|_| nul_error("an argument"))?;
    let envp = env.iter().map(|(k, v)| CString::new(format!("{k}={v}"))).collect::<Result<Vec<_>, _>>();
    let envp = envp.map_err(|_| nul_error("an environment variable"))?;
    let cwd =
        CString::new(req.cwd.as_deref().unwrap_or(default_cwd)).map_err(|_| nul_error("the working directory"))?;
    let path = env.iter().rev().find(|(k, _)| *k == "PATH").map(|(_, v)| *v).unwrap_or(DEFAULT_PATH);
    let candidates = candidates(program, path)
        .into_iter()
        .filter(|c| !surely_missing(c))
        .map(CString::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| nul_error("PATH"))?;
    Ok(Prepared { argv, envp, cwd, cwd_explicit: req.cwd.is_some(), candidates })
}

/// The paths execvp would try for `program`: itself if it has a slash, else each PATH
/// entry (an empty entry is the working directory).
fn candidates(program: &str, path: &str) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_string()];
    }
    path.split(':').map(|dir| if dir.is_empty() { program.to_string() } else { format!("{dir}/{program}") }).collect()
}

/// Whether an absolute candidate names nothing (ENOENT, ENOTDIR): execvp would skip it
/// after a failed execve, but in a daemon sandbox every execve stops on the exec watcher
/// (~0.2 ms each), so the agent skips it here. Relative candidates depend on the working
/// directory the child enters, and any other error is left for execve to report.
fn surely_missing(candidate: &str) -> bool {
    candidate.starts_with('/')
        && matches!(std::fs::metadata(candidate).map_err(|e| e.raw_os_error()), Err(Some(libc::ENOENT | libc::ENOTDIR)))
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
    let prepared = prepare(req, base_env, default_cwd)?;
    let stdio = stdio(req).map_err(|e| SpawnError::io("creating stdio", e))?;
    let pid = start(&prepared, &stdio, &cgroup_fds)?;
    // The child's ends and the cgroup files close here; the child has its own copies.
    let Stdio { stdin, stdout, stderr, .. } = stdio;
    Ok(Child { pid, stdin, stdout, stderr })
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// The fork-and-exec proper. Returns the pid, or the errno and step that failed.
fn start(p: &Prepared, stdio: &Stdio, cgroup_fds: &[OwnedFd]) -> Result<i32, SpawnError> {
    let argv_p = pointers(&p.argv);
    let envp_p = pointers(&p.envp);
    let child_stdio: [RawFd; 3] = [0, 1, 2].map(|i| stdio.child[i].as_raw_fd());
    let cgroups: Vec<RawFd> = cgroup_fds.iter().map(|f| f.as_raw_fd()).collect();
    let tty = stdio.tty;
    let mut failed = (Step::None, 0i32);

    // Nothing may run a signal handler in the child while it shares our memory; the
    // child restores defaults and an empty mask itself.
    let saved = process::block_all_signals().map_err(|e| SpawnError::io("blocking signals", e))?;
    let spawned = process::spawn_shared(&mut || {
        let fail = |failed: &mut (Step, i32), step, e: io::Error| {
            *failed = (step, e.raw_os_error().unwrap_or(libc::EIO));
            127
        };
        if let Err(e) = process::setsid() {
            return fail(&mut failed, Step::Session, e);
        }
        // Every source descriptor is above 2 (the agent keeps 0-2 occupied), so dup2
        // cannot clobber one it still needs.
        for (target, source) in child_stdio.iter().enumerate() {
            if let Err(e) = fs::dup2(*source, target as RawFd) {
                return fail(&mut failed, Step::Stdio, e);
            }
        }
        if tty {
            if let Err(e) = process::set_controlling_tty(0) {
                return fail(&mut failed, Step::Terminal, e);
            }
        }
        for fd in &cgroups {
            match sup::write_raw(*fd, b"0") {
                Ok(1) => {}
                Ok(_) => return fail(&mut failed, Step::Cgroup, io::Error::from_raw_os_error(libc::EIO)),
                Err(e) => return fail(&mut failed, Step::Cgroup, e),
            }
        }
        if let Err(e) = fs::close_range(3, u32::MAX) {
            return fail(&mut failed, Step::CloseFds, e);
        }
        sup::reset_signal_dispositions();
        let _ = process::unblock_all_signals();
        if let Err(e) = process::chdir_c(&p.cwd) {
            if p.cwd_explicit {
                return fail(&mut failed, Step::Cwd, e);
            }
            let _ = process::chdir_c(c"/");
        }
        // execvp's rules: skip candidates that do not exist, remember EACCES, stop at
        // any other error.
        let mut errno = libc::ENOENT;
        let mut denied = false;
        for path in &p.candidates {
            let e = process::execve_raw(path, &argv_p, &envp_p).raw_os_error().unwrap_or(libc::EIO);
            match e {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                other => {
                    errno = other;
                    break;
                }
            }
        }
        if errno == libc::ENOENT && denied {
            errno = libc::EACCES;
        }
        failed = (Step::Exec, errno);
        127
    });
    process::restore_sigmask(&saved);
    let pid = spawned.map_err(|e| SpawnError::io("clone", e))?;
    let (step, errno) = failed;
    if step == Step::None {
        return Ok(pid);
    }
    // The child has already exited; collect it so it is not reported as an orphan.
    let _ = process::wait4(pid, false);
    // Bounded, so the reply always fits in a frame.
    let program: String = p.argv[0].to_string_lossy().chars().take(256).collect();
    let cause = io::Error::from_raw_os_error(errno);
    Err(SpawnError::new(errno, format!("{program}: {}: {cause}", step.describe())))
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
        let env: Vec<_> = p.envp.iter().map(|c| c.to_str().unwrap().to_string()).collect();
        assert_eq!(env, ["PATH=/a:/b", "HOME=/x", "NEW=1"]);
        // Neither /a/ls nor /b/ls exists: nothing to try (the spawn fails with ENOENT).
        assert!(p.candidates.is_empty());
        assert_eq!(p.cwd.to_str().unwrap(), "/w");
    }

    #[test]
    fn missing_candidates_are_skipped_before_exec() {
        let dir = std::env::temp_dir().join(format!("safehouse-cand-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x"), b"").unwrap();
        std::fs::write(dir.join("file"), b"").unwrap();
        let d = dir.to_str().unwrap();
        let path = format!("/nonexistent:{d}/file:{d}:{d}/x::/bin");
        let p = prepare(&req(&["x"], &[("PATH", &path)]), &[], "/").unwrap();
        let c: Vec<_> = p.candidates.iter().map(|c| c.to_str().unwrap().to_string()).collect();
        // /nonexistent/x (ENOENT), FILE/x (ENOTDIR) and DIR/x/x go; relative ones stay.
        assert_eq!(c, [format!("{d}/x"), "x".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn candidates_follow_execvp() {
        assert_eq!(candidates("./x", "/bin"), ["./x"]);
        assert_eq!(candidates("x", "/bin::/usr/bin"), ["/bin/x", "x", "/usr/bin/x"]);
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

//! Starting a command inside a sandbox: the one spawn sequence, for `safehouse run`'s init
//! ([`crate::init`]) and the daemon's agent (`safehouse-agent`'s `spawn.rs`).
//!
//! Everything that allocates happens in [`Command::new`], in the caller (the sandbox's
//! PID 1). [`Command::start`] then makes one child with `spawn_shared` (clone with
//! `CLONE_VM|CLONE_VFORK`, like `posix_spawn`: no page-table copy), which only makes
//! system calls, in this order: new session, stdio (and the controlling terminal), the
//! command's cgroups, close every other descriptor, default signal dispositions and an
//! empty mask, working directory, execve on each candidate path with execvp's rules. A
//! failing step comes back through the shared memory as a [`CommandError`] naming it.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use safehouse_sys::{agent_support as sup, fs, process};

/// A step of the child, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The request itself, with the reason (an empty command, a NUL byte).
    Prepare(&'static str),
    Session,
    Stdio,
    Terminal,
    Cgroup,
    CloseFds,
    Cwd,
    Exec,
    /// Cloning the child.
    Clone,
}

impl Step {
    pub fn describe(self) -> &'static str {
        match self {
            Step::Prepare(reason) => reason,
            Step::Session => "creating a session",
            Step::Cwd => "entering the working directory",
            Step::Stdio => "setting up stdin, stdout and stderr",
            Step::Terminal => "taking the terminal as controlling tty",
            Step::Cgroup => "joining the command's cgroup",
            Step::CloseFds => "closing inherited descriptors",
            Step::Exec => "exec",
            Step::Clone => "clone",
        }
    }
}

/// Why a command did not start: the step, its errno, and the path the exec tried last
/// (the first candidate refused with EACCES, or the one that failed otherwise; the
/// program as given when no candidate named a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub step: Step,
    pub errno: i32,
    pub path: String,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Step::Prepare(reason) = self.step {
            return f.write_str(reason);
        }
        // Bounded, so a reply carrying it always fits in a frame.
        let path: String = self.path.chars().take(256).collect();
        write!(f, "{path}: {}: {}", self.step.describe(), io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for CommandError {}

/// Which signal dispositions the child resets before the exec (dispositions set to a
/// handler or SIG_IGN survive into the child; handlers cannot run in it).
#[derive(Debug, Clone, Copy)]
pub enum Reset<'a> {
    /// Every signal (the agent, whose ignored signals must not leak into commands).
    All,
    /// Only these (the init, which installed handlers for them and nothing else).
    Only(&'a [i32]),
}

/// A command ready to start: argument vector, environment and working directory as C
/// strings, and the paths to try for `argv[0]`.
#[derive(Debug)]
pub struct Command {
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    /// Failing to enter `cwd` fails the start (else the child falls back to `/`).
    cwd_required: bool,
    candidates: Vec<CString>,
}

fn invalid(reason: &'static str, program: &str) -> CommandError {
    CommandError { step: Step::Prepare(reason), errno: libc::EINVAL, path: program.to_string() }
}

impl Command {
    /// `argv` run with `env` (the last `PATH` in it, else `default_path`, is searched for
    /// `argv[0]`) in `cwd`.
    pub fn new(
        argv: &[String],
        env: &[(&str, &str)],
        cwd: &str,
        cwd_required: bool,
        default_path: &str,
    ) -> Result<Command, CommandError> {
        let Some(program) = argv.first().filter(|a| !a.is_empty()) else {
            return Err(invalid("empty command", ""));
        };
        let argv_c = argv.iter().map(|a| CString::new(a.as_str())).collect::<Result<Vec<_>, _>>();
        let argv_c = argv_c.map_err(|_| invalid("an argument contains a NUL byte", program))?;
        let envp = env.iter().map(|(k, v)| CString::new(format!("{k}={v}"))).collect::<Result<Vec<_>, _>>();
        let envp = envp.map_err(|_| invalid("an environment variable contains a NUL byte", program))?;
        let cwd = CString::new(cwd).map_err(|_| invalid("the working directory contains a NUL byte", program))?;
        let path = env.iter().rev().find(|(k, _)| *k == "PATH").map(|(_, v)| *v).unwrap_or(default_path);
        let candidates = candidates(program, path)
            .into_iter()
            .filter(|c| !surely_missing(c))
            .map(CString::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("PATH contains a NUL byte", program))?;
        Ok(Command { argv: argv_c, envp, cwd, cwd_required, candidates })
    }

    /// The paths the exec will try, in order.
    pub fn candidates(&self) -> impl Iterator<Item = &std::ffi::CStr> {
        self.candidates.iter().map(|c| c.as_c_str())
    }

    pub fn envp(&self) -> impl Iterator<Item = &std::ffi::CStr> {
        self.envp.iter().map(|c| c.as_c_str())
    }

    pub fn cwd(&self) -> &std::ffi::CStr {
        &self.cwd
    }

    fn program(&self) -> String {
        self.argv[0].to_string_lossy().into_owned()
    }

    /// Starts the command (see the module doc). `stdio`: what becomes its 0, 1, 2 (None:
    /// the caller's own); `tty`: make fd 0 its controlling terminal; `cgroups`: files the
    /// child writes "0" to (joining that cgroup) before anything of the command runs.
    /// Returns its pid. Call from a single-threaded process (the child shares its memory).
    pub fn start(
        &self,
        stdio: Option<[RawFd; 3]>,
        tty: bool,
        cgroups: &[RawFd],
        reset: Reset<'_>,
    ) -> Result<i32, CommandError> {
        let argv_p = pointers(&self.argv);
        let envp_p = pointers(&self.envp);
        // (step, errno, index of the candidate the exec error is about)
        let mut failed: Option<(Step, i32, usize)> = None;

        // Nothing may run a signal handler in the child while it shares our memory; the
        // child restores defaults and an empty mask itself.
        let saved = process::block_all_signals().map_err(|e| CommandError {
            step: Step::Clone,
            errno: errno(&e),
            path: self.program(),
        })?;
        let spawned = process::spawn_shared(&mut || {
            let fail = |failed: &mut Option<(Step, i32, usize)>, step, e: io::Error| {
                *failed = Some((step, errno(&e), usize::MAX));
                127
            };
            if let Err(e) = process::setsid() {
                return fail(&mut failed, Step::Session, e);
            }
            if let Some(fds) = stdio {
                // Every source descriptor is above 2 (the callers keep 0-2 occupied), so
                // dup2 cannot clobber one it still needs.
                for (target, source) in fds.iter().enumerate() {
                    if let Err(e) = fs::dup2(*source, target as RawFd) {
                        return fail(&mut failed, Step::Stdio, e);
                    }
                }
            }
            if tty {
                if let Err(e) = process::set_controlling_tty(0) {
                    return fail(&mut failed, Step::Terminal, e);
                }
            }
            for fd in cgroups {
                match sup::write_raw(*fd, b"0") {
                    Ok(1) => {}
                    Ok(_) => return fail(&mut failed, Step::Cgroup, io::Error::from_raw_os_error(libc::EIO)),
                    Err(e) => return fail(&mut failed, Step::Cgroup, e),
                }
            }
            if let Err(e) = fs::close_range(3, u32::MAX) {
                return fail(&mut failed, Step::CloseFds, e);
            }
            match reset {
                Reset::All => sup::reset_signal_dispositions(),
                Reset::Only(signals) => signals.iter().for_each(|s| process::default_signal(*s)),
            }
            let _ = process::unblock_all_signals();
            if let Err(e) = process::chdir_c(&self.cwd) {
                if self.cwd_required {
                    return fail(&mut failed, Step::Cwd, e);
                }
                let _ = process::chdir_c(c"/");
            }
            // execvp's rules: skip candidates that do not exist, remember EACCES, stop at
            // any other error.
            let (mut errno, mut at, mut denied) = (libc::ENOENT, usize::MAX, usize::MAX);
            for (i, path) in self.candidates.iter().enumerate() {
                let e = process::execve_raw(path, &argv_p, &envp_p).raw_os_error().unwrap_or(libc::EIO);
                match e {
                    libc::EACCES if denied == usize::MAX => denied = i,
                    libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                    other => {
                        (errno, at) = (other, i);
                        break;
                    }
                }
            }
            if errno == libc::ENOENT && denied != usize::MAX {
                (errno, at) = (libc::EACCES, denied);
            }
            failed = Some((Step::Exec, errno, at));
            127
        });
        process::restore_sigmask(&saved);
        let pid = spawned.map_err(|e| CommandError { step: Step::Clone, errno: errno(&e), path: self.program() })?;
        let Some((step, errno, at)) = failed else { return Ok(pid) };
        // The child has already exited; collect it so it is not reported as an orphan.
        let _ = process::wait4(pid, false);
        let path = match self.candidates.get(at) {
            Some(c) => c.to_string_lossy().into_owned(),
            None => self.program(),
        };
        Err(CommandError { step, errno, path })
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
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
/// after a failed execve, but in a sandbox with the exec filter every execve stops on the
/// host's exec pipeline (~0.2 ms each), so it is skipped here. Relative candidates depend
/// on the working directory the child enters, and any other error is left for execve.
fn surely_missing(candidate: &str) -> bool {
    candidate.starts_with('/')
        && matches!(std::fs::metadata(candidate).map_err(|e| e.raw_os_error()), Err(Some(libc::ENOENT | libc::ENOTDIR)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str], path: &str) -> Result<Command, CommandError> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        Command::new(&argv, &[("PATH", path)], "/", false, "/usr/bin:/bin")
    }

    #[test]
    fn missing_candidates_are_skipped_before_exec() {
        let dir = std::env::temp_dir().join(format!("safehouse-cand-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x"), b"").unwrap();
        std::fs::write(dir.join("file"), b"").unwrap();
        let d = dir.to_str().unwrap();
        let c = cmd(&["x"], &format!("/nonexistent:{d}/file:{d}:{d}/x::/bin")).unwrap();
        let c: Vec<_> = c.candidates().map(|c| c.to_str().unwrap().to_string()).collect();
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
    fn bad_commands_fail_with_the_reason() {
        for argv in [&[][..], &[""], &["a\0b"]] {
            let e = cmd(argv, "/bin").unwrap_err();
            assert!(matches!(e.step, Step::Prepare(_)) && e.errno == libc::EINVAL, "{argv:?}");
        }
        // Nothing on PATH names it: ENOENT, the program as given.
        let e = cmd(&["no-such-program"], "/nonexistent").unwrap().start(None, false, &[], Reset::All).unwrap_err();
        assert_eq!((e.step, e.errno, e.path.as_str()), (Step::Exec, libc::ENOENT, "no-such-program"));
        assert_eq!(e.to_string(), "no-such-program: exec: No such file or directory (os error 2)");
    }

    #[test]
    fn a_command_starts_and_exec_errors_name_the_path() {
        let c = cmd(&["true"], "/nonexistent:/bin").unwrap();
        let pid = c.start(None, false, &[], Reset::Only(&[])).unwrap();
        let r = process::wait4(pid, false).unwrap().unwrap();
        assert_eq!(r.exit_code(), Some(0));
        // A directory is found but cannot be exec'd: EACCES, naming it.
        let dir = std::env::temp_dir().join(format!("safehouse-acc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tool")).unwrap();
        let d = dir.to_str().unwrap();
        let e = cmd(&["tool"], d).unwrap().start(None, false, &[], Reset::All).unwrap_err();
        assert_eq!((e.step, e.errno, e.path), (Step::Exec, libc::EACCES, format!("{d}/tool")));
        // A working directory that is required and missing fails that step.
        let argv = vec!["/bin/true".to_string()];
        let c = Command::new(&argv, &[], "/nonexistent-dir", true, "/bin").unwrap();
        let e = c.start(None, false, &[], Reset::All).unwrap_err();
        assert_eq!((e.step, e.errno), (Step::Cwd, libc::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

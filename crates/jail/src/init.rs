//! The sandbox's init (PID 1 of its pid namespace): starts the command, forwards the
//! signals the host side relays, reaps every orphan, and reports the command's end. When
//! it exits, the kernel kills whatever is left in the namespace, daemonised grandchildren
//! included.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicI32, Ordering};

use safehouse_sys::{fs, process};

use crate::report::Report;
use crate::setup::ChildContext;

/// The command's pid, read by the signal handler.
static COMMAND: AtomicI32 = AtomicI32::new(0);

/// Signals the host side may relay; init passes them on to the command.
pub const FORWARDED: [i32; 6] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

extern "C" fn forward(sig: libc::c_int) {
    let pid = COMMAND.load(Ordering::Relaxed);
    if pid > 0 {
        let _ = process::kill(pid, sig);
    }
}

pub fn run(mut ctx: ChildContext) -> ! {
    for sig in FORWARDED {
        let _ = process::set_signal_handler(sig, forward);
    }
    let _ = process::sigmask(&FORWARDED, false);

    let (exec_err_read, exec_err_write) = match fs::pipe() {
        Ok(p) => p,
        Err(e) => fail(&mut ctx.status_write, format!("create exec pipe: {e}")),
    };
    match process::fork() {
        Err(e) => fail(&mut ctx.status_write, format!("fork the command: {e}")),
        Ok(None) => exec_command(&ctx, exec_err_write),
        Ok(Some(pid)) => {
            COMMAND.store(pid, Ordering::Relaxed);
            drop(exec_err_write);
            let mut buf = Vec::new();
            let _ = File::from(exec_err_read).read_to_end(&mut buf);
            if buf.len() >= 4 {
                let errno = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let path = String::from_utf8_lossy(&buf[4..]).into_owned();
                Report::ExecFailed(errno, path).send(&mut ctx.status_write);
                let _ = process::wait4(pid, false);
                process::exit_now(127);
            }
            Report::Started(pid).send(&mut ctx.status_write);
            crate::run::trace("init: command started");
            loop {
                match process::wait4(-1, false) {
                    Ok(Some(r)) if r.pid == pid => {
                        crate::run::trace("init: command exited");
                        Report::Exited(r.status).send(&mut ctx.status_write);
                        let _ = ctx.status_write.flush();
                        process::exit_now(0);
                    }
                    Ok(_) => {}
                    Err(_) => process::exit_now(0),
                }
            }
        }
    }
}

fn fail(status: &mut File, message: String) -> ! {
    Report::SetupFailed(message).send(status);
    process::exit_now(125)
}

/// Finds `name` on PATH the way execvp does, inside the sandbox's filesystem.
fn resolve(name: &str, path_var: &str) -> Result<String, i32> {
    if name.contains('/') {
        return Ok(name.to_string());
    }
    let mut saw_eacces = false;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = format!("{dir}/{name}");
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(m) if m.is_file() => saw_eacces = true,
            _ => {}
        }
    }
    Err(if saw_eacces { libc::EACCES } else { libc::ENOENT })
}

fn exec_command(ctx: &ChildContext, err_pipe: OwnedFd) -> ! {
    let keep = err_pipe.as_raw_fd() as u32;
    let mut err_pipe = File::from(err_pipe);
    let mut fail = |errno: i32, path: &str| -> ! {
        let _ = err_pipe.write_all(&[errno.to_le_bytes().as_slice(), path.as_bytes()].concat());
        process::exit_now(127)
    };
    let _ = process::setsid();
    if let Some(tty) = &ctx.tty_slave {
        for fd in 0..3 {
            if fs::dup2(tty.as_raw_fd(), fd).is_err() {
                fail(libc::EBADF, "terminal");
            }
        }
        let _ = process::set_controlling_tty(0);
    }
    // Only stdio and the (close-on-exec) error pipe stay open.
    if fs::close_range(3, keep - 1).is_err() || fs::close_range(keep + 1, u32::MAX).is_err() {
        fail(libc::EBADF, "closing inherited descriptors");
    }
    for sig in FORWARDED {
        process::default_signal(sig);
    }
    let _ = process::unblock_all_signals();
    if std::env::set_current_dir(&ctx.plan.cwd).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    let path_var = ctx.plan.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or("/usr/bin:/bin");
    let resolved = match resolve(&ctx.argv[0], path_var) {
        Ok(p) => p,
        Err(errno) => fail(errno, &ctx.argv[0]),
    };
    let c = |s: &str| CString::new(s).ok();
    let path = c(&resolved);
    let argv: Option<Vec<CString>> = ctx.argv.iter().map(|a| c(a)).collect();
    let envp: Option<Vec<CString>> = ctx.plan.env.iter().map(|(k, v)| c(&format!("{k}={v}"))).collect();
    let (Some(path), Some(argv), Some(envp)) = (path, argv, envp) else {
        fail(libc::EINVAL, "an argument or variable contains a NUL byte");
    };
    let err = process::execve(&path, &argv, &envp);
    fail(err.raw_os_error().unwrap_or(libc::EIO), &resolved)
}

//! The sandbox's init (PID 1 of its pid namespace): starts the command, forwards the
//! signals the host side relays, reaps every orphan, and reports the command's end. When
//! it exits, the kernel kills whatever is left in the namespace, daemonised grandchildren
//! included.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
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

    let pid = match spawn_command(&ctx) {
        Ok(pid) => pid,
        Err((errno, path)) => {
            Report::ExecFailed(errno, path).send(&mut ctx.status_write);
            process::exit_now(127);
        }
    };
    COMMAND.store(pid, Ordering::Relaxed);
    Report::Started(pid).send(&mut ctx.status_write);
    crate::run::trace("init: command started");
    // Reap everything; the command's own end is the sandbox's end.
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

/// Starts the command: resolved and encoded here, then a child sharing our memory
/// (`spawn_shared`, no page-table copy) makes it a session leader, takes the terminal,
/// keeps only stdio, resets signals, enters the working directory and execs. An exec
/// failure comes back as (errno, path).
fn spawn_command(ctx: &ChildContext) -> Result<i32, (i32, String)> {
    let path_var = ctx.plan.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or("/usr/bin:/bin");
    let resolved = resolve(&ctx.argv[0], path_var).map_err(|errno| (errno, ctx.argv[0].clone()))?;
    let nul = |_| (libc::EINVAL, "an argument or variable contains a NUL byte".to_string());
    let path = CString::new(resolved.as_str()).map_err(nul)?;
    let argv: Vec<CString> =
        ctx.argv.iter().map(|a| CString::new(a.as_str())).collect::<Result<_, _>>().map_err(nul)?;
    let envp: Vec<CString> =
        ctx.plan.env.iter().map(|(k, v)| CString::new(format!("{k}={v}"))).collect::<Result<_, _>>().map_err(nul)?;
    let cwd = CString::new(ctx.plan.cwd.as_str()).map_err(nul)?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let tty = ctx.tty_slave.as_ref().map(|t| t.as_raw_fd());
    let mut exec_errno = 0i32;

    let saved =
        process::block_all_signals().map_err(|e| (e.raw_os_error().unwrap_or(libc::EIO), "signal mask".into()))?;
    let spawned = process::spawn_shared(&mut || {
        let _ = process::setsid();
        if let Some(tty) = tty {
            for fd in 0..3 {
                if fs::dup2(tty, fd).is_err() {
                    exec_errno = libc::EBADF;
                    return 127;
                }
            }
            let _ = process::set_controlling_tty(0);
        }
        // Only stdio stays open.
        if fs::close_range(3, u32::MAX).is_err() {
            exec_errno = libc::EBADF;
            return 127;
        }
        for sig in FORWARDED {
            process::default_signal(sig);
        }
        let _ = process::unblock_all_signals();
        if process::chdir_c(&cwd).is_err() {
            let _ = process::chdir_c(c"/");
        }
        let err = process::execve_raw(&path, &argv_p, &envp_p);
        exec_errno = err.raw_os_error().unwrap_or(libc::EIO);
        127
    });
    process::restore_sigmask(&saved);
    let pid = spawned.map_err(|e| (e.raw_os_error().unwrap_or(libc::EIO), "spawn".to_string()))?;
    if exec_errno != 0 {
        let _ = process::wait4(pid, false);
        return Err((exec_errno, resolved));
    }
    Ok(pid)
}

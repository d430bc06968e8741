//! The sandbox's init (PID 1 of its pid namespace): starts the command, forwards the
//! signals the host side relays, reaps every orphan, and reports the command's end. When
//! it exits, the kernel kills whatever is left in the namespace, daemonised grandchildren
//! included.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use safehouse_sys::process;

use crate::command::{Command, Reset};
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

/// Starts the command with the one spawn sequence (crate::command): the command's PATH
/// searched in the sandbox's filesystem, a new session, the terminal with `--tty` (else
/// init's own stdio), only stdio kept, the forwarded signals reset, the working directory
/// (`/` if it is missing), execve. An exec failure comes back as (errno, path).
fn spawn_command(ctx: &ChildContext) -> Result<i32, (i32, String)> {
    let env: Vec<(&str, &str)> = ctx.plan.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cmd =
        Command::new(&ctx.argv, &env, &ctx.plan.cwd, false, "/usr/bin:/bin").map_err(|e| (e.errno, e.to_string()))?;
    let tty = ctx.tty_slave.as_ref().map(|t| t.as_raw_fd());
    cmd.start(tty.map(|t| [t, t, t]), tty.is_some(), &[], Reset::Only(&FORWARDED)).map_err(|e| (e.errno, e.path))
}

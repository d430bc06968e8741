//! The agent: PID 1 of every daemon sandbox.
//!
//! The isolation engine builds the sandbox and then calls [`run`] as its PID 1, already
//! confined (seccomp, Landlock, no capabilities, uid 1000). From then on the agent:
//!
//! - accepts the daemon on the inherited listening socket (whose path only the host can
//!   see); a new connection replaces the old one, so a restarted daemon re-attaches;
//! - starts processes on request (`Spawn`): own session, pipes or a pty, the command's
//!   cgroup joined through descriptors the daemon sends with the request, every other
//!   descriptor closed, signals reset, PATH lookup in the requested environment;
//! - streams their output as `Data` frames, or captures it (16 MiB per stream) for a
//!   run-to-completion command; while no daemon is connected it keeps the newest 1 MiB
//!   per stream and counts what it drops, and replays both after the next `Hello`;
//! - feeds stdin without ever blocking, relays signals to process groups and window
//!   sizes to ptys;
//! - reaps every child (orphans reparent to PID 1) and reports its own children's ends
//!   with their rusage.
//!
//! It is one single-threaded poll loop. It trusts the daemon but decodes its bytes
//! defensively (a malformed stream closes that connection, nothing else), and needs
//! nothing from sandboxed processes: they only ever see their own pipes and terminal.

#![forbid(unsafe_code)]

mod conn;
mod output;
mod proc;
mod spawn;
mod supervisor;

use std::os::fd::OwnedFd;

/// What the agent needs besides its listening socket.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    /// Base environment of every process; a `Spawn`'s `env` adds to or overrides it.
    pub env: Vec<(String, String)>,
    /// Working directory when a `Spawn` names none.
    pub cwd: String,
}

/// Serves the daemon forever as the sandbox's PID 1.
///
/// `listener` is a listening AF_UNIX SOCK_STREAM socket (made non-blocking here). The
/// descriptors 0-2 are kept occupied (with /dev/null if closed) so pipes never land
/// there; other inherited descriptors are left alone, and no child ever inherits any of
/// them. Returns only by exiting the process, on an unrecoverable poll error (status 70).
pub fn run(listener: OwnedFd, config: AgentConfig) -> ! {
    // The agent is a fork of the daemon's spawner: shed the code pages it inherited but
    // will never run, so its resident set is what the agent itself uses.
    let _ = safehouse_sys::process::release_inherited_code_pages();
    let code = match supervisor::Agent::new(listener, config) {
        Ok(mut agent) => {
            let _ = agent.serve();
            70
        }
        Err(_) => 71,
    };
    safehouse_sys::process::exit_now(code)
}

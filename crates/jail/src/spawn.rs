//! Long-lived sandboxes for the daemon: the same setup as `run`, but PID 1 becomes the
//! agent, the sandbox outlives its creator, and the cgroup is made (and later destroyed)
//! by the daemon, which passes it in.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use safehouse_policy::plan::Plan;
use safehouse_sys::process::{self, Forked};

use crate::error::JailError;
use crate::report::Report;
use crate::run::HostSide;
use crate::setup::{self, AgentEntry, ChildContext};

/// The sandbox's cgroup, made by the caller.
pub enum CgroupHandle {
    None,
    /// cgroup v1: each hierarchy's `tasks` file, opened for writing.
    V1Tasks(Vec<OwnedFd>),
    /// cgroup v2: the cgroup's directory (clone3 CLONE_INTO_CGROUP).
    V2Dir(OwnedFd),
}

pub struct SpawnSpec {
    pub plan: Plan,
    pub cgroup: CgroupHandle,
    pub agent: AgentEntry,
}

/// A started sandbox: its PID 1 (host pid) and a pidfd for it.
pub struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// With egress: the socket listening on 127.0.0.1:GATEWAY_PORT inside the sandbox,
    /// for the daemon's gateway to accept on.
    pub gateway_listener: Option<OwnedFd>,
}

/// Creates a sandbox whose PID 1 runs the agent; returns once setup is complete (or
/// failed, with the step named). Must be called from a single-threaded process.
pub fn spawn_sandbox(spec: SpawnSpec) -> Result<Spawned, JailError> {
    let root = safehouse_sys::geteuid() == 0;
    let SpawnSpec { plan, cgroup, agent } = spec;
    let HostSide { prepared, lower_fd, sync: (sync_read, sync_write), status: (status_read, status_write) } =
        HostSide::prepare(&plan, root)?;
    let (into_cgroup, tasks) = match cgroup {
        CgroupHandle::None => (None, Vec::new()),
        CgroupHandle::V1Tasks(t) => (None, t),
        CgroupHandle::V2Dir(d) => (Some(d), Vec::new()),
    };
    let flags = crate::run::SANDBOX_NAMESPACES;
    let forked = process::clone_process(flags, into_cgroup.as_ref().map(|fd| fd.as_fd()))
        .map_err(|e| JailError::host("clone the sandbox", e))?;
    let (pid, pidfd) = match forked {
        Forked::Child => {
            drop(sync_write);
            drop(status_read);
            drop(tasks);
            setup::child_main(ChildContext {
                plan,
                argv: Vec::new(),
                sync_read,
                status_write: File::from(status_write),
                prepared,
                lower_fd,
                privileged: root,
                agent: Some(agent),
                tty_slave: None,
            })
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(sync_read);
    drop(status_write);
    drop(prepared);
    drop(agent);
    drop(into_cgroup);

    let release = (|| {
        crate::run::write_id_maps(pid, root)?;
        let send = |msg: &[u8], fds: &[RawFd]| {
            safehouse_sys::unix::send_with_fds(&sync_write, msg, fds)
                .map_err(|e| JailError::host("release the sandbox", e))
        };
        send(b"1", &[])?;
        let gateway =
            if plan.gateway { Some(OwnedFd::from(crate::run::receive_gateway_listener(&sync_write)?)) } else { None };
        send(b"2", &tasks.iter().map(|t| t.as_raw_fd()).collect::<Vec<_>>())?;
        Ok(gateway)
    })();
    drop(tasks);
    // Wait for the sandbox's verdict: Ready (the agent takes over) or a failed step.
    let verdict = release.and_then(|gateway| {
        let mut status = File::from(status_read);
        let mut header = [0u8; 5];
        status.read_exact(&mut header).map_err(|_| JailError::Setup("the sandbox died during setup".into()))?;
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.min(4096)];
        status.read_exact(&mut body).map_err(|_| JailError::Setup("the sandbox died during setup".into()))?;
        match Report::decode_all(&[header.as_slice(), &body].concat()) {
            Ok(r) if r.first() == Some(&Report::Ready) => Ok(gateway),
            Ok(r) => match r.into_iter().next() {
                Some(Report::SetupFailed(msg)) => Err(JailError::Setup(msg)),
                other => Err(JailError::Setup(format!("unexpected status from the sandbox: {other:?}"))),
            },
            Err(e) => Err(JailError::Setup(format!("the sandbox sent a malformed status record: {e}"))),
        }
    });
    drop(sync_write);
    match verdict {
        Ok(gateway_listener) => Ok(Spawned { pid, pidfd, gateway_listener }),
        Err(e) => {
            let _ = process::pidfd_send_signal(&pidfd, libc::SIGKILL);
            let _ = process::wait4(pid, false);
            Err(e)
        }
    }
}

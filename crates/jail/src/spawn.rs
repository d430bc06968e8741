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
    /// Observe execs (crate::execwatch): with it, the listening socket the exec
    /// listener's keeper serves on (crate::execwatch::keeper).
    pub exec_keeper: Option<OwnedFd>,
}

/// A started sandbox: its PID 1 (host pid) and a pidfd for it.
pub struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// With egress: the socket listening on 127.0.0.1:GATEWAY_PORT inside the sandbox,
    /// for the daemon's gateway to accept on.
    pub gateway_listener: Option<OwnedFd>,
    /// With exec observation: the seccomp listener on which every exec in the sandbox
    /// waits (crate::execwatch::Watcher answers it). The sandbox holds no copy.
    pub exec_listener: Option<OwnedFd>,
    /// The sandbox's root directory (its `/`), for the host side's file operations.
    pub root: OwnedFd,
    /// With `tools.limits`: the limited tools' files in the sandbox (for the watcher).
    pub tool_table: crate::toollimit::ToolTable,
}

/// Creates a sandbox whose PID 1 runs the agent; returns once setup is complete (or
/// failed, with the step named). Must be called from a single-threaded process.
pub fn spawn_sandbox(spec: SpawnSpec) -> Result<Spawned, JailError> {
    let root = safehouse_sys::geteuid() == 0;
    let SpawnSpec { plan, cgroup, agent, exec_keeper } = spec;
    let watch_execs = exec_keeper.is_some();
    let HostSide { prepared, lower_fds, layer_fd, sync: (sync_read, sync_write), status: (status_read, status_write) } =
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
                lower_fds,
                layer_fd,
                privileged: root,
                agent: Some(agent),
                tty: false,
                tty_slave: None,
                watch_execs,
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
        crate::run::write_id_maps(pid, root, &plan)?;
        let send = |msg: &[u8], fds: &[RawFd]| {
            safehouse_sys::unix::send_with_fds(&sync_write, msg, fds)
                .map_err(|e| JailError::host("release the sandbox", e))
        };
        send(b"1", &[])?;
        let gateway =
            if plan.gateway { Some(OwnedFd::from(crate::run::receive_gateway_listener(&sync_write)?)) } else { None };
        let root_dir = receive_root(&sync_write)?;
        send(b"2", &tasks.iter().map(|t| t.as_raw_fd()).collect::<Vec<_>>())?;
        // A sandbox that fails before the exec notification step hangs up instead: its status says why.
        let exec = match exec_keeper {
            Some(sock) => match receive_exec_listener(&sync_write)? {
                Some((listener, table_bytes)) => {
                    let table = crate::toollimit::decode_table(&table_bytes, plan.tools.limits.len())
                        .map_err(JailError::Setup)?;
                    let kept: &[u8] = if table.is_empty() { &[] } else { &table_bytes };
                    crate::execwatch::keeper::start(&listener, kept, sock)
                        .map_err(|e| JailError::host("start the exec listener's keeper", e))?;
                    Some(Some((listener, table)))
                }
                None => Some(None),
            },
            None => None,
        };
        Ok((gateway, root_dir, exec))
    })();
    drop(tasks);
    // Wait for the sandbox's verdict: Ready (the agent takes over) or a failed step.
    let verdict = release.and_then(|(gateway, root_dir, exec)| {
        let mut status = File::from(status_read);
        let mut header = [0u8; 5];
        status.read_exact(&mut header).map_err(|_| JailError::Setup("the sandbox died during setup".into()))?;
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.min(4096)];
        status.read_exact(&mut body).map_err(|_| JailError::Setup("the sandbox died during setup".into()))?;
        match Report::decode_all(&[header.as_slice(), &body].concat()) {
            Ok(r) if r.first() == Some(&Report::Ready) => match exec {
                Some(None) => Err(JailError::Setup("the sandbox sent no exec listener".into())),
                exec => Ok((gateway, root_dir, exec.flatten())),
            },
            Ok(r) => match r.into_iter().next() {
                Some(Report::SetupFailed(msg)) => Err(JailError::Setup(msg)),
                other => Err(JailError::Setup(format!("unexpected status from the sandbox: {other:?}"))),
            },
            Err(e) => Err(JailError::Setup(format!("the sandbox sent a malformed status record: {e}"))),
        }
    });
    drop(sync_write);
    match verdict {
        Ok((gateway_listener, root, exec)) => {
            let (exec_listener, tool_table) = match exec {
                Some((l, t)) => (Some(l), t),
                None => (None, Default::default()),
            };
            Ok(Spawned { pid, pidfd, gateway_listener, exec_listener, root, tool_table })
        }
        Err(e) => {
            let _ = process::pidfd_send_signal(&pidfd, libc::SIGKILL);
            let _ = process::wait4(pid, false);
            Err(e)
        }
    }
}

/// Receives the sandbox's root directory (setup step `hand over the root`).
fn receive_root(sync: &OwnedFd) -> Result<OwnedFd, JailError> {
    let mut tag = [0u8; 8];
    match safehouse_sys::unix::recv_with_fds(sync, &mut tag) {
        Ok((1, mut fds)) if tag[0] == b'r' && fds.len() == 1 => Ok(fds.remove(0)),
        Ok((0, _)) => Err(JailError::Setup("the sandbox failed before handing over its root".into())),
        Ok(_) => Err(JailError::Setup("the sandbox sent something other than its root".into())),
        Err(e) => Err(JailError::host("receive the sandbox's root", e)),
    }
}

/// Receives the exec listener the sandbox sends at the setup step `exec notification` with the tool table
/// (encoded, empty without `tools.limits`); None when it hung up instead (a failed setup
/// step).
fn receive_exec_listener(sync: &OwnedFd) -> Result<Option<(OwnedFd, Vec<u8>)>, JailError> {
    let mut buf = vec![0u8; 1 << 20];
    let (n, fds) = safehouse_sys::unix::recv_with_fds(sync, &mut buf)
        .map_err(|e| JailError::host("receive the exec listener", e))?;
    match fds.into_iter().next() {
        Some(fd) if n > 0 && buf.starts_with(b"T\n") => Ok(Some((fd, buf[..n].to_vec()))),
        None if n == 0 => Ok(None),
        _ => Err(JailError::Setup("the sandbox sent something other than its exec listener".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_end() -> OwnedFd {
        safehouse_sys::fs::pipe().unwrap().0
    }

    #[test]
    fn the_root_is_taken_only_as_tagged() {
        let (a, b) = safehouse_sys::unix::seqpacket_pair().unwrap();
        let fd = pipe_end();
        safehouse_sys::unix::send_with_fds(&b, b"r", &[fd.as_raw_fd()]).unwrap();
        assert!(receive_root(&a).is_ok());
        safehouse_sys::unix::send_with_fds(&b, b"g", &[fd.as_raw_fd()]).unwrap();
        assert!(matches!(receive_root(&a), Err(JailError::Setup(m)) if m.contains("something other")));
        drop(b);
        assert!(matches!(receive_root(&a), Err(JailError::Setup(m)) if m.contains("failed before")));
    }

    #[test]
    fn the_exec_listener_comes_with_its_table_or_not_at_all() {
        let (a, b) = safehouse_sys::unix::seqpacket_pair().unwrap();
        let fd = pipe_end();
        let table = crate::toollimit::encode_table([(0, 1, 2)]);
        safehouse_sys::unix::send_with_fds(&b, &table, &[fd.as_raw_fd()]).unwrap();
        let (_, got) = receive_exec_listener(&a).unwrap().unwrap();
        assert_eq!(got, table);
        safehouse_sys::unix::send_with_fds(&b, b"r", &[fd.as_raw_fd()]).unwrap();
        assert!(matches!(receive_exec_listener(&a), Err(JailError::Setup(_))));
        drop(b);
        // A hang-up: a failed setup step (its status record says which).
        assert!(receive_exec_listener(&a).unwrap().is_none());
    }
}

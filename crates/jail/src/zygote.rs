//! The spawner: a single-threaded process forked from the daemon before it starts any
//! thread, which creates sandboxes on request. A multi-threaded daemon must not fork
//! (a child could inherit a lock held by another thread); the spawner can, and being a
//! fork (no exec) it starts sandboxes fast. It dies with the daemon; the sandboxes it
//! made do not (they are re-parented to the host's init and the daemon re-attaches).
//!
//! Requests and replies are one SOCK_SEQPACKET message each: JSON plus descriptors.

use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use safehouse_policy::plan::Plan;
use safehouse_sys::process;

use crate::error::JailError;
use crate::setup::AgentEntry;
use crate::spawn::{spawn_sandbox, CgroupHandle, SpawnSpec, Spawned};

const MAX_MESSAGE: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Request {
    plan: Plan,
    /// "none", "v1" (the fds after the listener are `tasks` files) or "v2" (a dir fd).
    cgroup: String,
    /// Observe execs: the fd after the agent's listener is the exec keeper's socket.
    #[serde(default)]
    exec_keeper: bool,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    /// Descriptors: the pidfd, then the gateway's listener if `gateway`, then the exec
    /// listener if `exec`.
    Spawned {
        pid: i32,
        gateway: bool,
        exec: bool,
        /// `tools.limits`: the limited tools' files, `(limit index, dev, ino)`.
        #[serde(default)]
        tools: Vec<(usize, u64, u64)>,
    },
    Refused {
        layer: String,
        reason: String,
    },
    Failed {
        message: String,
    },
}

/// The daemon's handle on its spawner.
pub struct Zygote {
    sock: OwnedFd,
    pid: i32,
}

impl Zygote {
    /// Forks the spawner. Call while the process is still single-threaded. `entry` is
    /// what every sandbox's PID 1 runs (the agent).
    pub fn start(entry: fn(OwnedFd, &Plan) -> !) -> std::io::Result<Zygote> {
        let (ours, theirs) = safehouse_sys::unix::seqpacket_pair()?;
        match process::fork()? {
            Some(pid) => {
                drop(theirs);
                Ok(Zygote { sock: ours, pid })
            }
            None => {
                drop(ours);
                let _ = process::set_pdeathsig(libc::SIGKILL);
                serve(theirs, entry)
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Asks the spawner for a sandbox (blocking; one request at a time per spawner).
    /// `exec_keeper`: observe execs, with this listening socket for the exec listener's
    /// keeper (crate::execwatch::keeper).
    pub fn spawn(
        &self,
        plan: &Plan,
        listener: OwnedFd,
        cgroup: CgroupHandle,
        exec_keeper: Option<OwnedFd>,
    ) -> Result<Spawned, JailError> {
        let (kind, cg_fds) = match cgroup {
            CgroupHandle::None => ("none", Vec::new()),
            CgroupHandle::V1Tasks(t) => ("v1", t),
            CgroupHandle::V2Dir(d) => ("v2", vec![d]),
        };
        let req = serde_json::to_vec(&Request {
            plan: plan.clone(),
            cgroup: kind.into(),
            exec_keeper: exec_keeper.is_some(),
        })
        .map_err(|e| JailError::Setup(format!("encode spawn request: {e}")))?;
        let mut fds = vec![listener.as_raw_fd()];
        fds.extend(exec_keeper.iter().map(|f| f.as_raw_fd()));
        fds.extend(cg_fds.iter().map(|f| f.as_raw_fd()));
        safehouse_sys::unix::send_with_fds(&self.sock, &req, &fds)
            .map_err(|e| JailError::host("ask the spawner", e))?;
        drop(listener);
        drop(exec_keeper);
        drop(cg_fds);
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (n, got) = safehouse_sys::unix::recv_with_fds(&self.sock, &mut buf)
            .map_err(|e| JailError::host("hear from the spawner", e))?;
        if n == 0 {
            return Err(JailError::Setup("the spawner exited".into()));
        }
        match serde_json::from_slice::<Reply>(&buf[..n]) {
            Ok(Reply::Spawned { pid, gateway, exec, tools })
                if got.len() == 2 + usize::from(gateway) + usize::from(exec) && (gateway == plan.gateway) =>
            {
                let mut got = got.into_iter();
                let (Some(pidfd), Some(root)) = (got.next(), got.next()) else {
                    return Err(JailError::Setup("the spawner sent no pidfd".into()));
                };
                let gateway_listener = if gateway { got.next() } else { None };
                let exec_listener = if exec { got.next() } else { None };
                let tool_table = tools.into_iter().map(|(i, dev, ino)| ((dev, ino), i)).collect();
                Ok(Spawned { pid, pidfd, gateway_listener, exec_listener, root, tool_table })
            }
            Ok(Reply::Spawned { .. }) => Err(JailError::Setup("the spawner sent the wrong descriptors".into())),
            Ok(Reply::Refused { layer, reason }) => Err(JailError::LayerUnavailable { layer, reason }),
            Ok(Reply::Failed { message }) => Err(JailError::Setup(message)),
            Err(e) => Err(JailError::Setup(format!("malformed reply from the spawner: {e}"))),
        }
    }
}

/// The spawner's loop: serve requests until the daemon goes away.
fn serve(sock: OwnedFd, entry: fn(OwnedFd, &Plan) -> !) -> ! {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        // Reap sandboxes that exited (their PID 1s are our children).
        while let Ok(Some(_)) = process::wait4(-1, true) {}
        match process::poll_readable(&[sock.as_raw_fd()], 1000) {
            Ok(r) if r[0] => {}
            Ok(_) => continue,
            Err(_) => process::exit_now(1),
        }
        let (n, mut fds) = match safehouse_sys::unix::recv_with_fds(&sock, &mut buf) {
            Ok((0, _)) | Err(_) => process::exit_now(0),
            Ok(x) => x,
        };
        let reply = handle(&buf[..n], &mut fds, entry);
        let (msg, sent) = match reply {
            Ok(spawned) => {
                let (gateway, exec) = (spawned.gateway_listener.is_some(), spawned.exec_listener.is_some());
                let mut sent = vec![spawned.pidfd, spawned.root];
                sent.extend(spawned.gateway_listener);
                sent.extend(spawned.exec_listener);
                let tools = spawned.tool_table.iter().map(|(&(dev, ino), &i)| (i, dev, ino)).collect();
                (Reply::Spawned { pid: spawned.pid, gateway, exec, tools }, sent)
            }
            Err(JailError::LayerUnavailable { layer, reason }) => (Reply::Refused { layer, reason }, Vec::new()),
            Err(e) => (Reply::Failed { message: e.to_string() }, Vec::new()),
        };
        let body = serde_json::to_vec(&msg).unwrap_or_default();
        let fds: Vec<i32> = sent.iter().map(|f| f.as_raw_fd()).collect();
        if safehouse_sys::unix::send_with_fds(&sock, &body, &fds).is_err() {
            process::exit_now(0);
        }
    }
}

fn handle(msg: &[u8], fds: &mut Vec<OwnedFd>, entry: fn(OwnedFd, &Plan) -> !) -> Result<Spawned, JailError> {
    let req: Request =
        serde_json::from_slice(msg).map_err(|e| JailError::Setup(format!("malformed spawn request: {e}")))?;
    if fds.is_empty() {
        return Err(JailError::Setup("spawn request without the agent's socket".into()));
    }
    let listener = fds.remove(0);
    let exec_keeper = if req.exec_keeper {
        if fds.is_empty() {
            return Err(JailError::Setup("spawn request without the exec keeper's socket".into()));
        }
        Some(fds.remove(0))
    } else {
        None
    };
    let cgroup = match req.cgroup.as_str() {
        "none" => CgroupHandle::None,
        "v1" => CgroupHandle::V1Tasks(std::mem::take(fds)),
        "v2" if fds.len() == 1 => CgroupHandle::V2Dir(fds.remove(0)),
        other => return Err(JailError::Setup(format!("bad cgroup kind {other:?}"))),
    };
    spawn_sandbox(SpawnSpec { plan: req.plan, cgroup, agent: AgentEntry { run: entry, listener }, exec_keeper })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        use safehouse_policy::plan::{compile, HostView, RunRequest};
        compile(&RunRequest::default(), &HostView::default()).unwrap()
    }

    fn entry(_: OwnedFd, _: &Plan) -> ! {
        unreachable!("no sandbox is started in these tests")
    }

    /// A spawner end that has already answered `reply` with `fds` descriptors.
    fn answered(reply: &Reply, fds: usize) -> (Zygote, OwnedFd) {
        let (ours, theirs) = safehouse_sys::unix::seqpacket_pair().unwrap();
        let held: Vec<OwnedFd> = (0..fds).map(|_| safehouse_sys::fs::pipe().unwrap().0).collect();
        let raw: Vec<i32> = held.iter().map(|f| f.as_raw_fd()).collect();
        safehouse_sys::unix::send_with_fds(&theirs, &serde_json::to_vec(reply).unwrap(), &raw).unwrap();
        (Zygote { sock: ours, pid: 0 }, theirs)
    }

    fn ask(z: &Zygote) -> Result<Spawned, JailError> {
        z.spawn(&plan(), safehouse_sys::fs::pipe().unwrap().0, CgroupHandle::None, None)
    }

    #[test]
    fn replies_are_decoded_defensively() {
        let spawned = Reply::Spawned { pid: 7, gateway: false, exec: false, tools: vec![(0, 1, 2)] };
        let (z, _s) = answered(&spawned, 2);
        let s = ask(&z).unwrap();
        assert_eq!((s.pid, s.tool_table.get(&(1, 2))), (7, Some(&0)));
        // Too few descriptors for what the reply says.
        let (z, _s) = answered(&spawned, 1);
        assert!(matches!(ask(&z), Err(JailError::Setup(m)) if m.contains("wrong descriptors")));
        let (z, _s) = answered(&Reply::Refused { layer: "landlock".into(), reason: "old".into() }, 0);
        assert!(matches!(ask(&z), Err(JailError::LayerUnavailable { layer, .. }) if layer == "landlock"));
        let (z, _s) = answered(&Reply::Failed { message: "filesystem: x".into() }, 0);
        assert!(matches!(ask(&z), Err(JailError::Setup(m)) if m == "filesystem: x"));
        // The spawner gone: a clear error, not a hang.
        let (ours, theirs) = safehouse_sys::unix::seqpacket_pair().unwrap();
        drop(theirs);
        assert!(ask(&Zygote { sock: ours, pid: 0 }).is_err());
    }

    #[test]
    fn malformed_requests_are_refused_before_any_clone() {
        let listener = || safehouse_sys::fs::pipe().unwrap().0;
        let bad = |msg: &[u8], mut fds: Vec<OwnedFd>| match handle(msg, &mut fds, entry) {
            Err(JailError::Setup(m)) => m,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("spawned"),
        };
        assert!(bad(b"{", vec![listener()]).contains("malformed spawn request"));
        let req = |cgroup: &str, exec_keeper: bool| {
            serde_json::to_vec(&Request { plan: plan(), cgroup: cgroup.into(), exec_keeper }).unwrap()
        };
        assert!(bad(&req("none", false), vec![]).contains("without the agent's socket"));
        assert!(bad(&req("none", true), vec![listener()]).contains("without the exec keeper's socket"));
        assert!(bad(&req("v3", false), vec![listener()]).contains("bad cgroup kind"));
        assert!(bad(&req("v2", false), vec![listener()]).contains("bad cgroup kind"));
    }
}

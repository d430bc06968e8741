//! A sandbox's network namespace, for the port proxy (`api::ports`) to make sockets in.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use super::{Manager, ManagerError};

/// Where the capability gateway listens inside every sandbox (`127.0.0.1:3128`): the one
/// way out of a sandbox's network namespace. The port proxy refuses this port, so nobody
/// reaches a sandbox's egress proxy from outside.
pub use safehouse_policy::plan::GATEWAY_PORT;

impl Manager {
    /// The network namespace of a running sandbox: `/proc/<agent>/ns/net`, opened while the
    /// agent is verified alive (its pidfd), so a recycled pid can never be followed into
    /// some other process's namespace.
    pub fn netns(&self, tenant: &str, id: &str) -> Result<OwnedFd, ManagerError> {
        let live = self.running(tenant, id)?;
        if !self.inner.root_mode {
            return Err(ManagerError::Refused {
                layer: "ports".into(),
                reason: "the port proxy needs a root daemon: making a socket in a sandbox's network namespace \
                         takes CAP_SYS_ADMIN (setns), which an unprivileged daemon does not have; run \
                         `safehouse serve` as root, or reach the service from a command inside the sandbox"
                    .into(),
            });
        }
        let ns = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/{}/ns/net", live.pid))
            .map_err(|e| ManagerError::NotRunning(format!("unreachable ({e})")))?;
        // Opened before this check: if the agent is still the process the pidfd names, the
        // pid was not recycled in between and the namespace is the sandbox's.
        if safehouse_sys::process::pidfd_send_signal(&live.pidfd, 0).is_err() {
            return Err(ManagerError::NotRunning("gone".into()));
        }
        Ok(OwnedFd::from(ns))
    }
}

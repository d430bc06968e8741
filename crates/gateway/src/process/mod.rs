//! The gateway in its own confined process.
//!
//! The daemon holds the API keys, the audit signing key and the store; the gateway parses
//! HTTP, SOCKS5 and DNS that sandboxed code (and the internet) controls. So the gateway
//! runs in a process of its own, one for all sandboxes of a daemon, started by re-executing
//! the daemon's binary as `safehouse __gateway` (a fresh image: nothing of the daemon's
//! memory), confined before it reads a byte from a sandbox ([`confine`]), and talking to the
//! daemon over one inherited unix socket in typed messages ([`wire`]). A parser bug there
//! reaches a process that has no file to open, no key in memory, no capability and a
//! seccomp filter that allows sockets, pipes, threads and memory.
//!
//! - [`host`]: the daemon's side ([`GatewayHost`], [`GatewayHandle`]): start, restart,
//!   listeners, host addresses, budget grants, events, counters.
//! - [`worker`]: the process's side.
//! - [`thread`]: the same for a synchronous program (`safehouse run`).

pub mod confine;
pub mod host;
pub mod probe;
pub mod thread;
pub mod wire;
pub mod worker;

pub use confine::{Confinement, Layer};
pub use host::{CrashHook, GatewayHandle, GatewayHost, HostConfig, HostError, SuppressedHook};
pub use thread::ProcessGateway;

/// The hidden subcommand that runs the gateway process (`safehouse __gateway`).
pub const SUBCOMMAND: &str = "__gateway";
/// The hidden subcommand that runs the confinement's test subject ([`probe`]).
pub const PROBE_SUBCOMMAND: &str = "__gateway-probe";

/// The daemon's own binary, to start the gateway process from.
pub fn own_binary() -> std::path::PathBuf {
    std::path::PathBuf::from("/proc/self/exe")
}

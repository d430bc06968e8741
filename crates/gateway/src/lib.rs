//! The safehouse egress gateway: the only way out of a sandbox that may use the network.
//!
//! A sandbox has its own network namespace with nothing but loopback. When its policy
//! allows egress, a listener on `127.0.0.1:3128` inside that namespace is handed to the host,
//! and this crate serves it: sandboxed code connects to the listener, the gateway decides, and
//! the gateway dials out from the host's namespace. One port speaks three protocols, told apart
//! by the first byte a client sends (`0x05` is SOCKS5, anything else HTTP/1.1):
//!
//! - **HTTP forward proxy** (`GET http://host:port/path`, for `HTTP_PROXY`): the request is
//!   forwarded in origin form with hop-by-hop headers removed and `Host` replaced by the
//!   checked authority; the upstream connection is kept alive and reused for the next request
//!   to the same authority on the same client connection.
//! - **CONNECT host:port** (for `HTTPS_PROXY`): a tunnel pinned to the one address dialled.
//! - **SOCKS5** (RFC 1928, for `ALL_PROXY=socks5h://`): no authentication, CONNECT only,
//!   IPv4, IPv6 and domain-name targets.
//!
//! # What it promises
//!
//! Every target goes through the same sequence ([`Gateway`]'s `approve`): budget not spent →
//! [`NetPolicy::check_target`] on the name or address as requested (every IPv4 spelling and
//! IPv4-in-IPv6 form normalised by [`safehouse_policy::network::parse_target`]) → only then,
//! for a name, one resolution → [`NetPolicy::check_resolved`] on *every* address returned (one
//! denied address denies the request) → a dial to one of exactly those addresses. A name the
//! policy does not allow is never resolved, so it never reaches a DNS server (no DNS
//! exfiltration). A denial is an HTTP 403 (SOCKS reply `0x02`) whose `text/plain` body names
//! the request, the rule that decided, the reason and what to add to `network.allow`.
//!
//! Bytes moved between the gateway and the outside, both directions, count against the
//! policy's `egress_bytes`, claimed before they move (a hard cap); once spent, every open
//! connection of the gateway is closed and new requests are refused. Each gateway caps its
//! concurrent client connections (extras get a 503 and are closed at once, without blocking
//! the accept loop), header size and idle time.
//!
//! # How bytes move
//!
//! Heads are read by httparse ([`http::head`]), SOCKS5 handshakes by the parsers in
//! [`socks`], DNS answers by hickory-proto ([`dns`]). Bodies and tunnels never pass through
//! the gateway's memory: they are spliced from socket to pipe to socket (`relay`), so the
//! gateway's cost per byte is a few syscalls per pipe-full, not a copy.
//!
//! # Where it runs
//!
//! In its own confined process ([`process`]): the daemon (and `safehouse run`) re-execute
//! their binary as `safehouse __gateway`, which confines itself (empty filesystem view,
//! unprivileged identity, no_new_privs, Landlock, its own seccomp profile) and serves the
//! listeners it is handed over a typed channel. [`Gateway`] itself is the in-process core
//! (tests and benches run it directly).
//!
//! # What it does not do
//!
//! - It does not look inside TLS: after CONNECT the gateway sees only the name and port the
//!   client asked for, not the SNI or `Host` inside the tunnel (domain fronting through an
//!   allowed CDN name is not stopped here).
//! - No HTTP/2 towards clients, no `Upgrade` (websockets) over the plain forward proxy
//!   (use CONNECT), no `https://` absolute URIs (use CONNECT), no SOCKS BIND or UDP ASSOCIATE,
//!   no SOCKS authentication: the listener is reachable only from inside the sandbox.
//! - The DNS stub does not validate DNSSEC; every address it returns is re-checked anyway.
//!   It consults `/etc/hosts` and the nameservers of `/etc/resolv.conf`, not other nsswitch
//!   sources ([`SystemConf`]).
//! - It keeps no TLS keys and terminates nothing: what is allowed is allowed by name and port.
//!
//! # Operator settings
//!
//! [`Resolver::from_env`] reads `SAFEHOUSE_GATEWAY_RESOLVE` (`name=ip[,ip];name2=ip`, trusted
//! overrides standing for the public internet in tests) and `SAFEHOUSE_GATEWAY_DNS`
//! (`ip:port` of a DNS server to ask instead of the system's), and otherwise the system's
//! settings as the files say at start ([`SystemConf::read`]; the daemon re-reads them every
//! 10 s). All are operator and test settings, never something the sandboxed side can set.

#![forbid(unsafe_code)]

mod approve;
mod budget;
mod conn;
pub mod dns;
mod gateway;
pub mod hostaddrs;
pub mod http;
#[doc(hidden)]
pub mod loglimit;
mod meter;
pub mod process;
mod relay;
pub mod resolve;
pub mod socks;
mod stats;
mod sysconf;
pub mod target;
mod thread;

pub use budget::GrantHook;
pub use gateway::{Config, Event, EventHook, Gateway};
pub use hostaddrs::{FixedHostAddrs, HostAddrError, HostAddrSource, HostWatch};
pub use resolve::{ResolveError, Resolved, Resolver, SystemConf};
pub use stats::{DenialRecord, Stats};
pub use thread::{spawn_thread, GatewayThread};

pub use safehouse_policy::network::NetPolicy;

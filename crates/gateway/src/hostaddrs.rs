//! The host's own addresses, read from the kernel and kept current, for the policy's
//! decisions ([`HostAddrs`]).
//!
//! What counts: every interface address (IPv4 `IFA_LOCAL`, else `IFA_ADDRESS`; IPv6
//! `IFA_ADDRESS`), every route of type `local` in the `local` table (the host answers on every
//! address of such a route: `ip route add local 203.0.113.0/24 dev lo`), whatever the
//! program adds ([`HostWatch::add`]: the daemon's listen addresses), and the unspecified
//! addresses. The kernel is asked over routing netlink (`RTM_GETADDR`, `RTM_GETROUTE`).
//!
//! [`watch`] starts one watcher per process: a thread subscribed to the kernel's address
//! and route notifications (`RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`,
//! `RTMGRP_IPV4_ROUTE`, `RTMGRP_IPV6_ROUTE`). On an address change, a change to a local
//! route, a lost notification (`ENOBUFS`) or every [`REFRESH`] at the latest, it reads the
//! whole set again and publishes a new snapshot; a gateway takes the current one for each
//! decision. Subscribing comes before the first read, so no change falls between them.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use safehouse_policy::network::{HostAddrs, HostBlock};

/// The longest a snapshot goes without a full re-read, notifications or not.
pub const REFRESH: Duration = Duration::from_secs(10);
/// After a failed read, the next try.
const RETRY: Duration = Duration::from_millis(200);
/// The kernel's `local` routing table (`RT_TABLE_LOCAL`), consulted before any other.
const LOCAL_TABLE: u8 = 255;
/// Receive buffer for one netlink datagram (dumps send at most a few pages per datagram).
const DATAGRAM: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum HostAddrError {
    #[error("open a routing netlink socket: {0}")]
    Socket(io::Error),
    #[error("subscribe to the kernel's address and route changes: {0}")]
    Subscribe(io::Error),
    #[error("list the host's addresses and local routes over netlink: {0}")]
    Dump(String),
    #[error("start the host-address watcher thread: {0}")]
    Thread(io::Error),
    #[error("the host-address watcher could not start earlier in this process: {0}")]
    Earlier(String),
}

/// Where a gateway reads the host's addresses from, once per decision.
pub trait HostAddrSource: Send + Sync + fmt::Debug {
    fn snapshot(&self) -> Arc<HostAddrs>;
}

/// One fixed snapshot (a program that looks once; tests of the decisions).
#[derive(Debug, Clone)]
pub struct FixedHostAddrs(pub Arc<HostAddrs>);

impl HostAddrSource for FixedHostAddrs {
    fn snapshot(&self) -> Arc<HostAddrs> {
        self.0.clone()
    }
}

/// A set someone else keeps current and pushes in (the gateway process: the daemon
/// watches the kernel and sends each new set). Empty until the first [`PushedHostAddrs::set`].
#[derive(Debug, Default)]
pub struct PushedHostAddrs {
    current: RwLock<Arc<HostAddrs>>,
    published: std::sync::atomic::AtomicBool,
}

impl PushedHostAddrs {
    pub fn set(&self, blocks: Vec<HostBlock>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(HostAddrs::new(blocks));
        self.published.store(true, Relaxed);
    }

    /// Whether a set was published (before that, nothing may be decided).
    pub fn is_published(&self) -> bool {
        self.published.load(Relaxed)
    }
}

impl HostAddrSource for PushedHostAddrs {
    fn snapshot(&self) -> Arc<HostAddrs> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The live set: the kernel's addresses and local routes, plus what the program added.
#[derive(Debug)]
pub struct HostWatch {
    current: RwLock<Arc<HostAddrs>>,
    /// What the kernel said at the last read.
    kernel: Mutex<Vec<HostBlock>>,
    /// What the program added (listen addresses).
    extra: Mutex<Vec<HostBlock>>,
    /// Snapshots published so far (tests wait on it).
    generation: AtomicU64,
    /// Tells subscribers a new snapshot is out (its generation).
    changed: tokio::sync::watch::Sender<u64>,
}

impl HostAddrSource for HostWatch {
    fn snapshot(&self) -> Arc<HostAddrs> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl HostWatch {
    /// Adds blocks the kernel does not list but that are the host all the same (the
    /// daemon's listen addresses); they stay for the process's life.
    pub fn add(&self, blocks: impl IntoIterator<Item = HostBlock>) {
        self.extra.lock().unwrap_or_else(|e| e.into_inner()).extend(blocks);
        self.publish();
    }

    /// How many snapshots were published (each read of the kernel's set, each `add`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Changes whenever a new snapshot is published (the gateway process's feed).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The blocks of the current snapshot.
    pub fn blocks(&self) -> Vec<HostBlock> {
        self.snapshot().blocks().to_vec()
    }

    fn set_kernel(&self, blocks: Vec<HostBlock>) {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner()) = blocks;
        self.publish();
    }

    fn publish(&self) {
        let kernel = self.kernel.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let next = Arc::new(HostAddrs::new(kernel.into_iter().chain(extra)));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        let generation = self.generation.fetch_add(1, Relaxed) + 1;
        self.changed.send_replace(generation);
    }
}

/// The process's watcher, started on first use (subscription, first read, thread). Every
/// later call returns the same one, or the same failure.
pub fn watch() -> Result<Arc<HostWatch>, HostAddrError> {
    static WATCH: OnceLock<Result<Arc<HostWatch>, String>> = OnceLock::new();
    WATCH.get_or_init(|| start().map_err(|e| e.to_string())).clone().map_err(HostAddrError::Earlier)
}

/// One read of the kernel's set, without a watcher (`policy explain`).
pub fn read_now() -> Result<HostAddrs, HostAddrError> {
    Ok(HostAddrs::new(read_kernel()?))
}

fn start() -> Result<Arc<HostWatch>, HostAddrError> {
    let mut events = Socket::new(NETLINK_ROUTE).map_err(HostAddrError::Socket)?;
    let groups =
        (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE)
            as u32;
    events.bind(&SocketAddr::new(0, groups)).map_err(HostAddrError::Subscribe)?;
    events.set_non_blocking(true).map_err(HostAddrError::Subscribe)?;
    let watch = Arc::new(HostWatch {
        current: RwLock::new(Arc::new(HostAddrs::default())),
        kernel: Mutex::new(Vec::new()),
        extra: Mutex::new(Vec::new()),
        generation: AtomicU64::new(0),
        changed: tokio::sync::watch::channel(0).0,
    });
    watch.set_kernel(read_kernel()?);
    let w = watch.clone();
    std::thread::Builder::new()
        .name("safehouse-hostaddrs".into())
        .spawn(move || follow(&w, &events))
        .map_err(HostAddrError::Thread)?;
    Ok(watch)
}

/// The watcher thread: waits for notifications, re-reads the set when one matters.
fn follow(watch: &HostWatch, events: &Socket) {
    let mut buf = vec![0u8; DATAGRAM];
    let mut wait = REFRESH;
    let mut failures = 0u32;
    loop {
        let ready = safehouse_sys::process::poll_readable(&[events.as_raw_fd()], wait.as_millis() as i32);
        // A timeout (or a poll failure) re-reads: the set is never older than REFRESH.
        let mut stale = !matches!(ready.as_deref(), Ok([true]));
        loop {
            let mut room = &mut buf[..];
            match events.recv(&mut room, libc::MSG_DONTWAIT) {
                Ok(n) if n > DATAGRAM => stale = true, // truncated: read everything again
                Ok(n) => stale |= matters(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ENOBUFS: notifications were lost. Anything else: read again to be sure.
                Err(_) => {
                    stale = true;
                    break;
                }
            }
        }
        if !stale {
            continue;
        }
        match read_kernel() {
            Ok(blocks) => {
                watch.set_kernel(blocks);
                wait = REFRESH;
                failures = 0;
            }
            Err(e) => {
                // The last snapshot stays; say so (rarely: once, then every 100th failure).
                if failures % 100 == 0 {
                    tracing::warn!(error = %e, failures, "the host's addresses could not be read again; retrying");
                }
                failures = failures.saturating_add(1);
                wait = RETRY;
            }
        }
    }
}

/// True when a notification datagram changes the set: an address added or removed, a
/// local route added or removed, or something that does not parse.
fn matters(datagram: &[u8]) -> bool {
    let mut changed = false;
    for msg in messages(datagram) {
        changed |= match msg {
            Ok(NetlinkPayload::InnerMessage(m)) => match m {
                RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => true,
                RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                    r.header.kind == RouteType::Local
                }
                _ => false,
            },
            Ok(NetlinkPayload::Overrun(_)) | Err(_) => true,
            Ok(_) => false,
        };
    }
    changed
}

/// The netlink messages of one datagram, in order.
fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<NetlinkPayload<RouteNetlinkMessage>, String>> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 16 > datagram.len() {
            return None;
        }
        let len = u32::from_ne_bytes(datagram[off..off + 4].try_into().ok()?) as usize;
        if len < 16 || off + len > datagram.len() {
            off = datagram.len();
            return Some(Err(format!("a netlink message of {len} bytes in a datagram of {}", datagram.len())));
        }
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[off..off + len])
            .map(|m| m.payload)
            .map_err(|e| e.to_string());
        off += (len + 3) & !3;
        Some(parsed)
    })
}

/// Reads every interface address and every local route, both families.
fn read_kernel() -> Result<Vec<HostBlock>, HostAddrError> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(HostAddrError::Socket)?;
    sock.bind_auto().map_err(HostAddrError::Socket)?;
    // With strict checking the kernel filters the route dump by type (only local routes:
    // a router's full table is not copied); without it (kernels before 4.20) everything
    // comes and is filtered here.
    let _ = sock.set_netlink_get_strict_chk(true);
    let mut blocks = Vec::new();
    dump(&sock, 1, RouteNetlinkMessage::GetAddress(AddressMessage::default()), |m| {
        if let RouteNetlinkMessage::NewAddress(a) = m {
            blocks.extend(address_block(&a));
        }
    })?;
    let mut filter = RouteMessage::default();
    filter.header = RouteHeader { kind: RouteType::Local, table: LOCAL_TABLE, ..RouteHeader::default() };
    filter.header.address_family = AddressFamily::Unspec;
    dump(&sock, 2, RouteNetlinkMessage::GetRoute(filter), |m| {
        if let RouteNetlinkMessage::NewRoute(r) = m {
            blocks.extend(local_route_block(&r));
        }
    })?;
    Ok(blocks)
}

/// Sends one dump request and hands every answer to `each` until the kernel says done.
fn dump(
    sock: &Socket,
    seq: u32,
    request: RouteNetlinkMessage,
    mut each: impl FnMut(RouteNetlinkMessage),
) -> Result<(), HostAddrError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request));
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    sock.send(&out, 0).map_err(|e| HostAddrError::Dump(format!("send: {e}")))?;
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let mut room = &mut buf[..];
        let n = match sock.recv(&mut room, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HostAddrError::Dump(format!("receive: {e}"))),
        };
        if n > DATAGRAM {
            return Err(HostAddrError::Dump(format!("a {n}-byte answer does not fit the {DATAGRAM}-byte buffer")));
        }
        for m in messages(&buf[..n]) {
            match m.map_err(HostAddrError::Dump)? {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => return Err(HostAddrError::Dump(format!("the kernel answered {e:?}"))),
                NetlinkPayload::InnerMessage(inner) => each(inner),
                _ => {}
            }
        }
    }
}

/// An interface address as a /32 or /128 (the prefix length is the subnet's, not the
/// host's: only the address itself is this host).
fn address_block(a: &AddressMessage) -> Option<HostBlock> {
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    let ip: IpAddr = local.or(address)?;
    Some(HostBlock::new(ip, if ip.is_ipv4() { 32 } else { 128 }))
}

/// A route of type local in the `local` table: its whole destination block is this host.
/// (Local routes in other tables apply only where a policy-routing rule sends a packet
/// there, as transparent proxies do with `local 0.0.0.0/0 ... table 100` for marked
/// packets: not counted, docs/threat-model.md.)
fn local_route_block(r: &RouteMessage) -> Option<HostBlock> {
    let table = r.attributes.iter().find_map(|x| match x {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    });
    if r.header.kind != RouteType::Local || table.unwrap_or(u32::from(r.header.table)) != u32::from(LOCAL_TABLE) {
        return None;
    }
    let dest = r.attributes.iter().find_map(|x| match x {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    });
    let len = r.header.destination_prefix_length;
    match (dest, r.header.address_family) {
        (Some(ip), _) => Some(HostBlock::new(ip, len)),
        // No destination attribute: the default route's block (0/0), local: everything.
        (None, AddressFamily::Inet) => Some(HostBlock::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)),
        (None, AddressFamily::Inet6) => Some(HostBlock::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_set_holds_loopback_and_every_interface_address() {
        let h = read_now().unwrap();
        let has = |s: &str| h.find(s.parse().unwrap()).is_some();
        assert!(has("127.0.0.1") && has("127.0.0.9"), "{h:?}");
        assert!(has("0.0.0.0") && has("::"), "{h:?}");
        // Every address `getifaddrs`-style tools list is in it (read /proc for IPv6).
        let v6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
        for line in v6.lines() {
            let hex = line.split_whitespace().next().unwrap();
            let a = std::net::Ipv6Addr::from(u128::from_str_radix(hex, 16).unwrap());
            assert!(h.find(IpAddr::V6(a)).is_some(), "{a} missing from {h:?}");
        }
        assert!(!has("93.184.216.34"), "{h:?}");
    }
}

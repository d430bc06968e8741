//! The host's own addresses: an input to every network decision.
//!
//! A sandbox must never reach the services of the machine its gateway runs on. Private and
//! loopback ranges are not enough to say which addresses those are: a NIC can carry any
//! address, public ones included, and a local route (`ip route add local 203.0.113.0/24
//! dev lo`) makes the host answer on a whole block. [`HostAddrs`] is a snapshot of every
//! block the host answers on — its interface addresses, its local routes, the daemon's
//! listen addresses — taken and kept current by the caller (the gateway crate watches the
//! kernel's routing netlink), and passed in: this module stays pure.
//!
//! The unspecified addresses (`0.0.0.0`, `::`) are always in the set: connecting to them
//! reaches this host.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{canonical, embedded_v4, in_net, mask128, mask32};

/// Who may open the host's own addresses, decided by who wrote the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostReach {
    /// Never, whatever the rules say (a tenant's policy; the default, failing closed).
    #[default]
    Never,
    /// Only through an address rule naming that exact address (`203.0.113.7:8080`), never
    /// through `*`, a CIDR block or a name: the admin tenant's policies, and `safehouse run`
    /// (the local user is the host's operator).
    ExactAddressRules,
}

/// One block the host answers on (an interface address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostBlock {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl HostBlock {
    /// `addr/prefix`, canonical: IPv4-mapped blocks folded to IPv4, host bits cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> HostBlock {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix >= 96 => (canonical(addr), prefix - 96),
            other => (other, prefix),
        };
        match addr {
            IpAddr::V4(v) => {
                let p = prefix.min(32);
                HostBlock { addr: IpAddr::V4(Ipv4Addr::from(mask32(u32::from(v), p))), prefix: p }
            }
            IpAddr::V6(v) => {
                let p = prefix.min(128);
                HostBlock { addr: IpAddr::V6(Ipv6Addr::from(mask128(u128::from(v), p))), prefix: p }
            }
        }
    }

    /// True when `ip` is in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        in_net(ip, self.addr, self.prefix)
    }

    /// True when this block and `addr/prefix` share at least one address.
    pub fn overlaps(&self, addr: IpAddr, prefix: u8) -> bool {
        in_net(addr, self.addr, self.prefix.min(prefix))
    }
}

impl fmt::Display for HostBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A snapshot of the blocks the host answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddrs {
    blocks: Vec<HostBlock>,
}

/// The addresses that always mean "this host".
const UNSPECIFIED: [HostBlock; 2] = [
    HostBlock { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), prefix: 32 },
    HostBlock { addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED), prefix: 128 },
];

impl Default for HostAddrs {
    /// Only the unspecified addresses: what every snapshot holds.
    fn default() -> HostAddrs {
        HostAddrs::new(std::iter::empty())
    }
}

impl HostAddrs {
    /// The host's blocks (plus the unspecified addresses), canonical, sorted, without
    /// duplicates.
    pub fn new(blocks: impl IntoIterator<Item = HostBlock>) -> HostAddrs {
        let mut all: Vec<HostBlock> =
            UNSPECIFIED.into_iter().chain(blocks.into_iter().map(|b| HostBlock::new(b.addr, b.prefix))).collect();
        all.sort();
        all.dedup();
        HostAddrs { blocks: all }
    }

    /// The blocks, sorted.
    pub fn blocks(&self) -> &[HostBlock] {
        &self.blocks
    }

    /// The host block `ip` falls in, if any. Every spelling counts: IPv4-mapped and
    /// -compatible addresses are read as IPv4, and NAT64 (`64:ff9b::/96`) and 6to4
    /// (`2002::/16`) addresses are judged by the IPv4 address they carry too.
    pub fn find(&self, ip: IpAddr) -> Option<HostBlock> {
        let ip = canonical(ip);
        let direct = self.blocks.iter().find(|b| b.contains(ip)).copied();
        direct.or_else(|| match ip {
            IpAddr::V6(v6) => embedded_v4(v6).and_then(|v4| self.find(IpAddr::V4(v4))),
            IpAddr::V4(_) => None,
        })
    }

    /// A host block sharing an address with the rule block `addr/prefix` (an exact address
    /// is a /32 or /128), the embedded IPv4 of NAT64 and 6to4 spellings included.
    pub fn overlapping(&self, addr: IpAddr, prefix: u8) -> Option<HostBlock> {
        let rule = HostBlock::new(addr, prefix);
        if let Some(b) = self.blocks.iter().find(|b| b.overlaps(rule.addr, rule.prefix)) {
            return Some(*b);
        }
        // A block of NAT64 or 6to4 addresses: the IPv4 block they carry.
        let IpAddr::V6(v6) = rule.addr else { return None };
        let o = v6.octets();
        let carried = [
            (IpAddr::V6(Ipv6Addr::from(super::NAT64)), 96u8, Ipv4Addr::new(o[12], o[13], o[14], o[15])),
            (IpAddr::V6(Ipv6Addr::from(super::SIX_TO_FOUR)), 16u8, Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        ];
        carried.into_iter().find_map(|(net, len, v4)| {
            if !rule.overlaps(net, len) {
                return None;
            }
            let v4 = HostBlock::new(IpAddr::V4(v4), rule.prefix.saturating_sub(len).min(32));
            self.blocks.iter().find(|b| b.overlaps(v4.addr, v4.prefix)).copied()
        })
    }
}

#[cfg(test)]
mod tests;

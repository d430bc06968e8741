//! Network egress rules: what `network.allow` entries mean, how a requested target is read
//! (every spelling of an address normalised), and the two decisions the gateway asks for —
//! may this target be asked for at all, and may the address a name resolved to be dialled.
//!
//! Pure: no resolution, no sockets. The gateway (crates/gateway) resolves names itself and
//! dials exactly the address it checked here.
//!
//! Rule syntax (docs/POLICY.md):
//!
//! | entry                 | matches                                                   |
//! |-----------------------|-----------------------------------------------------------|
//! | `pypi.org`            | that name exactly, ports 80 and 443                       |
//! | `*.pythonhosted.org`  | any name below it (not the name itself), ports 80 and 443 |
//! | `*`                   | any name, and any public address                          |
//! | `api.github.com:443`  | one port; `:8000-8100` a range; `:*` any port             |
//! | `203.0.113.7`         | that address (IPv4 or IPv6), ports 80 and 443             |
//! | `10.20.0.0/16:5432`   | a CIDR block                                              |
//! | `[2001:db8::/32]:443` | IPv6 with a port: brackets                                |
//!
//! Names never reach private, loopback, link-local, multicast or cloud-metadata addresses:
//! only an address or CIDR rule that explicitly covers such an address lets it through.
//!
//! The host's own addresses ([`HostAddrs`]: every interface address, every local route, the
//! daemon's listen addresses, `0.0.0.0` and `::`) are stricter still: `*`, blocks and names
//! never reach them, and an exact address rule does only where the policy's writer may open
//! the host ([`HostReach`]). Every decision takes the caller's current snapshot.

mod host;

pub use host::{HostAddrs, HostBlock, HostReach};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::PolicyError;
use crate::model::Network;

/// Ports a rule without an explicit port grants: the web.
pub const WEB_PORTS: [u16; 2] = [80, 443];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: every name, every public address.
    Any,
    /// An exact DNS name (lowercase, no trailing dot).
    Name(String),
    /// `*.suffix`: names strictly below `suffix`.
    Below(String),
    /// An address or CIDR block (an address is a /32 or /128).
    Net { addr: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// No port written: 80 and 443.
    Web,
    /// `:N` or `:N-M`, inclusive.
    Range(u16, u16),
    /// `:*`.
    Any,
}

impl Ports {
    pub fn contains(self, port: u16) -> bool {
        match self {
            Ports::Web => WEB_PORTS.contains(&port),
            Ports::Range(lo, hi) => (lo..=hi).contains(&port),
            Ports::Any => true,
        }
    }
}

/// One `network.allow` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRule {
    /// The entry as written, to name it in decisions.
    pub source: String,
    pub host: HostPattern,
    pub ports: Ports,
}

/// What a client asked to reach: a DNS name or an address literal (in any spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Target::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// A decision, with what decided it: the rule that allowed, or why nothing did and what
/// to write to allow it. The gateway puts these in its 403 bodies and its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow { rule: String },
    Deny { rule: String, reason: String, hint: String },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

/// The network part of a policy, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    pub rules: Vec<NetRule>,
    /// Total bytes (both directions) the sandbox may move through the gateway.
    pub egress_bytes: Option<u64>,
    /// Whether exact address rules may open the host's own addresses; set by the caller
    /// from who wrote the policy (never by the policy itself). Default: never.
    pub host_reach: HostReach,
}

impl NetPolicy {
    pub fn compile(net: &Network) -> Result<NetPolicy, PolicyError> {
        let mut rules = Vec::with_capacity(net.allow.len());
        for (i, entry) in net.allow.iter().enumerate() {
            let rule = parse_rule(entry).map_err(|m| PolicyError::invalid(format!("network.allow[{i}]"), m))?;
            rules.push(rule);
        }
        Ok(NetPolicy { rules, egress_bytes: net.egress_bytes.map(|b| b.0), host_reach: HostReach::Never })
    }

    /// The same policy, for a writer who may (or may not) open the host's own addresses.
    pub fn with_host_reach(mut self, reach: HostReach) -> NetPolicy {
        self.host_reach = reach;
        self
    }

    /// True when the sandbox may reach anything beyond its loopback.
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// First question: may the sandbox ask for `target:port` at all? Names must match a
    /// name rule (an address rule never matches a name: the name would have to be resolved
    /// to find out, and names nobody allowed are never resolved). Addresses must match an
    /// address rule, or `*` if they are public; an address of the host (`host`) only an
    /// exact address rule, and only under [`HostReach::ExactAddressRules`].
    pub fn check_target(&self, target: &Target, port: u16, host: &HostAddrs) -> Verdict {
        match target {
            Target::Name(name) => {
                for r in &self.rules {
                    let hit = match &r.host {
                        HostPattern::Any => true,
                        HostPattern::Name(n) => n == name,
                        HostPattern::Below(s) => is_below(name, s),
                        HostPattern::Net { .. } => false,
                    };
                    if hit && r.ports.contains(port) {
                        return Verdict::Allow { rule: r.source.clone() };
                    }
                }
                self.no_rule(target, port)
            }
            Target::Ip(ip) => self.check_address(*ip, port, host).unwrap_or_else(|| self.no_rule(target, port)),
        }
    }

    /// Second question, for a name that `check_target` allowed: may the gateway dial
    /// `addr`, one of the addresses the name resolved to? `trusted` marks an answer from
    /// the operator's resolver overrides: the operator's own statement of where a name
    /// is, which passes even when it names the host (tests point names at servers on
    /// loopback; docs/threat-model.md, NET-01). Any other answer naming an address of the
    /// host (`host`) is denied unless an exact address rule may open it.
    pub fn check_resolved(
        &self,
        name: &str,
        addr: IpAddr,
        port: u16,
        name_rule: &str,
        trusted: bool,
        host: &HostAddrs,
    ) -> Verdict {
        let addr = canonical(addr);
        if trusted {
            return Verdict::Allow { rule: name_rule.to_string() };
        }
        if let Some(block) = host.find(addr) {
            return self.host_verdict(addr, port, block, Some(name));
        }
        match special_range(addr) {
            None => Verdict::Allow { rule: name_rule.to_string() },
            Some(range) => match self.explicit_address_rule(addr, port) {
                Some(r) => Verdict::Allow { rule: r.source.clone() },
                None => Verdict::Deny {
                    rule: format!("{} ({})", range.name, range.cidr),
                    reason: format!(
                        "{name} resolves to {}, a {} address; names never reach {} addresses",
                        Target::Ip(addr),
                        range.name,
                        range.name
                    ),
                    hint: format!(
                        "if this address is really meant to be reached, add \"{}\" to network.allow",
                        address_entry(addr, port)
                    ),
                },
            },
        }
    }

    /// Address decision: Some(verdict) when a rule or a special range decides.
    fn check_address(&self, ip: IpAddr, port: u16, host: &HostAddrs) -> Option<Verdict> {
        let ip = canonical(ip);
        if let Some(block) = host.find(ip) {
            return Some(self.host_verdict(ip, port, block, None));
        }
        if let Some(r) = self.explicit_address_rule(ip, port) {
            return Some(Verdict::Allow { rule: r.source.clone() });
        }
        if let Some(range) = special_range(ip) {
            return Some(Verdict::Deny {
                rule: format!("{} ({})", range.name, range.cidr),
                reason: format!("{} is a {} address", Target::Ip(ip), range.name),
                hint: format!(
                    "{} addresses are reachable only through an address rule; add \"{}\" to network.allow",
                    range.name,
                    address_entry(ip, port)
                ),
            });
        }
        let any = self.rules.iter().find(|r| r.host == HostPattern::Any && r.ports.contains(port))?;
        Some(Verdict::Allow { rule: any.source.clone() })
    }

    /// The decision for `ip` if it is an address of the host, None if it is not: what the
    /// gateway asks again right before it dials, with the newest snapshot (an address the
    /// host gained since the first check).
    pub fn check_host(&self, ip: IpAddr, port: u16, host: &HostAddrs) -> Option<Verdict> {
        let ip = canonical(ip);
        host.find(ip).map(|block| self.host_verdict(ip, port, block, None))
    }

    /// The decision for `ip`, an address of the host (in `block`), asked for directly or as
    /// what `name` resolved to: an exact address rule opens it where the writer may.
    fn host_verdict(&self, ip: IpAddr, port: u16, block: HostBlock, name: Option<&str>) -> Verdict {
        if self.host_reach == HostReach::ExactAddressRules {
            if let Some(r) = self.exact_address_rule(ip, port) {
                return Verdict::Allow { rule: r.source.clone() };
            }
        }
        let what = match special_range(ip) {
            Some(range) => format!("a {} address of this host", range.name),
            None => "an address of this host".to_string(),
        };
        let reason = match name {
            Some(n) => format!("{n} resolves to {}, {what}; names never reach the host", Target::Ip(ip)),
            None => format!(
                "{} is {what}; the gateway never opens the host's own services to \"*\" or a CIDR block",
                Target::Ip(ip)
            ),
        };
        let entry = address_entry(ip, port);
        let hint = match self.host_reach {
            HostReach::ExactAddressRules => format!(
                "if the sandbox must reach this service of the host, add the exact address \"{entry}\" to network.allow"
            ),
            HostReach::Never => format!(
                "only a policy of the admin tenant can open the host's own addresses, with the exact address \"{entry}\"; \
                 reach the service through a name or address that is not the host's"
            ),
        };
        Verdict::Deny { rule: format!("this host ({block})"), reason, hint }
    }

    /// An address rule naming exactly `ip` (a /32 or /128, not a wider block) on `port`.
    fn exact_address_rule(&self, ip: IpAddr, port: u16) -> Option<&NetRule> {
        self.rules.iter().find(|r| match r.host {
            HostPattern::Net { addr, prefix } => r.ports.contains(port) && addr == ip && prefix == full_prefix(ip),
            _ => false,
        })
    }

    /// The first address rule that opens an address of the host (`host`) and why it may
    /// not, for a writer who may never do that (a tenant): `(entry, reason)`. An address or
    /// block counts when it shares any address with a host block, through NAT64 and 6to4
    /// spellings too. (A writer with [`HostReach::ExactAddressRules`] may name exact
    /// addresses; blocks are accepted but never reach the host: nothing to refuse.)
    pub fn host_rule(&self, host: &HostAddrs) -> Option<(String, String)> {
        self.rules.iter().find_map(|r| {
            let HostPattern::Net { addr, prefix } = r.host else { return None };
            let block = host.overlapping(addr, prefix)?;
            let why = if prefix == full_prefix(addr) {
                format!("{} is an address of this host ({block})", Target::Ip(addr))
            } else {
                format!("the block {addr}/{prefix} covers addresses of this host ({block})")
            };
            Some((r.source.clone(), why))
        })
    }

    /// An address or CIDR rule (not `*`) covering `ip` on `port`.
    fn explicit_address_rule(&self, ip: IpAddr, port: u16) -> Option<&NetRule> {
        self.rules.iter().find(|r| match r.host {
            HostPattern::Net { addr, prefix } => r.ports.contains(port) && in_net(ip, addr, prefix),
            _ => false,
        })
    }

    fn no_rule(&self, target: &Target, port: u16) -> Verdict {
        let entry = match target {
            Target::Name(n) => format!("{n}:{port}"),
            Target::Ip(ip) => address_entry(canonical(*ip), port),
        };
        let reason = if self.rules.is_empty() {
            "this sandbox has no network access (network.allow is empty)".to_string()
        } else {
            let port_only = self.rules.iter().any(|r| match (&r.host, target) {
                (HostPattern::Name(n), Target::Name(t)) => n == t,
                (HostPattern::Below(s), Target::Name(t)) => is_below(t, s),
                (HostPattern::Net { addr, prefix }, Target::Ip(ip)) => in_net(canonical(*ip), *addr, *prefix),
                _ => false,
            });
            if port_only {
                format!("{target} is allowed, but not on port {port}")
            } else {
                format!("no network.allow entry matches {target}:{port}")
            }
        };
        Verdict::Deny {
            rule: "default deny".into(),
            reason,
            hint: format!("to allow it, add \"{entry}\" to network.allow in the sandbox's policy"),
        }
    }
}

fn address_entry(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn full_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn is_below(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1 && name.ends_with(suffix) && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => mask32(u32::from(a), prefix) == mask32(u32::from(n), prefix),
        (IpAddr::V6(a), IpAddr::V6(n)) => mask128(u128::from(a), prefix) == mask128(u128::from(n), prefix),
        _ => false,
    }
}

fn mask32(v: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        v & (u32::MAX << (32 - prefix as u32))
    }
}

fn mask128(v: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        v & (u128::MAX << (128 - prefix as u32))
    }
}

/// Parses one `network.allow` entry; the error says what to write instead.
pub fn parse_rule(entry: &str) -> Result<NetRule, String> {
    let s = entry.trim();
    if s.is_empty() {
        return Err("an empty entry; write a name, an address or a CIDR block, e.g. \"pypi.org\"".into());
    }
    if s.contains("://") || s.contains('/') && !s.contains('.') && !s.contains(':') {
        return Err(format!("{s:?} is not a host; write just the host, e.g. \"pypi.org\" or \"pypi.org:443\""));
    }
    let (host, ports) = split_host_port(s)?;
    let ports = match ports {
        None => Ports::Web,
        Some(p) => parse_ports(p).map_err(|m| format!("{s:?}: {m}"))?,
    };
    let host = parse_host_pattern(host).map_err(|m| format!("{s:?}: {m}"))?;
    Ok(NetRule { source: s.to_string(), host, ports })
}

/// Splits `host[:ports]`, `[v6]:ports`, or a bare IPv6 address / block.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| format!("{s:?}: a [ without its ]"))?;
        return match after {
            "" => Ok((inside, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((inside, Some(p))),
                None => Err(format!("{s:?}: after ] write :PORT")),
            },
        };
    }
    if s.matches(':').count() >= 2 {
        return Ok((s, None)); // a bare IPv6 address or block: no port
    }
    Ok(match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    })
}

fn parse_ports(p: &str) -> Result<Ports, String> {
    if p == "*" {
        return Ok(Ports::Any);
    }
    let one = |x: &str| -> Result<u16, String> {
        match x.parse::<u16>() {
            Ok(0) | Err(_) => {
                Err(format!("{x:?} is not a port; write a number from 1 to 65535, a range like 8000-8100, or *"))
            }
            Ok(n) => Ok(n),
        }
    };
    match p.split_once('-') {
        Some((a, b)) => {
            let (lo, hi) = (one(a)?, one(b)?);
            if lo > hi {
                return Err(format!("the port range {p} is backwards; write {hi}-{lo}"));
            }
            Ok(Ports::Range(lo, hi))
        }
        None => one(p).map(|n| Ports::Range(n, n)),
    }
}

fn parse_host_pattern(h: &str) -> Result<HostPattern, String> {
    if h == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some((a, len)) = h.split_once('/') {
        let addr: IpAddr =
            a.parse().map_err(|_| format!("{a:?} is not an IP address; a CIDR block is ADDRESS/LENGTH"))?;
        if let IpAddr::V6(v6) = addr {
            if let Some(v4) = v6.to_ipv4_mapped() {
                // Targets are folded to IPv4 before any check: say so instead of keeping a
                // rule that could never match.
                let hint = match len.parse::<u8>() {
                    Ok(p) if (96..=128).contains(&p) => format!("{v4}/{}", p - 96),
                    _ => format!("{v4}/LENGTH"),
                };
                return Err(format!("{h} is an IPv4-mapped block; IPv4 addresses are checked as IPv4: write {hint}"));
            }
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("/{len} is not a prefix length; write 0 to {max}"))?;
        let canon = match addr {
            IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(mask32(u32::from(v), prefix))),
            IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(mask128(u128::from(v), prefix))),
        };
        if canon != addr {
            return Err(format!("{h} has host bits set; write {canon}/{prefix}"));
        }
        return Ok(HostPattern::Net { addr, prefix });
    }
    if let Ok(addr) = h.parse::<IpAddr>() {
        let addr = canonical(addr);
        return Ok(HostPattern::Net { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } });
    }
    if let Some(v4) = parse_ipv4_loose(h) {
        return Err(format!("{h} is an unusual spelling of the address {v4}; write {v4}"));
    }
    if let Some(suffix) = h.strip_prefix("*.") {
        let suffix = normalise_name(suffix)?;
        if !suffix.contains('.') {
            return Err(format!(
                "*.{suffix} would allow a whole top-level domain; allow the names you need, e.g. \"*.example.{suffix}\""
            ));
        }
        return Ok(HostPattern::Below(suffix));
    }
    if h.contains('*') {
        return Err(format!("{h}: a * is only allowed as the first label (\"*.example.com\") or alone"));
    }
    Ok(HostPattern::Name(normalise_name(h)?))
}

/// Lowercases and checks a DNS name: letters, digits, '-' and '_' in labels of 1..=63,
/// at most 253 characters; one trailing dot is dropped.
pub fn normalise_name(name: &str) -> Result<String, String> {
    let n = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if n.is_empty() || n.len() > 253 {
        return Err(format!("{name:?} is not a host name"));
    }
    for label in n.split('.') {
        let ok_chars = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "{name:?} is not a valid host name (label {label:?}); names are letters, digits and - (IDNs in punycode)"
            ));
        }
    }
    Ok(n)
}

/// Reads the host part of a request (`Host`, a CONNECT target, a SOCKS address): an IPv6
/// literal (brackets optional), an IPv4 address in any spelling `inet_aton` accepts
/// (`127.1`, `0x7f000001`, `017700000001`), or a DNS name.
pub fn parse_target(host: &str) -> Result<Target, String> {
    let h = host.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(host);
    if h.contains('%') {
        return Err(format!("{host:?}: scoped IPv6 addresses are not reachable through the gateway"));
    }
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(Target::Ip(canonical(ip)));
    }
    if let Some(v4) = parse_ipv4_loose(h) {
        return Ok(Target::Ip(IpAddr::V4(v4)));
    }
    let name = normalise_name(h)?;
    // A last label of digits only is an address attempt, never a name (getaddrinfo would
    // read "1.2.3.999" or "0x1.2" as addresses or fail; never guess).
    if name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x")) {
        return Err(format!("{host:?} is neither a valid address nor a host name"));
    }
    Ok(Target::Name(name))
}

/// The IPv4 forms `inet_aton` accepts: 1 to 4 parts, each decimal, octal (leading 0) or
/// hex (0x); the last part fills the remaining bytes. None if `s` is not one of them.
pub fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
            return None;
        }
        let v = if digits.is_empty() { 0 } else { u64::from_str_radix(digits, radix).ok()? };
        nums.push(v);
    }
    let (last, head) = nums.split_last()?;
    let mut addr: u64 = 0;
    for (i, v) in head.iter().enumerate() {
        if *v > 255 {
            return None;
        }
        addr |= v << (24 - 8 * i);
    }
    let room = 32 - 8 * head.len() as u32;
    if *last >= (1u64 << room) {
        return None;
    }
    Some(Ipv4Addr::from((addr | last) as u32))
}

/// Folds IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible
/// `::a.b.c.d`) to that IPv4 address, so one check covers every spelling.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let o = v6.octets();
            if o[..12].iter().all(|b| *b == 0) && u128::from(v6) > 1 {
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// NAT64's well-known prefix, `64:ff9b::/96`.
const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;
/// 6to4, `2002::/16`.
const SIX_TO_FOUR: u128 = 0x2002_u128 << 112;

/// The IPv4 address a NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:AABB:CCDD::`) address
/// carries: where a translator on the way would deliver it.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = v6.octets();
    if mask128(u128::from(v6), 96) == NAT64 {
        Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
    } else if o[0] == 0x20 && o[1] == 0x02 {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else {
        None
    }
}

/// A range names never reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    pub name: &'static str,
    pub cidr: &'static str,
}

const V4_SPECIAL: &[(u32, u8, &str, &str)] = &[
    (0xA9FE_A9FE, 32, "cloud metadata", "169.254.169.254/32"),
    (0x6464_64C8, 32, "cloud metadata", "100.100.100.200/32"),
    (0x0000_0000, 8, "this-network", "0.0.0.0/8"),
    (0x0A00_0000, 8, "private", "10.0.0.0/8"),
    (0x6440_0000, 10, "shared (carrier NAT)", "100.64.0.0/10"),
    (0x7F00_0000, 8, "loopback", "127.0.0.0/8"),
    (0xA9FE_0000, 16, "link-local", "169.254.0.0/16"),
    (0xAC10_0000, 12, "private", "172.16.0.0/12"),
    (0xC000_0000, 24, "IETF protocol", "192.0.0.0/24"),
    (0xC0A8_0000, 16, "private", "192.168.0.0/16"),
    (0xC612_0000, 15, "benchmarking", "198.18.0.0/15"),
    (0xE000_0000, 4, "multicast", "224.0.0.0/4"),
    (0xF000_0000, 4, "reserved", "240.0.0.0/4"),
];

const V6_SPECIAL: &[(u128, u8, &str, &str)] = &[
    (0xfd00_0ec2_0000_0000_0000_0000_0000_0254, 128, "cloud metadata", "fd00:ec2::254/128"),
    (0, 128, "unspecified", "::/128"),
    (1, 128, "loopback", "::1/128"),
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64, "discard", "100::/64"),
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 32, "Teredo tunnel", "2001::/32"),
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7, "unique-local (private)", "fc00::/7"),
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, "link-local", "fe80::/10"),
    (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10, "site-local", "fec0::/10"),
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, "multicast", "ff00::/8"),
];

/// The first special range that shares an address with the block `addr/prefix`, if any
/// (two aligned blocks overlap iff one contains the other's first address).
pub fn block_overlaps_special(addr: IpAddr, prefix: u8) -> Option<SpecialRange> {
    let addr = canonical(addr);
    if let Some(r) = special_range(addr) {
        return Some(r);
    }
    match addr {
        IpAddr::V4(v4) => {
            let v = u32::from(v4);
            V4_SPECIAL
                .iter()
                .find(|(net, _, _, _)| mask32(*net, prefix) == mask32(v, prefix))
                .map(|(_, _, name, cidr)| SpecialRange { name, cidr })
        }
        IpAddr::V6(v6) => {
            let v = u128::from(v6);
            let embedding = [(0x0064_ff9b_u128 << 96, 96u8), (0x2002_u128 << 112, 16), (0xffff_u128 << 32, 96)];
            V6_SPECIAL
                .iter()
                .map(|(net, p, name, cidr)| (*net, *p, *name, *cidr))
                .chain(embedding.iter().map(|(net, p)| (*net, *p, "IPv4-embedding", "")))
                .find(|(net, p, _, _)| {
                    let common = prefix.min(*p);
                    mask128(*net, common) == mask128(v, common)
                })
                .map(|(_, _, name, cidr)| SpecialRange { name, cidr })
        }
    }
}

/// The special range `ip` falls in, if any: loopback, private, link-local, metadata,
/// multicast, reserved... IPv6 forms that embed an IPv4 address (mapped, compatible,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the embedded address too.
pub fn special_range(ip: IpAddr) -> Option<SpecialRange> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let v = u32::from(v4);
            if v == u32::MAX {
                return Some(SpecialRange { name: "broadcast", cidr: "255.255.255.255/32" });
            }
            V4_SPECIAL
                .iter()
                .find(|(net, p, _, _)| mask32(v, *p) == *net)
                .map(|(_, _, name, cidr)| SpecialRange { name, cidr })
        }
        IpAddr::V6(v6) => {
            let v = u128::from(v6);
            if let Some(r) = V6_SPECIAL
                .iter()
                .find(|(net, p, _, _)| mask128(v, *p) == *net)
                .map(|(_, _, name, cidr)| SpecialRange { name, cidr })
            {
                return Some(r);
            }
            embedded_v4(v6).and_then(|v4| special_range(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests;

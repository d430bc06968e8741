//! Turning an allowed name into addresses: operator overrides, a configured DNS server, or
//! the system's settings ([`SystemConf`]: `/etc/hosts` and the nameservers of
//! `/etc/resolv.conf`, read once and carried as data). The gateway calls this only for names
//! the policy already allowed, once per request, and checks every address returned before
//! dialling one of them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use safehouse_policy::network::normalise_name;
use serde::{Deserialize, Serialize};

use crate::dns::{self, DnsError};
pub use crate::sysconf::SystemConf;

/// Environment variable: trusted overrides, `name=ip[,ip];name2=ip`.
pub const ENV_RESOLVE: &str = "SAFEHOUSE_GATEWAY_RESOLVE";
/// Environment variable: a DNS server (`ip:port`) to ask instead of the system resolver.
pub const ENV_DNS: &str = "SAFEHOUSE_GATEWAY_DNS";

/// Where names are resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolver {
    /// Operator-trusted answers (lowercase names, no trailing dot). They stand for the public
    /// internet — in tests, servers on loopback — so their addresses skip the special-range
    /// and host-address checks: the operator said where the name is. Never filled from
    /// anything the sandbox controls.
    pub overrides: HashMap<String, Vec<IpAddr>>,
    /// Ask this DNS server directly (A and AAAA over UDP) instead of the system's.
    pub dns_server: Option<SocketAddr>,
    /// The system's settings, used without `dns_server`. Empty by default: then only the
    /// overrides resolve.
    pub system: SystemConf,
}

/// The addresses a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addrs: Vec<IpAddr>,
    /// True when the answer came from [`Resolver::overrides`].
    pub trusted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{name} has no address (the resolver answered with none)")]
    NoAddress { name: String },
    #[error("resolving {name} through the DNS server {server} failed: {source}")]
    Dns { name: String, server: SocketAddr, source: DnsError },
    #[error("resolving {name} failed: {source}")]
    System { name: String, source: DnsError },
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
}

impl Resolver {
    /// The resolver an operator (or a test) configured through [`ENV_RESOLVE`] and
    /// [`ENV_DNS`]; without `ENV_DNS`, the system's settings as the files say now.
    pub fn from_env() -> Result<Resolver, ResolveError> {
        let overrides = match std::env::var(ENV_RESOLVE) {
            Ok(s) => parse_overrides(&s).map_err(|message| ResolveError::Env { var: ENV_RESOLVE, message })?,
            Err(_) => HashMap::new(),
        };
        let dns_server = match std::env::var(ENV_DNS) {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().parse::<SocketAddr>().map_err(|_| ResolveError::Env {
                var: ENV_DNS,
                message: format!("{s:?} is not an address; write ip:port, e.g. 127.0.0.1:5353"),
            })?),
            _ => None,
        };
        let system = if dns_server.is_none() { SystemConf::read() } else { SystemConf::default() };
        Ok(Resolver { overrides, dns_server, system })
    }

    /// Adds an override (tests, operators); the name is normalised.
    pub fn with_override(mut self, name: &str, addrs: &[IpAddr]) -> Resolver {
        let key = normalise_name(name).unwrap_or_else(|_| name.to_ascii_lowercase());
        self.overrides.insert(key, addrs.to_vec());
        self
    }

    /// The overrides that point a name at an address of the host (`host`): the operator
    /// opening that address to every sandbox allowed the name. Sorted, for a warning.
    pub fn overrides_on(&self, host: &safehouse_policy::network::HostAddrs) -> Vec<(String, IpAddr)> {
        let mut on: Vec<(String, IpAddr)> = self
            .overrides
            .iter()
            .flat_map(|(n, ips)| ips.iter().filter(|ip| host.find(**ip).is_some()).map(move |ip| (n.clone(), *ip)))
            .collect();
        on.sort();
        on
    }

    /// Resolves `name` (already normalised by `parse_target`) once.
    pub async fn resolve(&self, name: &str) -> Result<Resolved, ResolveError> {
        if let Some(addrs) = self.overrides.get(name) {
            if addrs.is_empty() {
                return Err(ResolveError::NoAddress { name: name.into() });
            }
            return Ok(Resolved { addrs: addrs.clone(), trusted: true });
        }
        let addrs: Vec<IpAddr> = match self.dns_server {
            Some(server) => dns::lookup(server, name, dns::TIMEOUT).await.map_err(|source| ResolveError::Dns {
                name: name.into(),
                server,
                source,
            })?,
            None => {
                self.system.lookup(name).await.map_err(|source| ResolveError::System { name: name.into(), source })?
            }
        };
        let mut unique = Vec::with_capacity(addrs.len());
        for a in addrs {
            if !unique.contains(&a) {
                unique.push(a);
            }
        }
        if unique.is_empty() {
            return Err(ResolveError::NoAddress { name: name.into() });
        }
        Ok(Resolved { addrs: unique, trusted: false })
    }
}

/// Reads `name=ip[,ip];name2=ip`.
pub fn parse_overrides(s: &str) -> Result<HashMap<String, Vec<IpAddr>>, String> {
    let mut map = HashMap::new();
    for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, ips) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?}: write name=ip[,ip], e.g. example.test=127.0.0.1"))?;
        let name = normalise_name(name.trim()).map_err(|m| format!("{entry:?}: {m}"))?;
        let mut addrs = Vec::new();
        for ip in ips.split(',').map(str::trim) {
            let ip = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
            addrs.push(ip.parse::<IpAddr>().map_err(|_| format!("{entry:?}: {ip:?} is not an IP address"))?);
        }
        map.insert(name, addrs);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse() {
        let m = parse_overrides("Allowed.Test=127.0.0.1, ::1 ; b.test=[::1];").unwrap();
        assert_eq!(m["allowed.test"], vec!["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
        assert_eq!(m["b.test"], vec!["::1".parse::<IpAddr>().unwrap()]);
        assert!(parse_overrides("a.test").unwrap_err().contains("name=ip"));
        assert!(parse_overrides("a.test=nope").unwrap_err().contains("not an IP"));
    }
}

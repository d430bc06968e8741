//! The host's resolver settings, read once from `/etc/resolv.conf` and `/etc/hosts` (by
//! whoever has the files: the daemon, or `safehouse run`) and carried to the gateway as
//! data, so the gateway process reads no file at all.
//!
//! Resolution follows what glibc does with `hosts: files dns`, narrowed: `/etc/hosts`
//! first, then the nameservers in order (each asked once, the next one when it fails or
//! does not answer). A name without a dot is tried with each `search` domain, then alone;
//! a name with a dot only as written (no search-list guesses leave the gateway for it).
//! Not honoured: other nsswitch sources (mdns, LDAP, systemd's `myhostname`), `options
//! rotate`, and IPv6 nameservers with a scope (`fe80::1%eth0`), which are skipped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use safehouse_policy::network::normalise_name;
use serde::{Deserialize, Serialize};

use crate::dns::{self, DnsError};

pub const RESOLV_CONF: &str = "/etc/resolv.conf";
pub const HOSTS: &str = "/etc/hosts";

/// Longest wait for one nameserver (resolv.conf's `timeout` is capped at this).
const MAX_TIMEOUT: Duration = dns::TIMEOUT;

/// What the system resolver would use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemConf {
    /// DNS servers, in the order to ask them (port 53).
    pub nameservers: Vec<SocketAddr>,
    /// Domains tried after a name without a dot.
    pub search: Vec<String>,
    /// How long to wait for one nameserver.
    pub timeout: Duration,
    /// `/etc/hosts`: normalised names and their addresses, in file order.
    pub hosts: HashMap<String, Vec<IpAddr>>,
}

impl SystemConf {
    /// Reads the two files; a missing or unreadable file counts as empty (then no name
    /// resolves, which fails closed).
    pub fn read() -> SystemConf {
        let resolv = std::fs::read(RESOLV_CONF).unwrap_or_default();
        let hosts = std::fs::read(HOSTS).unwrap_or_default();
        SystemConf::parse(&resolv, &String::from_utf8_lossy(&hosts))
    }

    /// Reads the contents of `resolv.conf` and `hosts`, leniently as glibc does (a line it
    /// cannot read is skipped).
    pub fn parse(resolv: &[u8], hosts: &str) -> SystemConf {
        let (conf, _errors) = resolv_conf::Config::parse_with_errors(resolv);
        let nameservers = conf
            .get_nameservers_or_local()
            .into_iter()
            .filter_map(|ns| match ns {
                resolv_conf::ScopedIp::V4(a) => Some(SocketAddr::new(IpAddr::V4(a), 53)),
                resolv_conf::ScopedIp::V6(a, None) => Some(SocketAddr::new(IpAddr::V6(a), 53)),
                resolv_conf::ScopedIp::V6(_, Some(_)) => None,
            })
            .collect();
        let search = conf.get_last_search_or_domain().filter_map(|d| normalise_name(d).ok()).collect();
        let timeout = Duration::from_secs(u64::from(conf.timeout.max(1))).min(MAX_TIMEOUT);
        SystemConf { nameservers, search, timeout, hosts: parse_hosts(hosts) }
    }

    /// Resolves `name` (normalised); an empty list when every source said "no such name".
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(addrs) = self.hosts.get(name) {
            return Ok(addrs.clone());
        }
        let mut candidates: Vec<String> = Vec::new();
        if !name.contains('.') {
            candidates.extend(self.search.iter().map(|d| format!("{name}.{d}")));
        }
        candidates.push(name.to_string());
        let mut last = DnsError::Io(format!("no nameserver in {RESOLV_CONF}"));
        for candidate in candidates {
            for server in &self.nameservers {
                match dns::lookup(*server, &candidate, self.timeout).await {
                    Ok(addrs) if !addrs.is_empty() => return Ok(addrs),
                    // This server says the name has nothing: try the next candidate.
                    Ok(_) => {
                        last = DnsError::Rcode(3);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
        }
        match last {
            DnsError::Rcode(3) => Ok(Vec::new()),
            e => Err(e),
        }
    }
}

/// `address name [alias...]` per line, `#` comments; later lines add addresses.
fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else { continue };
        for name in words.filter_map(|w| normalise_name(w).ok()) {
            let addrs = map.entry(name).or_default();
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resolv_conf_and_hosts() {
        let c = SystemConf::parse(
            b"# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\n\
              search corp.test other.test\noptions timeout:9 ndots:2\nbogus line\n",
            "127.0.0.1 localhost\n::1 localhost ip6-localhost # v6\n192.0.2.7 Build.Corp.Test build\n\nnot-an-ip x\n",
        );
        assert_eq!(c.nameservers, vec!["192.0.2.53:53".parse().unwrap(), "[2001:db8::53]:53".parse().unwrap()]);
        assert_eq!(c.search, vec!["corp.test", "other.test"]);
        assert_eq!(c.timeout, MAX_TIMEOUT);
        assert_eq!(c.hosts["localhost"], vec!["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
        assert_eq!(c.hosts["build.corp.test"], c.hosts["build"]);
        assert!(!c.hosts.contains_key("x"));
        // no nameserver line: glibc asks the local one
        let c = SystemConf::parse(b"", "");
        assert_eq!(c.nameservers.len(), 2, "{c:?}");
    }
}

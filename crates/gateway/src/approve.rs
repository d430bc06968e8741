//! The one decision sequence every front end (HTTP, CONNECT, SOCKS5) goes through, in order:
//!
//! 1. the byte budget is not spent;
//! 2. `check_target` on the name or address as requested;
//! 3. for a name, and only after 2 allowed it: one resolution;
//! 4. `check_resolved` on every address returned (one denied address denies the request);
//! 5. a dial to one of exactly those addresses, the next one on connect failure; right
//!    before each, an address that was not the host's at step 2 or 4 is checked against
//!    the newest snapshot of the host's addresses again.

use std::net::SocketAddr;

use safehouse_policy::network::{canonical, Target, Verdict};
use tokio::net::TcpStream;

use crate::gateway::{Event, Gateway};
use crate::stats::Counters;
use crate::target::describe;

/// Why a request is not carried out. Rendered as an HTTP status or a SOCKS reply code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The policy (or the spent budget) said no.
    Denied { rule: String, reason: String, hint: String },
    /// Allowed, but the name did not resolve.
    Resolve(String),
    /// Allowed and resolved, but no address could be connected to.
    Connect(String),
}

/// The policy's yes: the addresses that may be dialled, each one checked.
#[derive(Debug, Clone)]
pub(crate) struct Approved {
    /// Each address, and whether it was allowed knowing it is the host's (an exact rule,
    /// or the operator's resolver override): only the others are checked again at the dial.
    pub addrs: Vec<(SocketAddr, bool)>,
    target: Target,
}

impl Gateway {
    /// Steps 1 and 2: may `target:port` be asked for? Records a denial.
    pub(crate) fn admit(&self, target: &Target, port: u16) -> Result<String, Refusal> {
        Counters::bump(&self.counters.requests);
        if self.budget_spent() {
            let limit = self.config.policy.egress_bytes.unwrap_or(0);
            return Err(self.deny(
                target,
                port,
                "network.egress_bytes".into(),
                format!("egress byte budget of {limit} bytes is spent"),
                "the budget is per sandbox run; raise network.egress_bytes in the policy or start a new run".into(),
            ));
        }
        let host = self.config.host_addrs.snapshot();
        match self.config.policy.check_target(target, port, &host) {
            Verdict::Allow { rule } => Ok(rule),
            Verdict::Deny { rule, reason, hint } => Err(self.deny(target, port, rule, reason, hint)),
        }
    }

    /// Steps 1 to 4. On success the request is counted as allowed.
    pub(crate) async fn approve(&self, target: &Target, port: u16) -> Result<Approved, Refusal> {
        let rule = self.admit(target, port)?;
        self.checked_addrs(target, port, rule).await
    }

    /// Steps 3 and 4, for a target [`Gateway::admit`] allowed under `rule`.
    pub(crate) async fn checked_addrs(&self, target: &Target, port: u16, rule: String) -> Result<Approved, Refusal> {
        let addrs = match target {
            Target::Ip(ip) => {
                let host = self.config.host_addrs.snapshot();
                vec![(SocketAddr::new(canonical(*ip), port), host.find(*ip).is_some())]
            }
            Target::Name(name) => {
                let resolved = match self.resolver().resolve(name).await {
                    Ok(r) => r,
                    Err(e) => return Err(self.fail(Refusal::Resolve(e.to_string()))),
                };
                // The newest snapshot: resolution may have taken a while.
                let host = self.config.host_addrs.snapshot();
                let mut addrs = Vec::with_capacity(resolved.addrs.len());
                for ip in resolved.addrs {
                    match self.config.policy.check_resolved(name, ip, port, &rule, resolved.trusted, &host) {
                        Verdict::Allow { .. } => {
                            let vetted = resolved.trusted || host.find(ip).is_some();
                            addrs.push((SocketAddr::new(canonical(ip), port), vetted))
                        }
                        Verdict::Deny { rule, reason, hint } => return Err(self.deny(target, port, rule, reason, hint)),
                    }
                }
                addrs
            }
        };
        self.allowed(target, port, &rule);
        Ok(Approved { addrs, target: target.clone() })
    }

    /// Counts an allowed request (also used when a kept-alive upstream is reused).
    pub(crate) fn allowed(&self, target: &Target, port: u16, rule: &str) {
        Counters::bump(&self.counters.allowed);
        self.emit(Event::Allowed { target: describe(target, port), rule: rule.to_string() });
    }

    /// Step 5: connects to the first approved address that answers.
    pub(crate) async fn dial(&self, approved: &Approved) -> Result<TcpStream, Refusal> {
        let mut errors = Vec::new();
        for (addr, vetted) in &approved.addrs {
            if !vetted {
                let host = self.config.host_addrs.snapshot();
                if let Some(Verdict::Deny { rule, reason, hint }) =
                    self.config.policy.check_host(addr.ip(), addr.port(), &host)
                {
                    return Err(self.deny(&approved.target, addr.port(), rule, reason, hint));
                }
            }
            match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
                Err(_) => errors.push(format!("{addr}: no answer within {:?}", self.config.connect_timeout)),
            }
        }
        Err(self.fail(Refusal::Connect(format!("could not connect to any address ({})", errors.join("; ")))))
    }

    /// Counts a failure after step 2 allowed (resolution, connection, upstream errors).
    pub(crate) fn fail(&self, r: Refusal) -> Refusal {
        Counters::bump(&self.counters.failed);
        r
    }

    fn deny(&self, target: &Target, port: u16, rule: String, reason: String, hint: String) -> Refusal {
        let t = describe(target, port);
        self.counters.record_denial(&t, &rule, &reason);
        self.emit(Event::Denied { target: t, rule: rule.clone(), reason: reason.clone() });
        Refusal::Denied { rule, reason, hint }
    }
}

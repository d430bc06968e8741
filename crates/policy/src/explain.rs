//! `safehouse policy explain`: answers one question about a policy — may the sandbox reach
//! this host and port, read or write this path, run this executable — and names the rule
//! that decided, why, and what to change.
//!
//! Pure: the network answer comes from the same [`NetPolicy`] checks the gateway makes; the
//! filesystem answers walk the compiled mount plan ([`crate::plan::compile`]) in mount
//! order, so they describe the sandbox `run` would build on the host the [`HostView`]
//! describes. The policy need not have passed [`Policy::validate`]: the tool sections
//! (`tools`, `control`) play no part in the mount plan and are set aside to compile it.

mod fs;
mod tools;

use std::fmt;

use serde::Serialize;
use thiserror::Error;

use crate::error::PolicyError;
use crate::model::Policy;
use crate::network::{parse_target, HostAddrs, HostReach, NetPolicy, Target, Verdict};
use crate::plan::HostView;

pub use tools::pattern_matches;

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// May the sandbox connect to `target` on `port` (through the gateway)?
    Net { target: Target, port: u16 },
    /// May it run the executable at this sandbox path?
    Exec(String),
    /// May it read this sandbox path?
    Read(String),
    /// May it write (create, modify, remove) this sandbox path?
    Write(String),
}

impl Question {
    /// Reads `HOST:PORT`; an IPv6 address is written in brackets, `[2001:db8::1]:443`.
    /// The port is required: a connection always has one.
    /// `HOST:PORT`, `[ADDRESS]:PORT`, or a host alone (port 443).
    pub fn net(text: &str) -> Result<Question, ExplainError> {
        const DEFAULT_PORT: &str = "443";
        let bad = |m: String| ExplainError::Question(format!("--net {text:?}: {m}"));
        let (host, port, bracketed) = match text.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest.split_once(']').ok_or_else(|| bad("a [ without its ]".into()))?;
                let port = match after {
                    "" => DEFAULT_PORT,
                    _ => after.strip_prefix(':').ok_or_else(|| bad("write [ADDRESS]:PORT".into()))?,
                };
                (inside, port, true)
            }
            None => {
                // HOST alone asks about HTTPS, what clients reach a name on by default.
                let (host, port) = text.rsplit_once(':').unwrap_or((text, DEFAULT_PORT));
                if host.contains(':') {
                    return Err(bad("an IPv6 address needs brackets: [ADDRESS]:PORT".into()));
                }
                (host, port, false)
            }
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad(format!("{port:?} is not a port; write a number from 1 to 65535"))),
        };
        let target = parse_target(host).map_err(bad)?;
        if bracketed && matches!(target, Target::Name(_)) {
            return Err(bad("brackets hold an IPv6 address, not a name".into()));
        }
        Ok(Question::Net { target, port })
    }

    /// A sandbox path question: absolute and plain (no `.` or `..`); a trailing `/` is
    /// dropped.
    pub fn path(kind: PathKind, text: &str) -> Result<Question, ExplainError> {
        crate::model::check_abs(kind.flag(), text).map_err(|e| ExplainError::Question(e.to_string()))?;
        let p = text.trim_end_matches('/');
        let p = if p.is_empty() { "/" } else { p }.to_string();
        Ok(match kind {
            PathKind::Exec => Question::Exec(p),
            PathKind::Read => Question::Read(p),
            PathKind::Write => Question::Write(p),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Exec,
    Read,
    Write,
}

impl PathKind {
    fn flag(self) -> &'static str {
        match self {
            PathKind::Exec => "--exec",
            PathKind::Read => "--read",
            PathKind::Write => "--write",
        }
    }
}

impl fmt::Display for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Question::Net { target, port } => write!(f, "net {target}:{port}"),
            Question::Exec(p) => write!(f, "exec {p}"),
            Question::Read(p) => write!(f, "read {p}"),
            Question::Write(p) => write!(f, "write {p}"),
        }
    }
}

/// The answer: allowed or not, the rule that decided (as written in the policy, or the
/// built-in rule's name), why, and what to change for the opposite answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub question: String,
    pub allowed: bool,
    pub rule: String,
    pub reason: String,
    pub hint: String,
    /// What else holds at run time (address checks after resolution, per-tool limits...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Error)]
pub enum ExplainError {
    /// The question itself is malformed.
    #[error("{0}")]
    Question(String),
    /// The policy does not compile (bad network rule, bind source missing on this host...).
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Answers `q` about `policy`, for a sandbox built on the host `host` describes.
pub fn explain(policy: &Policy, host: &HostView, q: &Question) -> Result<Answer, ExplainError> {
    match q {
        Question::Net { target, port } => explain_net(policy, &host.addrs, target, *port),
        Question::Read(p) => fs::read(policy, host, p),
        Question::Write(p) => fs::write(policy, host, p),
        Question::Exec(p) => tools::exec(policy, host, p),
    }
}

/// Answered as `safehouse run` decides: the local user is the host's operator, so an
/// exact address rule may open an address of the host (`addrs`).
fn explain_net(policy: &Policy, addrs: &HostAddrs, target: &Target, port: u16) -> Result<Answer, ExplainError> {
    let net = NetPolicy::compile(&policy.network)?.with_host_reach(HostReach::ExactAddressRules);
    let question = Question::Net { target: target.clone(), port }.to_string();
    Ok(match net.check_target(target, port, addrs) {
        Verdict::Allow { rule } => {
            let index = net.rules.iter().position(|r| r.source == rule).unwrap_or(0);
            let mut notes = Vec::new();
            if let Target::Name(name) = target {
                notes.push(format!(
                    "the addresses {name} resolves to are checked when the sandbox connects: private, loopback, \
                     link-local and cloud-metadata addresses are refused unless an address rule covers them, and \
                     the host's own addresses unless an address rule names them exactly"
                ));
            }
            if let Target::Ip(ip) = target {
                if let Some(block) = addrs.find(*ip) {
                    notes.push(format!(
                        "{target} is an address of this host ({block}): only this exact address rule opens it; \
                         under `safehouse serve` only the admin tenant's policies may name it"
                    ));
                }
            }
            if let Some(b) = net.egress_bytes {
                notes.push(format!(
                    "network.egress_bytes: the sandbox may move {} through the gateway in all",
                    crate::units::format_size(b)
                ));
            }
            Answer {
                question,
                allowed: true,
                rule: format!("network.allow[{index}] = {rule:?}"),
                reason: format!("{target}:{port} matches the entry {rule:?}"),
                hint: if rule == "*" {
                    "to narrow it, replace \"*\" in network.allow with the names the sandbox needs".into()
                } else {
                    format!("to deny it, remove {rule:?} from network.allow")
                },
                notes,
            }
        }
        Verdict::Deny { rule, reason, hint } => Answer { question, allowed: false, rule, reason, hint, notes: vec![] },
    })
}

#[cfg(test)]
mod tests;

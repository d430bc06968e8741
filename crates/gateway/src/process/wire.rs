//! The daemon ↔ gateway-process protocol: typed messages, one per SOCK_SEQPACKET datagram,
//! each in the frame format of `safehouse-protocol` (u32 length, kind 1 = JSON, body), with
//! the sandbox's listener attached to `Start` as SCM_RIGHTS.
//!
//! Decoding is defensive on both sides, and the daemon treats the gateway process as
//! untrusted (it parses what sandboxes send): a datagram above [`MAX_MESSAGE`], a length
//! field that disagrees with the datagram, trailing bytes, unknown fields or variants, a
//! descriptor where none belongs or none where one does are errors, never panics. The daemon
//! answers an error from the gateway process by killing and restarting it.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use safehouse_policy::network::{parse_rule, HostBlock, HostReach, NetPolicy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use super::confine::Confinement;
use crate::gateway::{Config, Event};
use crate::resolve::Resolver;
use crate::stats::Stats;

/// Bumped when a change is not backwards compatible; both sides are the same binary.
pub const VERSION: u32 = 1;

/// Largest datagram, either way (fits the default unix socket buffers).
pub const MAX_MESSAGE: usize = 128 << 10;

/// Host blocks per `Host` message (a large set goes in several).
pub const HOST_BLOCKS_PER_MESSAGE: usize = 2000;

/// A compiled network policy in transit: its rules as written (compiled again on arrival by
/// the same parser, so the gateway process never trusts a structure it did not build).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePolicy {
    pub allow: Vec<String>,
    pub egress_bytes: Option<u64>,
    /// `HostReach::ExactAddressRules` when true.
    pub host_exact: bool,
}

impl WirePolicy {
    pub fn of(p: &NetPolicy) -> WirePolicy {
        WirePolicy {
            allow: p.rules.iter().map(|r| r.source.clone()).collect(),
            egress_bytes: p.egress_bytes,
            host_exact: p.host_reach == HostReach::ExactAddressRules,
        }
    }

    pub fn compile(&self) -> Result<NetPolicy, String> {
        let rules =
            self.allow.iter().map(|r| parse_rule(r).map_err(|e| format!("{r:?}: {e}"))).collect::<Result<_, _>>()?;
        let host_reach = if self.host_exact { HostReach::ExactAddressRules } else { HostReach::Never };
        Ok(NetPolicy { rules, egress_bytes: self.egress_bytes, host_reach })
    }
}

/// The per-gateway settings of [`Config`] that travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLimits {
    pub max_connections: usize,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_header_bytes: usize,
}

impl WireLimits {
    pub fn of(c: &Config) -> WireLimits {
        WireLimits {
            max_connections: c.max_connections,
            handshake_timeout_ms: c.handshake_timeout.as_millis() as u64,
            idle_timeout_ms: c.idle_timeout.as_millis() as u64,
            connect_timeout_ms: c.connect_timeout.as_millis() as u64,
            max_header_bytes: c.max_header_bytes,
        }
    }

    pub fn apply(&self, c: &mut Config) {
        c.max_connections = self.max_connections.clamp(1, 1 << 20);
        c.handshake_timeout = Duration::from_millis(self.handshake_timeout_ms);
        c.idle_timeout = Duration::from_millis(self.idle_timeout_ms);
        c.connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        c.max_header_bytes = self.max_header_bytes.clamp(1024, 16 << 20);
    }
}

/// A host block in transit, `(address, prefix length)`; rebuilt by `HostBlock::new`.
pub type WireBlock = (IpAddr, u8);

pub fn blocks_to_wire(blocks: &[HostBlock]) -> Vec<WireBlock> {
    blocks.iter().map(|b| (b.addr, b.prefix)).collect()
}

pub fn blocks_from_wire(blocks: &[WireBlock]) -> Vec<HostBlock> {
    blocks.iter().map(|&(a, p)| HostBlock::new(a, p.min(if a.is_ipv4() { 32 } else { 128 }))).collect()
}

/// The first message, daemon → gateway process: what it needs before it confines itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Init {
    pub version: u32,
    pub resolver: Resolver,
    pub confinement: Confinement,
}

/// Every later message, daemon → gateway process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToGateway {
    /// Part of the host's addresses; `last` publishes the set collected since the previous
    /// publication. The process serves nothing until the first set is published.
    Host { blocks: Vec<WireBlock>, last: bool },
    /// The host's resolver settings changed.
    Resolver { resolver: Resolver },
    /// Serve the sandbox's listener, attached as the one descriptor.
    Start {
        id: u64,
        /// The sandbox, for log lines.
        sandbox: String,
        policy: WirePolicy,
        limits: WireLimits,
        /// Bytes of the budget counted as used before this start (earlier processes).
        budget_used: u64,
        /// Bytes of the budget granted so far (at least `budget_used`).
        budget_granted: u64,
    },
    /// Stop serving; every connection is closed. Answered by `Stopped`.
    Stop { id: u64 },
    /// The budget of `id` may reach `total` bytes.
    Grant { id: u64, total: u64 },
    /// Answered by `Stats`.
    Stats { id: u64, seq: u64 },
    /// Answered by `Pong`: the process is alive and not wedged.
    Ping { seq: u64 },
}

/// Gateway process → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromGateway {
    /// Confined and ready for `Start`.
    Ready {
        version: u32,
    },
    /// It could not confine itself: it exits.
    Refused {
        layer: String,
        reason: String,
    },
    Started {
        id: u64,
    },
    Failed {
        id: u64,
        error: String,
    },
    Event {
        id: u64,
        event: Event,
    },
    /// Events held back by the gateway's own rate limit since the last `Event` of `id`.
    Suppressed {
        id: u64,
        allowed: u64,
        denied: u64,
    },
    NeedBudget {
        id: u64,
    },
    Stats {
        id: u64,
        seq: u64,
        stats: Stats,
    },
    Stopped {
        id: u64,
        stats: Stats,
    },
    Pong {
        seq: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the channel failed: {0}")]
    Io(#[from] io::Error),
    #[error("a {len}-byte message exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("a malformed message: {0}")]
    Malformed(String),
    #[error("{0} descriptors came with a message that carries {1}")]
    Descriptors(usize, usize),
}

/// The bytes of one message.
pub fn encode<M: Serialize>(msg: &M) -> Result<Vec<u8>, WireError> {
    let body = serde_json::to_vec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 5);
    safehouse_protocol::Frame::Json(body).encode(&mut out).map_err(|e| WireError::Malformed(e.to_string()))?;
    if out.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge { len: out.len(), max: MAX_MESSAGE });
    }
    Ok(out)
}

/// One datagram, read as exactly one JSON frame holding an `M`.
pub fn decode<M: DeserializeOwned>(datagram: &[u8]) -> Result<M, WireError> {
    if datagram.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge { len: datagram.len(), max: MAX_MESSAGE });
    }
    let mut d = safehouse_protocol::Decoder::new();
    d.push(datagram);
    let frame = d.next_frame().map_err(|e| WireError::Malformed(e.to_string()))?;
    let body = match frame {
        Some(safehouse_protocol::Frame::Json(body)) if d.buffered() == 0 => body,
        Some(safehouse_protocol::Frame::Json(_)) => return Err(WireError::Malformed("bytes after the frame".into())),
        Some(other) => return Err(WireError::Malformed(format!("a {:?} frame", other.kind()))),
        None => return Err(WireError::Malformed("an incomplete frame".into())),
    };
    serde_json::from_slice(&body).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Checks that a message came with exactly `want` descriptors.
pub fn expect_fds(fds: Vec<OwnedFd>, want: usize) -> Result<Vec<OwnedFd>, WireError> {
    if fds.len() != want {
        return Err(WireError::Descriptors(fds.len(), want));
    }
    Ok(fds)
}

/// One end of the channel, for async code.
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    /// Must run inside a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        // Deprecated for descriptors an AsyncFd does not own; this one owns an OwnedFd, so
        // nothing can close it underneath.
        #[allow(deprecated)]
        Ok(Channel { fd: AsyncFd::new(fd)? })
    }

    /// The next datagram and its descriptors; None when the peer closed its end.
    pub async fn recv(&self) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>, WireError> {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut fds = Vec::new();
            let got = guard.try_io(|inner| {
                safehouse_sys::unix::recvmsg_with_fds(inner.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT, &mut fds)
            });
            match got {
                Err(_would_block) => continue,
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) if n > MAX_MESSAGE => return Err(WireError::TooLarge { len: n, max: MAX_MESSAGE }),
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    return Ok(Some((buf, fds)));
                }
            }
        }
    }

    /// Sends one message with `fds` attached.
    pub async fn send<M: Serialize>(&self, msg: &M, fds: &[RawFd]) -> Result<(), WireError> {
        let bytes = encode(msg)?;
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|inner| {
                safehouse_sys::unix::sendmsg_with_fds(
                    inner.as_raw_fd(),
                    &bytes,
                    fds,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            });
            match sent {
                Err(_would_block) => continue,
                Ok(r) => return r.map(drop).map_err(Into::into),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_datagrams_are_refused() {
        let m = ToGateway::Stop { id: 7 };
        let bytes = encode(&m).unwrap();
        assert_eq!(decode::<ToGateway>(&bytes).unwrap(), m);
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(decode::<ToGateway>(&long), Err(WireError::Malformed(_))));
        assert!(matches!(decode::<ToGateway>(&bytes[..bytes.len() - 1]), Err(WireError::Malformed(_))));
        let mut lying = bytes.clone();
        lying[0] = 0xff;
        assert!(decode::<ToGateway>(&lying).is_err());
        let unknown = encode(&serde_json::json!({"type": "stop", "id": 1, "extra": 2})).unwrap();
        assert!(decode::<ToGateway>(&unknown).is_err());
        let other_way = encode(&FromGateway::Pong { seq: 1 }).unwrap();
        assert!(decode::<ToGateway>(&other_way).is_err());
        assert!(matches!(decode::<ToGateway>(&vec![0u8; MAX_MESSAGE + 1]), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn a_policy_travels_as_its_rules_and_compiles_the_same() {
        let p = NetPolicy {
            rules: ["example.com", "*.b.test:8000-8100", "192.0.2.0/24:*", "[2001:db8::1]:443"]
                .iter()
                .map(|r| parse_rule(r).unwrap())
                .collect(),
            egress_bytes: Some(5),
            host_reach: HostReach::ExactAddressRules,
        };
        let w = WirePolicy::of(&p);
        let back: WirePolicy = serde_json::from_slice(&serde_json::to_vec(&w).unwrap()).unwrap();
        assert_eq!(back.compile().unwrap(), p);
        let bad = WirePolicy { allow: vec!["not a rule!".into()], ..w };
        assert!(bad.compile().is_err());
    }
}

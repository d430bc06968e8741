//! SOCKS5 (RFC 1928) front end: the no-authentication method, the CONNECT command, IPv4,
//! IPv6 and domain-name targets. The parsers are pure and incremental (fuzzed); the handshake
//! as a whole must arrive within the handshake timeout.
//!
//! Replies: `0x02` when the policy (or the spent budget) denies, `0x04` when the name does not
//! resolve or is not a name, `0x05` when no address accepts the connection, `0x07` for another
//! command, `0x08` for another address type. The bound address in a success reply is always
//! `0.0.0.0:0`: the sandbox learns nothing about the host's addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use safehouse_policy::network::{canonical, parse_target, Target};

use crate::approve::Refusal;
use crate::conn::{Conn, Flow};

pub const VERSION: u8 = 0x05;
const NO_AUTH: u8 = 0x00;
const NO_ACCEPTABLE: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;

/// Reply codes (RFC 1928 §6).
pub mod reply {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

/// Result of an incremental parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Incomplete,
    /// The value and how many bytes it took.
    Done(T, usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    #[error("not SOCKS version 5 (version byte {0:#04x})")]
    Version(u8),
    #[error("a greeting that offers no methods")]
    NoMethods,
    #[error("command {0:#04x} is not supported; only CONNECT (0x01)")]
    Command(u8),
    #[error("address type {0:#04x} is not supported")]
    AddressType(u8),
    #[error("the reserved byte must be 0")]
    Reserved,
}

impl SocksError {
    /// The reply code to send before closing, if the protocol has one for this error.
    pub fn reply(&self) -> Option<u8> {
        match self {
            SocksError::Command(_) => Some(reply::COMMAND_NOT_SUPPORTED),
            SocksError::AddressType(_) => Some(reply::ADDRESS_TYPE_NOT_SUPPORTED),
            SocksError::Reserved => Some(reply::GENERAL_FAILURE),
            SocksError::Version(_) | SocksError::NoMethods => None,
        }
    }
}

/// A target as a SOCKS client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Domain(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub addr: Addr,
    pub port: u16,
}

/// `VER NMETHODS METHODS...` → the methods offered.
pub fn parse_greeting(buf: &[u8]) -> Result<Parsed<Vec<u8>>, SocksError> {
    let Some(&ver) = buf.first() else { return Ok(Parsed::Incomplete) };
    if ver != VERSION {
        return Err(SocksError::Version(ver));
    }
    let Some(&n) = buf.get(1) else { return Ok(Parsed::Incomplete) };
    if n == 0 {
        return Err(SocksError::NoMethods);
    }
    let end = 2 + n as usize;
    match buf.get(2..end) {
        Some(methods) => Ok(Parsed::Done(methods.to_vec(), end)),
        None => Ok(Parsed::Incomplete),
    }
}

/// `VER CMD RSV ATYP DST.ADDR DST.PORT` → a CONNECT request. The command and address type
/// are judged as soon as their byte arrives, so the client gets its reply code early.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<ConnectRequest>, SocksError> {
    let Some(&ver) = buf.first() else { return Ok(Parsed::Incomplete) };
    if ver != VERSION {
        return Err(SocksError::Version(ver));
    }
    let Some(&cmd) = buf.get(1) else { return Ok(Parsed::Incomplete) };
    if cmd != CMD_CONNECT {
        return Err(SocksError::Command(cmd));
    }
    let Some(&rsv) = buf.get(2) else { return Ok(Parsed::Incomplete) };
    if rsv != 0 {
        return Err(SocksError::Reserved);
    }
    let Some(&atyp) = buf.get(3) else { return Ok(Parsed::Incomplete) };
    let (addr_len, skip) = match atyp {
        0x01 => (4, 0),
        0x04 => (16, 0),
        0x03 => match buf.get(4) {
            Some(&n) => (n as usize, 1),
            None => return Ok(Parsed::Incomplete),
        },
        other => return Err(SocksError::AddressType(other)),
    };
    let start = 4 + skip;
    let end = start + addr_len + 2;
    let Some(rest) = buf.get(start..end) else { return Ok(Parsed::Incomplete) };
    let (a, p) = rest.split_at(addr_len);
    let addr = match atyp {
        0x01 => Addr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        0x04 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            Addr::V6(Ipv6Addr::from(o))
        }
        _ => Addr::Domain(a.to_vec()),
    };
    Ok(Parsed::Done(ConnectRequest { addr, port: u16::from_be_bytes([p[0], p[1]]) }, end))
}

/// The target a request names, read like every other: a domain goes through `parse_target`
/// (so "127.1" or "0x7f000001" sent as a name is the address it spells).
pub fn request_target(addr: &Addr) -> Result<Target, String> {
    match addr {
        Addr::V4(a) => Ok(Target::Ip(IpAddr::V4(*a))),
        Addr::V6(a) => Ok(Target::Ip(canonical(IpAddr::V6(*a)))),
        Addr::Domain(d) => {
            let s = std::str::from_utf8(d).map_err(|_| "the domain name is not UTF-8".to_string())?;
            parse_target(s)
        }
    }
}

fn reply_bytes(code: u8) -> [u8; 10] {
    [VERSION, code, 0, 0x01, 0, 0, 0, 0, 0, 0]
}

/// Largest handshake message: a request with a 255-byte name.
const MAX_MESSAGE: usize = 4 + 1 + 255 + 2;

pub(crate) async fn serve(flow: Flow, mut client: Conn) {
    let gw = flow.gw.clone();
    let deadline = tokio::time::Instant::now() + gw.config.handshake_timeout;
    let Ok(Some(req)) = tokio::time::timeout_at(deadline, handshake(&flow, &mut client)).await else {
        return;
    };
    let target = match request_target(&req.addr) {
        Ok(t) => t,
        Err(_) => {
            let _ = client.write_all(&flow, &reply_bytes(reply::HOST_UNREACHABLE)).await;
            return;
        }
    };
    let dialled = match gw.approve(&target, req.port).await {
        Ok(approved) => gw.dial(&approved).await,
        Err(r) => Err(r),
    };
    let stream = match dialled {
        Ok(s) => s,
        Err(r) => {
            let code = match r {
                Refusal::Denied { .. } => reply::NOT_ALLOWED,
                Refusal::Resolve(_) => reply::HOST_UNREACHABLE,
                Refusal::Connect(_) => reply::CONNECTION_REFUSED,
            };
            let _ = client.write_all(&flow, &reply_bytes(code)).await;
            return;
        }
    };
    if client.write_all(&flow, &reply_bytes(reply::SUCCEEDED)).await.is_err() {
        return;
    }
    // Bytes the client sent after its request (optimistic data) are still buffered: the
    // tunnel sends them first.
    let _ = crate::relay::tunnel(client, Conn::upstream(stream), &flow).await;
}

/// Reads the greeting, answers it, reads the request, leaving what follows it buffered.
/// None when the client is done or wrong (having sent the reply code the protocol has).
async fn handshake(flow: &Flow, client: &mut Conn) -> Option<ConnectRequest> {
    let methods = loop {
        match parse_greeting(client.buffered()) {
            Ok(Parsed::Done(methods, used)) => {
                client.consume(used);
                break methods;
            }
            Ok(Parsed::Incomplete) => read_more(flow, client).await?,
            Err(_) => return None,
        }
    };
    if !methods.contains(&NO_AUTH) {
        let _ = client.write_all(flow, &[VERSION, NO_ACCEPTABLE]).await;
        return None;
    }
    client.write_all(flow, &[VERSION, NO_AUTH]).await.ok()?;
    loop {
        match parse_request(client.buffered()) {
            Ok(Parsed::Done(req, used)) => {
                client.consume(used);
                return Some(req);
            }
            Ok(Parsed::Incomplete) => read_more(flow, client).await?,
            Err(e) => {
                if let Some(code) = e.reply() {
                    let _ = client.write_all(flow, &reply_bytes(code)).await;
                }
                return None;
            }
        }
    }
}

async fn read_more(flow: &Flow, client: &mut Conn) -> Option<()> {
    match client.fill(flow, MAX_MESSAGE).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_incrementally() {
        let req = [5, 1, 0, 3, 6, b'a', b'.', b't', b'e', b's', b't', 1, 187, 9, 9];
        for cut in 0..12 {
            assert_eq!(parse_request(&req[..cut]), Ok(Parsed::Incomplete), "cut {cut}");
        }
        assert_eq!(
            parse_request(&req),
            Ok(Parsed::Done(ConnectRequest { addr: Addr::Domain(b"a.test".to_vec()), port: 443 }, 13))
        );
        assert_eq!(parse_request(&[5, 2]), Err(SocksError::Command(2)));
        assert_eq!(parse_request(&[5, 1, 0, 9]), Err(SocksError::AddressType(9)));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(Parsed::Incomplete));
        assert_eq!(parse_greeting(&[5, 2, 0, 2]), Ok(Parsed::Done(vec![0, 2], 4)));
        assert_eq!(parse_greeting(&[4, 1]), Err(SocksError::Version(4)));
    }

    #[test]
    fn domain_spellings_are_addresses() {
        let t = request_target(&Addr::Domain(b"0x7f000001".to_vec())).unwrap();
        assert_eq!(t, Target::Ip("127.0.0.1".parse().unwrap()));
        let t = request_target(&Addr::V6("::ffff:169.254.169.254".parse().unwrap())).unwrap();
        assert_eq!(t, Target::Ip("169.254.169.254".parse().unwrap()));
    }
}

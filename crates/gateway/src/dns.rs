//! The DNS stub client: A and AAAA questions to one server, over UDP, and over TCP for a
//! question whose UDP answer came back truncated. Messages are built and read by
//! hickory-proto; this module only decides which answers count.
//!
//! An answer counts when its ID, QR bit, opcode and question match what was asked (anything
//! else is ignored as stray or spoofed: the stub keeps waiting for the real one); only A
//! and AAAA records owned by the asked name, or by a name it is a CNAME of (in any order),
//! are used. Every address is checked by the policy afterwards anyway.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

/// How long [`lookup`] waits for both answers.
pub const TIMEOUT: Duration = Duration::from_secs(3);

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("{0:?} cannot be asked in DNS (labels of 1 to 63 bytes, 255 in all)")]
    BadName(String),
    #[error("the answer is malformed: {0}")]
    Malformed(String),
    #[error("the answer is not for this question")]
    Mismatch,
    #[error("the answer was truncated, over TCP too")]
    Truncated,
    #[error("the server answered with error code {0} (2 = server failure, 5 = refused)")]
    Rcode(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
}

fn query_name(name: &str) -> Result<Name, DnsError> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let bad = || DnsError::BadName(bare.into());
    if bare.is_empty() || bare.len() > 253 || bare.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(bad());
    }
    let mut n = Name::from_ascii(bare).map_err(|_| bad())?;
    n.set_fqdn(true);
    Ok(n)
}

/// A query for `name` (no trailing dot needed) with recursion desired.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(query_name(name)?, RecordType::from(qtype)));
    m.to_vec().map_err(|e| DnsError::BadName(format!("{name}: {e}")))
}

/// What one response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 0 (no error) or 3 (no such name).
    pub rcode: u16,
    pub addrs: Vec<IpAddr>,
}

/// A name as a set key: lowercase, no trailing dot.
fn key(n: &Name) -> String {
    let s = n.to_lowercase().to_ascii();
    s.strip_suffix('.').map(str::to_string).unwrap_or(s)
}

/// Reads a response to the query `build_query(id, name, qtype)`. [`DnsError::Mismatch`]
/// means "not ours": the caller keeps waiting.
pub fn parse_response(msg: &[u8], id: u16, name: &str, qtype: u16) -> Result<Answer, DnsError> {
    let asked = query_name(name)?;
    let m = Message::from_vec(msg).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if m.id() != id || m.message_type() != MessageType::Response || m.op_code() != OpCode::Query {
        return Err(DnsError::Mismatch);
    }
    let [q] = m.queries() else { return Err(DnsError::Mismatch) };
    if key(q.name()) != key(&asked) || q.query_type() != RecordType::from(qtype) || q.query_class() != DNSClass::IN {
        return Err(DnsError::Mismatch);
    }
    if m.truncated() {
        return Err(DnsError::Truncated);
    }
    match m.response_code() {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Answer { rcode: 3, addrs: Vec::new() }),
        other => return Err(DnsError::Rcode(u16::from(other))),
    }
    let records: Vec<_> = m.answers().iter().filter(|r| r.dns_class() == DNSClass::IN).collect();
    // The asked name and everything it is an alias of, however the records are ordered.
    let mut names: HashSet<String> = HashSet::from([key(&asked)]);
    loop {
        let before = names.len();
        for r in &records {
            if let RData::CNAME(target) = r.data() {
                if names.contains(&key(r.name())) {
                    names.insert(key(target));
                }
            }
        }
        if names.len() == before {
            break;
        }
    }
    let mut addrs = Vec::new();
    for r in records.iter().filter(|r| names.contains(&key(r.name()))) {
        let a = match r.data() {
            RData::A(a) if qtype == TYPE_A => IpAddr::V4(a.0),
            RData::AAAA(a) if qtype == TYPE_AAAA => IpAddr::V6(a.0),
            _ => continue,
        };
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    Ok(Answer { rcode: 0, addrs })
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> DnsError {
    move |e| DnsError::Io(format!("{what}: {e}"))
}

/// Asks `server` for the A and AAAA records of `name`; returns every address found (IPv4
/// first). An empty answer (or no such name) is an empty list; an error only when neither
/// question got a usable answer.
pub async fn lookup(server: SocketAddr, name: &str, timeout: Duration) -> Result<Vec<IpAddr>, DnsError> {
    let deadline = Instant::now() + timeout;
    let bind: SocketAddr =
        if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).await.map_err(io("the DNS socket failed"))?;
    sock.connect(server).await.map_err(io("the DNS socket failed"))?; // the kernel drops datagrams from anyone else
    let mut ids = [0u8; 4];
    getrandom::getrandom(&mut ids).map_err(|e| DnsError::Io(format!("no randomness for query ids: {e}")))?;
    let mut pending = vec![
        (u16::from_be_bytes([ids[0], ids[1]]), TYPE_A),
        (u16::from_be_bytes([ids[2], ids[3]]) ^ 0x5a5a | 1, TYPE_AAAA),
    ];
    if pending[0].0 == pending[1].0 {
        pending[1].0 = pending[1].0.wrapping_add(1);
    }
    for (id, qtype) in &pending {
        sock.send(&build_query(*id, name, *qtype)?).await.map_err(io("the DNS socket failed"))?;
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut error = None;
    let mut truncated = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !pending.is_empty() {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => break,
            Ok(Err(e)) => return Err(io("the DNS socket failed")(e)),
            Ok(Ok(n)) => n,
        };
        let msg = &buf[..n];
        let Some((i, answer)) =
            pending.iter().enumerate().find_map(|(i, (id, qtype))| match parse_response(msg, *id, name, *qtype) {
                Err(DnsError::Mismatch | DnsError::Malformed(_)) => None,
                other => Some((i, other)),
            })
        else {
            continue; // stray, spoofed or garbled: keep waiting for the real answer
        };
        let (id, qtype) = pending.remove(i);
        match answer {
            Ok(a) if qtype == TYPE_A => v4 = a.addrs,
            Ok(a) => v6 = a.addrs,
            Err(DnsError::Truncated) => truncated.push((id, qtype)),
            Err(e) => error = Some(e),
        }
    }
    for (id, qtype) in truncated {
        match tokio::time::timeout_at(deadline, over_tcp(server, id, name, qtype)).await {
            Ok(Ok(a)) if qtype == TYPE_A => v4 = a.addrs,
            Ok(Ok(a)) => v6 = a.addrs,
            Ok(Err(e)) => error = Some(e),
            Err(_) => error = Some(DnsError::Timeout(timeout)),
        }
    }
    v4.extend(v6);
    if v4.is_empty() {
        if let Some(e) = error {
            return Err(e);
        }
        if !pending.is_empty() {
            return Err(DnsError::Timeout(timeout));
        }
    }
    Ok(v4)
}

/// One question over TCP (RFC 1035 §4.2.2: each message after its 16-bit length).
async fn over_tcp(server: SocketAddr, id: u16, name: &str, qtype: u16) -> Result<Answer, DnsError> {
    let query = build_query(id, name, qtype)?;
    let mut s = TcpStream::connect(server).await.map_err(io("the DNS connection over TCP failed"))?;
    let mut out = (query.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&query);
    s.write_all(&out).await.map_err(io("the DNS connection over TCP failed"))?;
    let len = s.read_u16().await.map_err(io("the DNS answer over TCP was cut"))? as usize;
    let mut msg = vec![0u8; len];
    s.read_exact(&mut msg).await.map_err(io("the DNS answer over TCP was cut"))?;
    parse_response(&msg, id, name, qtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `build_query(id, name, qtype)` with `answers` (owner, type, rdata).
    fn response(id: u16, name: &str, qtype: u16, answers: &[(&str, u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = build_query(id, name, qtype).unwrap();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = answers.len() as u8;
        for (owner, t, data) in answers {
            if *owner == name {
                m.extend_from_slice(&[0xC0, 12]); // pointer to the question's name
            } else {
                m.extend_from_slice(&wire_name(owner));
            }
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    fn wire_name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    #[test]
    fn reads_addresses_and_follows_cnames() {
        let m = response(
            7,
            "a.test",
            TYPE_A,
            &[
                ("edge.cdn.test", TYPE_A, vec![192, 0, 2, 1]),
                ("a.test", TYPE_CNAME, wire_name("edge.cdn.test")),
                ("unrelated.test", TYPE_A, vec![192, 0, 2, 9]),
            ],
        );
        let a = parse_response(&m, 7, "A.test", TYPE_A).unwrap();
        assert_eq!(a.addrs, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(parse_response(&m, 8, "a.test", TYPE_A), Err(DnsError::Mismatch));
        assert_eq!(parse_response(&m, 7, "b.test", TYPE_A), Err(DnsError::Mismatch));
        assert_eq!(parse_response(&m, 7, "a.test", TYPE_AAAA), Err(DnsError::Mismatch));
        for cut in 0..m.len() {
            assert!(parse_response(&m[..cut], 7, "a.test", TYPE_A).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_loops_bad_lengths_and_reads_codes() {
        let mut m = response(1, "a.test", TYPE_A, &[]);
        m[7] = 1; // one answer whose owner points at itself
        let at = m.len() as u16;
        m.extend_from_slice(&[0xC0 | (at >> 8) as u8, at as u8]);
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse_response(&m, 1, "a.test", TYPE_A), Err(DnsError::Malformed(_))));
        let m = response(1, "a.test", TYPE_A, &[("a.test", TYPE_A, vec![1, 2, 3])]);
        assert!(matches!(parse_response(&m, 1, "a.test", TYPE_A), Err(DnsError::Malformed(_))));
        let mut m = response(1, "a.test", TYPE_A, &[]);
        m[3] = 0x83; // NXDOMAIN
        assert_eq!(parse_response(&m, 1, "a.test", TYPE_A), Ok(Answer { rcode: 3, addrs: vec![] }));
        m[3] = 0x82;
        assert_eq!(parse_response(&m, 1, "a.test", TYPE_A), Err(DnsError::Rcode(2)));
        m[2] |= 0x02;
        assert_eq!(parse_response(&m, 1, "a.test", TYPE_A), Err(DnsError::Truncated));
        assert!(matches!(build_query(1, &"a".repeat(64), TYPE_A), Err(DnsError::BadName(_))));
        assert!(matches!(build_query(1, "a..b", TYPE_A), Err(DnsError::BadName(_))));
    }
}

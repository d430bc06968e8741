//! A minimal DNS stub client: A and AAAA questions over UDP to one configured server.
//!
//! Answers are read defensively: the ID, the QR bit, the opcode and the question must match
//! what was asked (anything else is ignored as stray or spoofed), names are decompressed with
//! a jump limit, every length is bounds-checked, and only A/AAAA records owned by the asked
//! name or a name it is a CNAME of are used. No TCP fallback: a truncated answer is an error.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How long [`lookup`] waits for both answers.
pub const TIMEOUT: Duration = Duration::from_secs(3);

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("{0:?} cannot be asked in DNS (labels of 1 to 63 bytes, 255 in all)")]
    BadName(String),
    #[error("the answer is malformed: {0}")]
    Malformed(&'static str),
    #[error("the answer is not for this question")]
    Mismatch,
    #[error("the answer was truncated and the gateway does not retry over TCP")]
    Truncated,
    #[error("the server answered with error code {0} (2 = server failure, 5 = refused)")]
    Rcode(u8),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
}

/// A query for `name` (no trailing dot) with recursion desired.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    encode_name(&mut q, name)?;
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// Appends `name` in wire form (labels, no compression).
pub fn encode_name(out: &mut Vec<u8>, name: &str) -> Result<(), DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(DnsError::BadName(name.into()));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName(name.into()));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// What one response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 0 (no error) or 3 (no such name).
    pub rcode: u8,
    pub addrs: Vec<IpAddr>,
}

/// Reads a response to the query `build_query(id, name, qtype)`. [`DnsError::Mismatch`]
/// means "not ours": the caller keeps waiting.
pub fn parse_response(msg: &[u8], id: u16, name: &str, qtype: u16) -> Result<Answer, DnsError> {
    let mut r = Reader { msg, pos: 0 };
    let got_id = r.u16()?;
    let flags = r.u16()?;
    let (qd, an) = (r.u16()?, r.u16()?);
    let _ns_ar = (r.u16()?, r.u16()?);
    let is_response = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xF;
    if got_id != id || !is_response || opcode != 0 || qd != 1 {
        return Err(DnsError::Mismatch);
    }
    let qname = r.name()?;
    let (qt, qc) = (r.u16()?, r.u16()?);
    if !qname.eq_ignore_ascii_case(name.strip_suffix('.').unwrap_or(name)) || qt != qtype || qc != CLASS_IN {
        return Err(DnsError::Mismatch);
    }
    if flags & 0x0200 != 0 {
        return Err(DnsError::Truncated);
    }
    let rcode = (flags & 0xF) as u8;
    if rcode == 3 {
        return Ok(Answer { rcode, addrs: Vec::new() });
    }
    if rcode != 0 {
        return Err(DnsError::Rcode(rcode));
    }
    let mut records = Vec::with_capacity(an.min(64) as usize);
    for _ in 0..an {
        let owner = r.name()?;
        let (rtype, class) = (r.u16()?, r.u16()?);
        let _ttl = r.bytes(4)?;
        let len = r.u16()? as usize;
        let start = r.pos;
        let data = r.bytes(len)?;
        if class != CLASS_IN {
            continue;
        }
        let rec = match (rtype, len) {
            (TYPE_A, 4) => Record::Addr(IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]))),
            (TYPE_AAAA, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(data);
                Record::Addr(IpAddr::V6(Ipv6Addr::from(o)))
            }
            (TYPE_A | TYPE_AAAA, _) => return Err(DnsError::Malformed("an address record of the wrong length")),
            (TYPE_CNAME, _) => {
                let mut sub = Reader { msg, pos: start };
                Record::Alias(sub.name()?)
            }
            _ => continue,
        };
        records.push((owner.to_ascii_lowercase(), rec));
    }
    // The asked name and everything it is an alias of, however the records are ordered.
    let mut names: HashSet<String> = HashSet::from([qname.to_ascii_lowercase()]);
    loop {
        let before = names.len();
        for (owner, rec) in &records {
            if let Record::Alias(target) = rec {
                if names.contains(owner) {
                    names.insert(target.to_ascii_lowercase());
                }
            }
        }
        if names.len() == before {
            break;
        }
    }
    let mut addrs = Vec::new();
    for (owner, rec) in &records {
        if let Record::Addr(a) = rec {
            if names.contains(owner) && !addrs.contains(a) {
                addrs.push(*a);
            }
        }
    }
    Ok(Answer { rcode, addrs })
}

enum Record {
    Addr(IpAddr),
    Alias(String),
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DnsError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.msg.len()).ok_or(DnsError::Malformed("too short"))?;
        let b = &self.msg[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A possibly compressed name, dotted, bytes outside printable ASCII escaped.
    fn name(&mut self) -> Result<String, DnsError> {
        let mut out = String::new();
        let mut pos = self.pos;
        let mut jumps = 0;
        let mut end_of_name = None; // where reading resumes after the first pointer
        loop {
            let len = *self.msg.get(pos).ok_or(DnsError::Malformed("a name runs past the end"))?;
            match len {
                0 => {
                    pos += 1;
                    break;
                }
                l if l & 0xC0 == 0xC0 => {
                    let lo = *self.msg.get(pos + 1).ok_or(DnsError::Malformed("a cut compression pointer"))?;
                    jumps += 1;
                    if jumps > 16 {
                        return Err(DnsError::Malformed("a compression loop"));
                    }
                    end_of_name.get_or_insert(pos + 2);
                    pos = (((l & 0x3F) as usize) << 8) | lo as usize;
                }
                l if l & 0xC0 != 0 => return Err(DnsError::Malformed("an unknown label type")),
                l => {
                    let label = self
                        .msg
                        .get(pos + 1..pos + 1 + l as usize)
                        .ok_or(DnsError::Malformed("a label runs past the end"))?;
                    if !out.is_empty() {
                        out.push('.');
                    }
                    for &b in label {
                        if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                            out.push(b as char);
                        } else {
                            out.push_str(&format!("\\{b:03}"));
                        }
                    }
                    if out.len() > 1024 {
                        return Err(DnsError::Malformed("a name too long"));
                    }
                    pos += 1 + l as usize;
                }
            }
        }
        self.pos = end_of_name.unwrap_or(pos);
        Ok(out)
    }
}

/// Asks `server` for the A and AAAA records of `name`; returns every address found (IPv4
/// first). An empty answer (or no such name) is an empty list; an error only when neither
/// question got a usable answer.
pub async fn lookup(server: SocketAddr, name: &str, timeout: Duration) -> Result<Vec<IpAddr>, DnsError> {
    let io = |e: std::io::Error| DnsError::Io(format!("the DNS socket failed: {e}"));
    let bind: SocketAddr =
        if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(server).await.map_err(io)?; // the kernel drops datagrams from anyone else
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
        sock.send(&build_query(*id, name, *qtype)?).await.map_err(io)?;
    }
    let deadline = Instant::now() + timeout;
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut error = None;
    let mut buf = vec![0u8; 4096];
    while !pending.is_empty() {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => break,
            Ok(Err(e)) => return Err(io(e)),
            Ok(Ok(n)) => n,
        };
        let msg = &buf[..n];
        let Some(i) = pending.iter().position(|(id, qtype)| {
            !matches!(parse_response(msg, *id, name, *qtype), Err(DnsError::Mismatch | DnsError::Malformed(_)))
        }) else {
            continue; // stray, spoofed or garbled: keep waiting for the real answer
        };
        let (id, qtype) = pending.remove(i);
        match parse_response(msg, id, name, qtype) {
            Ok(a) if qtype == TYPE_A => v4 = a.addrs,
            Ok(a) => v6 = a.addrs,
            Err(e) => error = Some(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: u16, name: &str, qtype: u16, answers: &[(&str, u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, answers.len() as u8, 0, 0, 0, 0]);
        encode_name(&mut m, name).unwrap();
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        for (owner, t, data) in answers {
            if *owner == name {
                m.extend_from_slice(&[0xC0, 12]); // pointer to the question's name
            } else {
                encode_name(&mut m, owner).unwrap();
            }
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn reads_addresses_and_follows_cnames() {
        let mut cname = Vec::new();
        encode_name(&mut cname, "edge.cdn.test").unwrap();
        let m = response(
            7,
            "a.test",
            TYPE_A,
            &[
                ("edge.cdn.test", TYPE_A, vec![192, 0, 2, 1]),
                ("a.test", TYPE_CNAME, cname),
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
    fn refuses_loops_and_bad_lengths() {
        let mut m = response(1, "a.test", TYPE_A, &[]);
        m[7] = 1; // one answer whose owner points at itself
        let at = m.len() as u16;
        m.extend_from_slice(&[0xC0 | (at >> 8) as u8, at as u8]);
        assert_eq!(parse_response(&m, 1, "a.test", TYPE_A), Err(DnsError::Malformed("a compression loop")));
        let m = response(1, "a.test", TYPE_A, &[("a.test", TYPE_A, vec![1, 2, 3])]);
        assert!(matches!(parse_response(&m, 1, "a.test", TYPE_A), Err(DnsError::Malformed(_))));
        let mut m = response(1, "a.test", TYPE_A, &[]);
        m[3] = 0x83; // NXDOMAIN
        assert_eq!(parse_response(&m, 1, "a.test", TYPE_A), Ok(Answer { rcode: 3, addrs: vec![] }));
        m[3] = 0x82;
        assert_eq!(parse_response(&m, 1, "a.test", TYPE_A), Err(DnsError::Rcode(2)));
        m[2] |= 0x02;
        assert_eq!(parse_response(&m, 1, "a.test", TYPE_A), Err(DnsError::Truncated));
    }
}

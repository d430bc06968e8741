//! The messages a sandbox's init sends to the host side over its status pipe, one tagged
//! record each. The host decodes them defensively: the pipe's far end is inside the
//! sandbox.

use std::io::{self, Read, Write};

/// Largest record accepted, so a confused sender cannot make the host buffer unboundedly.
const MAX_RECORD: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Setup failed before the command ran; the text names the step.
    SetupFailed(String),
    /// The command could not be executed (errno, path).
    ExecFailed(i32, String),
    /// The command was started with this pid (inside the sandbox).
    Started(i32),
    /// The command ended with this wait status.
    Exited(i32),
    /// Setup is complete and the agent is taking over (daemon sandboxes).
    Ready,
}

impl Report {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body): (u8, Vec<u8>) = match self {
            Report::SetupFailed(m) => (b'E', m.as_bytes().to_vec()),
            Report::ExecFailed(e, p) => (b'F', [e.to_le_bytes().as_slice(), p.as_bytes()].concat()),
            Report::Started(pid) => (b'S', pid.to_le_bytes().to_vec()),
            Report::Exited(st) => (b'X', st.to_le_bytes().to_vec()),
            Report::Ready => (b'R', Vec::new()),
        };
        let body = &body[..body.len().min(MAX_RECORD)];
        let mut out = Vec::with_capacity(body.len() + 5);
        out.push(tag);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    pub fn send(&self, w: &mut impl Write) {
        // A failed write means the host is gone; nothing useful can be done about it.
        let _ = w.write_all(&self.encode());
    }

    /// Decodes every record in `bytes`; stops at the first malformed one.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Report>, String> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest.len() < 5 {
                return Err("truncated record header".into());
            }
            let tag = rest[0];
            let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if len > MAX_RECORD || rest.len() < 5 + len {
                return Err(format!("record of {len} bytes exceeds what was sent or the {MAX_RECORD}-byte cap"));
            }
            let body = &rest[5..5 + len];
            let int = |b: &[u8]| -> Result<i32, String> {
                b.get(..4)
                    .map(|x| i32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                    .ok_or_else(|| "short integer".to_string())
            };
            out.push(match tag {
                b'E' => Report::SetupFailed(String::from_utf8_lossy(body).into_owned()),
                b'F' => Report::ExecFailed(int(body)?, String::from_utf8_lossy(&body[4..]).into_owned()),
                b'S' => Report::Started(int(body)?),
                b'X' => Report::Exited(int(body)?),
                b'R' => Report::Ready,
                other => return Err(format!("unknown record tag {other:#x}")),
            });
            rest = &rest[5 + len..];
        }
        Ok(out)
    }

    /// Reads a pipe to EOF (bounded) and decodes it.
    pub fn read_all(r: &mut impl Read) -> io::Result<Result<Vec<Report>, String>> {
        let mut buf = Vec::new();
        r.take(64 * 1024).read_to_end(&mut buf)?;
        Ok(Report::decode_all(&buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects_garbage() {
        let rs = vec![
            Report::Started(2),
            Report::ExecFailed(2, "/bin/nope".into()),
            Report::Exited(0x8b00),
            Report::SetupFailed("mount proc: EPERM".into()),
        ];
        let bytes: Vec<u8> = rs.iter().flat_map(|r| r.encode()).collect();
        assert_eq!(Report::decode_all(&bytes).unwrap(), rs);
        assert!(Report::decode_all(b"Z\0\0\0\0").is_err());
        assert!(Report::decode_all(b"X\xff\xff\xff\xff").is_err());
        assert!(Report::decode_all(b"X\x04\0\0\0\x01").is_err());
        assert!(Report::decode_all(b"S\x02\0\0\0ab").is_err());
    }
}

//! Splits the driver's output into lines, with a cap: a line longer than the cap (a
//! runaway or hostile writer) is dropped whole and counted, never buffered past the cap.

/// The longest line kept: a result carrying a large PNG fits; more is refused.
pub const MAX_LINE: usize = 32 << 20;

#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// Inside a line already over the cap: skip to its newline.
    skipping: bool,
    dropped: u64,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max, skipping: false, dropped: 0 }
    }

    /// Lines over the cap dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Feeds bytes; calls `line` for each complete line (without its newline).
    pub fn push(&mut self, mut bytes: &[u8], mut line: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    if self.skipping {
                        self.skipping = false;
                    } else if self.buf.len() + at > self.max {
                        self.dropped += 1;
                        self.buf.clear();
                    } else if self.buf.is_empty() {
                        line(&bytes[..at]);
                    } else {
                        self.buf.extend_from_slice(&bytes[..at]);
                        line(&self.buf);
                        self.buf.clear();
                    }
                    bytes = &bytes[at + 1..];
                }
                None => {
                    if !self.skipping {
                        if self.buf.len() + bytes.len() > self.max {
                            self.dropped += 1;
                            self.buf = Vec::new();
                            self.skipping = true;
                        } else {
                            self.buf.extend_from_slice(bytes);
                        }
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<String>, u64) {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        (out, s.dropped())
    }

    #[test]
    fn joins_lines_across_chunks() {
        assert_eq!(split(100, &[b"ab", b"c\nde", b"f\n\ng"]), (vec!["abc".into(), "def".into(), "".into()], 0));
    }

    #[test]
    fn drops_a_line_over_the_cap_and_keeps_the_next() {
        assert_eq!(split(4, &[b"12345\nok\n"]), (vec!["ok".into()], 1));
        assert_eq!(split(4, &[b"123", b"45", b"678", b"\nok\n"]), (vec!["ok".into()], 1));
        assert_eq!(split(4, &[b"1234\n"]), (vec!["1234".into()], 0));
    }
}

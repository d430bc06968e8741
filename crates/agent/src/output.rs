//! Where one output stream of a process goes when it is not sent at once: the capture of
//! a run-to-completion command, or the ring kept while no daemon is connected.

use std::collections::VecDeque;
use std::fs::File;

use safehouse_protocol::{CAPTURE_LIMIT, DISCONNECTED_BUFFER};

/// One output stream (stdout or stderr) of a supervised process.
#[derive(Default)]
pub struct Output {
    /// The agent's read end; `None` once at end of file (or never opened).
    pub file: Option<File>,
    /// At end of file but kept open: a pty master whose closing would hang up the
    /// terminal (SIGHUP) under a process that is still exiting.
    pub eof: bool,
    /// Captured bytes (capture mode), or the newest bytes while disconnected (streamed).
    kept: VecDeque<u8>,
    /// Streamed mode: bytes discarded from the front of `kept` since the last replay.
    pub dropped: u64,
    /// Capture mode: bytes beyond [`CAPTURE_LIMIT`] were discarded.
    pub truncated: bool,
}

impl Output {
    pub fn new(file: Option<File>) -> Self {
        Output { file, ..Default::default() }
    }

    /// Capture mode: keep the first [`CAPTURE_LIMIT`] bytes.
    pub fn capture(&mut self, bytes: &[u8]) {
        let room = CAPTURE_LIMIT.saturating_sub(self.kept.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.kept.extend(&bytes[..bytes.len().min(room)]);
    }

    /// Streamed mode without a daemon: keep the newest [`DISCONNECTED_BUFFER`] bytes.
    pub fn buffer(&mut self, bytes: &[u8]) {
        let cap = DISCONNECTED_BUFFER;
        if self.kept.capacity() < cap {
            // Exactly the cap, once: a grown ring would touch (and keep) twice as much.
            self.kept.reserve_exact(cap - self.kept.len());
        }
        let bytes = if bytes.len() > cap {
            self.dropped += (bytes.len() - cap) as u64;
            &bytes[bytes.len() - cap..]
        } else {
            bytes
        };
        let overflow = (self.kept.len() + bytes.len()).saturating_sub(cap);
        if overflow > 0 {
            self.kept.drain(..overflow);
            self.dropped += overflow as u64;
        }
        self.kept.extend(bytes);
    }

    /// Bytes held.
    pub fn kept_len(&self) -> usize {
        self.kept.len()
    }

    /// Takes the held bytes and releases their memory.
    pub fn take(&mut self) -> Vec<u8> {
        Vec::from(std::mem::take(&mut self.kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes_and_counts_the_rest() {
        let mut o = Output::new(None);
        o.buffer(&vec![1u8; DISCONNECTED_BUFFER - 10]);
        o.buffer(&[2u8; 30]);
        assert_eq!((o.kept_len(), o.dropped), (DISCONNECTED_BUFFER, 20));
        o.buffer(&vec![3u8; DISCONNECTED_BUFFER + 5]);
        assert_eq!(o.dropped, 20 + DISCONNECTED_BUFFER as u64 + 5);
        let kept = o.take();
        assert!(kept.len() == DISCONNECTED_BUFFER && kept.iter().all(|&b| b == 3));
        assert_eq!(o.kept.capacity(), 0);
    }

    #[test]
    fn capture_keeps_the_first_bytes() {
        let mut o = Output::new(None);
        o.capture(&vec![1u8; CAPTURE_LIMIT - 1]);
        assert!(!o.truncated);
        o.capture(&[2, 3]);
        assert!(o.truncated);
        let kept = o.take();
        assert_eq!((kept.len(), kept[CAPTURE_LIMIT - 1]), (CAPTURE_LIMIT, 2));
    }
}

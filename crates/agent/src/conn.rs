//! The connection to the daemon: non-blocking reads into a message decoder, descriptors
//! received alongside frames, and a queue of encoded frames flushed as the socket allows.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use safehouse_protocol::{encode_data, DecodeError, FromAgent, Incoming, Message, MessageDecoder, Stream, ToAgent};
use safehouse_sys::agent_support as sup;

/// Descriptors that may wait for the frame that claims them.
const MAX_PENDING_FDS: usize = 64;

/// Outgoing capacity kept when the queue drains; a larger buffer is released.
const IDLE_CAPACITY: usize = 64 << 10;

/// Why a connection is closed.
#[derive(Debug)]
pub enum Closed {
    /// The daemon hung up or the socket failed.
    Io,
    /// The daemon broke the protocol.
    Protocol,
}

impl From<DecodeError> for Closed {
    fn from(_: DecodeError) -> Self {
        Closed::Protocol
    }
}

pub struct Conn {
    sock: OwnedFd,
    decoder: MessageDecoder<ToAgent>,
    /// Descriptors received and not yet claimed by a `Spawn`, oldest first.
    fds: VecDeque<OwnedFd>,
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
}

impl Conn {
    pub fn new(sock: OwnedFd) -> Self {
        Conn { sock, decoder: MessageDecoder::new(), fds: VecDeque::new(), out: Vec::new(), sent: 0 }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// One non-blocking receive into the decoder. `Ok(false)`: nothing to read now.
    pub fn receive(&mut self, scratch: &mut [u8]) -> Result<bool, Closed> {
        let mut fds = Vec::new();
        match sup::recv_with_fds(&self.sock, scratch, &mut fds) {
            Ok(0) => Err(Closed::Io),
            Ok(n) => {
                self.fds.extend(fds);
                if self.fds.len() > MAX_PENDING_FDS {
                    return Err(Closed::Protocol);
                }
                self.decoder.push(&scratch[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(_) => Err(Closed::Io),
        }
    }

    /// The next decoded message or stdin data.
    pub fn next(&mut self) -> Result<Option<Incoming<ToAgent>>, Closed> {
        let item = self.decoder.next_message()?;
        // Descriptors arrive with the first byte of the frame that claims them, so at a
        // frame boundary none may be left over.
        if item.is_none() && self.decoder.buffered() == 0 && !self.fds.is_empty() {
            return Err(Closed::Protocol);
        }
        Ok(item)
    }

    /// The `n` oldest received descriptors, if that many arrived.
    pub fn take_fds(&mut self, n: usize) -> Option<Vec<OwnedFd>> {
        (self.fds.len() >= n).then(|| self.fds.drain(..n).collect())
    }

    pub fn queue(&mut self, msg: &FromAgent) {
        // Only a message above the frame limit fails (a huge process list): it is
        // dropped rather than breaking the stream.
        let _ = msg.encode(&mut self.out);
    }

    pub fn queue_data(&mut self, pid: u32, stream: Stream, bytes: &[u8]) {
        encode_data(pid, stream, bytes, &mut self.out);
    }

    /// Bytes queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Sends what the socket takes without blocking.
    pub fn flush(&mut self) -> Result<(), Closed> {
        while self.sent < self.out.len() {
            match sup::send(&self.sock, &self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(Closed::Io),
            }
        }
        if self.sent == self.out.len() {
            self.sent = 0;
            if self.out.capacity() > IDLE_CAPACITY {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        } else if self.sent >= IDLE_CAPACITY && self.sent * 2 >= self.out.len() {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

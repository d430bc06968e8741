//! One side of a proxied exchange: a TCP stream with a read buffer (heads, chunk-size lines
//! and SOCKS handshakes are read into it; bodies and tunnels bypass it, see
//! [`crate::relay`]). The upstream side charges every byte it reads or writes to the
//! gateway's budget and counters before the byte moves.

use std::io;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::gateway::Gateway;
use crate::meter::Activity;

/// What a connection's I/O reports to: its gateway and its activity clock.
#[derive(Clone)]
pub(crate) struct Flow {
    pub gw: Arc<Gateway>,
    pub activity: Arc<Activity>,
}

/// Which way bytes cross the gateway's edge, for the budget and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    /// Neither end is the outside (the client side).
    Inside,
    /// Read from the outside.
    Inbound,
    /// Written to the outside.
    Outbound,
}

impl Flow {
    /// Claims up to `want` bytes crossing `edge` (nothing to claim for `Inside`).
    pub async fn claim(&self, edge: Edge, want: usize) -> io::Result<usize> {
        if edge == Edge::Inside {
            return Ok(want);
        }
        self.gw.claim(want as u64).await.map(|n| n as usize)
    }

    /// `moved` of the `claimed` bytes crossed `edge`; the rest is given back.
    pub fn settle(&self, edge: Edge, claimed: usize, moved: usize) {
        if moved > 0 {
            self.activity.touch();
        }
        if edge != Edge::Inside {
            self.gw.settle(claimed as u64, moved as u64, edge == Edge::Inbound);
        }
    }
}

/// Largest single read into a connection's buffer.
const READ_CHUNK: usize = 64 << 10;

pub(crate) struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// True for the upstream: its reads are inbound, its writes outbound.
    outside: bool,
}

impl Conn {
    pub fn client(stream: TcpStream) -> Conn {
        Conn { stream, buf: Vec::new(), pos: 0, outside: false }
    }

    pub fn upstream(stream: TcpStream) -> Conn {
        Conn { stream, buf: Vec::new(), pos: 0, outside: true }
    }

    pub fn read_edge(&self) -> Edge {
        if self.outside {
            Edge::Inbound
        } else {
            Edge::Inside
        }
    }

    pub fn write_edge(&self) -> Edge {
        if self.outside {
            Edge::Outbound
        } else {
            Edge::Inside
        }
    }

    /// Bytes read but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` buffered bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads once more into the buffer (at most `max` bytes); returns how many came, 0 at
    /// end of input.
    pub async fn fill(&mut self, flow: &Flow, max: usize) -> io::Result<usize> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let edge = self.read_edge();
        let want = flow.claim(edge, max.clamp(1, READ_CHUNK)).await?;
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        let got = loop {
            if let Err(e) = self.stream.readable().await {
                break Err(e);
            }
            match self.stream.try_read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => break r,
            }
        };
        let n = *got.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        flow.settle(edge, want, n);
        got
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, flow: &Flow, mut data: &[u8]) -> io::Result<()> {
        let edge = self.write_edge();
        while !data.is_empty() {
            let want = flow.claim(edge, data.len()).await?;
            let wrote = self.stream.write(&data[..want]).await;
            let n = *wrote.as_ref().unwrap_or(&0);
            flow.settle(edge, want, n);
            match wrote {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes the buffered bytes of `from` (at most `max`) here and consumes them there;
    /// returns how many.
    pub async fn write_buffered_of(&mut self, flow: &Flow, from: &mut Conn, max: u64) -> io::Result<u64> {
        let n = (from.buffered().len() as u64).min(max) as usize;
        if n > 0 {
            self.write_all(flow, &from.buffered()[..n]).await?;
            from.consume(n);
        }
        Ok(n as u64)
    }
}

//! Moving bytes between a client and its upstream without copying them through the
//! gateway: splice(2) from one socket into a pipe, and from the pipe into the other socket
//! (the kernel passes page references; the gateway never reads the payload). CONNECT and
//! SOCKS5 tunnels, and HTTP bodies of known length (and the data of each chunk), go this way.
//!
//! Every byte is claimed from the budget before it enters the pipe (a hard cap, never a
//! hint), counted once it moved, and each move marks the connection active.
//!
//! A pipe starts at the kernel's default size (64 KiB) and grows to [`MAX_PIPE`] once a
//! transfer keeps filling it: an idle or interactive tunnel does not use up the gateway's
//! pipe budget (`fs.pipe-user-pages-soft`, 64 MiB per user by default), a bulk one gets large
//! moves. When growing is refused the pipe keeps its size.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use safehouse_sys::pipe as sys;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::conn::{Conn, Edge, Flow};

/// Largest pipe buffer a transfer grows to.
pub const MAX_PIPE: usize = 1 << 20;

/// One direction's pipe. Kept empty between moves: what enters is moved out before more
/// is read, so the pipe never holds bytes of two transfers.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    cap: usize,
    /// Consecutive fills that filled the pipe.
    full_fills: u32,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = safehouse_sys::fs::pipe()?;
        let cap = sys::pipe_size(read.as_fd())?;
        Ok(Pipe { read, write, cap, full_fills: 0 })
    }

    fn note_fill(&mut self, n: usize) {
        if n < self.cap {
            self.full_fills = 0;
            return;
        }
        self.full_fills += 1;
        if self.full_fills >= 4 && self.cap < MAX_PIPE {
            self.full_fills = 0;
            if let Ok(cap) = sys::set_pipe_size(self.read.as_fd(), (self.cap * 4).min(MAX_PIPE)) {
                self.cap = cap;
            }
        }
    }
}

/// A pipe made on first use and kept for the connection's later transfers.
#[derive(Default)]
pub(crate) struct LazyPipe(Option<Pipe>);

impl LazyPipe {
    fn get(&mut self) -> io::Result<&mut Pipe> {
        if self.0.is_none() {
            self.0 = Some(Pipe::new()?);
        }
        Ok(self.0.as_mut().expect("made above"))
    }
}

/// Moves bytes from `from` to `to` until `limit` bytes moved (`Some`) or `from` ends
/// (`None`). Returns the bytes moved; with a limit, an early end is `UnexpectedEof`.
pub(crate) async fn splice(
    from: &TcpStream,
    to: &TcpStream,
    edge: Edge,
    limit: Option<u64>,
    pipe: &mut LazyPipe,
    flow: &Flow,
) -> io::Result<u64> {
    let mut left = limit.unwrap_or(u64::MAX);
    let mut total = 0u64;
    if left == 0 {
        return Ok(0);
    }
    let pipe = pipe.get()?;
    while left > 0 {
        let want = (pipe.cap as u64).min(left) as usize;
        let claimed = flow.claim(edge, want).await?;
        let moved = splice_in(from, pipe, claimed).await;
        let n = *moved.as_ref().unwrap_or(&0);
        flow.settle(edge, claimed, n);
        if moved? == 0 {
            if limit.is_some() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the sender closed before the body ended"));
            }
            return Ok(total);
        }
        pipe.note_fill(n);
        splice_out(pipe, to, n, flow).await?;
        left -= n as u64;
        total += n as u64;
    }
    Ok(total)
}

/// One splice from a socket into the (empty) pipe, waiting until the socket has data.
async fn splice_in(from: &TcpStream, pipe: &Pipe, max: usize) -> io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_io(Interest::READABLE, || sys::splice(from.as_fd(), pipe.write.as_fd(), max, false)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Empties `held` bytes of the pipe into a socket, waiting while its send buffer is full.
async fn splice_out(pipe: &Pipe, to: &TcpStream, mut held: usize, flow: &Flow) -> io::Result<()> {
    while held > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || sys::splice(pipe.read.as_fd(), to.as_fd(), held, false)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                held -= n;
                flow.activity.touch();
            }
        }
    }
    Ok(())
}

/// Moves exactly `n` bytes from `from` to `to`: what `from` already buffered first, the
/// rest spliced.
pub(crate) async fn exact(from: &mut Conn, to: &mut Conn, n: u64, pipe: &mut LazyPipe, flow: &Flow) -> io::Result<()> {
    let done = to.write_buffered_of(flow, from, n).await?;
    splice(&from.stream, &to.stream, edge(from, to), Some(n - done), pipe, flow).await?;
    Ok(())
}

/// Moves everything `from` sends to `to` until `from` ends.
pub(crate) async fn to_end(from: &mut Conn, to: &mut Conn, pipe: &mut LazyPipe, flow: &Flow) -> io::Result<u64> {
    let done = to.write_buffered_of(flow, from, u64::MAX).await?;
    Ok(done + splice(&from.stream, &to.stream, edge(from, to), None, pipe, flow).await?)
}

/// The edge a move from `from` to `to` crosses.
fn edge(from: &Conn, to: &Conn) -> Edge {
    match (from.read_edge(), to.write_edge()) {
        (Edge::Inbound, _) => Edge::Inbound,
        (_, Edge::Outbound) => Edge::Outbound,
        _ => Edge::Inside,
    }
}

/// A tunnel: both directions at once until both ends are done (each end's close is passed
/// on as a half-close) or either fails.
pub(crate) async fn tunnel(mut client: Conn, mut upstream: Conn, flow: &Flow) -> io::Result<()> {
    upstream.write_buffered_of(flow, &mut client, u64::MAX).await?;
    client.write_buffered_of(flow, &mut upstream, u64::MAX).await?;
    let (mut up_pipe, mut down_pipe) = (LazyPipe::default(), LazyPipe::default());
    let up = async {
        splice(&client.stream, &upstream.stream, Edge::Outbound, None, &mut up_pipe, flow).await?;
        sys::shutdown_write(upstream.stream.as_fd())
    };
    let down = async {
        splice(&upstream.stream, &client.stream, Edge::Inbound, None, &mut down_pipe, flow).await?;
        sys::shutdown_write(client.stream.as_fd())
    };
    tokio::try_join!(up, down)?;
    Ok(())
}

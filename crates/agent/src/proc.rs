//! A supervised process: its stdin queue, its output streams and its end.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};

use safehouse_protocol::{Exited, FromAgent, SpawnRequest, Stream};
use safehouse_sys::process::Reaped;

use crate::output::Output;
use crate::spawn::Child;

/// The output streams, in the order of `Proc::out`.
pub const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// What the terminal's end-of-file character sends for `CloseStdin` on a pty.
const VEOF: u8 = 0x04;

/// Queue capacity kept when it drains; a larger one is released.
const IDLE_CAPACITY: usize = 64 << 10;

pub struct StdinQueue {
    pub file: File,
    pub queue: VecDeque<u8>,
    /// Close (or send ^D, on a pty) once the queue is written.
    pub closing: bool,
}

/// A process started by `Spawn`, until its `Exited` is sent and its output closed.
pub struct Proc {
    pub pid: i32,
    pub argv: Vec<String>,
    pub pty: bool,
    pub capture: bool,
    pub stdin: Option<StdinQueue>,
    pub out: [Output; 2],
    pub exit: Option<Reaped>,
    pub exit_sent: bool,
}

impl Proc {
    pub fn new(req: SpawnRequest, child: Child) -> Self {
        Proc {
            pid: child.pid,
            argv: req.argv,
            pty: req.pty.is_some(),
            capture: req.capture,
            stdin: child.stdin.map(|file| StdinQueue { file, queue: VecDeque::new(), closing: false }),
            out: [Output::new(child.stdout), Output::new(child.stderr)],
            exit: None,
            exit_sent: false,
        }
    }

    pub fn exited_message(&mut self) -> Option<FromAgent> {
        let r = self.exit?;
        let captured = |o: &mut Output| if self.capture { Some(o.take()) } else { None };
        let [out, err] = &mut self.out;
        Some(FromAgent::Exited(Exited {
            pid: self.pid as u32,
            status: r.status,
            user_us: r.user_us,
            sys_us: r.sys_us,
            maxrss_kib: r.maxrss_kib,
            stdout: captured(out),
            stderr: captured(err),
            stdout_truncated: out.truncated,
            stderr_truncated: err.truncated,
        }))
    }

    pub fn finished(&self) -> bool {
        self.exit_sent && self.out.iter().all(|o| o.file.is_none())
    }

    pub fn terminal(&self) -> Option<&File> {
        if !self.pty {
            return None;
        }
        self.out[0].file.as_ref().or(self.stdin.as_ref().map(|s| &s.file))
    }

    /// Queues bytes for stdin (dropped if it is closed or closing) and writes what it can.
    pub fn queue_stdin(&mut self, bytes: &[u8]) {
        match self.stdin.as_mut() {
            Some(st) if !st.closing => st.queue.extend(bytes),
            _ => return,
        }
        self.write_stdin();
    }

    /// Closes stdin once the queue is written; on a pty, sends the end-of-file character
    /// instead (closing the master would hang the terminal up).
    pub fn close_stdin(&mut self) {
        let pty = self.pty;
        let Some(st) = self.stdin.as_mut().filter(|st| !st.closing) else { return };
        if pty {
            st.queue.push_back(VEOF);
        }
        st.closing = true;
        self.write_stdin();
    }

    /// Writes queued stdin until the pipe is full; closes it when asked and drained, or
    /// when the reader is gone.
    pub fn write_stdin(&mut self) {
        let Some(st) = self.stdin.as_mut() else { return };
        while !st.queue.is_empty() {
            let (front, _) = st.queue.as_slices();
            match st.file.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    st.queue.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EPIPE: the reader is gone; nothing queued can be delivered.
                Err(_) => {
                    self.stdin = None;
                    return;
                }
            }
        }
        if st.closing {
            self.stdin = None;
        } else if st.queue.capacity() > IDLE_CAPACITY {
            st.queue = VecDeque::new();
        }
    }
}

//! The poll loop and the table of supervised processes.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use safehouse_protocol::{
    Buffered, FromAgent, Incoming, Message, ProcessInfo, SpawnRequest, StdinMode, ToAgent, MAX_CGROUP_FDS,
    PROTOCOL_VERSION,
};
use safehouse_sys::process;
use safehouse_sys::{agent_support as sup, fs};

use crate::conn::{Closed, Conn};
use crate::output::Output;
use crate::proc::{Proc, STREAMS};
use crate::spawn;
use crate::AgentConfig;

/// Size of the one read buffer (socket and pipes alike), and of replayed `Data` frames.
const CHUNK: usize = 64 << 10;

/// Streamed output is not read while this much waits for the daemon (the writers block
/// on their pipes instead of the agent buffering without bound).
const OUT_HIGH: usize = 1 << 20;

/// The daemon's socket is not read while this much stdin waits for slow readers.
const STDIN_HIGH: usize = 4 << 20;

/// Output read per stream from a process that exited, before its `Exited` (what it left
/// in a pipe of the largest default size, or in its terminal).
const DRAIN_BYTES: usize = 1 << 20;

/// How long to stop accepting after an accept error that would otherwise spin.
const ACCEPT_BACKOFF_NS: u64 = 100_000_000;

#[derive(Clone, Copy)]
enum Target {
    Listener,
    Signals,
    Conn,
    Output(usize, usize),
    Stdin(usize),
}

pub struct Agent {
    listener: OwnedFd,
    signals: OwnedFd,
    config: AgentConfig,
    conn: Option<Conn>,
    procs: Vec<Proc>,
    scratch: Vec<u8>,
    pfds: Vec<libc::pollfd>,
    targets: Vec<Target>,
    accept_paused_until: Option<u64>,
}

/// Fills descriptors 0-2 if they are closed, so no pipe or socket of the agent ever gets
/// one of those numbers (children dup2 their stdio onto them).
fn occupy_stdio() {
    for fd in 0..3 {
        if sup::fd_is_open(fd) {
            continue;
        }
        let filler: io::Result<OwnedFd> = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .or_else(|_| fs::pipe().map(|p| p.0));
        // The lowest free number is taken first, so this fills `fd` (leaked on purpose).
        if let Ok(f) = filler {
            let _ = f.into_raw_fd();
        }
    }
}

impl Agent {
    pub fn new(listener: OwnedFd, config: AgentConfig) -> io::Result<Self> {
        sup::return_freed_memory_promptly();
        occupy_stdio();
        // A daemon or a child that goes away must be an error code, not a signal.
        sup::ignore_signal(libc::SIGPIPE)?;
        // An inherited SIG_IGN would make the kernel reap children before we see them.
        process::default_signal(libc::SIGCHLD);
        process::sigmask(&[libc::SIGCHLD], true)?;
        let signals = process::signalfd(&[libc::SIGCHLD])?;
        sup::set_nonblocking(&listener)?;
        let mut agent = Agent {
            listener,
            signals,
            config,
            conn: None,
            procs: Vec::new(),
            scratch: vec![0; CHUNK],
            pfds: Vec::new(),
            targets: Vec::new(),
            accept_paused_until: None,
        };
        agent.reap();
        Ok(agent)
    }

    /// The loop; returns only on a poll failure that cannot be retried.
    pub fn serve(&mut self) -> io::Result<()> {
        loop {
            let timeout = self.build_poll_set();
            match sup::poll(&mut self.pfds, timeout) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::EAGAIN)) => continue,
                Err(e) => return Err(e),
            }
            self.dispatch();
            self.procs.retain(|p| !p.finished());
        }
    }

    fn build_poll_set(&mut self) -> i32 {
        self.pfds.clear();
        self.targets.clear();
        let mut add = |pfds: &mut Vec<libc::pollfd>, fd: RawFd, events: i16, t: Target| {
            pfds.push(libc::pollfd { fd, events, revents: 0 });
            self.targets.push(t);
        };
        let mut timeout = -1;
        let now = safehouse_sys::monotonic_ns();
        match self.accept_paused_until {
            Some(until) if until > now => timeout = ((until - now) / 1_000_000 + 1) as i32,
            _ => {
                self.accept_paused_until = None;
                add(&mut self.pfds, self.listener.as_raw_fd(), libc::POLLIN, Target::Listener);
            }
        }
        add(&mut self.pfds, self.signals.as_raw_fd(), libc::POLLIN, Target::Signals);
        let backlog: usize = self.procs.iter().filter_map(|p| p.stdin.as_ref()).map(|s| s.queue.len()).sum();
        let mut congested = false;
        if let Some(c) = &self.conn {
            let mut events = 0;
            if backlog < STDIN_HIGH {
                events |= libc::POLLIN;
            }
            if c.pending() > 0 {
                events |= libc::POLLOUT;
            }
            congested = c.pending() >= OUT_HIGH;
            add(&mut self.pfds, c.raw_fd(), events, Target::Conn);
        }
        for (i, p) in self.procs.iter().enumerate() {
            // Streamed output waits in its pipe while the daemon is behind; captured
            // output, output after the exit (discarded) and buffering never wait.
            let held = congested && !p.capture && p.exit.is_none();
            for (s, o) in p.out.iter().enumerate() {
                if let (Some(f), false, false) = (&o.file, held, o.eof) {
                    add(&mut self.pfds, f.as_raw_fd(), libc::POLLIN, Target::Output(i, s));
                }
            }
            if let Some(st) = p.stdin.as_ref().filter(|st| !st.queue.is_empty()) {
                add(&mut self.pfds, st.file.as_raw_fd(), libc::POLLOUT, Target::Stdin(i));
            }
        }
        timeout
    }

    /// Handles one poll round. Indexes in `targets` stay valid throughout: processes are
    /// only appended here and removed after.
    fn dispatch(&mut self) {
        let mut signalled = false;
        let mut conn_events = 0;
        let mut listener_ready = false;
        for k in 0..self.pfds.len() {
            let revents = self.pfds[k].revents;
            if revents == 0 {
                continue;
            }
            match self.targets[k] {
                Target::Output(i, s) => {
                    self.read_output(i, s, false);
                }
                Target::Stdin(i) => self.procs[i].write_stdin(),
                Target::Signals => signalled = true,
                Target::Conn => conn_events = revents,
                Target::Listener => listener_ready = true,
            }
        }
        if signalled {
            while process::read_signalfd(&self.signals).is_some() {}
            self.reap();
        }
        if conn_events != 0 {
            self.service_conn(conn_events);
        }
        if listener_ready {
            self.accept();
        }
        if let Some(c) = self.conn.as_mut() {
            if c.pending() > 0 && c.flush().is_err() {
                self.conn = None;
            }
        }
    }

    /// One read from output `s` of process `i`; returns the bytes read (0: nothing now,
    /// or end of file). After the process was reaped, output is read and discarded
    /// (`draining` is the final read of what it left behind).
    fn read_output(&mut self, i: usize, s: usize, draining: bool) -> usize {
        let Agent { procs, scratch, conn, .. } = self;
        let p = &mut procs[i];
        let Some(mut file) = p.out[s].file.as_ref() else { return 0 };
        let n = match file.read(scratch) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return 0,
            // EIO: a pty whose other side is closed.
            Err(_) => 0,
        };
        if n == 0 {
            // The slave side is closed, but the process may not have finished exiting.
            if p.pty && p.exit.is_none() {
                p.out[s].eof = true;
            } else {
                p.out[s].file = None;
            }
            return 0;
        }
        let bytes = &scratch[..n];
        if p.exit.is_some() && !draining {
            return n;
        }
        if p.capture {
            p.out[s].capture(bytes);
        } else if let Some(c) = conn.as_mut() {
            c.queue_data(p.pid as u32, STREAMS[s], bytes);
        } else {
            p.out[s].buffer(bytes);
        }
        n
    }

    /// Collects every child that ended; reports those the agent started.
    fn reap(&mut self) {
        while let Ok(Some(r)) = process::wait4(-1, true) {
            let Some(i) = self.procs.iter().position(|p| p.pid == r.pid && p.exit.is_none()) else {
                continue; // an orphan that reparented to PID 1
            };
            // What it wrote before exiting is in the pipes: it goes before `Exited`.
            for s in 0..2 {
                let mut budget = DRAIN_BYTES;
                while budget > 0 {
                    match self.read_output(i, s, true) {
                        0 => break,
                        n => budget = budget.saturating_sub(n),
                    }
                }
            }
            let p = &mut self.procs[i];
            p.exit = Some(r);
            p.stdin = None;
            for o in p.out.iter_mut().filter(|o| o.eof) {
                o.file = None;
            }
            if let Some(c) = self.conn.as_mut() {
                if let Some(msg) = p.exited_message() {
                    c.queue(&msg);
                }
                p.exit_sent = true;
            }
        }
    }

    fn service_conn(&mut self, revents: i16) {
        let mut result = Ok(());
        if revents & libc::POLLOUT != 0 {
            if let Some(c) = self.conn.as_mut() {
                result = c.flush();
            }
        }
        if result.is_ok() && revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            result = self.receive();
        }
        if result.is_err() {
            // A hung-up daemon or one that broke the protocol: drop it, keep serving.
            self.conn = None;
        }
    }

    fn receive(&mut self) -> Result<(), Closed> {
        let Agent { conn, scratch, .. } = self;
        let Some(c) = conn.as_mut() else { return Ok(()) };
        c.receive(scratch)?;
        while let Some(item) = self.conn.as_mut().map(|c| c.next()).transpose()?.flatten() {
            self.handle(item)?;
        }
        Ok(())
    }

    fn accept(&mut self) {
        let mut accepted = false;
        loop {
            match sup::accept(&self.listener) {
                // The newest connection wins; an older one is closed.
                Ok(sock) => {
                    self.conn = Some(Conn::new(sock));
                    accepted = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO)) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) && self.conn.is_some() => {
                    // Out of descriptors: the current connection makes room for the new.
                    self.conn = None;
                    accepted = false;
                }
                Err(_) => {
                    self.accept_paused_until = Some(safehouse_sys::monotonic_ns() + ACCEPT_BACKOFF_NS);
                    break;
                }
            }
        }
        if accepted {
            self.greet();
        }
    }

    /// `Hello`, then what was kept while no daemon was connected.
    fn greet(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        let buffered = self
            .procs
            .iter()
            .filter(|p| {
                let replay = !p.capture && p.out.iter().any(|o| o.kept_len() > 0 || o.dropped > 0);
                replay || (p.exit.is_some() && !p.exit_sent)
            })
            .map(|p| {
                let [out, err] = &p.out;
                let kept = |o: &Output| if p.capture { 0 } else { o.kept_len() as u64 };
                Buffered {
                    pid: p.pid as u32,
                    stdout: kept(out),
                    stderr: kept(err),
                    stdout_dropped: out.dropped,
                    stderr_dropped: err.dropped,
                    exited: p.exit.is_some() && !p.exit_sent,
                }
            })
            .collect();
        c.queue(&FromAgent::Hello { version: PROTOCOL_VERSION, agent_pid: safehouse_sys::getpid() as u32, buffered });
        for p in &mut self.procs {
            if !p.capture {
                for (s, o) in p.out.iter_mut().enumerate() {
                    if o.dropped > 0 {
                        c.queue(&FromAgent::Dropped { pid: p.pid as u32, stream: STREAMS[s], bytes: o.dropped });
                        o.dropped = 0;
                    }
                    for chunk in o.take().chunks(CHUNK) {
                        c.queue_data(p.pid as u32, STREAMS[s], chunk);
                    }
                }
            }
            if !p.exit_sent {
                if let Some(msg) = p.exited_message() {
                    c.queue(&msg);
                    p.exit_sent = true;
                }
            }
        }
    }

    fn reply(&mut self, msg: FromAgent) {
        if let Some(c) = self.conn.as_mut() {
            c.queue(&msg);
        }
    }

    /// The newest entry for `pid` (an ended one may linger while a background job holds
    /// its pipes, and the pid be reused by a new process).
    fn find(&mut self, pid: u32) -> Option<usize> {
        let pid = i32::try_from(pid).ok()?;
        self.procs.iter().rposition(|p| p.pid == pid)
    }

    fn handle(&mut self, item: Incoming<ToAgent>) -> Result<(), Closed> {
        let msg = match item {
            Incoming::Data(d) => {
                self.stdin_data(d.pid, &d.bytes);
                return Ok(());
            }
            Incoming::Message(m) => m,
        };
        match msg {
            ToAgent::Spawn(req) => self.spawn(req)?,
            ToAgent::Stdin { pid, data } => self.stdin_data(pid, &data),
            ToAgent::CloseStdin { pid } => self.close_stdin(pid),
            ToAgent::Signal { pid, signal } => self.signal(pid, signal),
            ToAgent::Resize { pid, rows, cols } => {
                if let Some(f) = self.find(pid).and_then(|i| self.procs[i].terminal()) {
                    let _ = sup::set_winsize(f, rows, cols);
                }
            }
            ToAgent::List { id } => {
                let list = |argv: bool| {
                    let info = |p: &Proc| ProcessInfo {
                        pid: p.pid as u32,
                        argv: if argv { p.argv.clone() } else { Vec::new() },
                        pty: p.pty,
                        running: p.exit.is_none(),
                    };
                    self.procs.iter().map(info).collect()
                };
                let full = FromAgent::Processes { id, list: list(true) };
                // Command lines too long for one frame: the list without them.
                let reply = if full.encode(&mut Vec::new()).is_ok() {
                    full
                } else {
                    FromAgent::Processes { id, list: list(false) }
                };
                self.reply(reply);
            }
            ToAgent::Ping { id } => self.reply(FromAgent::Pong { id }),
        }
        Ok(())
    }

    fn spawn(&mut self, mut req: SpawnRequest) -> Result<(), Closed> {
        if req.cgroup_fds > MAX_CGROUP_FDS {
            return Err(Closed::Protocol);
        }
        let fds = self.conn.as_mut().and_then(|c| c.take_fds(req.cgroup_fds as usize)).ok_or(Closed::Protocol)?;
        let id = req.id;
        match spawn::spawn(&req, &self.config.env, &self.config.cwd, fds) {
            Ok(child) => {
                let pid = child.pid;
                let stdin = match std::mem::take(&mut req.stdin) {
                    StdinMode::Bytes(b) => Some(b),
                    _ => None,
                };
                self.procs.push(Proc::new(req, child));
                self.reply(FromAgent::Spawned { id, pid: pid as u32 });
                if let Some(bytes) = stdin {
                    self.stdin_data(pid as u32, &bytes);
                    self.close_stdin(pid as u32);
                }
            }
            Err(e) => self.reply(FromAgent::SpawnFailed { id, errno: e.errno, message: e.message }),
        }
        Ok(())
    }

    fn stdin_data(&mut self, pid: u32, bytes: &[u8]) {
        if let Some(i) = self.find(pid) {
            self.procs[i].queue_stdin(bytes);
        }
    }

    fn close_stdin(&mut self, pid: u32) {
        if let Some(i) = self.find(pid) {
            self.procs[i].close_stdin();
        }
    }

    fn signal(&mut self, pid: u32, signal: i32) {
        if !(1..=64).contains(&signal) {
            return;
        }
        let Some(i) = self.find(pid) else { return };
        let p = &self.procs[i];
        // The process is a session leader: its group has its pid. Without a group (it
        // left it), the process itself, if it still runs.
        if sup::killpg(p.pid, signal).is_err() && p.exit.is_none() {
            let _ = process::kill(p.pid, signal);
        }
    }
}

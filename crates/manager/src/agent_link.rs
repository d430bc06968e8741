//! The daemon's end of one agent connection: requests with replies, process output
//! (kept in a bounded buffer per stream for late attachers), exits, and subscribers.
//!
//! Everything the agent says is untrusted input: the decoder bounds frames, unknown or
//! out-of-order replies are dropped, and buffers never grow past their caps.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use safehouse_protocol::{
    Exited, FromAgent, Incoming, Message, MessageDecoder, ProcessInfo as AgentProcess, SpawnRequest, Stream, ToAgent,
};

use super::AttachEvent;

/// Output kept per process and stream for attachers that come late.
pub const REPLAY_BYTES: usize = 1 << 20;

pub(crate) struct AgentLink {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<(Vec<u8>, Vec<OwnedFd>)>,
}

/// Bytes the daemon may queue towards one agent (stdin above all) before refusing more.
const MAX_QUEUED: usize = 64 << 20;

#[derive(Default)]
struct Shared {
    queued: std::sync::atomic::AtomicUsize,
    next_id: AtomicU64,
    closed: AtomicBool,
    state: Mutex<State>,
    /// A request passed its deadline and the agent has said nothing since.
    stalled: AtomicBool,
    /// Where a stall and the recovery from it are reported: (sandbox id, event bus).
    notify: Option<(String, crate::events::EventBus)>,
}

impl Shared {
    /// `sandbox.stalled` once when a request first passes its deadline, `sandbox.recovered`
    /// once when the agent speaks again: one event per episode, not one per late request.
    fn set_stalled(&self, stalled: bool) {
        if self.stalled.swap(stalled, Ordering::Relaxed) == stalled {
            return;
        }
        if let Some((id, events)) = &self.notify {
            let (kind, data) = if stalled {
                ("sandbox.stalled", serde_json::json!({ "deadline_s": AGENT_DEADLINE.as_secs() }))
            } else {
                ("sandbox.recovered", serde_json::json!({}))
            };
            events.emit(id, kind, data);
        }
    }
}

#[derive(Default)]
struct State {
    replies: HashMap<u64, oneshot::Sender<FromAgent>>,
    procs: HashMap<u32, Proc>,
}

#[derive(Default)]
struct Proc {
    argv: Vec<String>,
    pty: bool,
    started: Option<Instant>,
    exited: Option<Exited>,
    wall_ms: u64,
    out: VecDeque<(Stream, Vec<u8>)>,
    out_bytes: usize,
    dropped: u64,
    subscribers: Vec<mpsc::Sender<AttachEvent>>,
    exit_waiters: Vec<oneshot::Sender<Exited>>,
}

/// What an attached client learns when the process ends.
fn exit_event(e: &Exited, wall_ms: u64) -> AttachEvent {
    AttachEvent::Exit {
        exit_code: e.exit_code(),
        signal: e.signal(),
        wall_ms,
        cpu_ms: (e.user_us + e.sys_us) / 1000,
        peak_memory_bytes: e.maxrss_kib * 1024,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the agent connection is closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("spawn failed: {message} (errno {errno})")]
    SpawnFailed { errno: i32, message: String },
    #[error("unexpected reply from the agent")]
    Unexpected,
    #[error("too much is queued for the agent")]
    Backlog,
    #[error("the sandbox's agent did not answer within {} s", AGENT_DEADLINE.as_secs())]
    Stalled,
}

/// The longest the daemon waits for the agent's reply to a request (spawn, list): a stopped
/// or wedged agent costs its own caller this much and nobody else anything.
pub const AGENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

impl AgentLink {
    /// Connects to the agent of sandbox `id`; a stall and the recovery from it are
    /// reported on `events`.
    pub async fn connect(path: &Path, id: &str, events: crate::events::EventBus) -> std::io::Result<AgentLink> {
        let fd = Arc::new(tokio::net::UnixStream::connect(path).await?);
        let shared = Arc::new(Shared { notify: Some((id.to_string(), events)), ..Shared::default() });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(fd.clone(), rx, shared.clone()));
        tokio::spawn(reader(fd, shared.clone()));
        Ok(AgentLink { shared, out: tx })
    }

    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.replies.clear();
        for p in st.procs.values_mut() {
            p.subscribers.clear();
            p.exit_waiters.clear();
        }
    }

    fn send(&self, msg: &ToAgent, fds: Vec<OwnedFd>) -> Result<(), LinkError> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(LinkError::Closed);
        }
        let mut buf = Vec::new();
        msg.encode(&mut buf).map_err(|e| std::io::Error::other(e.to_string()))?;
        let len = buf.len();
        if self.shared.queued.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED {
            self.shared.queued.fetch_sub(len, Ordering::Relaxed);
            return Err(LinkError::Backlog);
        }
        self.out.send((buf, fds)).map_err(|_| LinkError::Closed)
    }

    async fn request(&self, build: impl FnOnce(u64) -> ToAgent, fds: Vec<OwnedFd>) -> Result<FromAgent, LinkError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).replies.insert(id, tx);
        self.send(&build(id), fds)?;
        match tokio::time::timeout(AGENT_DEADLINE, rx).await {
            Ok(reply) => reply.map_err(|_| LinkError::Closed),
            Err(_) => {
                self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).replies.remove(&id);
                self.shared.set_stalled(true);
                Err(LinkError::Stalled)
            }
        }
    }

    /// Starts a process; returns its pid (inside the sandbox).
    pub async fn spawn(&self, mut req: SpawnRequest, cgroup_fds: Vec<OwnedFd>) -> Result<u32, LinkError> {
        req.cgroup_fds = cgroup_fds.len() as u8;
        let argv = req.argv.clone();
        let pty = req.pty.is_some();
        // Register before sending, so no output can arrive for an unknown pid.
        let reply = self
            .request(
                move |id| {
                    req.id = id;
                    ToAgent::Spawn(req)
                },
                cgroup_fds,
            )
            .await?;
        match reply {
            FromAgent::Spawned { pid, .. } => {
                let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                let p = st.procs.entry(pid).or_default();
                p.argv = argv;
                p.pty = pty;
                Ok(pid)
            }
            FromAgent::SpawnFailed { errno, message, .. } => Err(LinkError::SpawnFailed { errno, message }),
            _ => Err(LinkError::Unexpected),
        }
    }

    /// Waits for a process started by `spawn` to end.
    pub async fn wait_exit(&self, pid: u32) -> Result<Exited, LinkError> {
        let rx = {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let p = st.procs.entry(pid).or_default();
            if let Some(e) = &p.exited {
                return Ok(e.clone());
            }
            let (tx, rx) = oneshot::channel();
            p.exit_waiters.push(tx);
            rx
        };
        rx.await.map_err(|_| LinkError::Closed)
    }

    pub fn forget(&self, pid: u32) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).procs.remove(&pid);
    }

    pub fn known(&self, pid: u32) -> bool {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).procs.contains_key(&pid)
    }

    /// Whether process `pid` (known to the link) was started with a terminal.
    pub fn has_pty(&self, pid: u32) -> bool {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).procs.get(&pid).is_some_and(|p| p.pty)
    }

    pub fn stdin(&self, pid: u32, data: Vec<u8>) -> Result<(), LinkError> {
        self.send(&ToAgent::Stdin { pid, data }, Vec::new())
    }

    pub fn close_stdin(&self, pid: u32) -> Result<(), LinkError> {
        self.send(&ToAgent::CloseStdin { pid }, Vec::new())
    }

    pub fn signal(&self, pid: u32, signal: i32) -> Result<(), LinkError> {
        self.send(&ToAgent::Signal { pid, signal }, Vec::new())
    }

    pub fn resize(&self, pid: u32, rows: u16, cols: u16) -> Result<(), LinkError> {
        self.send(&ToAgent::Resize { pid, rows, cols }, Vec::new())
    }

    pub async fn list(&self) -> Result<Vec<AgentProcess>, LinkError> {
        match self.request(|id| ToAgent::List { id }, Vec::new()).await? {
            FromAgent::Processes { list, .. } => Ok(list),
            _ => Err(LinkError::Unexpected),
        }
    }

    /// Every process the daemon started and has not forgotten: (pid, argv, pty, exit).
    pub fn processes(&self) -> Vec<(u32, Vec<String>, bool, Option<Exited>)> {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.procs
            .iter()
            .filter(|(_, p)| !p.argv.is_empty())
            .map(|(pid, p)| (*pid, p.argv.clone(), p.pty, p.exited.clone()))
            .collect()
    }

    /// Replay of the buffered output (with a truncation marker), then live events until
    /// the process ends.
    pub fn subscribe(&self, pid: u32) -> Option<mpsc::Receiver<AttachEvent>> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let p = st.procs.get_mut(&pid)?;
        let (tx, rx) = mpsc::channel(256 + p.out.len());
        if p.dropped > 0 {
            let _ = tx.try_send(AttachEvent::Truncated { dropped_bytes: p.dropped });
        }
        for (stream, bytes) in &p.out {
            let _ = tx.try_send(match stream {
                Stream::Stderr => AttachEvent::Stderr(bytes.clone()),
                _ => AttachEvent::Stdout(bytes.clone()),
            });
        }
        match &p.exited {
            Some(e) => {
                let _ = tx.try_send(exit_event(e, p.wall_ms));
            }
            None => p.subscribers.push(tx),
        }
        Some(rx)
    }
}

async fn writer(fd: Arc<UnixStream>, mut rx: mpsc::UnboundedReceiver<(Vec<u8>, Vec<OwnedFd>)>, shared: Arc<Shared>) {
    while let Some((buf, fds)) = rx.recv().await {
        let mut off = 0;
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        while off < buf.len() {
            if fd.writable().await.is_err() {
                shared.closed.store(true, Ordering::Relaxed);
                return;
            }
            let fds_now: &[RawFd] = if off == 0 { &raw } else { &[] };
            let sock = fd.as_raw_fd();
            match fd.try_io(Interest::WRITABLE, || safehouse_sys::unix::sendmsg_fds(sock, &buf[off..], fds_now)) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    shared.closed.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
        shared.queued.fetch_sub(buf.len(), Ordering::Relaxed);
        drop(fds);
    }
}

async fn reader(fd: Arc<UnixStream>, shared: Arc<Shared>) {
    let mut decoder: MessageDecoder<FromAgent> = MessageDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    'outer: loop {
        if fd.readable().await.is_err() {
            break;
        }
        let n = match fd.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_message() {
                Ok(Some(incoming)) => {
                    shared.set_stalled(false);
                    dispatch(&shared, incoming)
                }
                Ok(None) => break,
                Err(_) => break 'outer, // a malformed stream: drop the connection
            }
        }
    }
    shared.closed.store(true, Ordering::Relaxed);
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    st.replies.clear();
    for p in st.procs.values_mut() {
        p.subscribers.clear();
        p.exit_waiters.clear();
    }
}

fn push_output(p: &mut Proc, stream: Stream, bytes: Vec<u8>) {
    p.out_bytes += bytes.len();
    p.out.push_back((stream, bytes.clone()));
    while p.out_bytes > 2 * REPLAY_BYTES {
        if let Some((_, old)) = p.out.pop_front() {
            p.out_bytes -= old.len();
            p.dropped += old.len() as u64;
        }
    }
    let event = match stream {
        Stream::Stderr => AttachEvent::Stderr(bytes),
        _ => AttachEvent::Stdout(bytes),
    };
    // A subscriber that does not keep up loses the connection, not the daemon's memory.
    p.subscribers.retain(|s| s.try_send(event.clone()).is_ok());
}

fn dispatch(shared: &Shared, incoming: Incoming<FromAgent>) {
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    match incoming {
        Incoming::Data(d) => {
            if let Some(p) = st.procs.get_mut(&d.pid) {
                push_output(p, d.stream, d.bytes);
            }
        }
        Incoming::Message(msg) => match msg {
            FromAgent::Spawned { id, pid } => {
                // Known from now on, so output that follows the reply is kept.
                st.procs.entry(pid).or_default().started = Some(Instant::now());
                if let Some(tx) = st.replies.remove(&id) {
                    let _ = tx.send(msg);
                }
            }
            FromAgent::SpawnFailed { id, .. } | FromAgent::Processes { id, .. } | FromAgent::Pong { id } => {
                if let Some(tx) = st.replies.remove(&id) {
                    let _ = tx.send(msg);
                }
            }
            FromAgent::Exited(e) => {
                let p = st.procs.entry(e.pid).or_default();
                p.wall_ms = p.started.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0);
                for s in p.subscribers.drain(..) {
                    let _ = s.try_send(exit_event(&e, p.wall_ms));
                }
                for w in p.exit_waiters.drain(..) {
                    let _ = w.send(e.clone());
                }
                p.exited = Some(e);
            }
            FromAgent::Dropped { pid, bytes, .. } => {
                st.procs.entry(pid).or_default().dropped += bytes;
            }
            FromAgent::Hello { buffered, .. } => {
                // A reconnection: the agent replays what it kept for these processes next.
                for b in buffered {
                    st.procs.entry(b.pid).or_default();
                }
            }
        },
    }
}

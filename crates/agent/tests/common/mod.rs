//! A test daemon: runs the agent in a forked child with a listener on a temporary
//! socket path, and talks to it as the daemon would.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use safehouse_agent::{run, AgentConfig};
use safehouse_protocol::{
    Exited, FrameReader, FrameWriter, FromAgent, Incoming, Message, SpawnRequest, StdinMode, Stream, ToAgent,
};
use safehouse_sys::{agent_support as sup, fs, process};

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Agent {
    pub pid: i32,
    pub path: PathBuf,
    dir: PathBuf,
    /// RssAnon (KiB) of the agent process just before `run`.
    pub baseline_anon_kib: u64,
}

fn rss_anon_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Agent {
    pub fn start() -> Agent {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "safehouse-agent-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let listener = OwnedFd::from(UnixListener::bind(&path).unwrap());
        let (r, w) = fs::pipe().unwrap();
        match process::fork().unwrap() {
            None => {
                // The child: as in a sandbox, only the listener (and stdio) stay open.
                let keep = [listener.as_raw_fd(), w.as_raw_fd()];
                let _ = fs::close_all_except(&keep);
                // Stand in for PID 1: orphans of the agent's children come back to it.
                let _ = process::set_child_subreaper();
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                let _ = sup::write_raw(w.as_raw_fd(), &rss_anon_kib(&status).to_le_bytes());
                drop(w);
                let config = AgentConfig {
                    env: vec![
                        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                        ("HOME".into(), "/tmp".into()),
                        ("TERM".into(), "xterm".into()),
                    ],
                    cwd: "/tmp".into(),
                };
                run(listener, config)
            }
            Some(pid) => {
                drop(w);
                let mut b = [0u8; 8];
                std::fs::File::from(r).read_exact(&mut b).unwrap();
                Agent { pid, path, dir, baseline_anon_kib: u64::from_le_bytes(b) }
            }
        }
    }

    /// Connects and checks the `Hello`.
    pub fn connect(&self) -> Daemon {
        match self.connect_raw() {
            (d, FromAgent::Hello { version: 1, .. }) => d,
            (_, other) => panic!("expected hello, got {other:?}"),
        }
    }

    /// Connects and returns the first message, which should be the `Hello`.
    pub fn connect_raw(&self) -> (Daemon, FromAgent) {
        let sock = UnixStream::connect(&self.path).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut d = Daemon {
            reader: FrameReader::new(sock.try_clone().unwrap()),
            writer: FrameWriter::new(sock.try_clone().unwrap()),
            sock,
            next_id: 1,
            held: Vec::new(),
        };
        match d.recv() {
            Incoming::Message(m) => (d, m),
            other => panic!("expected hello, got {other:?}"),
        }
    }

    pub fn rss_anon_kib(&self) -> u64 {
        rss_anon_kib(&std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap())
    }

    /// Pids of the agent's children (zombies included).
    pub fn children(&self) -> Vec<i32> {
        let s = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid)).unwrap();
        s.split_whitespace().map(|p| p.parse().unwrap()).collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = process::kill(self.pid, libc::SIGKILL);
        let _ = process::wait4(self.pid, false);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Daemon {
    pub reader: FrameReader<UnixStream>,
    pub writer: FrameWriter<UnixStream>,
    pub sock: UnixStream,
    next_id: u64,
    /// Received while waiting for something else.
    held: Vec<Incoming<FromAgent>>,
}

pub fn request(argv: &[&str]) -> SpawnRequest {
    SpawnRequest {
        id: 0,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        cwd: None,
        pty: None,
        stdin: StdinMode::Null,
        capture: false,
        cgroup_fds: 0,
    }
}

/// Output and end of one streamed process.
#[derive(Debug, Default)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exited: Option<Exited>,
}

impl Daemon {
    pub fn send(&mut self, m: &ToAgent) {
        self.writer.send(m).unwrap();
    }

    pub fn recv(&mut self) -> Incoming<FromAgent> {
        if !self.held.is_empty() {
            return self.held.remove(0);
        }
        match self.reader.read::<FromAgent>() {
            Ok(Some(item)) => item,
            other => panic!("expected a message from the agent, got {other:?}"),
        }
    }

    /// Whether the agent closed this connection (end of stream within the timeout).
    pub fn closed_by_agent(&mut self) -> bool {
        matches!(self.reader.read::<FromAgent>(), Ok(None) | Err(_))
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a spawn (with `fds` attached to its frame) and waits for its reply.
    pub fn spawn_with_fds(&mut self, mut req: SpawnRequest, fds: &[RawFd]) -> Result<u32, (i32, String)> {
        req.id = self.id();
        req.cgroup_fds = fds.len() as u8;
        let mut frame = Vec::new();
        ToAgent::Spawn(req.clone()).encode(&mut frame).unwrap();
        let mut sent = sup::send_with_fds(&self.sock, &frame, fds).unwrap();
        while sent < frame.len() {
            sent += sup::send_with_fds(&self.sock, &frame[sent..], &[]).unwrap();
        }
        self.spawn_reply(req.id)
    }

    pub fn spawn(&mut self, mut req: SpawnRequest) -> Result<u32, (i32, String)> {
        req.id = self.id();
        let id = req.id;
        self.send(&ToAgent::Spawn(req));
        self.spawn_reply(id)
    }

    fn spawn_reply(&mut self, id: u64) -> Result<u32, (i32, String)> {
        let mut other = Vec::new();
        let result = loop {
            match self.recv() {
                Incoming::Message(FromAgent::Spawned { id: got, pid }) if got == id => break Ok(pid),
                Incoming::Message(FromAgent::SpawnFailed { id: got, errno, message }) if got == id => {
                    break Err((errno, message))
                }
                item => other.push(item),
            }
        };
        self.held.extend(other);
        result
    }

    pub fn ping(&mut self) {
        let id = self.id();
        self.send(&ToAgent::Ping { id });
        self.wait_for(|m| matches!(m, Incoming::Message(FromAgent::Pong { id: got }) if *got == id));
    }

    /// Receives until `pred` matches; what came before it for other purposes is kept.
    pub fn wait_for(&mut self, pred: impl Fn(&Incoming<FromAgent>) -> bool) -> Incoming<FromAgent> {
        let mut other = Vec::new();
        let found = loop {
            let item = self.recv();
            if pred(&item) {
                break item;
            }
            other.push(item);
        };
        self.held.splice(0..0, other);
        found
    }

    /// Collects `pid`'s output until its `Exited`.
    pub fn collect(&mut self, pid: u32) -> Collected {
        let mut c = Collected::default();
        let mut other = Vec::new();
        while c.exited.is_none() {
            match self.recv() {
                Incoming::Data(d) if d.pid == pid => match d.stream {
                    Stream::Stdout => c.stdout.extend(d.bytes),
                    Stream::Stderr => c.stderr.extend(d.bytes),
                    Stream::Stdin => panic!("stdin data from the agent"),
                },
                Incoming::Message(FromAgent::Exited(e)) if e.pid == pid => c.exited = Some(e),
                item => other.push(item),
            }
        }
        self.held.extend(other);
        c
    }

    /// Reads `pid`'s stdout until it contains `needle`.
    pub fn read_until(&mut self, pid: u32, needle: &str) -> String {
        let mut out = Vec::new();
        loop {
            match self.recv() {
                Incoming::Data(d) if d.pid == pid => out.extend(d.bytes),
                Incoming::Message(FromAgent::Exited(e)) if e.pid == pid => {
                    panic!("exited ({}) before printing {needle:?}: {:?}", e.status, String::from_utf8_lossy(&out))
                }
                item => self.held.push(item),
            }
            let s = String::from_utf8_lossy(&out).into_owned();
            if s.contains(needle) {
                return s;
            }
        }
    }
}

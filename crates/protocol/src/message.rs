//! The JSON messages. Both enums are internally tagged: `{"type": "spawn", ...}`. Unknown
//! fields are ignored (an older agent keeps working with a newer daemon); an unknown
//! `type` is an error.

use serde::{Deserialize, Serialize};

use crate::frame::Stream;

/// Daemon → agent. Messages with an `id` get exactly one reply carrying the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// Start a process. Reply: `Spawned` or `SpawnFailed`.
    Spawn(SpawnRequest),
    /// Bytes for a process's stdin (a `Data` frame with stream 0 does the same without
    /// base64). Ignored if the process has no open stdin.
    Stdin {
        pid: u32,
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    /// Close the process's stdin once queued bytes are written (with a pty: send the
    /// terminal's end-of-file character, ^D).
    CloseStdin { pid: u32 },
    /// Send `signal` to the process group of `pid` (a session leader).
    Signal { pid: u32, signal: i32 },
    /// Set the window size of the process's pty (its foreground group gets SIGWINCH).
    Resize { pid: u32, rows: u16, cols: u16 },
    /// Reply: `Processes`.
    List { id: u64 },
    /// Reply: `Pong`.
    Ping { id: u64 },
}

/// How to start a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// Request id, echoed in `Spawned` / `SpawnFailed`.
    pub id: u64,
    /// Command and arguments; `argv[0]` without a `/` is looked up on the PATH of the
    /// resulting environment (default `/usr/local/bin:/usr/bin:/bin`).
    pub argv: Vec<String>,
    /// Variables added to (or replacing those of) the agent's base environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; default: the agent's. When it cannot be entered: `/`.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run on a new pseudo-terminal of this size (stdin, stdout and stderr all on it;
    /// output arrives as stdout).
    #[serde(default)]
    pub pty: Option<WinSize>,
    /// What the process reads. Default: `Null` (immediate end of file).
    #[serde(default)]
    pub stdin: StdinMode,
    /// true: keep stdout and stderr (each up to 16 MiB) and send them in `Exited`;
    /// false: stream them as `Data` frames.
    #[serde(default)]
    pub capture: bool,
    /// How many descriptors were sent with this frame (SCM_RIGHTS, at most
    /// [`crate::MAX_CGROUP_FDS`]): cgroup `tasks` / `cgroup.procs` files the child writes
    /// "0" to before exec. A failed write fails the spawn.
    #[serde(default)]
    pub cgroup_fds: u8,
}

/// Terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// What a spawned process reads on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdinMode {
    /// A pipe fed by `Stdin` messages / stream-0 `Data` frames until `CloseStdin`.
    Pipe,
    /// End of file at once.
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(#[serde(with = "b64")] Vec<u8>),
}

/// Agent → daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    /// First message of every connection. Replayed output follows it: for each entry of
    /// `buffered`, a `Dropped` per stream that lost bytes, the kept bytes as `Data`
    /// frames, then `Exited` if the process ended meanwhile.
    Hello {
        version: u32,
        agent_pid: u32,
        buffered: Vec<Buffered>,
    },
    Spawned {
        id: u64,
        pid: u32,
    },
    /// The process could not be started; `errno` is the cause (ENOENT: not found, EACCES:
    /// not executable, ...) and `message` says which step failed.
    SpawnFailed {
        id: u64,
        errno: i32,
        message: String,
    },
    /// A process started by `Spawn` ended. Its last message: no `Data` for it follows.
    Exited(Exited),
    Processes {
        id: u64,
        list: Vec<ProcessInfo>,
    },
    Pong {
        id: u64,
    },
    /// `bytes` of `stream` were discarded while no daemon was connected; they precede
    /// the replayed `Data` of that stream.
    Dropped {
        pid: u32,
        stream: Stream,
        bytes: u64,
    },
}

/// The end of a process. On the wire the captured bytes travel in `Capture` frames
/// before the JSON; [`crate::MessageDecoder`] puts them back here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ExitedWire", into = "ExitedWire")]
pub struct Exited {
    pub pid: u32,
    /// Raw wait status (`WIFEXITED`, `WTERMSIG`, ... apply).
    pub status: i32,
    /// CPU time of the process and its reaped descendants (wait4's rusage).
    pub user_us: u64,
    pub sys_us: u64,
    pub maxrss_kib: u64,
    /// Captured output (`capture: true`), `None` for a streamed process.
    pub stdout: Option<Vec<u8>>,
    pub stderr: Option<Vec<u8>>,
    /// More than [`crate::CAPTURE_LIMIT`] bytes were written; the first ones are kept.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl Exited {
    /// The exit code if the process exited normally.
    pub fn exit_code(&self) -> Option<i32> {
        (self.status & 0x7f == 0).then_some((self.status >> 8) & 0xff)
    }

    /// The signal that killed the process, if one did.
    pub fn signal(&self) -> Option<i32> {
        let sig = self.status & 0x7f;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }
}

/// The JSON form of [`Exited`]: lengths instead of bytes.
#[derive(Serialize, Deserialize)]
struct ExitedWire {
    pid: u32,
    status: i32,
    user_us: u64,
    sys_us: u64,
    maxrss_kib: u64,
    /// Captured lengths (bytes sent in `Capture` frames); absent when not captured.
    #[serde(default)]
    stdout_len: Option<u64>,
    #[serde(default)]
    stderr_len: Option<u64>,
    #[serde(default)]
    stdout_truncated: bool,
    #[serde(default)]
    stderr_truncated: bool,
}

impl From<Exited> for ExitedWire {
    fn from(e: Exited) -> Self {
        ExitedWire {
            pid: e.pid,
            status: e.status,
            user_us: e.user_us,
            sys_us: e.sys_us,
            maxrss_kib: e.maxrss_kib,
            stdout_len: e.stdout.as_ref().map(|b| b.len() as u64),
            stderr_len: e.stderr.as_ref().map(|b| b.len() as u64),
            stdout_truncated: e.stdout_truncated,
            stderr_truncated: e.stderr_truncated,
        }
    }
}

impl From<ExitedWire> for Exited {
    fn from(w: ExitedWire) -> Self {
        Exited {
            pid: w.pid,
            status: w.status,
            user_us: w.user_us,
            sys_us: w.sys_us,
            maxrss_kib: w.maxrss_kib,
            stdout: None,
            stderr: None,
            stdout_truncated: w.stdout_truncated,
            stderr_truncated: w.stderr_truncated,
        }
    }
}

/// The captured lengths an `Exited` JSON declared, read before the bytes are attached.
pub(crate) fn declared_lengths(json: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
    #[derive(Deserialize)]
    struct Lengths {
        #[serde(default)]
        stdout_len: Option<u64>,
        #[serde(default)]
        stderr_len: Option<u64>,
    }
    serde_json::from_slice::<Lengths>(json).ok().map(|l| (l.stdout_len, l.stderr_len))
}

/// What a new connection will receive for one process after `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffered {
    pub pid: u32,
    /// Bytes kept and about to be replayed.
    pub stdout: u64,
    pub stderr: u64,
    /// Bytes discarded (oldest first) because the buffer was full.
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
    /// The process ended while no daemon was connected; its `Exited` follows.
    pub exited: bool,
}

/// One entry of `Processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub argv: Vec<String>,
    pub pty: bool,
    /// false once reaped (its `Exited` is sent or about to be).
    pub running: bool,
}

/// Bytes in JSON as standard base64 strings.
mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
                STANDARD.decode(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    #[test]
    fn json_shapes_are_stable() {
        let spawn = ToAgent::Spawn(SpawnRequest {
            id: 1,
            argv: vec!["echo".into(), "hi".into()],
            env: vec![("A".into(), "b".into())],
            cwd: Some("/w".into()),
            pty: Some(WinSize { rows: 24, cols: 80 }),
            stdin: StdinMode::Bytes(b"hi".to_vec()),
            capture: true,
            cgroup_fds: 2,
        });
        assert_eq!(
            serde_json::to_value(&spawn).unwrap(),
            json!({"type": "spawn", "id": 1, "argv": ["echo", "hi"], "env": [["A", "b"]], "cwd": "/w",
                   "pty": {"rows": 24, "cols": 80}, "stdin": {"bytes": "aGk="}, "capture": true, "cgroup_fds": 2})
        );
        assert_eq!(
            serde_json::to_value(ToAgent::Stdin { pid: 3, data: vec![0, 255] }).unwrap(),
            json!({"type": "stdin", "pid": 3, "data": "AP8="})
        );
        assert_eq!(
            serde_json::to_value(FromAgent::Dropped { pid: 3, stream: Stream::Stderr, bytes: 9 }).unwrap(),
            json!({"type": "dropped", "pid": 3, "stream": "stderr", "bytes": 9})
        );
    }

    #[test]
    fn spawn_defaults() {
        let m: ToAgent = serde_json::from_str(r#"{"type":"spawn","id":4,"argv":["x"],"future":1}"#).unwrap();
        assert_eq!(
            m,
            ToAgent::Spawn(SpawnRequest {
                id: 4,
                argv: vec!["x".into()],
                env: vec![],
                cwd: None,
                pty: None,
                stdin: StdinMode::Null,
                capture: false,
                cgroup_fds: 0
            })
        );
    }

    #[test]
    fn wait_status_helpers() {
        let mut e = Exited {
            pid: 1,
            status: 3 << 8,
            user_us: 0,
            sys_us: 0,
            maxrss_kib: 0,
            stdout: None,
            stderr: None,
            stdout_truncated: false,
            stderr_truncated: false,
        };
        assert_eq!((e.exit_code(), e.signal()), (Some(3), None));
        e.status = 15;
        assert_eq!((e.exit_code(), e.signal()), (None, Some(15)));
        e.status = 9 | 0x80; // core dumped
        assert_eq!((e.exit_code(), e.signal()), (None, Some(9)));
    }

    #[test]
    fn bad_json_is_an_error() {
        for s in [
            "",
            "{",
            "[]",
            r#"{"type":"nope"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","id":-1}"#,
            r#"{"type":"stdin","pid":1,"data":"!!"}"#,
            r#"{"type":"spawn","id":1,"argv":["x"],"stdin":"bytes"}"#,
            r#"{"type":"ping","id":1} x"#,
        ] {
            assert!(serde_json::from_str::<ToAgent>(s).is_err(), "{s}");
        }
    }
}

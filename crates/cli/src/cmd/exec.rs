//! `safehouse exec ID [--env K=V] [--cwd DIR] [--timeout SECS] -- CMD [ARG...]`: start the
//! command as a background process in a live sandbox, attach to it over the WebSocket
//! (docs/api.md, "Attach WebSocket"), relay stdin, stdout and stderr while it runs, and exit
//! with its status. The relay is shared with `shell`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Args;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use safehouse_policy::units::{parse_duration, parse_size};

use super::client::{parse_pairs, sandbox_path, ApiError, Client};

/// Exit status when `exec` itself failed (no daemon, no sandbox, lost connection), as with
/// `run`: the command's own statuses stay unambiguous.
pub const EXIT_CLIENT: i32 = 125;

/// Exit status when `--timeout` killed the command (as with `run`).
pub const EXIT_TIMEOUT: i32 = 124;

/// How long one wait for output lasts before stdin and signals are looked at again.
const TICK: Duration = Duration::from_millis(20);

/// Largest stdin chunk per frame (the daemon takes messages up to 1 MiB; base64 adds 1/3).
const STDIN_CHUNK: usize = 64 * 1024;

#[derive(Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// The sandbox to run in
    id: String,
    /// Set a variable for the command (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the sandbox (the daemon's default is /workspace)
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Kill the command after DURATION (30, 1.5s, 1m, 1h30m); exec then exits 124, like `run`
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Cap the command's memory (and its children's): 64MiB, 1GiB; past it the kernel kills it
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// The command and its arguments (passed verbatim, no shell)
    #[arg(required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn main(a: ExecArgs) -> i32 {
    match exec(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            EXIT_CLIENT
        }
    }
}

fn exec(a: ExecArgs) -> Result<i32> {
    let client = Client::from_env()?;
    let mut body = json!({ "cmd": a.command });
    if !a.env.is_empty() {
        body["env"] = json!(parse_pairs(&a.env, "--env")?);
    }
    if let Some(cwd) = &a.cwd {
        body["cwd"] = json!(cwd);
    }
    if let Some(memory) = &a.memory {
        let bytes = parse_size(memory).map_err(|e| anyhow::anyhow!("--memory: {e}"))?;
        body["limits"] = json!({ "memory": bytes });
    }
    // Background processes have no deadline of their own: this client keeps it.
    let deadline = match a.timeout.as_deref().map(parse_duration) {
        Some(Ok(d)) if !d.is_zero() => Some(d),
        Some(Ok(_)) => bail!("--timeout must be more than zero"),
        Some(Err(e)) => bail!("--timeout: {e}"),
        None => None,
    };
    let pid = start_process(&client, &a.id, &body)?;
    let started = Instant::now();
    let mut session = Attached::connect(&client, &a.id, pid)?;
    // Blocked before the stdin thread starts, so that every thread has them blocked and they
    // arrive only through the signalfd: Ctrl-C stops the remote command, not just this client.
    let signals = Signals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
    let stdin = spawn_stdin();
    let mut interrupts = 0;
    let mut timed_out = false;
    let outcome = session.run(Some(stdin), &mut |s| {
        if !timed_out && deadline.is_some_and(|d| started.elapsed() >= d) {
            timed_out = true;
            s.send(&json!({ "type": "signal", "signal": libc::SIGKILL }))?;
        }
        for sig in signals.pending() {
            // A third Ctrl-C means "really stop".
            interrupts += u32::from(sig == libc::SIGINT);
            let sig = if interrupts >= 3 { libc::SIGKILL } else { sig };
            s.send(&json!({ "type": "signal", "signal": sig }))?;
        }
        Ok(())
    })?;
    if timed_out && outcome.signal == Some(libc::SIGKILL) {
        eprintln!("safehouse: the command was killed at its timeout");
        return Ok(EXIT_TIMEOUT);
    }
    Ok(outcome.status())
}

/// Starts a background process (`POST /v1/sandboxes/{id}/processes`); returns its pid.
pub fn start_process(client: &Client, id: &str, body: &Value) -> Result<u64> {
    let v = client.send_json("POST", &sandbox_path(id, "/processes"), body)?;
    v.get("pid").and_then(Value::as_u64).context("the daemon did not answer with the process id")
}

/// How the attached process ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

impl Outcome {
    /// The shell's convention: the exit code, or 128+N when signal N killed it.
    pub fn status(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => EXIT_CLIENT,
        }
    }
}

/// Local stdin as it arrives.
pub enum Input {
    Data(Vec<u8>),
    Eof,
}

/// Reads local stdin on a thread (reads block; the relay must not).
pub fn spawn_stdin() -> Receiver<Input> {
    let (tx, rx) = sync_channel(8);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            let msg = match stdin.read(&mut buf) {
                Ok(0) => Input::Eof,
                Ok(n) => Input::Data(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => Input::Eof,
            };
            let eof = matches!(msg, Input::Eof);
            if tx.send(msg).is_err() || eof {
                return;
            }
        }
    });
    rx
}

/// Signals delivered through a signalfd instead of handlers.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks `sigs` in this thread (and the threads it starts later) and collects them.
    pub fn block(sigs: &[i32]) -> Result<Signals> {
        safehouse_sys::process::sigmask(sigs, true).context("cannot block signals")?;
        let fd = safehouse_sys::process::signalfd(sigs).context("cannot create a signalfd")?;
        Ok(Signals { fd })
    }

    /// The signals that arrived since the last call.
    pub fn pending(&self) -> Vec<i32> {
        std::iter::from_fn(|| safehouse_sys::process::read_signalfd(&self.fd)).collect()
    }
}

/// An attach WebSocket to one process.
pub struct Attached {
    ws: WebSocket<AttachStream>,
    /// A frame is in tungstenite's buffer, not yet written: take no more stdin until it is.
    unflushed: bool,
}

impl Attached {
    pub fn connect(client: &Client, id: &str, pid: u64) -> Result<Attached> {
        let url = client.ws_url(&sandbox_path(id, &format!("/processes/{pid}/attach")));
        let mut req = url.as_str().into_client_request().with_context(|| format!("bad attach URL {url}"))?;
        let auth =
            HeaderValue::from_str(&format!("Bearer {}", client.key())).context("the API key has invalid characters")?;
        req.headers_mut().insert("Authorization", auth);
        let authority = authority(&url);
        let tcp = TcpStream::connect(&authority).map_err(|_| {
            anyhow::anyhow!("cannot reach the daemon at {}; is `safehouse serve` running?", client.base())
        })?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let stream = match client.tls() {
            None => AttachStream::Plain(tcp),
            Some(config) => {
                let host = authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h);
                let tls = super::tls::handshake(config, host, tcp).map_err(|e| {
                    let why = super::tls::failure_in(&e).unwrap_or_else(|| e.to_string());
                    anyhow::anyhow!("cannot talk to the daemon at {}: {why}", client.base())
                })?;
                AttachStream::Tls(Box::new(tls))
            }
        };
        let (ws, _) = tungstenite::client::client(req, stream).map_err(|e| match e {
            HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let text = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                anyhow::Error::from(ApiError::from_body(status, &text))
            }
            e => anyhow::anyhow!("cannot attach to process {pid}: {e}"),
        })?;
        // From here on reads and writes return WouldBlock after a tick, so one thread can
        // serve both directions without either blocking the other.
        ws.get_ref().tcp().set_read_timeout(Some(TICK))?;
        ws.get_ref().tcp().set_write_timeout(Some(TICK))?;
        Ok(Attached { ws, unflushed: false })
    }

    /// Queues a control frame (stdin, eof, resize, signal) and tries to write it.
    pub fn send(&mut self, v: &Value) -> Result<()> {
        match self.ws.write(Message::Text(v.to_string())) {
            Ok(()) => {}
            Err(tungstenite::Error::WriteBufferFull(_)) => bail!("the daemon stopped reading this connection"),
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e).context("the attach connection failed"),
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        match self.ws.flush() {
            Ok(()) => self.unflushed = false,
            Err(e) if would_block(&e) => self.unflushed = true,
            Err(e) => return Err(e).context("the attach connection failed"),
        }
        Ok(())
    }

    /// Relays until the process exits: `stdin` to it, its output to ours; `tick` runs every
    /// few milliseconds to forward signals or window sizes.
    pub fn run(
        &mut self,
        mut stdin: Option<Receiver<Input>>,
        tick: &mut dyn FnMut(&mut Attached) -> Result<()>,
    ) -> Result<Outcome> {
        loop {
            if self.unflushed {
                self.flush()?;
            }
            if !self.unflushed {
                if let Some(rx) = &stdin {
                    match rx.try_recv() {
                        Ok(Input::Data(d)) => self.send(&json!({ "type": "stdin", "data": B64.encode(d) }))?,
                        Ok(Input::Eof) | Err(TryRecvError::Disconnected) => {
                            self.send(&json!({ "type": "eof" }))?;
                            stdin = None;
                        }
                        Err(TryRecvError::Empty) => {}
                    }
                }
            }
            tick(self)?;
            match self.ws.read() {
                Ok(msg) => {
                    if let Some(outcome) = handle(msg)? {
                        let _ = self.ws.close(None);
                        let _ = self.ws.flush();
                        return Ok(outcome);
                    }
                }
                Err(e) if would_block(&e) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    bail!("the daemon closed the connection before the process exited")
                }
                Err(e) => return Err(e).context("the attach connection failed"),
            }
        }
    }
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted))
}

/// Acts on one server frame; `Some` once the process has exited.
fn handle(msg: Message) -> Result<Option<Outcome>> {
    match msg {
        Message::Text(text) => {
            let v: Value = serde_json::from_str(&text).context("the daemon sent an invalid attach frame")?;
            match v.get("type").and_then(Value::as_str) {
                Some("stdout") => write_out(&mut std::io::stdout(), &decode(&v)?),
                Some("stderr") => write_out(&mut std::io::stderr(), &decode(&v)?),
                Some("truncated") => {
                    let n = v.get("dropped_bytes").and_then(Value::as_u64).unwrap_or(0);
                    eprintln!("safehouse: {n} bytes of earlier output were dropped before attaching");
                }
                Some("exit") => {
                    let int = |k: &str| v.get(k).and_then(Value::as_i64).map(|n| n as i32);
                    return Ok(Some(Outcome { exit_code: int("exit_code"), signal: int("signal") }));
                }
                Some("error") => {
                    let m = v.get("message").and_then(Value::as_str).unwrap_or("an attach request failed");
                    eprintln!("safehouse: {m}");
                }
                _ => {}
            }
        }
        Message::Binary(data) => write_out(&mut std::io::stdout(), &data),
        Message::Close(_) => bail!("the daemon closed the connection before the process exited"),
        _ => {}
    }
    Ok(None)
}

fn decode(v: &Value) -> Result<Vec<u8>> {
    let data = v.get("data").and_then(Value::as_str).unwrap_or_default();
    B64.decode(data).context("the daemon sent output that is not base64")
}

/// Writes output as it comes; a closed local pipe (`| head`) is not the command's problem.
fn write_out(w: &mut dyn Write, data: &[u8]) {
    let _ = w.write_all(data).and_then(|()| w.flush());
}

/// The attach connection: plain TCP, or TLS over it for an `https://` daemon.
pub enum AttachStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl AttachStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            AttachStream::Plain(s) => s,
            AttachStream::Tls(s) => &s.sock,
        }
    }
}

impl Read for AttachStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            AttachStream::Plain(s) => s.read(buf),
            AttachStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for AttachStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            AttachStream::Plain(s) => s.write(buf),
            AttachStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            AttachStream::Plain(s) => s.flush(),
            AttachStream::Tls(s) => s.flush(),
        }
    }
}

/// `host:port` of a ws:// or wss:// URL (port 80 or 443 when absent).
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        host.to_string()
    } else if url.starts_with("wss://") {
        format!("{host}:443")
    } else {
        format!("{host}:80")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(Outcome { exit_code: Some(3), signal: None }.status(), 3);
        assert_eq!(Outcome { exit_code: None, signal: Some(9) }.status(), 137);
        assert_eq!(Outcome { exit_code: None, signal: None }.status(), EXIT_CLIENT);
    }

    #[test]
    fn authorities() {
        assert_eq!(authority("ws://127.0.0.1:8700/v1/x"), "127.0.0.1:8700");
        assert_eq!(authority("ws://localhost/v1/x"), "localhost:80");
        assert_eq!(authority("ws://[::1]:9/v1"), "[::1]:9");
        assert_eq!(authority("ws://[::1]/v1"), "[::1]:80");
    }

    #[test]
    fn frames() {
        let out = handle(Message::Text(r#"{"type":"exit","exit_code":null,"signal":15}"#.into())).unwrap();
        assert_eq!(out, Some(Outcome { exit_code: None, signal: Some(15) }));
        assert_eq!(handle(Message::Text(r#"{"type":"truncated","dropped_bytes":5}"#.into())).unwrap(), None);
        assert!(handle(Message::Text("not json".into())).is_err());
        assert!(handle(Message::Text(r#"{"type":"stdout","data":"!!"}"#.into())).is_err());
    }
}

//! Local mode: the per-user daemon that clients start or reuse when no `SAFEHOUSE_URL` is
//! set, so that `pip install` then `Sandbox.create()` (or `safehouse sandbox create`) needs
//! no second terminal. `safehouse local start|status|stop` drive it by hand; the Python SDK
//! calls `safehouse local start --json`.
//!
//! The daemon is `safehouse serve` on a free loopback port with the data dir
//! `SAFEHOUSE_DATA_DIR` or the default one (root: /var/lib/safehouse; anyone else: under
//! XDG_DATA_HOME, rootless). Its key is the admin key it writes to `DATA_DIR/admin.key`
//! (mode 0600). Under `DATA_DIR/local/` (mode 0700): `lock` (held while a client checks and
//! starts, so concurrent first calls start one daemon), `daemon.json` (pid and URL) and
//! `daemon.log`. A recorded daemon whose process is gone or that no longer answers is
//! replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::client::{finish, print_json};

/// How long a starting daemon may take to answer /healthz.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports tried when the free port found is taken before the daemon binds it.
const START_ATTEMPTS: usize = 3;

#[derive(Subcommand)]
pub enum LocalCommand {
    /// Start the per-user daemon, or reuse the one running; prints its URL and key file
    Start(StartArgs),
    /// Whether the per-user daemon runs, where, and its files
    Status(StartArgs),
    /// Stop the per-user daemon (its sandboxes keep running: the next start recovers them)
    Stop,
}

#[derive(Args)]
pub struct StartArgs {
    /// Print `{url, key_file, data_dir, pid, log, started}` as JSON
    #[arg(long)]
    json: bool,
}

/// What `daemon.json` records about the running local daemon.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LocalDaemon {
    pub pid: i32,
    pub url: String,
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub log: PathBuf,
    /// Whether this call started it (recorded as false: true only in the answer of the call
    /// that did).
    #[serde(default)]
    pub started: bool,
}

impl LocalDaemon {
    /// The admin key it wrote, trimmed.
    pub fn key(&self) -> Result<String> {
        let key = fs::read_to_string(&self.key_file)
            .with_context(|| format!("reading the local daemon's key {}", self.key_file.display()))?;
        Ok(key.trim().to_string())
    }
}

pub fn main(c: LocalCommand) -> i32 {
    finish(match c {
        LocalCommand::Start(a) => ensure().map(|d| report(&d, a.json)),
        LocalCommand::Status(a) => status(a.json),
        LocalCommand::Stop => stop(),
    })
}

fn report(d: &LocalDaemon, json: bool) {
    if json {
        print_json(&serde_json::to_value(d).unwrap_or_default());
    } else {
        println!("{} (pid {}, key in {})", d.url, d.pid, d.key_file.display());
    }
}

/// The data dir local mode uses: `SAFEHOUSE_DATA_DIR`, else the daemon's default.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("SAFEHOUSE_DATA_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => safehouse_daemon::default_data_dir(),
    }
}

struct Paths {
    data: PathBuf,
    dir: PathBuf,
}

impl Paths {
    fn new() -> Result<Paths> {
        let data = data_dir();
        let data = if data.is_absolute() { data } else { std::env::current_dir()?.join(data) };
        let dir = data.join("local");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {} for the local daemon", dir.display()))?;
        Ok(Paths { data, dir })
    }

    fn state(&self) -> PathBuf {
        self.dir.join("daemon.json")
    }

    /// Holds the lock file until the returned handle is dropped.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        safehouse_sys::fs::lock_exclusive(f.as_fd()).with_context(|| format!("locking {}", path.display()))?;
        Ok(f)
    }

    fn recorded(&self) -> Option<LocalDaemon> {
        serde_json::from_slice(&fs::read(self.state()).ok()?).ok()
    }
}

/// The running local daemon, started if there is none (or the recorded one is stale).
pub fn ensure() -> Result<LocalDaemon> {
    let paths = Paths::new()?;
    let _lock = paths.lock()?;
    if let Some(d) = paths.recorded() {
        if alive(d.pid) && answers(&d.url) {
            return Ok(d);
        }
        stop_stale(&paths, &d);
    }
    let d = start(&paths)?;
    eprintln!(
        "safehouse: started a local daemon at {} (pid {}; data in {}, key in {}, log in {}); \
         `safehouse local stop` stops it, SAFEHOUSE_URL points clients at another daemon",
        d.url,
        d.pid,
        d.data_dir.display(),
        d.key_file.display(),
        d.log.display()
    );
    Ok(d)
}

fn status(json: bool) -> Result<()> {
    let paths = Paths::new()?;
    let _lock = paths.lock()?;
    match paths.recorded().filter(|d| alive(d.pid) && answers(&d.url)) {
        Some(d) => report(&d, json),
        None if json => println!("null"),
        None => println!("no local daemon runs (data dir {})", paths.data.display()),
    }
    Ok(())
}

fn stop() -> Result<()> {
    let paths = Paths::new()?;
    let _lock = paths.lock()?;
    match paths.recorded() {
        Some(d) if alive(d.pid) && is_ours(d.pid, &paths.data) => {
            terminate(d.pid);
            let _ = fs::remove_file(paths.state());
            println!("stopped the local daemon (pid {})", d.pid);
        }
        _ => {
            let _ = fs::remove_file(paths.state());
            println!("no local daemon runs (data dir {})", paths.data.display());
        }
    }
    Ok(())
}

/// A recorded daemon that no longer answers: stop it if the pid is still ours (a wedged
/// daemon), then forget it. A pid reused by another program is left alone.
fn stop_stale(paths: &Paths, d: &LocalDaemon) {
    if alive(d.pid) && is_ours(d.pid, &paths.data) {
        terminate(d.pid);
    }
    let _ = fs::remove_file(paths.state());
}

fn start(paths: &Paths) -> Result<LocalDaemon> {
    if let Err(e) = safehouse_daemon::check_data_dir(&paths.data) {
        bail!("{e}: set SAFEHOUSE_DATA_DIR to a shorter path");
    }
    let exe = std::env::current_exe().context("finding the safehouse binary to start the local daemon")?;
    let log = paths.dir.join("daemon.log");
    let mut last_err = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&paths.data)
            // The key is the one the daemon writes to admin.key, not one from the caller's
            // environment.
            .env_remove("SAFEHOUSE_ADMIN_KEY")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C meant for the client does not reach it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                last_err = Some(format!("it exited ({status}): {}", log_tail(&log, log_start)));
                break;
            }
            if answers(&url) {
                let d = LocalDaemon {
                    pid: child.id() as i32,
                    url,
                    data_dir: paths.data.clone(),
                    key_file: paths.data.join("admin.key"),
                    log,
                    started: false,
                };
                let tmp = paths.dir.join("daemon.json.tmp");
                fs::write(&tmp, serde_json::to_vec(&d)?)?;
                fs::rename(&tmp, paths.state())?;
                return Ok(LocalDaemon { started: true, ..d });
            }
            if Instant::now() > deadline {
                terminate(child.id() as i32);
                let _ = child.wait();
                bail!(
                    "the local daemon did not answer within {}s: {}",
                    START_TIMEOUT.as_secs(),
                    log_tail(&log, log_start)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    bail!(
        "could not start the local daemon (data dir {}): {}; see {}",
        paths.data.display(),
        last_err.unwrap_or_default(),
        log.display()
    )
}

/// A port nothing listens on now (the daemon binds it right after; a lost race is retried).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

fn answers(url: &str) -> bool {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    matches!(agent.get(&format!("{url}/healthz")).call(), Ok(r) if r.status() == 200)
}

fn alive(pid: i32) -> bool {
    pid > 0 && safehouse_sys::process::kill(pid, 0).is_ok()
}

/// Whether `pid` is a `safehouse serve` on this data dir (and not a reused pid).
fn is_ours(pid: i32, data: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let data = data.as_os_str().as_encoded_bytes();
    args.contains(&&b"serve"[..]) && args.windows(2).any(|w| w[0] == b"--data-dir" && w[1] == data)
}

/// SIGTERM, then SIGKILL if it has not exited within 10 s.
fn terminate(pid: i32) {
    let _ = safehouse_sys::process::kill(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && !is_zombie(pid) {
        if Instant::now() > deadline {
            let _ = safehouse_sys::process::kill(pid, libc::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The last lines the daemon logged since `from` (for an error message).
fn log_tail(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.take(64 * 1024).read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        "it logged nothing".into()
    } else {
        tail
    }
}

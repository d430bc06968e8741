//! The daemon's side of the gateway process ([`GatewayHost`]): it starts the process, hands
//! it each sandbox's listener, feeds it the host's addresses and resolver settings, answers
//! its budget requests, relays its events and counters, and keeps it alive.
//!
//! **Failure.** The process is watched three ways: its end of the channel closing (it
//! exited or was killed), a message that does not decode or breaks the protocol (it is
//! treated as compromised), and a `Ping` not answered within [`PING_DEADLINE`] (wedged). In
//! every case it is killed, the death is reported (`tracing` and [`HostConfig::on_crash`]),
//! and a new process is started (at once, then with a growing pause while it keeps dying)
//! and handed every registered listener again. Meanwhile nothing accepts on the sandboxes'
//! listeners: their egress fails closed (connections wait in the backlog, or time out).
//! Tunnels open at the time are cut.
//!
//! **Budget.** The daemon holds each sandbox's `egress_bytes`: the process gets it in
//! grants and every byte granted counts as spent, so a process that dies cannot have moved
//! more than it was granted, and the next one starts from there.
//!
//! **Counters** restart with each process; the daemon adds the last counters it read from
//! the earlier ones.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use safehouse_policy::network::NetPolicy;
use tokio::sync::{mpsc, oneshot};

use super::confine::Confinement;
use super::wire::{self, Channel, FromGateway, Init, ToGateway, WireError, WireLimits, WirePolicy};
use super::SUBCOMMAND;
use crate::gateway::{Config, EventHook};
use crate::hostaddrs::HostWatch;
use crate::resolve::{Resolver, SystemConf};
use crate::stats::{Stats, RECENT_DENIALS};

/// How often the process is asked whether it is alive.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// Longest silence after a `Ping` before the process counts as wedged.
pub const PING_DEADLINE: Duration = Duration::from_secs(15);
/// Longest wait for `Ready`, `Started` or a `Stats` answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const STATS_WITHIN: Duration = Duration::from_secs(2);
/// Pause before restarting a process that keeps dying (doubling up to the cap).
const RESTART_PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// A process that lived this long resets the pause.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How often the resolver settings are read again.
const RESOLVER_REFRESH: Duration = Duration::from_secs(10);

/// Called with a line describing a death of the gateway process.
pub type CrashHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Called with the counts of events (allowed, denied) the gateway process held back under
/// its rate limit: denials still count as violations.
pub type SuppressedHook = Arc<dyn Fn(u64, u64) + Send + Sync>;

pub struct HostConfig {
    /// The program to run with [`SUBCOMMAND`] (the daemon's own binary, `/proc/self/exe`).
    pub program: PathBuf,
    pub resolver: Resolver,
    /// The host's addresses, kept current and pushed to the process.
    pub host_addrs: Arc<HostWatch>,
    pub confinement: Confinement,
    pub on_crash: Option<CrashHook>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot start the gateway process: {0}")]
    Spawn(String),
    #[error("the gateway process refused to run: {0}")]
    Refused(String),
    #[error("the gateway process could not serve the sandbox: {0}")]
    Failed(String),
    #[error("the gateway process is gone")]
    Gone,
}

/// A message for the process, with the descriptor `Start` carries.
type Outgoing = (ToGateway, Option<OwnedFd>);

/// One running process: where its messages go.
struct Link {
    tx: mpsc::UnboundedSender<Outgoing>,
    pid: u32,
}

struct Entry {
    sandbox: String,
    policy: WirePolicy,
    limits: WireLimits,
    listener: OwnedFd,
    hook: EventHook,
    suppressed: Option<SuppressedHook>,
    limit: Option<u64>,
    /// Bytes granted, all processes together (all of it counts as spent).
    granted: u64,
    /// Counters of earlier processes.
    carried: Stats,
    /// The last counters read from this process.
    last: Stats,
    started: Option<oneshot::Sender<Result<(), String>>>,
    stopped: Option<oneshot::Sender<Stats>>,
}

impl Entry {
    fn stats(&self) -> Stats {
        add(&self.carried, &self.last)
    }
}

#[derive(Default)]
struct State {
    link: Option<Arc<Link>>,
    gateways: HashMap<u64, Entry>,
    stats_waiting: HashMap<u64, oneshot::Sender<()>>,
}

struct Shared {
    config: HostConfig,
    state: Mutex<State>,
    restarts: AtomicU64,
    next: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The gateway process of a daemon (or of one `safehouse run`), kept running.
#[derive(Clone)]
pub struct GatewayHost {
    shared: Arc<Shared>,
}

/// One sandbox's gateway in the process. Dropping it stops the gateway.
pub struct GatewayHandle {
    shared: Weak<Shared>,
    id: u64,
}

impl GatewayHost {
    /// Starts the process and waits until it is confined and ready; then keeps it running
    /// on a task of the current runtime. An error here (for example a kernel without
    /// Landlock) means the process cannot run at all.
    pub async fn start(config: HostConfig) -> Result<GatewayHost, HostError> {
        let shared =
            Arc::new(Shared { config, state: Mutex::default(), restarts: AtomicU64::new(0), next: AtomicU64::new(1) });
        let first = launch(&shared).await?;
        tokio::spawn(supervise(shared.clone(), first));
        Ok(GatewayHost { shared })
    }

    /// How many times the process died and was restarted.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Relaxed)
    }

    /// The process's pid, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.shared.lock().link.as_ref().map(|l| l.pid)
    }

    /// Serves `listener` (the sandbox's 127.0.0.1:3128) under `policy`; `config` gives the
    /// limits (its policy, resolver and hooks are not used). Returns once the process
    /// serves it, or at once while no process runs (the next one will).
    pub async fn serve(
        &self,
        sandbox: &str,
        policy: &NetPolicy,
        config: &Config,
        listener: OwnedFd,
        hook: EventHook,
        suppressed: Option<SuppressedHook>,
    ) -> Result<GatewayHandle, HostError> {
        let id = self.shared.next.fetch_add(1, Relaxed);
        let (started_tx, started_rx) = oneshot::channel();
        // The first grant goes with the start, so the first bytes do not wait for one.
        let first_grant = policy.egress_bytes.map_or(0, |l| grant_slice(l).min(l));
        {
            let mut st = self.shared.lock();
            let entry = Entry {
                sandbox: sandbox.to_string(),
                policy: WirePolicy::of(policy),
                limits: WireLimits::of(config),
                listener,
                hook,
                suppressed,
                limit: policy.egress_bytes,
                granted: first_grant,
                carried: Stats::default(),
                last: Stats::default(),
                started: Some(started_tx),
                stopped: None,
            };
            if let Some(link) = &st.link {
                send_start(link, id, &entry, 0);
            }
            st.gateways.insert(id, entry);
        }
        let handle = GatewayHandle { shared: Arc::downgrade(&self.shared), id };
        match tokio::time::timeout(ANSWER_WITHIN, started_rx).await {
            Ok(Ok(Ok(()))) => Ok(handle),
            Ok(Ok(Err(e))) => Err(HostError::Failed(e)),
            // The process died meanwhile (the next one serves it) or is slow.
            Ok(Err(_)) | Err(_) => Ok(handle),
        }
    }
}

impl GatewayHandle {
    /// The counters, read from the process (the last ones known if it does not answer).
    pub async fn stats(&self) -> Stats {
        let Some(shared) = self.shared.upgrade() else { return Stats::default() };
        let seq = shared.next.fetch_add(1, Relaxed);
        let rx = {
            let mut st = shared.lock();
            let Some(link) = st.link.clone() else {
                return st.gateways.get(&self.id).map(Entry::stats).unwrap_or_default();
            };
            let (tx, rx) = oneshot::channel();
            st.stats_waiting.insert(seq, tx);
            let _ = link.tx.send((ToGateway::Stats { id: self.id, seq }, None));
            rx
        };
        let _ = tokio::time::timeout(STATS_WITHIN, rx).await;
        let mut st = shared.lock();
        st.stats_waiting.remove(&seq);
        st.gateways.get(&self.id).map(Entry::stats).unwrap_or_default()
    }

    /// The counters last read, without asking.
    pub fn last_stats(&self) -> Stats {
        let Some(shared) = self.shared.upgrade() else { return Stats::default() };
        let st = shared.lock();
        st.gateways.get(&self.id).map(Entry::stats).unwrap_or_default()
    }

    /// Stops the gateway: from now on nothing is accepted for the sandbox, and the process
    /// closes its connections. Idempotent; does not wait.
    pub fn shutdown(&self) {
        let Some(shared) = self.shared.upgrade() else { return };
        let mut st = shared.lock();
        if st.gateways.remove(&self.id).is_some() {
            if let Some(link) = &st.link {
                let _ = link.tx.send((ToGateway::Stop { id: self.id }, None));
            }
        }
    }

    /// Stops the gateway and returns its final counters.
    pub async fn stop(self) -> Stats {
        let Some(shared) = self.shared.upgrade() else { return Stats::default() };
        let (rx, before) = {
            let mut st = shared.lock();
            let link = st.link.clone();
            let Some(entry) = st.gateways.get_mut(&self.id) else { return Stats::default() };
            let Some(link) = link else {
                let e = st.gateways.remove(&self.id);
                return e.map(|e| e.stats()).unwrap_or_default();
            };
            let (tx, rx) = oneshot::channel();
            entry.stopped = Some(tx);
            let _ = link.tx.send((ToGateway::Stop { id: self.id }, None));
            (rx, entry.carried.clone())
        };
        let last = tokio::time::timeout(ANSWER_WITHIN, rx).await.ok().and_then(Result::ok);
        let mut st = shared.lock();
        let entry = st.gateways.remove(&self.id);
        match last {
            Some(s) => add(&before, &s),
            None => entry.map(|e| e.stats()).unwrap_or_default(),
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `used`: bytes of the budget already spent (on a restart: everything granted before).
fn send_start(link: &Link, id: u64, e: &Entry, used: u64) {
    let fd = match e.listener.try_clone() {
        Ok(fd) => fd,
        Err(err) => {
            tracing::error!(sandbox = e.sandbox, "cannot hand the sandbox's listener to the gateway process: {err}");
            return;
        }
    };
    let msg = ToGateway::Start {
        id,
        sandbox: e.sandbox.clone(),
        policy: e.policy.clone(),
        limits: e.limits.clone(),
        budget_used: used,
        budget_granted: e.granted,
    };
    let _ = link.tx.send((msg, Some(fd)));
}

/// A started process, ready for `Start`.
struct Launched {
    chan: Arc<Channel>,
    child: Child,
}

/// Starts the process, sends `Init` and waits for `Ready`.
async fn launch(shared: &Shared) -> Result<Launched, HostError> {
    let c = &shared.config;
    let (ours, theirs) = safehouse_sys::unix::seqpacket_pair().map_err(|e| HostError::Spawn(e.to_string()))?;
    let mut cmd = Command::new(&c.program);
    cmd.arg(SUBCOMMAND).env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    safehouse_sys::process::pass_fd_to_child(&mut cmd, theirs.as_raw_fd(), super::worker::CONTROL_FD);
    let mut child = cmd.spawn().map_err(|e| HostError::Spawn(format!("{}: {e}", c.program.display())))?;
    drop(theirs);
    let chan = Arc::new(Channel::new(ours).map_err(|e| HostError::Spawn(e.to_string()))?);
    let init = Init { version: wire::VERSION, resolver: c.resolver.clone(), confinement: c.confinement.clone() };
    let ready = async {
        chan.send(&init, &[]).await?;
        let Some((bytes, fds)) = chan.recv().await? else {
            return Err(WireError::Malformed("it exited before it was ready".into()));
        };
        wire::expect_fds(fds, 0)?;
        wire::decode::<FromGateway>(&bytes)
    };
    let answer = tokio::time::timeout(ANSWER_WITHIN, ready).await;
    let failed = |child: &mut Child, e: HostError| {
        let _ = child.kill();
        let _ = child.wait();
        Err(e)
    };
    match answer {
        Ok(Ok(FromGateway::Ready { version })) if version == wire::VERSION => Ok(Launched { chan, child }),
        Ok(Ok(FromGateway::Refused { reason, .. })) => failed(&mut child, HostError::Refused(reason)),
        Ok(Ok(other)) => failed(&mut child, HostError::Spawn(format!("it answered {other:?} instead of Ready"))),
        Ok(Err(e)) => failed(&mut child, HostError::Spawn(e.to_string())),
        Err(_) => failed(&mut child, HostError::Spawn(format!("it was not ready within {ANSWER_WITHIN:?}"))),
    }
}

/// Keeps a process running for as long as the host lives.
async fn supervise(shared: Arc<Shared>, first: Launched) {
    let weak = Arc::downgrade(&shared);
    drop(shared);
    let mut launched = Some(first);
    let mut pause = RESTART_PAUSE.0;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let current = match launched.take() {
            Some(l) => l,
            None => match launch(&shared).await {
                Ok(l) => l,
                Err(e) => {
                    report(&shared, &format!("the gateway process could not be restarted: {e}; retrying in {pause:?}"));
                    drop(shared);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RESTART_PAUSE.1);
                    continue;
                }
            },
        };
        let began = Instant::now();
        let Launched { chan, mut child } = current;
        let why = drive(&shared, chan, child.id()).await;
        drop(shared);
        let _ = child.kill();
        let status = tokio::task::spawn_blocking(move || child.wait()).await;
        let Some(shared) = weak.upgrade() else { return };
        let status = match status {
            Ok(Ok(s)) => describe_status(s),
            _ => "its status is unknown".into(),
        };
        shared.restarts.fetch_add(1, Relaxed);
        report(
            &shared,
            &format!("the gateway process died ({why}; {status}); restarting it, egress is refused until it runs"),
        );
        if began.elapsed() >= HEALTHY_AFTER {
            pause = RESTART_PAUSE.0;
        } else {
            drop(shared);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RESTART_PAUSE.1);
        }
    }
}

fn describe_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

fn report(shared: &Shared, line: &str) {
    tracing::error!("{line}");
    if let Some(hook) = &shared.config.on_crash {
        hook(line);
    }
}

/// Runs one ready process until it fails; returns why.
async fn drive(shared: &Arc<Shared>, chan: Arc<Channel>, pid: u32) -> String {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer = {
        let chan = chan.clone();
        tokio::spawn(async move {
            while let Some((msg, fd)) = rx.recv().await {
                let fds: Vec<_> = fd.iter().map(|f| f.as_raw_fd()).collect();
                if let Err(e) = chan.send(&msg, &fds).await {
                    return format!("writing to it failed: {e}");
                }
            }
            "its queue closed".to_string()
        })
    };
    let link = Arc::new(Link { tx, pid });
    let mut host_rx = shared.config.host_addrs.subscribe();
    send_host(&link, &shared.config.host_addrs);
    {
        let mut st = shared.lock();
        for (id, e) in st.gateways.iter_mut() {
            e.carried = e.stats();
            e.last = Stats::default();
            send_start(&link, *id, e, e.granted);
        }
        st.link = Some(link.clone());
    }
    let mut system = shared.config.resolver.system.clone();
    let watches_system = shared.config.resolver.dns_server.is_none();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut resolver_tick = tokio::time::interval(RESOLVER_REFRESH);
    let mut last_pong = Instant::now();
    let mut seq = 0u64;
    let why = loop {
        tokio::select! {
            got = chan.recv() => {
                let (bytes, fds) = match got {
                    Ok(Some(m)) => m,
                    Ok(None) => break "its channel closed".to_string(),
                    Err(e) => break format!("its channel failed: {e}"),
                };
                if let Err(e) = wire::expect_fds(fds, 0) {
                    break format!("it broke the protocol: {e}");
                }
                let msg = match wire::decode::<FromGateway>(&bytes) {
                    Ok(m) => m,
                    Err(e) => break format!("it broke the protocol: {e}"),
                };
                if let FromGateway::Pong { .. } = msg {
                    last_pong = Instant::now();
                    continue;
                }
                if let Err(e) = handle(shared, &link, msg) {
                    break format!("it broke the protocol: {e}");
                }
            }
            _ = host_rx.changed() => send_host(&link, &shared.config.host_addrs),
            _ = ping.tick() => {
                if last_pong.elapsed() > PING_DEADLINE {
                    break format!("it did not answer for {PING_DEADLINE:?}");
                }
                seq += 1;
                let _ = link.tx.send((ToGateway::Ping { seq }, None));
            }
            _ = resolver_tick.tick(), if watches_system => {
                let now = SystemConf::read();
                if now != system {
                    system = now.clone();
                    let resolver = Resolver { system: now, ..shared.config.resolver.clone() };
                    let _ = link.tx.send((ToGateway::Resolver { resolver }, None));
                }
            }
        }
        if writer.is_finished() {
            break "writing to it failed".into();
        }
    };
    writer.abort();
    let mut st = shared.lock();
    st.link = None;
    // Nobody will answer these now.
    st.stats_waiting.clear();
    for e in st.gateways.values_mut() {
        e.started = None;
        if let Some(tx) = e.stopped.take() {
            let _ = tx.send(Stats::default());
        }
    }
    why
}

fn send_host(link: &Link, watch: &HostWatch) {
    let blocks = wire::blocks_to_wire(&watch.blocks());
    let mut chunks = blocks.chunks(wire::HOST_BLOCKS_PER_MESSAGE).peekable();
    if chunks.peek().is_none() {
        let _ = link.tx.send((ToGateway::Host { blocks: Vec::new(), last: true }, None));
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let _ = link.tx.send((ToGateway::Host { blocks: chunk.to_vec(), last }, None));
    }
}

/// One message from the process. Messages about a gateway no longer registered are
/// dropped; anything the process may not send is an error.
fn handle(shared: &Shared, link: &Link, msg: FromGateway) -> Result<(), String> {
    let mut st = shared.lock();
    match msg {
        FromGateway::Ready { .. } | FromGateway::Refused { .. } | FromGateway::Pong { .. } => {
            return Err("a second Ready or Refused".into());
        }
        FromGateway::Started { id } => {
            if let Some(tx) = st.gateways.get_mut(&id).and_then(|e| e.started.take()) {
                let _ = tx.send(Ok(()));
            }
        }
        FromGateway::Failed { id, error } => {
            let e = st.gateways.get_mut(&id);
            if let Some(e) = e {
                match e.started.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(error));
                    }
                    None => tracing::error!(
                        sandbox = e.sandbox,
                        "the gateway process could not serve the sandbox again: {error}"
                    ),
                }
            }
        }
        FromGateway::Event { id, event } => {
            if let Some(e) = st.gateways.get(&id) {
                let hook = e.hook.clone();
                drop(st);
                hook(&event);
            }
        }
        FromGateway::Suppressed { id, allowed, denied } => {
            if let Some(hook) = st.gateways.get(&id).and_then(|e| e.suppressed.clone()) {
                drop(st);
                hook(allowed, denied);
            }
        }
        FromGateway::NeedBudget { id } => {
            if let Some(e) = st.gateways.get_mut(&id) {
                if let Some(limit) = e.limit {
                    e.granted = e.granted.saturating_add(grant_slice(limit)).min(limit);
                    let _ = link.tx.send((ToGateway::Grant { id, total: e.granted }, None));
                }
            }
        }
        FromGateway::Stats { id, seq, stats } => {
            if let Some(e) = st.gateways.get_mut(&id) {
                e.last = stats;
            }
            if let Some(tx) = st.stats_waiting.remove(&seq) {
                let _ = tx.send(());
            }
        }
        FromGateway::Stopped { id, stats } => {
            if let Some(tx) = st.gateways.get_mut(&id).and_then(|e| e.stopped.take()) {
                let _ = tx.send(stats);
            }
        }
    }
    Ok(())
}

/// How much one grant adds: a sixteenth of the budget, at least 1 MiB, at most 64 MiB —
/// few round trips for a large budget, little left unused when the process dies.
fn grant_slice(limit: u64) -> u64 {
    (limit / 16).clamp(1 << 20, 64 << 20)
}

/// Counters of two processes, one after the other.
fn add(a: &Stats, b: &Stats) -> Stats {
    let mut recent: Vec<_> = a.recent_denials.iter().chain(&b.recent_denials).cloned().collect();
    let cut = recent.len().saturating_sub(RECENT_DENIALS);
    recent.drain(..cut);
    Stats {
        connections: a.connections + b.connections,
        active_connections: b.active_connections,
        rejected_connections: a.rejected_connections + b.rejected_connections,
        requests: a.requests + b.requests,
        allowed: a.allowed + b.allowed,
        denied: a.denied + b.denied,
        failed: a.failed + b.failed,
        bytes_out: a.bytes_out + b.bytes_out,
        bytes_in: a.bytes_in + b.bytes_in,
        budget_exceeded: a.budget_exceeded || b.budget_exceeded,
        recent_denials: recent,
    }
}

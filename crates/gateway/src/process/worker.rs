//! The gateway process itself: started by the daemon (or `safehouse run`) as
//! `safehouse __gateway` with its end of the control socket at descriptor 3. It reads
//! `Init`, confines itself ([`super::confine`]), says `Ready`, then serves the listeners it
//! is handed until the control socket closes, when it exits at once: without the daemon
//! there is nobody to answer to, and the sandboxes' egress fails closed.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::confine::confine;
use super::wire::{self, Channel, FromGateway, Init, ToGateway, WireError};
use crate::gateway::{Config, Event, Gateway};
use crate::hostaddrs::{HostAddrSource, PushedHostAddrs};
use crate::resolve::Resolver;

/// The control socket's descriptor number in the gateway process.
pub const CONTROL_FD: RawFd = 3;

/// Events one gateway may send per second, and in a burst: the daemon's event bus allows
/// the same per sandbox, so nothing it would have kept is dropped here.
const EVENT_RATE: f64 = 1000.0;
const EVENT_BURST: f64 = 5000.0;
/// Events waiting for the channel, all gateways together; past this, events are counted as
/// suppressed instead of queued.
const EVENT_QUEUE: usize = 8192;
/// How long a gateway gets to close its connections when stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the gateway process; returns its exit status.
pub fn main() -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let control = match safehouse_sys::fs::inherited(CONTROL_FD) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!("the gateway process has no control socket at descriptor {CONTROL_FD}: {e}");
            return 2;
        }
    };
    let init = match read_init(&control) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!("the gateway process did not get its first message: {e}");
            return 2;
        }
    };
    // Sized before the confinement (it reads /proc and /sys).
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    match confine(&init.confinement, &[CONTROL_FD]) {
        Ok(applied) => {
            if !applied.missing.is_empty() {
                tracing::warn!(missing = ?applied.missing, "the gateway process runs without an empty filesystem view");
            }
        }
        Err(e) => {
            let _ = send_blocking(&control, &FromGateway::Refused { layer: e.layer().into(), reason: e.to_string() });
            tracing::error!("{e}");
            return 3;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("the gateway process cannot start its runtime: {e}");
            return 4;
        }
    };
    runtime.block_on(serve(control, init.resolver))
}

fn read_init(control: &OwnedFd) -> Result<Init, WireError> {
    let mut buf = vec![0u8; wire::MAX_MESSAGE + 1];
    let (n, fds) = safehouse_sys::unix::recv_with_fds(control, &mut buf)?;
    wire::expect_fds(fds, 0)?;
    let init: Init = wire::decode(&buf[..n])?;
    if init.version != wire::VERSION {
        return Err(WireError::Malformed(format!("protocol version {} (this is {})", init.version, wire::VERSION)));
    }
    if !init.confinement.skip.is_empty() {
        return Err(WireError::Malformed("the gateway process applies every layer of its confinement".into()));
    }
    Ok(init)
}

fn send_blocking(control: &OwnedFd, msg: &FromGateway) -> Result<(), WireError> {
    let bytes = wire::encode(msg)?;
    safehouse_sys::unix::send_with_fds(control, &bytes, &[])?;
    Ok(())
}

/// One running gateway.
struct Running {
    gateway: Arc<Gateway>,
    task: JoinHandle<()>,
    gate: Arc<EventGate>,
}

/// What the process sends, queued for the one writer.
struct Outbox {
    control: mpsc::UnboundedSender<FromGateway>,
    events: mpsc::Sender<FromGateway>,
}

async fn serve(control: OwnedFd, resolver: Resolver) -> i32 {
    let chan = match Channel::new(control) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("the gateway process cannot watch its control socket: {e}");
            return 4;
        }
    };
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let (events_tx, mut events_rx) = mpsc::channel(EVENT_QUEUE);
    let outbox = Arc::new(Outbox { control: control_tx, events: events_tx });
    let writer = {
        let chan = chan.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    biased;
                    Some(m) = control_rx.recv() => m,
                    Some(m) = events_rx.recv() => m,
                    else => return,
                };
                if let Err(e) = chan.send(&msg, &[]).await {
                    tracing::error!("the gateway process cannot write to the daemon: {e}");
                    std::process::exit(5);
                }
            }
        })
    };
    let _ = outbox.control.send(FromGateway::Ready { version: wire::VERSION });

    let host = Arc::new(PushedHostAddrs::default());
    let mut pending_host = Vec::new();
    let mut resolver = resolver;
    let mut gateways: HashMap<u64, Running> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let received = tokio::select! {
            r = chan.recv() => r,
            _ = tick.tick() => {
                for (id, r) in &gateways {
                    r.gate.flush(*id, &outbox);
                }
                continue;
            }
        };
        let (bytes, fds) = match received {
            Ok(Some(m)) => m,
            // The daemon is gone (or sent garbage): nobody to serve for.
            Ok(None) => std::process::exit(0),
            Err(e) => {
                tracing::error!("the gateway process got a bad message from the daemon: {e}");
                std::process::exit(6);
            }
        };
        let msg = match wire::decode::<ToGateway>(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("the gateway process got a bad message from the daemon: {e}");
                std::process::exit(6);
            }
        };
        let want_fds = usize::from(matches!(msg, ToGateway::Start { .. }));
        let mut fds = match wire::expect_fds(fds, want_fds) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("the gateway process got a bad message from the daemon: {e}");
                std::process::exit(6);
            }
        };
        match msg {
            ToGateway::Host { blocks, last } => {
                pending_host.extend(wire::blocks_from_wire(&blocks));
                if last {
                    host.set(std::mem::take(&mut pending_host));
                }
            }
            ToGateway::Resolver { resolver: r } => {
                for run in gateways.values() {
                    run.gateway.set_resolver(r.clone());
                }
                resolver = r;
            }
            ToGateway::Start { id, sandbox, policy, limits, budget_used, budget_granted } => {
                let listener = fds.pop().expect("one descriptor, checked above");
                let reply = match start(
                    id,
                    &sandbox,
                    &policy,
                    &limits,
                    (budget_used, budget_granted),
                    listener,
                    &resolver,
                    &host,
                    &outbox,
                ) {
                    Ok(run) => {
                        if let Some(old) = gateways.insert(id, run) {
                            old.gateway.shutdown();
                        }
                        FromGateway::Started { id }
                    }
                    Err(error) => FromGateway::Failed { id, error },
                };
                let _ = outbox.control.send(reply);
            }
            ToGateway::Stop { id } => {
                if let Some(run) = gateways.remove(&id) {
                    run.gateway.shutdown();
                    let outbox = outbox.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(STOP_GRACE, run.task).await;
                        run.gate.flush(id, &outbox);
                        let _ = outbox.control.send(FromGateway::Stopped { id, stats: run.gateway.stats() });
                    });
                } else {
                    let _ = outbox.control.send(FromGateway::Stopped { id, stats: Default::default() });
                }
            }
            ToGateway::Grant { id, total } => {
                if let Some(run) = gateways.get(&id) {
                    run.gateway.grant(total);
                }
            }
            ToGateway::Stats { id, seq } => {
                let stats = gateways.get(&id).map(|r| r.gateway.stats()).unwrap_or_default();
                let _ = outbox.control.send(FromGateway::Stats { id, seq, stats });
            }
            ToGateway::Ping { seq } => {
                let _ = outbox.control.send(FromGateway::Pong { seq });
            }
        }
        if writer.is_finished() {
            std::process::exit(5);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start(
    id: u64,
    sandbox: &str,
    policy: &wire::WirePolicy,
    limits: &wire::WireLimits,
    (used, granted): (u64, u64),
    listener: OwnedFd,
    resolver: &Resolver,
    host: &Arc<PushedHostAddrs>,
    outbox: &Arc<Outbox>,
) -> Result<Running, String> {
    if !host.is_published() {
        return Err("the gateway process does not know the host's addresses yet".into());
    }
    let policy = policy.compile().map_err(|e| format!("the policy does not compile: {e}"))?;
    let budgeted = policy.egress_bytes.is_some();
    let host: Arc<dyn HostAddrSource> = host.clone();
    let mut config = Config::new(policy, resolver.clone(), host);
    limits.apply(&mut config);
    config.budget_used = used;
    let gate = Arc::new(EventGate::new());
    config.on_event = Some({
        let (gate, outbox) = (gate.clone(), outbox.clone());
        Arc::new(move |e: &Event| gate.offer(id, e, &outbox))
    });
    if budgeted {
        let outbox = outbox.clone();
        config.ask_budget = Some(Arc::new(move || {
            let _ = outbox.control.send(FromGateway::NeedBudget { id });
        }));
    }
    let listener = std::net::TcpListener::from(listener);
    listener.set_nonblocking(true).map_err(|e| format!("the listener: {e}"))?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| format!("the listener: {e}"))?;
    let gateway = Gateway::new(config);
    if budgeted {
        gateway.grant(granted);
    }
    tracing::debug!(sandbox, id, fd = listener.as_raw_fd(), "serving a sandbox's gateway");
    let task = tokio::spawn(gateway.clone().serve(listener));
    Ok(Running { gateway, task, gate })
}

/// The per-gateway limit on events sent to the daemon, a token bucket; what it holds back
/// is counted and reported (`Suppressed`) before the next event that passes, or within a
/// second. The budget running out is never held back.
struct EventGate {
    bucket: Mutex<(f64, Instant)>,
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl EventGate {
    fn new() -> EventGate {
        EventGate {
            bucket: Mutex::new((EVENT_BURST, Instant::now())),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    fn take(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * EVENT_RATE).min(EVENT_BURST);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    fn offer(&self, id: u64, e: &Event, outbox: &Outbox) {
        let counter = match e {
            Event::Allowed { .. } => Some(&self.allowed),
            Event::Denied { .. } => Some(&self.denied),
            Event::BudgetExceeded { .. } => None,
        };
        match counter {
            None => {
                self.flush(id, outbox);
                let _ = outbox.control.send(FromGateway::Event { id, event: e.clone() });
            }
            Some(c) => {
                if !self.take() {
                    c.fetch_add(1, Relaxed);
                    return;
                }
                self.flush(id, outbox);
                if outbox.events.try_send(FromGateway::Event { id, event: e.clone() }).is_err() {
                    c.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Reports what was held back, if anything.
    fn flush(&self, id: u64, outbox: &Outbox) {
        let (allowed, denied) = (self.allowed.swap(0, Relaxed), self.denied.swap(0, Relaxed));
        if allowed + denied > 0 {
            // On the control queue: the counts must not be lost to a full event queue.
            let _ = outbox.control.send(FromGateway::Suppressed { id, allowed, denied });
        }
    }
}

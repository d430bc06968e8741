//! The gateway's shared state and its accept loop: caps, shutdown, the byte budget, and the
//! first-byte dispatch between SOCKS5 and HTTP.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use safehouse_policy::network::NetPolicy;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::hostaddrs::HostAddrSource;
use crate::meter::{Activity, Metered};
use crate::resolve::Resolver;
use crate::stats::{Counters, Stats};

/// Called for every decision. Runs on the connection's task: keep it cheap (push to a
/// channel), never block.
pub type EventHook = Arc<dyn Fn(&Event) + Send + Sync>;

/// What the observation plane hears about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A request was allowed (before the dial): `target` is `host:port` as requested.
    Allowed { target: String, rule: String },
    /// A request was denied by the policy or the spent budget.
    Denied { target: String, rule: String, reason: String },
    /// The byte budget ran out; every connection was closed.
    BudgetExceeded { limit: u64 },
}

/// How a gateway behaves. [`Config::new`] gives the defaults.
#[derive(Clone)]
pub struct Config {
    /// What may be reached.
    pub policy: NetPolicy,
    /// How names are turned into addresses.
    pub resolver: Resolver,
    /// The host's own addresses, read for every decision ([`crate::hostaddrs`]).
    pub host_addrs: Arc<dyn HostAddrSource>,
    /// Client connections served at once; further ones get a 503 and are closed. Default 256.
    pub max_connections: usize,
    /// Time allowed for a client to send its first byte, a SOCKS handshake, or a complete
    /// request head; also how long a keep-alive client connection may sit idle between
    /// requests. Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection (tunnel, or request body/response in flight) with no byte moving either way
    /// for this long is closed. Default 300 s.
    pub idle_timeout: Duration,
    /// Time allowed to connect to one upstream address. Default 10 s.
    pub connect_timeout: Duration,
    /// Largest request head accepted (bytes); bigger ones get a 431. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Called for every allow, deny and the budget running out.
    pub on_event: Option<EventHook>,
}

impl Config {
    /// `host_addrs`: usually [`crate::hostaddrs::watch`], the live set.
    pub fn new(policy: NetPolicy, resolver: Resolver, host_addrs: Arc<dyn HostAddrSource>) -> Config {
        Config {
            policy,
            resolver,
            host_addrs,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            on_event: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("policy", &self.policy)
            .field("resolver", &self.resolver)
            .field("host_addrs", &self.host_addrs)
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("on_event", &self.on_event.as_ref().map(|_| "<hook>"))
            .finish()
    }
}

/// Ordered: a connection is closed when the phase moves past the one it started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Running,
    BudgetSpent,
    Shutdown,
}

/// One gateway: its configuration, counters and lifecycle. Shared by its connections.
pub struct Gateway {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Bytes charged against the budget (both directions).
    used: AtomicU64,
    phase: watch::Sender<Phase>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway").field("config", &self.config).field("phase", &*self.phase.borrow()).finish()
    }
}

const BUSY: &str = "safehouse gateway: too many open connections through this gateway; close some and retry\n";

impl Gateway {
    pub fn new(config: Config) -> Arc<Gateway> {
        let (phase, _) = watch::channel(Phase::Running);
        Arc::new(Gateway { config, counters: Counters::default(), used: AtomicU64::new(0), phase })
    }

    /// Accepts and serves connections until [`Gateway::shutdown`]; then closes every
    /// connection it accepted and returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut phase = self.phase.subscribe();
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let accepted = tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p == Phase::Shutdown) => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, _)) => {
                    Counters::bump(&self.counters.connections);
                    if self.counters.active.load(Relaxed) >= self.config.max_connections as u64 {
                        Counters::bump(&self.counters.rejected);
                        turn_away(stream);
                        continue;
                    }
                    let guard = ActiveGuard::new(&self);
                    tasks.spawn(self.clone().client(stream, guard));
                }
                // Out of descriptors or memory: the loop must not spin; wait a little and go on.
                Err(_) => {
                    tokio::select! {
                        _ = phase.wait_for(|p| *p == Phase::Shutdown) => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
        tasks.shutdown().await;
    }

    /// Stops accepting and closes every connection. Idempotent.
    pub fn shutdown(&self) {
        self.phase.send_replace(Phase::Shutdown);
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot(self.budget_spent())
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(hook) = &self.config.on_event {
            hook(&event);
        }
    }

    /// True once more bytes were asked for than the budget allows.
    pub(crate) fn budget_spent(&self) -> bool {
        self.config.policy.egress_bytes.is_some_and(|l| self.used.load(Relaxed) > l)
    }

    /// Bytes still allowed to move; `u64::MAX` without a budget.
    pub(crate) fn budget_room(&self) -> u64 {
        match self.config.policy.egress_bytes {
            None => u64::MAX,
            Some(limit) => limit.saturating_sub(self.used.load(Relaxed)),
        }
    }

    /// Charges `n` bytes just moved; returns how many of them fit in the budget. When they
    /// do not all fit the budget is spent: every connection started before is closed.
    pub(crate) fn charge(&self, n: u64, inbound: bool) -> u64 {
        let Some(limit) = self.config.policy.egress_bytes else {
            self.count(n, inbound);
            return n;
        };
        let before = self.used.fetch_add(n, Relaxed);
        let fit = limit.saturating_sub(before).min(n);
        self.count(fit, inbound);
        if fit < n {
            self.spend(limit);
        }
        fit
    }

    fn count(&self, n: u64, inbound: bool) {
        let c = if inbound { &self.counters.bytes_in } else { &self.counters.bytes_out };
        c.fetch_add(n, Relaxed);
    }

    fn spend(&self, limit: u64) {
        let changed = self.phase.send_if_modified(|p| {
            if *p == Phase::Running {
                *p = Phase::BudgetSpent;
                true
            } else {
                false
            }
        });
        if changed {
            self.emit(Event::BudgetExceeded { limit });
        }
    }

    /// One client connection: closed when the phase moves past the one it started in, when it
    /// has been idle too long, or when its protocol is done.
    async fn client(self: Arc<Self>, stream: TcpStream, _guard: ActiveGuard) {
        let mut phase = self.phase.subscribe();
        let started = *phase.borrow_and_update();
        let activity = Arc::new(Activity::new());
        tokio::select! {
            _ = phase.wait_for(|p| *p > started) => {}
            _ = activity.idle(self.config.idle_timeout) => {}
            _ = self.clone().dispatch(stream, activity.clone()) => {}
        }
    }

    async fn dispatch(self: Arc<Self>, stream: TcpStream, activity: Arc<Activity>) {
        let _ = stream.set_nodelay(true);
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.config.handshake_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return, // closed, failed or silent: nothing to answer
        }
        let client = Metered::client(stream, activity.clone());
        if first[0] == crate::socks::VERSION {
            crate::socks::serve(self, client, activity).await;
        } else {
            crate::http::serve(self, client, activity).await;
        }
    }
}

/// Answers a connection over the cap without waiting for anything: the socket's send buffer
/// is empty, so a non-blocking write of one short response either fits or is dropped.
fn turn_away(stream: TcpStream) {
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BUSY}",
        BUSY.len()
    );
    let _ = stream.try_write(msg.as_bytes());
}

/// Counts a client connection as open while it lives.
struct ActiveGuard(Arc<Gateway>);

impl ActiveGuard {
    fn new(gw: &Arc<Gateway>) -> ActiveGuard {
        gw.counters.active.fetch_add(1, Relaxed);
        ActiveGuard(gw.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Relaxed);
    }
}

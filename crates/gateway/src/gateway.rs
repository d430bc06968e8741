//! The gateway's shared state and its accept loop: caps, shutdown, the byte budget, and the
//! first-byte dispatch between SOCKS5 and HTTP.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use safehouse_policy::network::NetPolicy;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::budget::{Budget, GrantHook, Spent};
use crate::conn::{Conn, Flow};
use crate::hostaddrs::HostAddrSource;
use crate::meter::Activity;
use crate::resolve::Resolver;
use crate::stats::{Counters, Stats};

/// Called for every decision. Runs on the connection's task: keep it cheap (push to a
/// channel), never block.
pub type EventHook = Arc<dyn Fn(&Event) + Send + Sync>;

/// What the observation plane hears about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
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
    /// Bytes of `egress_bytes` already used before this gateway started (a gateway process
    /// restarted by the daemon). Default 0.
    pub budget_used: u64,
    /// Set when someone else hands out the budget in slices (the daemon, for the gateway
    /// process): called when the gateway needs more; [`Gateway::grant`] answers. None: the
    /// whole budget is the gateway's from the start.
    pub ask_budget: Option<GrantHook>,
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
            budget_used: 0,
            ask_budget: None,
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
            .field("budget_used", &self.budget_used)
            .field("ask_budget", &self.ask_budget.as_ref().map(|_| "<hook>"))
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
    /// `network.egress_bytes`: what may still cross the gateway's edge.
    budget: Budget,
    /// How names are resolved now (starts as `config.resolver`; the host's settings may
    /// change while the gateway runs).
    resolver: std::sync::RwLock<Arc<Resolver>>,
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
        let budget = Budget::new(config.policy.egress_bytes, config.budget_used, config.ask_budget.clone());
        let resolver = std::sync::RwLock::new(Arc::new(config.resolver.clone()));
        Arc::new(Gateway { config, counters: Counters::default(), budget, resolver, phase })
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
                Err(e) => {
                    crate::warn_limited!(error = %e, "the gateway cannot accept a connection; retrying in 50 ms");
                    tokio::select! {
                        _ = phase.wait_for(|p| *p == Phase::Shutdown) => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
        tasks.shutdown().await;
    }

    /// The resolver in use.
    pub(crate) fn resolver(&self) -> Arc<Resolver> {
        self.resolver.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves names with `resolver` from now on.
    pub fn set_resolver(&self, resolver: Resolver) {
        *self.resolver.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(resolver);
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

    /// True once a byte was asked for that the budget does not hold.
    pub(crate) fn budget_spent(&self) -> bool {
        self.budget.is_spent()
    }

    /// Claims up to `want` bytes about to cross the gateway's edge (at least one is
    /// claimed). Fails once the budget is spent: every connection is then closed.
    pub(crate) async fn claim(&self, want: u64) -> std::io::Result<u64> {
        match self.budget.claim(want).await {
            Ok(n) => Ok(n),
            Err(Spent { limit }) => {
                self.spend(limit);
                Err(std::io::Error::other(format!("egress byte budget of {limit} bytes is spent")))
            }
        }
    }

    /// `moved` of `claimed` bytes crossed the edge; counts them and gives back the rest.
    pub(crate) fn settle(&self, claimed: u64, moved: u64, inbound: bool) {
        self.budget.refund(claimed.saturating_sub(moved));
        let c = if inbound { &self.counters.bytes_in } else { &self.counters.bytes_out };
        c.fetch_add(moved, Relaxed);
    }

    /// The owner of the budget allows `total` bytes in all (the gateway process's grants).
    pub fn grant(&self, total: u64) {
        self.budget.grant(total);
    }

    /// Bytes claimed from the budget so far.
    pub fn budget_used(&self) -> u64 {
        self.budget.used()
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
        let flow = Flow { gw: self, activity };
        let client = Conn::client(stream);
        if first[0] == crate::socks::VERSION {
            crate::socks::serve(flow, client).await;
        } else {
            crate::http::serve(flow, client).await;
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

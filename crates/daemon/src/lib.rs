//! The daemon (`safehouse serve`): the startup order and the composition of the crates
//! below it. Start the spawners (before any thread exists), then the async runtime, the
//! store, the audit log, the manager (re-attaching what survived a restart) and the HTTP
//! server with every front's routes ([`router`]).

#![forbid(unsafe_code)]

mod router;

pub use router::{router, serve, ServeOptions};
pub use safehouse_http::tls::TlsSource;
pub use safehouse_manager::quota::QuotaConfig;
pub use safehouse_manager::{check_data_dir, MAX_DATA_DIR_LEN};

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use safehouse_jail::zygote::Zygote;
use safehouse_policy::plan::Plan;

use safehouse_manager::{Manager, ManagerConfig, Store};

pub struct DaemonOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub allowed_hosts: Vec<String>,
    /// Spawner processes (sandbox creations run in parallel up to this many).
    pub spawners: usize,
    /// Warm code-interpreter sandboxes per pool (ManagerConfig::code_pool).
    pub code_pool: usize,
    /// Per-tenant quotas (ManagerConfig::quotas).
    pub quotas: QuotaConfig,
    /// Serve HTTPS only, with this certificate (docs/tls.md).
    pub tls: Option<TlsSource>,
}

/// What every sandbox's PID 1 runs: the agent.
fn agent_entry(listener: OwnedFd, plan: &Plan) -> ! {
    safehouse_agent::run(listener, safehouse_agent::AgentConfig { env: plan.env.clone(), cwd: plan.cwd.clone() })
}

/// The default data directory: /var/lib/safehouse as root, else ~/.local/share/safehouse.
pub fn default_data_dir() -> PathBuf {
    if safehouse_sys::geteuid() == 0 {
        return PathBuf::from("/var/lib/safehouse");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d).join("safehouse"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".local/share/safehouse"),
    }
}

/// Runs the daemon until SIGTERM/SIGINT. Must be called while the process is still
/// single-threaded (the spawners are forked first).
pub fn run(opts: DaemonOptions) -> Result<(), String> {
    safehouse_manager::check_data_dir(&opts.data_dir).map_err(|e| format!("{e}: pass a shorter --data-dir"))?;
    // The certificate before anything starts: a bad one stops the daemon with its file named.
    let tls = match &opts.tls {
        None => None,
        Some(TlsSource::Files { cert, key }) => Some(safehouse_http::tls::load(cert, key).map_err(|e| e.to_string())?),
        Some(TlsSource::SelfSigned) => {
            let names = safehouse_http::tls::self_signed_names(opts.listen, &opts.allowed_hosts);
            let dir = safehouse_http::tls::self_signed_dir(&opts.data_dir);
            Some(safehouse_http::tls::self_signed(&dir, &names).map_err(|e| e.to_string())?)
        }
    };
    let mut zygotes = Vec::new();
    for _ in 0..opts.spawners.max(1) {
        zygotes.push(Zygote::start(agent_entry).map_err(|e| format!("cannot start the spawner: {e}"))?);
    }
    let resolver =
        safehouse_gateway::Resolver::from_env().map_err(|e| format!("the gateway's resolver settings: {e}"))?;
    // The host's own addresses, kept current for every gateway and every create (NET-01);
    // this daemon's listen address is the host too, whatever interface carries it.
    let host = safehouse_gateway::hostaddrs::watch().map_err(|e| format!("cannot watch this host's addresses: {e}"))?;
    host.add([safehouse_policy::network::HostBlock::new(
        opts.listen.ip(),
        if opts.listen.is_ipv4() { 32 } else { 128 },
    )]);
    for (name, ip) in resolver.overrides_on(&safehouse_gateway::HostAddrSource::snapshot(&*host)) {
        eprintln!(
            "safehouse: {}: {name} is {ip}, an address of this host: sandboxes allowed {name} reach it (operator overrides are trusted)",
            safehouse_gateway::resolve::ENV_RESOLVE
        );
    }
    // Many sandboxes mean many descriptors (a pidfd and a connection each).
    let _ = safehouse_sys::process::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let store = Arc::new(Store::open(&opts.data_dir).map_err(|e| e.to_string())?);
        safehouse_manager::auth::bootstrap_admin(&store, &opts.data_dir).map_err(|e| e.to_string())?;
        let cfg = ManagerConfig {
            code_pool: opts.code_pool,
            quotas: opts.quotas.clone(),
            ..ManagerConfig::new(opts.data_dir.clone())
        };
        let manager = Manager::new(cfg, store.clone(), zygotes, resolver);
        let audit = open_audit(&opts.data_dir)?;
        if let Some(a) = &audit {
            manager.set_audit(a.clone());
        }
        let (attached, lost) = manager.recover().await.map_err(|e| e.to_string())?;
        if attached + lost > 0 {
            eprintln!(
                "safehouse: re-attached {attached} running sandbox(es); {lost} were lost while the daemon was down"
            );
        }
        manager.start_sampler();
        let options = ServeOptions {
            listen: opts.listen,
            data_dir: opts.data_dir.clone(),
            allowed_hosts: opts.allowed_hosts.clone(),
            tls,
        };
        let served = serve(options, manager, store).await.map_err(|e| format!("serve: {e}"));
        // What was queued reaches the disk, with a final signed checkpoint.
        if let Some(a) = audit {
            let log = a.log().clone();
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
        served
    })
}

/// The environment variable that turns the audit log off (`off`): for benchmarks only.
pub const AUDIT_ENV: &str = "SAFEHOUSE_AUDIT";

/// Opens `DATA_DIR/audit`. A log that cannot be opened (its last record damaged, its key
/// unreadable or readable by others, the disk unwritable) stops the daemon: running
/// unaudited is not a silent fallback. `SAFEHOUSE_AUDIT=off` runs without one, loudly.
fn open_audit(data_dir: &std::path::Path) -> Result<Option<safehouse_manager::audit::Audit>, String> {
    if std::env::var(AUDIT_ENV).is_ok_and(|v| v == "off") {
        eprintln!("safehouse: WARNING: {AUDIT_ENV}=off: nothing is audited (for benchmarks only)");
        return Ok(None);
    }
    let dir = safehouse_audit::dir(data_dir);
    let log = safehouse_audit::AuditLog::open(&dir).map_err(|e| {
        format!(
            "cannot open the audit log in {}: {e}; run `safehouse audit verify --data-dir {}` to see what is wrong (the daemon does not start without its audit log)",
            dir.display(),
            data_dir.display()
        )
    })?;
    safehouse_manager::audit::Audit::start(log, &dir)
        .map(Some)
        .map_err(|e| format!("cannot start the audit feeder: {e}"))
}

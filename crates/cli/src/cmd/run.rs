//! `safehouse run [OPTIONS] -- CMD [ARG...]`

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Args;

use safehouse_gateway::{spawn_thread, Config, GatewayThread, NetPolicy, Resolver};
use safehouse_jail::{EgressGateway, JailError, RunSpec};
use safehouse_policy::model::{parse_toml, Rootfs};
use safehouse_policy::network::HostReach;
use safehouse_policy::plan::{MountSpec, RunRequest};
use safehouse_policy::units::{parse_duration, parse_size, ByteSize, Dur};
use safehouse_policy::{presets, Policy};

/// Exit status when the sandbox could not be set up or a required layer is unavailable.
pub const EXIT_SETUP: i32 = 125;

#[derive(Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// A policy file (TOML); the flags below override it
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    policy: Option<String>,
    /// A built-in policy (see `safehouse policy show`)
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// Root filesystem: the host's system dirs read-only (host) or a directory
    #[arg(long, value_name = "host|DIR")]
    rootfs: Option<String>,
    /// Bind a host path (repeatable; ro by default)
    #[arg(long = "mount", value_name = "SRC:DST[:ro|rw]")]
    mounts: Vec<String>,
    /// Host directory mounted read-write at /workspace; the command's cwd
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Set a variable (repeatable); the environment starts empty but for PATH, HOME, TERM, LANG
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Memory limit, e.g. 512MiB
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Maximum number of processes and threads
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// CPU bandwidth in cores, e.g. 0.5
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Size cap of the writable layer, e.g. 1GiB
    #[arg(long, value_name = "SIZE")]
    disk: Option<String>,
    /// Wall-clock limit, e.g. 30s; the command is killed and run exits 124
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Allow egress to HOST through the gateway (repeatable)
    #[arg(long = "allow-net", value_name = "HOST[:PORT]")]
    allow_net: Vec<String>,
    /// Give the command a terminal
    #[arg(long)]
    tty: bool,
    /// Write the result record as JSON to FILE (- for stderr)
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// The command and its arguments
    #[arg(required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn build_request(a: &RunArgs) -> Result<RunRequest> {
    let mut policy: Policy = match (&a.policy, &a.preset) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read policy {file}"))?;
            parse_toml(&text, file)?
        }
        (None, Some(name)) => presets::load(name)?,
        (None, None) => presets::load("default")?,
    };
    let l = &mut policy.limits;
    if let Some(m) = &a.memory {
        l.memory = Some(ByteSize(parse_size(m).map_err(|e| anyhow::anyhow!("--memory: {e}"))?));
    }
    if let Some(p) = a.pids {
        l.pids = Some(p);
    }
    if let Some(c) = a.cpus {
        l.cpus = Some(c);
    }
    if let Some(d) = &a.disk {
        l.disk = Some(ByteSize(parse_size(d).map_err(|e| anyhow::anyhow!("--disk: {e}"))?));
    }
    if let Some(t) = &a.timeout {
        l.timeout = Some(Dur(parse_duration(t).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?));
    }
    policy.network.allow.extend(a.allow_net.iter().cloned());
    if let Some(r) = &a.rootfs {
        policy.filesystem.rootfs = if r == "host" { Rootfs::Host } else { Rootfs::Dir(absolute(r)?) };
    }
    policy.validate()?;
    // The stop rules need the daemon's sampler and violation counter; `run` would silently
    // drop them, so it refuses them (fail closed).
    if policy.control != Default::default() {
        bail!("control: automatic stop rules are enforced by the daemon only; remove [control], or create the sandbox with `safehouse sandbox create` on a `safehouse serve`");
    }
    let mut mounts = Vec::new();
    for spec in &a.mounts {
        // Relative sources are taken from the current directory, like bind mounts in docker.
        let (src, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let spec = if rest.is_empty() { spec.clone() } else { format!("{}:{rest}", absolute(src)?) };
        mounts.push(MountSpec::parse_flag(&spec)?);
    }
    let workdir = a.workdir.as_deref().map(absolute).transpose()?;
    let mut env = Vec::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else { bail!("--env {kv:?}: write KEY=VALUE") };
        env.push((k.to_string(), v.to_string()));
    }
    Ok(RunRequest { policy, workdir, mounts, env, term: std::env::var("TERM").ok() })
}

/// Absolute, symlink-free form of a host path (so a mount source cannot be redirected).
fn absolute(p: &str) -> Result<String> {
    let path = std::fs::canonicalize(p).with_context(|| format!("{p}: no such file or directory"))?;
    path.to_str().map(str::to_string).context("paths must be valid UTF-8")
}

pub fn main(a: RunArgs) -> i32 {
    let request = match build_request(&a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            return EXIT_SETUP;
        }
    };
    let gateway: Option<Box<dyn EgressGateway>> = if request.policy.network.allow.is_empty() {
        None
    } else {
        match Egress::new(&request.policy) {
            Ok(g) => Some(Box::new(g)),
            Err(e) => {
                eprintln!("safehouse: {e:#}");
                return EXIT_SETUP;
            }
        }
    };
    let spec = RunSpec { request, argv: a.command.clone(), tty: a.tty, gateway };
    match safehouse_jail::run(spec) {
        Ok(outcome) => {
            if let Some(msg) = &outcome.exec_error {
                eprintln!("safehouse: {msg}");
            }
            for u in &outcome.unenforced {
                eprintln!("safehouse: warning: {} limit not enforced: {}", u.limit, u.reason);
            }
            if let Some(dest) = &a.json {
                let text = serde_json::to_string(&outcome).unwrap_or_default();
                let written =
                    if dest == "-" { writeln!(std::io::stderr(), "{text}") } else { std::fs::write(dest, text + "\n") };
                if let Err(e) = written {
                    eprintln!("safehouse: cannot write {dest}: {e}");
                }
            }
            outcome.exit_code
        }
        Err(e) => {
            let msg = match &e {
                JailError::LayerUnavailable { .. } => format!("{e}; see `safehouse doctor`"),
                _ => e.to_string(),
            };
            eprintln!("safehouse: {msg}");
            EXIT_SETUP
        }
    }
}

/// The capability gateway of one `run`: on its own thread, for the sandbox's lifetime.
struct Egress {
    /// The policy and resolver, until `start` (after the clone) makes the gateway.
    parts: Option<(NetPolicy, Resolver)>,
    running: Option<GatewayThread>,
}

impl Egress {
    fn new(policy: &Policy) -> Result<Egress> {
        // The local user is the host's operator: an exact address rule may open an address
        // of the host; `*`, blocks and names never reach one.
        let net = NetPolicy::compile(&policy.network)?.with_host_reach(HostReach::ExactAddressRules);
        let resolver = Resolver::from_env().map_err(|e| anyhow::anyhow!("the gateway's resolver: {e}"))?;
        Ok(Egress { parts: Some((net, resolver)), running: None })
    }
}

impl EgressGateway for Egress {
    /// Runs after the clone: the host-address watcher is a thread, and the sandbox must be
    /// cloned from a single-threaded process.
    fn start(&mut self, listener: std::net::TcpListener) -> Result<(), String> {
        let (net, resolver) = self.parts.take().ok_or("the gateway was started twice")?;
        let host = safehouse_gateway::hostaddrs::watch()
            .map_err(|e| format!("the gateway cannot tell this host's own addresses, so it allows no egress: {e}"))?;
        let config = Config::new(net, resolver, host);
        self.running = Some(spawn_thread(config, listener).map_err(|e| format!("start the gateway: {e}"))?);
        Ok(())
    }

    fn finish(&mut self) -> Option<serde_json::Value> {
        let stats = self.running.take()?.stop();
        serde_json::to_value(stats).ok()
    }
}

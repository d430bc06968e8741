//! `safehouse run [OPTIONS] -- CMD [ARG...]`

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Args;

use safehouse_gateway::process::ProcessGateway;
use safehouse_gateway::{Config, NetPolicy, Resolver};
use safehouse_jail::{EgressGateway, JailError, RunSpec};
use safehouse_policy::model::{Limits, Rootfs};
use safehouse_policy::network::HostReach;
use safehouse_policy::plan::{MountSpec, RunRequest};
use safehouse_policy::units::{format_duration, format_size, parse_duration, Dur};
use safehouse_policy::Policy;

use super::policy_flags::{self, LimitFlags};

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
    #[command(flatten)]
    limits: LimitFlags,
    /// Wall-clock limit, e.g. 30s; the command is killed and run exits 124
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Give the command a terminal
    #[arg(long)]
    tty: bool,
    /// Do not warn about default limits this host cannot enforce (rootless without cgroups);
    /// the JSON record still lists them under `unenforced`
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Write the result record as JSON to FILE (- for stderr)
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// An image or template of the store as the root filesystem (its layers shared
    /// read-only, the sandbox's own writable layer on top); without CMD, the image's
    /// entrypoint and command run
    #[arg(long, value_name = "REF", conflicts_with = "rootfs")]
    image: Option<String>,
    /// The data directory holding the image store (default: SAFEHOUSE_DATA_DIR, else the
    /// one `safehouse serve` uses)
    #[arg(long, value_name = "DIR", env = "SAFEHOUSE_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Where the writable layer lives: memory (a tmpfs, the default) or disk (a layer of
    /// the data dir's storage pool, capped at --disk and removed after the run; root only)
    #[arg(long, value_name = "memory|disk", default_value = "memory", value_parser = ["memory", "disk"])]
    storage: String,
    /// The command and its arguments (with --image: the arguments to the image's
    /// entrypoint, in place of its command)
    #[arg(value_name = "CMD")]
    command: Vec<String>,
}

/// An image root: kept for the run (its lease holds the layers against garbage
/// collection) and its argv.
struct ImageRun {
    _rooted: safehouse_images::root::Rooted,
    argv: Vec<String>,
}

/// `rootfs = "image:REF"` (or --image): the image from the store, its user resolved, its
/// layers leased; the argv from its entrypoint and command when none is given.
fn resolve_image(a: &RunArgs, req: &mut RunRequest) -> Result<Option<ImageRun>> {
    let Rootfs::Image(name) = &req.policy.filesystem.rootfs else { return Ok(None) };
    let dir = a.data_dir.clone().unwrap_or_else(safehouse_daemon::default_data_dir);
    let store = safehouse_images::Store::open(&dir)?;
    let record = store.get(name)?;
    let rooted = store.root_for(&record)?;
    let argv = rooted.config.argv(&a.command);
    if argv.is_empty() {
        bail!("the image {} has no entrypoint or command; give one after --", record.name);
    }
    req.image = Some(rooted.root.clone());
    Ok(Some(ImageRun { _rooted: rooted, argv }))
}

fn build_request(a: &RunArgs) -> Result<RunRequest> {
    let mut policy = policy_flags::load(a.policy.as_deref(), a.preset.as_deref())?;
    a.limits.apply(&mut policy)?;
    if let Some(t) = &a.timeout {
        policy.limits.timeout = Some(Dur(parse_duration(t).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?));
    }
    if let Some(r) = &a.rootfs {
        policy.filesystem.rootfs = if r == "host" { Rootfs::Host } else { Rootfs::Dir(existing_dir("--rootfs", r)?) };
    }
    if let Some(i) = &a.image {
        policy.filesystem.rootfs = Rootfs::Image(i.clone());
    }
    policy.validate()?;
    check_host_fits(&policy, host_memory(), std::thread::available_parallelism().map(|n| n.get()).ok())?;
    // The stop rules need the daemon's sampler and violation counter; `run` would silently
    // drop them, so it refuses them (fail closed).
    if policy.control != Default::default() {
        bail!("control: automatic stop rules are enforced by the daemon only; remove [control], or create the sandbox with `safehouse sandbox create` on a `safehouse serve`");
    }
    let mut mounts = Vec::new();
    for spec in &a.mounts {
        // Relative sources are taken from the current directory, like bind mounts in docker.
        let (src, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let spec = if rest.is_empty() { spec.clone() } else { format!("{}:{rest}", absolute("--mount", src)?) };
        mounts.push(MountSpec::parse_flag(&spec)?);
    }
    let workdir = a.workdir.as_deref().map(|w| existing_dir("--workdir", w)).transpose()?;
    let mut env = Vec::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else { bail!("--env {kv:?}: write KEY=VALUE") };
        env.push((k.to_string(), v.to_string()));
    }
    Ok(RunRequest { policy, workdir, mounts, env, term: std::env::var("TERM").ok(), ..Default::default() })
}

/// One line for the limits that go unenforced (the same reason for each, in rootless mode):
/// what, the reason's gist, where the detail is and how to quiet it.
fn unenforced_warning(unenforced: &[safehouse_jail::run::Unenforced]) -> Option<String> {
    let first = unenforced.first()?;
    let names: Vec<&str> = unenforced.iter().map(|u| u.limit.as_str()).collect();
    let gist = first.reason.split(" (").next().unwrap_or(&first.reason);
    Some(format!(
        "safehouse: warning: {} not enforced: {gist}; `safehouse doctor` says why, --quiet hides this",
        match names.as_slice() {
            [one] => format!("the {one} limit"),
            [rest @ .., last] => format!("the {} and {last} limits", rest.join(", ")),
            [] => unreachable!("first() was Some"),
        }
    ))
}

/// One line when a limit ended the command (the timeout, or the memory limit killing a
/// process), so a run that prints nothing is never a mystery; `--quiet` does not hide it.
fn limit_message(outcome: &safehouse_jail::run::Outcome, limits: &Limits) -> Option<String> {
    if outcome.timed_out {
        let after = limits.timeout.map(|t| format!(" after {}", format_duration(t.0))).unwrap_or_default();
        return Some(format!(
            "safehouse: the command timed out{after} and was killed (exit 124); raise --timeout to give it longer"
        ));
    }
    if outcome.oom_killed {
        let limit = format_size(limits.memory.map_or(safehouse_policy::model::defaults::MEMORY, |m| m.0));
        return Some(format!(
            "safehouse: the memory limit ({limit}) killed a process of the command; raise --memory, (files the command writes to the sandbox's RAM-backed disk count against it too)"
        ));
    }
    None
}

/// Limits this host cannot give are refused, not passed on to the kernel to be quietly
/// capped (a `cpus` above the host's count) or never reached (a `memory` above its RAM).
fn check_host_fits(policy: &Policy, memory: Option<u64>, cpus: Option<usize>) -> Result<()> {
    if let (Some(want), Some(have)) = (policy.limits.memory, memory) {
        if want.0 > have {
            bail!(
                "limits.memory {} is more than this host's memory ({}); ask for at most that",
                format_size(want.0),
                format_size(have)
            );
        }
    }
    if let (Some(want), Some(have)) = (policy.limits.cpus, cpus) {
        if want > have as f64 {
            bail!("limits.cpus {want} is more than this host's {have} CPUs; ask for at most {have}");
        }
    }
    Ok(())
}

/// MemTotal from /proc/meminfo, in bytes.
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Absolute, symlink-free form of a host path (so a mount source cannot be redirected).
/// Errors name the flag and say what is wrong with the path, once.
fn absolute(flag: &str, p: &str) -> Result<String> {
    let path = std::fs::canonicalize(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("{flag} {p}: no such file or directory on this host"),
        _ => anyhow::anyhow!("{flag} {p}: {}", sys_error_text(&e)),
    })?;
    path.to_str().map(str::to_string).with_context(|| format!("{flag} {p}: paths must be valid UTF-8"))
}

/// [`absolute`] for flags that name a directory (`--workdir`, `--rootfs`).
fn existing_dir(flag: &str, p: &str) -> Result<String> {
    let path = absolute(flag, p)?;
    if !std::path::Path::new(&path).is_dir() {
        bail!("{flag} {p}: not a directory; give a directory");
    }
    Ok(path)
}

/// An io::Error's text without Rust's " (os error N)" suffix.
fn sys_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

pub fn main(a: RunArgs) -> i32 {
    let mut request = match build_request(&a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            return EXIT_SETUP;
        }
    };
    let image = match resolve_image(&a, &mut request) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            return EXIT_SETUP;
        }
    };
    let argv = match &image {
        Some(i) => i.argv.clone(),
        None if a.command.is_empty() => {
            eprintln!("safehouse: no command given; write safehouse run [OPTIONS] -- CMD [ARG...]");
            return EXIT_SETUP;
        }
        None => a.command.clone(),
    };
    let layer = if a.storage == "disk" {
        let dir = a.data_dir.clone().unwrap_or_else(safehouse_daemon::default_data_dir);
        let cap = request.policy.limits.disk.map(|d| d.0).unwrap_or(safehouse_policy::model::defaults::DISK);
        match super::run_disk::RunLayer::create(&dir, cap) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("safehouse: {e:#}");
                return EXIT_SETUP;
            }
        }
    } else {
        None
    };
    let request_limits = request.policy.limits.clone();
    let result = match run_sandbox(request, argv, a.tty, layer.as_ref().map(|l| l.dir.clone())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            return EXIT_SETUP;
        }
    };
    drop(image); // the lease ends with the sandbox
    drop(layer); // and the layer on disk
    match result {
        Ok(outcome) => {
            if let Some(msg) = &outcome.exec_error {
                eprintln!("safehouse: {msg}");
            }
            if let Some(msg) = limit_message(&outcome, &request_limits) {
                eprintln!("{msg}");
            }
            if !a.quiet {
                if let Some(line) = unenforced_warning(&outcome.unenforced) {
                    eprintln!("{line}");
                }
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

/// Runs `argv` in a sandbox for `request`, with the capability gateway when its policy
/// allows egress (`run`, and template builds' RUN steps).
/// `disk_layer`: a host directory holding the writable layer (`RunSpec::disk_layer`).
pub fn run_sandbox(
    request: RunRequest,
    argv: Vec<String>,
    tty: bool,
    disk_layer: Option<String>,
) -> Result<Result<safehouse_jail::run::Outcome, JailError>> {
    let gateway: Option<Box<dyn EgressGateway>> =
        if request.policy.network.allow.is_empty() { None } else { Some(Box::new(Egress::new(&request.policy)?)) };
    Ok(safehouse_jail::run(RunSpec { request, argv, tty, gateway, disk_layer }))
}

/// The capability gateway of one `run`: in its own confined process (as the daemon's),
/// for the sandbox's lifetime.
struct Egress {
    /// The policy and resolver, until `start` (after the clone) makes the gateway.
    parts: Option<(NetPolicy, Resolver)>,
    running: Option<ProcessGateway>,
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
    /// Runs after the clone: the host-address watcher and the gateway's runtime are threads,
    /// and the sandbox must be cloned from a single-threaded process.
    fn start(&mut self, listener: std::net::TcpListener) -> Result<(), String> {
        let (net, resolver) = self.parts.take().ok_or("the gateway was started twice")?;
        let host = safehouse_gateway::hostaddrs::watch()
            .map_err(|e| format!("the gateway cannot tell this host's own addresses, so it allows no egress: {e}"))?;
        let config = Config::new(net, resolver, host.clone());
        self.running =
            Some(ProcessGateway::start(config, listener, host).map_err(|e| format!("start the gateway: {e}"))?);
        Ok(())
    }

    fn finish(&mut self) -> Option<serde_json::Value> {
        let stats = self.running.take()?.stop();
        serde_json::to_value(stats).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safehouse_policy::units::ByteSize;

    #[test]
    fn unenforced_limits_are_one_short_line() {
        let reason =
            "rootless mode cannot create cgroups here (v1 (memory), not writable: ...); run as root".to_string();
        let u = |l: &str| safehouse_jail::run::Unenforced { limit: l.into(), reason: reason.clone() };
        assert_eq!(unenforced_warning(&[]), None);
        assert_eq!(
            unenforced_warning(&[u("memory"), u("pids")]).unwrap(),
            "safehouse: warning: the memory and pids limits not enforced: rootless mode cannot create cgroups \
             here; `safehouse doctor` says why, --quiet hides this"
        );
        assert!(unenforced_warning(&[u("memory"), u("pids"), u("cpus")])
            .unwrap()
            .contains("the memory, pids and cpus limits"));
    }

    #[test]
    fn limits_past_the_host_are_refused() {
        let mut p = Policy::default();
        p.limits.memory = Some(ByteSize(1 << 40));
        let e = check_host_fits(&p, Some(24 << 30), Some(2)).unwrap_err().to_string();
        assert_eq!(e, "limits.memory 1TiB is more than this host's memory (24GiB); ask for at most that");
        p.limits.memory = Some(ByteSize(1 << 30));
        assert!(check_host_fits(&p, Some(24 << 30), Some(2)).is_ok());
        p.limits.cpus = Some(1000.0);
        let e = check_host_fits(&p, Some(24 << 30), Some(2)).unwrap_err().to_string();
        assert_eq!(e, "limits.cpus 1000 is more than this host's 2 CPUs; ask for at most 2");
        p.limits.cpus = Some(1.5);
        assert!(check_host_fits(&p, Some(24 << 30), Some(2)).is_ok());
        assert!(host_memory().is_some_and(|m| m > 1 << 20));
    }
}

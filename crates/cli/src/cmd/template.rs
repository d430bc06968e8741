//! `safehouse template build [-f Dockerfile] --tag NAME DIR`: a Dockerfile becomes a
//! template in the image store (crates/images/src/build, docs/images.md "Templates").
//!
//! Each RUN step runs in its own process (`safehouse template run-step SPEC`, hidden):
//! a sandbox is cloned from a single-threaded process, and the builder reads the step's
//! output while it runs (to the terminal and the step's log).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use safehouse_images::build::{self, registries, BuildOptions, RunStep, StepRunner};
use safehouse_images::ImageRecord;
use safehouse_policy::model::Rootfs;
use safehouse_policy::plan::{ImageRoot, MountSpec, RunRequest};
use safehouse_policy::units::{parse_size, Dur};
use safehouse_policy::Policy;

use super::image::StoreArgs;
use super::run::EXIT_SETUP;

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Build a template from a Dockerfile: every RUN in a sandbox on the image so far,
    /// its network only through the gateway to the package registries of this host's
    /// apt and pip configuration; steps cached by (parent, instruction, inputs)
    Build(BuildArgs),
    /// (internal) run one build step in a sandbox
    #[command(hide = true)]
    RunStep { spec: PathBuf },
}

#[derive(Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: DIR/Dockerfile)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The template's name
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tag: String,
    /// The build context: COPY and ADD take files from here
    #[arg(value_name = "DIR")]
    context: PathBuf,
    /// A build argument (repeatable)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Run every step, cached or not
    #[arg(long)]
    no_cache: bool,
    /// Also allow this destination to RUN steps (repeatable; on top of the host's registries)
    #[arg(long = "allow-net", value_name = "HOST[:PORT]")]
    allow_net: Vec<String>,
    /// Memory cap of each RUN step
    #[arg(long, value_name = "SIZE", default_value = "2GiB")]
    memory: String,
    /// Size cap of each RUN step's writable layer
    #[arg(long, value_name = "SIZE", default_value = "8GiB")]
    disk: String,
    /// Wall-clock limit of each RUN step
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    step_timeout: String,
    /// Show only the step lines, not the steps' output (it still goes to their logs)
    #[arg(long, short = 'q')]
    quiet: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// What the builder hands a `run-step` process.
#[derive(Serialize, Deserialize)]
struct StepSpec {
    policy: Policy,
    image: ImageRootSpec,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(String, String)>,
    /// The step's writable layer (RunSpec::disk_layer).
    writable: String,
}

/// plan::ImageRoot, as JSON.
#[derive(Serialize, Deserialize)]
struct ImageRootSpec {
    layers: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    uid: u32,
    gid: u32,
    home: String,
    top_dirs: Vec<String>,
}

pub fn main(c: TemplateCommand) -> i32 {
    match c {
        TemplateCommand::Build(a) => match build_cmd(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("safehouse: {e:#}");
                1
            }
        },
        TemplateCommand::RunStep { spec } => run_step(&spec),
    }
}

/// The policy every RUN step runs under: the default preset's isolation, the registries
/// of the host's apt and pip configuration (plus --allow-net) as the only egress.
fn build_policy(a: &BuildArgs, reg: &registries::Registries) -> Result<Policy> {
    let mut p = safehouse_policy::presets::load("default")?;
    p.network.allow = reg.hosts.clone();
    p.network.allow.extend(a.allow_net.iter().cloned());
    p.limits.memory =
        Some(safehouse_policy::units::ByteSize(parse_size(&a.memory).map_err(|e| anyhow::anyhow!("--memory: {e}"))?));
    p.limits.pids = Some(4096);
    p.limits.timeout =
        Some(Dur(safehouse_policy::units::parse_duration(&a.step_timeout)
            .map_err(|e| anyhow::anyhow!("--step-timeout: {e}"))?));
    p.filesystem.rootfs = Rootfs::Image("build".into());
    p.validate()?;
    Ok(p)
}

fn build_cmd(a: BuildArgs) -> Result<()> {
    let store = a.store.open()?;
    let dockerfile = a.file.clone().unwrap_or_else(|| a.context.join("Dockerfile"));
    let mut build_args = Vec::new();
    for kv in &a.build_args {
        let Some((k, v)) = kv.split_once('=') else { bail!("--build-arg {kv:?}: write KEY=VALUE") };
        build_args.push((k.to_string(), v.to_string()));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let reg = registries::from_host(std::path::Path::new("/"), &|k| std::env::var(k).ok(), home.as_deref());
    let policy = build_policy(&a, &reg)?;
    let disk = parse_size(&a.disk).map_err(|e| anyhow::anyhow!("--disk: {e}"))?;
    eprintln!(
        "safehouse: RUN steps may reach {}",
        if policy.network.allow.is_empty() { "nothing".to_string() } else { policy.network.allow.join(", ") }
    );
    let opts = BuildOptions {
        name: a.tag.clone(),
        dockerfile,
        context: a.context.clone(),
        build_args,
        no_cache: a.no_cache,
        disk,
        limits: Default::default(),
    };
    let mut runner =
        Runner { policy, pip_cert: reg.pip_cert.clone(), data_dir: a.store.data_dir.clone(), quiet: a.quiet };
    let progress = Notes;
    let started = std::time::Instant::now();
    let report = build::build(&store, &opts, &mut runner, &progress)?;
    if !report.disk_capped {
        eprintln!(
            "safehouse: note: RUN steps' writable layers were not size-capped (rootless: no tmpfs of the host's)"
        );
    }
    eprintln!(
        "safehouse: built template {} ({}) in {:.2}s: {} steps, {} cached",
        report.record.name,
        report.record.digest.short(),
        started.elapsed().as_secs_f64(),
        report.steps,
        report.cached
    );
    Ok(())
}

struct Notes;

impl safehouse_images::progress::Progress for Notes {
    fn event(&self, e: safehouse_images::progress::Event<'_>) {
        use safehouse_images::progress::Event;
        match e {
            Event::Note { text } => eprintln!("{text}"),
            Event::Unpacked { layer, report } => {
                if let Some(n) = report.neutralised() {
                    eprintln!("  layer {}: {n}", layer.short());
                }
            }
            _ => {}
        }
    }
}

struct Runner {
    policy: Policy,
    pip_cert: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    quiet: bool,
}

/// Where the host's pip CA bundle appears in build sandboxes (PIP_CERT points there).
const PIP_CERT_IN_SANDBOX: &str = "/run/safehouse-build/pip-ca.pem";

impl StepRunner for Runner {
    fn run(&mut self, step: &RunStep<'_>) -> std::result::Result<i32, String> {
        let r = step.root;
        let mut env = step.env.to_vec();
        let mut mounts = Vec::new();
        if let Some(c) = &self.pip_cert {
            mounts.push((c.to_string_lossy().into_owned(), PIP_CERT_IN_SANDBOX.to_string()));
            env.push(("PIP_CERT".into(), PIP_CERT_IN_SANDBOX.into()));
        }
        let spec = StepSpec {
            policy: self.policy.clone(),
            image: ImageRootSpec {
                layers: r.layers.clone(),
                env: r.env.clone(),
                working_dir: r.working_dir.clone(),
                uid: r.uid,
                gid: r.gid,
                home: r.home.clone(),
                top_dirs: r.top_dirs.clone(),
            },
            argv: step.argv.to_vec(),
            env,
            mounts,
            writable: step.writable.to_string_lossy().into_owned(),
        };
        let spec_path = step.log.with_extension("json");
        std::fs::write(&spec_path, serde_json::to_vec(&spec).map_err(|e| e.to_string())?)
            .map_err(|e| format!("write {}: {e}", spec_path.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("find the safehouse binary: {e}"))?;
        // One pipe for both streams, so the log keeps their order.
        let (reader, writer) = safehouse_sys::fs::pipe().map_err(|e| format!("pipe: {e}"))?;
        let writer2 = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
        let reader = std::fs::File::from(reader);
        let mut child = Command::new(exe)
            .args(["template", "run-step"])
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .spawn()
            .map_err(|e| format!("start the step: {e}"))?;
        let mut log = std::fs::File::create(step.log).map_err(|e| format!("create {}: {e}", step.log.display()))?;
        for line in std::io::BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            let _ = log.write_all(&line);
            let _ = log.write_all(b"\n");
            if !self.quiet {
                eprintln!("  | {}", String::from_utf8_lossy(&line));
            }
        }
        let status = child.wait().map_err(|e| format!("wait for the step: {e}"))?;
        let _ = std::fs::remove_file(&spec_path);
        match status.code() {
            Some(EXIT_SETUP) => Err(format!("the sandbox could not be set up (exit status {EXIT_SETUP})")),
            Some(c) => Ok(c),
            None => Err("the step's process was killed".into()),
        }
    }

    fn pull(&mut self, reference: &str) -> std::result::Result<ImageRecord, String> {
        let exe = std::env::current_exe().map_err(|e| format!("find the safehouse binary: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["image", "pull", reference]);
        if let Some(d) = &self.data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        let status = cmd.status().map_err(|e| format!("start the pull: {e}"))?;
        if !status.success() {
            return Err("the pull failed (see above)".into());
        }
        let store = StoreArgs { data_dir: self.data_dir.clone() }.open().map_err(|e| e.to_string())?;
        store.get(reference).map_err(|e| e.to_string())
    }
}

/// `template run-step SPEC`: one RUN step in a sandbox; exits with its status.
fn run_step(spec: &std::path::Path) -> i32 {
    let spec: StepSpec =
        match std::fs::read(spec).context("read the step").and_then(|b| Ok(serde_json::from_slice(&b)?)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("safehouse: {e:#}");
                return EXIT_SETUP;
            }
        };
    let i = spec.image;
    let image = ImageRoot {
        reference: "build".into(),
        layers: i.layers,
        env: i.env,
        working_dir: i.working_dir,
        uid: i.uid,
        gid: i.gid,
        home: i.home,
        top_dirs: i.top_dirs,
    };
    let mounts = spec.mounts.into_iter().map(|(host, path)| MountSpec { host, path, writable: false }).collect();
    let request = RunRequest {
        policy: spec.policy,
        env: spec.env,
        mounts,
        image: Some(image),
        build_step: true,
        ..Default::default()
    };
    match super::run::run_sandbox(request, spec.argv, false, Some(spec.writable)) {
        Ok(Ok(outcome)) => {
            if let Some(msg) = &outcome.exec_error {
                eprintln!("safehouse: {msg}");
            }
            if outcome.timed_out {
                eprintln!("safehouse: the step ran past --step-timeout and was killed");
            }
            if outcome.oom_killed {
                eprintln!("safehouse: the step ran out of memory (--memory)");
            }
            outcome.exit_code
        }
        Ok(Err(e)) => {
            eprintln!("safehouse: {e}");
            EXIT_SETUP
        }
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            EXIT_SETUP
        }
    }
}

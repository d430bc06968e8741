//! `safehouse image pull|import|ls|rm|inspect|gc`: the local image store under
//! `DATA_DIR/images` (docs/images.md), shared with `run --image`, templates and the
//! daemon given the same data dir.

mod auth;
mod progress;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use safehouse_images::import::{import, ImportOptions};
use safehouse_images::oci::Platform;
use safehouse_images::pull::{pull, PullOptions};
use safehouse_images::unpack::Limits;
use safehouse_images::{ImageRecord, Store};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pull an image from an OCI / Docker v2 registry into the store (progress on stderr)
    Pull(PullArgs),
    /// Make an image of an OCI layout, a `docker save` archive, or a root filesystem
    /// (directory or tar, plain, gzip or zstd)
    Import(ImportArgs),
    /// List the images and templates in the store (name, digest, size)
    Ls(LsArgs),
    /// Remove images by name; their layers go unless another image, a template or a
    /// running sandbox uses them
    Rm(RmArgs),
    /// Show an image's record, layers and run config
    Inspect(InspectArgs),
    /// Remove layers and blobs no image uses (running sandboxes' layers stay)
    Gc(GcArgs),
}

/// Where the store is: the data dir shared with `safehouse serve` and `run --image`.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The data directory (default: SAFEHOUSE_DATA_DIR, else /var/lib/safehouse as root,
    /// ~/.local/share/safehouse otherwise)
    #[arg(long, value_name = "DIR", env = "SAFEHOUSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl StoreArgs {
    pub fn open(&self) -> Result<Store> {
        let dir = self.data_dir.clone().unwrap_or_else(safehouse_daemon::default_data_dir);
        Ok(Store::open(&dir)?)
    }
}

#[derive(Args)]
pub struct PullArgs {
    /// The image, e.g. 127.0.0.1:5000/busybox:latest or registry.example/team/app@sha256:...
    #[arg(value_name = "REF")]
    reference: String,
    /// Store it under this name instead of the reference
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// For an image index: the platform to take (default: this host's, linux/amd64 here)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Registry user (the password comes from --password-stdin or SAFEHOUSE_REGISTRY_PASSWORD);
    /// without it, credentials for the registry in ~/.docker/config.json are used if any
    #[arg(long, value_name = "USER", env = "SAFEHOUSE_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Read the registry password (or token) from stdin
    #[arg(long)]
    password_stdin: bool,
    /// Trust this PEM CA certificate for the registry's TLS (repeatable)
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_certs: Vec<PathBuf>,
    /// Layers downloaded at once
    #[arg(long, default_value_t = 4, value_name = "N")]
    parallel: usize,
    /// Refuse a layer that unpacks to more than this (an archive bomb)
    #[arg(long, value_name = "SIZE")]
    max_layer_size: Option<String>,
    /// No progress on stderr
    #[arg(long, short)]
    quiet: bool,
    /// Print the stored image's record as JSON on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct ImportArgs {
    /// An OCI layout (directory or archive), a `docker save` archive, a root filesystem
    /// directory, or a tar of one
    #[arg(value_name = "SRC")]
    src: PathBuf,
    /// The name to store it under
    #[arg(long, short = 't', value_name = "NAME")]
    tag: String,
    /// Of a layout or archive holding several images: the one with this ref name or tag
    #[arg(long, value_name = "REF")]
    select: Option<String>,
    /// For an image index: the platform to take
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Refuse a layer that unpacks to more than this (an archive bomb)
    #[arg(long, value_name = "SIZE")]
    max_layer_size: Option<String>,
    #[arg(long, short)]
    quiet: bool,
    /// Print the stored image's record as JSON on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct RmArgs {
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct GcArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn main(c: ImageCommand) -> i32 {
    let r = match c {
        ImageCommand::Pull(a) => pull_cmd(a),
        ImageCommand::Import(a) => import_cmd(a),
        ImageCommand::Ls(a) => ls(a),
        ImageCommand::Rm(a) => rm(a),
        ImageCommand::Inspect(a) => inspect(a),
        ImageCommand::Gc(a) => gc(a),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            1
        }
    }
}

fn limits(max: &Option<String>) -> Result<Limits> {
    let mut l = Limits::default();
    if let Some(m) = max {
        l.max_bytes = safehouse_policy::units::parse_size(m).map_err(|e| anyhow::anyhow!("--max-layer-size: {e}"))?;
    }
    Ok(l)
}

fn platform(p: &Option<String>) -> Result<Platform> {
    Ok(match p {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    })
}

fn pull_cmd(a: PullArgs) -> Result<()> {
    let store = a.store.open()?;
    let mut ca_certs = Vec::new();
    for f in &a.ca_certs {
        ca_certs.push(std::fs::read(f).with_context(|| format!("--ca-cert {}", f.display()))?);
    }
    let reference: safehouse_images::pull::Reference =
        a.reference.parse().map_err(|e| anyhow::anyhow!("invalid image reference {:?}: {e}", a.reference))?;
    let auth = auth::resolve(reference.resolve_registry(), a.username.as_deref(), a.password_stdin)?;
    let opts = PullOptions {
        auth,
        platform: platform(&a.platform)?,
        limits: limits(&a.max_layer_size)?,
        parallel: a.parallel.clamp(1, 16),
        name: a.name.clone(),
        ca_certs,
    };
    let bars = progress::Bars::new(a.quiet);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let record = rt.block_on(pull(&store, &a.reference, &opts, &bars));
    bars.finish();
    let record = record?;
    print_record(&record, a.json, a.quiet)
}

fn import_cmd(a: ImportArgs) -> Result<()> {
    let store = a.store.open()?;
    let opts = ImportOptions {
        name: a.tag.clone(),
        select: a.select.clone(),
        platform: platform(&a.platform)?,
        limits: limits(&a.max_layer_size)?,
    };
    let bars = progress::Bars::new(a.quiet);
    let record = import(&store, &a.src, &opts, &bars);
    bars.finish();
    print_record(&record?, a.json, a.quiet)
}

fn print_record(r: &ImageRecord, json: bool, quiet: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else if !quiet {
        println!("{} {}", r.name, r.digest);
    }
    Ok(())
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ls(a: LsArgs) -> Result<()> {
    let store = a.store.open()?;
    let list = store.list()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let width = list.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:width$}  {:8}  {:12}  {:>10}  {:6}  CREATED", "NAME", "KIND", "DIGEST", "SIZE", "LAYERS")?;
    for r in &list {
        let kind = match r.kind {
            safehouse_images::Kind::Image => "image",
            safehouse_images::Kind::Template => "template",
        };
        writeln!(
            out,
            "{:width$}  {:8}  {:12}  {:>10}  {:6}  {}",
            r.name,
            kind,
            r.digest.short(),
            human(r.size),
            r.layers.len(),
            r.created
        )?;
    }
    Ok(())
}

fn rm(a: RmArgs) -> Result<()> {
    let store = a.store.open()?;
    let mut removed = Vec::new();
    for n in &a.names {
        removed.push(store.remove_record(n)?);
    }
    let report = store.gc()?;
    if a.json {
        let names: Vec<&str> = removed.iter().map(|r| r.name.as_str()).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"removed": names, "gc": report}))?);
    } else {
        for r in &removed {
            println!("removed {} {}", r.name, r.digest);
        }
        print_gc(&report);
    }
    Ok(())
}

fn print_gc(g: &safehouse_images::store::GcReport) {
    println!("freed {} layers ({}) and {} blobs", g.layers_removed, human(g.bytes_freed), g.blobs_removed);
    if g.layers_in_use > 0 {
        println!("kept {} unreferenced layers a running sandbox still uses (a later gc frees them)", g.layers_in_use);
    }
}

fn inspect(a: InspectArgs) -> Result<()> {
    let store = a.store.open()?;
    let r = store.get(&a.name)?;
    let rc = store.run_config(&r)?;
    let layers: Vec<serde_json::Value> = r
        .layers
        .iter()
        .map(|l| serde_json::json!({"diff_id": l.diff_id, "size": l.size, "path": store.layer_root(&l.diff_id)}))
        .collect();
    let env: Vec<String> = rc.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let v = serde_json::json!({
        "name": r.name, "kind": r.kind, "digest": r.digest, "config": r.config, "size": r.size,
        "created": r.created, "source": r.source, "layers": layers,
        "run": {"env": env, "working_dir": rc.working_dir, "user": rc.user, "entrypoint": rc.entrypoint, "cmd": rc.cmd},
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn gc(a: GcArgs) -> Result<()> {
    let store = a.store.open()?;
    let report = store.gc()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_gc(&report);
    }
    Ok(())
}
